"""Load and save checkpoints without ever executing code from them.

Checkpoints are untrusted input: a pickle can run anything when loaded. Here
.safetensors files are read as plain data, and pickle-based files (.pt, .bin,
...) go only through torch's weights-only unpickler; a file that asks it for
anything but tensors and plain containers raises UnsafeCheckpointError and is
never retried unsafely.
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
import os
import pickle
import re
import secrets
import stat
from collections.abc import Mapping
from pathlib import Path

import safetensors.torch
import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save as save_bytes
from safetensors.torch import save_file

from weightspace.errors import (
    AmbiguousCheckpointError,
    CheckpointError,
    UnsafeCheckpointError,
)
from weightspace.safe_input import read_safetensors_header
from weightspace.shards import read_index
from weightspace.training_checkpoint import find_state_dict

StateDict = dict[str, torch.Tensor]

SAFETENSORS_SUFFIX = ".safetensors"
PICKLE_SUFFIXES = (".pt", ".pth", ".bin", ".ckpt")
SUPPORTED_SUFFIXES = (SAFETENSORS_SUFFIX, *PICKLE_SUFFIXES)

_log = logging.getLogger(__name__)

# Files of a Hugging Face model folder, in the order they are tried.
_HF_WEIGHT_FILES = (
    "model.safetensors",
    "model.safetensors.index.json",
    "pytorch_model.bin",
    "pytorch_model.bin.index.json",
)

# Refusals of torch's weights-only unpickler that mean "not a pickle it can
# read" rather than "asks for an object that is not allowed".
_MALFORMED_PICKLE = re.compile(r"Unsupported operand \d+|String is too long")

_CHUNK = 1 << 20
IN_MEMORY_BYTES = 64 << 20  # checkpoints up to this size are written from memory in one call


def save_checkpoint(
    path: str | os.PathLike, state_dict: Mapping[str, torch.Tensor], metadata: Mapping[str, str] | None = None
) -> Path:
    """Write ``state_dict`` to a .safetensors file atomically.

    Readers see either the old file or the complete new one: the data goes to a
    temporary file in the same directory, is fsynced, then renamed over ``path``. A checkpoint
    up to 64 MiB is serialised in memory and written in one call, so a write killed midway leaves
    no file but ``.NAME.PID.HEX.tmp`` (larger ones are streamed by safetensors, through a
    temporary file of its own).
    """
    path = Path(path)
    if path.suffix != SAFETENSORS_SUFFIX:
        raise CheckpointError(f"{path}: checkpoints are written only as {SAFETENSORS_SUFFIX} files")
    metadata = dict(metadata or {})
    for key, value in metadata.items():
        if not isinstance(key, str) or not isinstance(value, str):
            raise TypeError(
                f"metadata[{key!r}]: keys and values must be str, got {type(key).__name__}: {type(value).__name__}"
            )
    tensors = _prepare_for_save(state_dict)

    tmp = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}.tmp")
    # O_EXCL reserves the name; its mode is what the umask grants any new file.
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
    mode = stat.S_IMODE(os.fstat(fd).st_mode)
    small = sum(t.numel() * t.element_size() for t in tensors.values()) <= IN_MEMORY_BYTES
    try:
        with os.fdopen(fd, "wb") as f:
            if small:
                f.write(save_bytes(tensors, metadata=metadata or None))
        if not small:
            save_file(tensors, tmp, metadata=metadata or None)
            os.chmod(tmp, mode)  # safetensors leaves its files at 0o600
        _fsync(tmp, os.O_RDWR)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    _fsync(path.parent, os.O_RDONLY)
    return path


def atomic_write(path: str | os.PathLike, data: bytes, *, replace: bool = True) -> bool:
    """Write ``data`` to ``path`` so that readers see the old file or the whole new one, never a part:
    a fsynced temporary file in the same directory is renamed over ``path``, then the directory is
    fsynced. With ``replace=False`` an existing ``path`` is kept and False is returned (an atomic
    create-if-absent: of concurrent writers, the first one's file wins)."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}.tmp")
    try:
        with open(tmp, "xb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        if replace:
            os.replace(tmp, path)
        else:
            try:
                os.link(tmp, path)
            except FileExistsError:
                return False
    finally:
        tmp.unlink(missing_ok=True)
    fsync_dir(path.parent)
    return True


def fsync_dir(path: str | os.PathLike) -> None:
    """Make the renames into directory ``path`` durable."""
    _fsync(Path(path), os.O_RDONLY)


def load_checkpoint(
    path: str | os.PathLike, *, device: str | torch.device = "cpu", sha256: str | None = None,
    key: str | None = None,
) -> tuple[StateDict, dict[str, str]]:
    """Load tensors and metadata from a .safetensors or pickle-based checkpoint.

    Pickle checkpoints have no metadata; in a training checkpoint (``{"epoch", "model_state_dict",
    "optimizer_state_dict"}`` and the like) the model's state dict is found, or taken from ``key``
    (see :mod:`weightspace.training_checkpoint`), and nested dicts are flattened to '.'-joined
    names; what was taken is logged in one line. With ``sha256`` the file's bytes are checked
    against that checksum before they are decoded (read once, hashed, then parsed).
    """
    path = Path(path)
    device = torch.device(device)
    suffix = path.suffix.lower()
    if suffix not in SUPPORTED_SUFFIXES:
        raise CheckpointError(
            f"{path}: unsupported checkpoint suffix {suffix!r}; supported: {', '.join(SUPPORTED_SUFFIXES)}"
        )
    _require_file(path)
    if key is not None and suffix not in PICKLE_SUFFIXES:
        raise CheckpointError(f"{path}: --key {key!r} picks an entry of a training checkpoint "
                              f"({', '.join(PICKLE_SUFFIXES)}); a {suffix} file holds one state dict")
    data = None
    if sha256 is not None:
        with open(path, "rb") as f:
            data = f.read()
        actual = hashlib.sha256(data).hexdigest()
        if actual != sha256:
            raise CheckpointError(f"{path}: checksum mismatch (expected {sha256[:12]}..., file {actual[:12]}...): "
                                  "the file changed after it was indexed")
    if suffix == SAFETENSORS_SUFFIX:
        tensors, metadata = _load_safetensors(path, data)
    else:
        tensors, metadata = _load_pickle(path if data is None else io.BytesIO(data), path, key), {}
    # Tensors are read on the CPU, so that a device problem cannot pass for a corrupt file.
    if device.type != "cpu":
        tensors = {name: tensor.to(device) for name, tensor in tensors.items()}
    return tensors, metadata


def read_metadata(path: str | os.PathLike) -> dict[str, str]:
    path = Path(path)
    if path.suffix != SAFETENSORS_SUFFIX:
        raise CheckpointError(f"{path}: only {SAFETENSORS_SUFFIX} files carry metadata")
    _require_file(path)
    try:
        with safe_open(path, framework="pt") as f:
            return f.metadata() or {}
    except SafetensorError as e:
        raise CheckpointError(f"{path}: not a valid safetensors file: {_safetensors_problem(path, e)}") from e


def load_hf_folder(directory: str | os.PathLike) -> StateDict:
    """Load the weights of a Hugging Face model folder, single-file or sharded."""
    directory = Path(directory)
    if not directory.is_dir():
        raise CheckpointError(f"{directory}: no such folder")
    for name in _HF_WEIGHT_FILES:
        candidate = directory / name
        if candidate.is_file():
            if name.endswith(".index.json"):
                return _load_sharded(candidate)
            return load_checkpoint(candidate)[0]
    raise CheckpointError(f"{directory}: no model weights found; looked for {', '.join(_HF_WEIGHT_FILES)}")


def sha256_file(path: str | os.PathLike) -> str:
    path = Path(path)
    _require_file(path)
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def load_weights(path: str | os.PathLike, key: str | None = None) -> tuple[StateDict, dict[str, str]]:
    """Load a Hugging Face model folder (no metadata) or a single checkpoint file (``key``: see
    :func:`load_checkpoint`)."""
    path = Path(path)
    if path.is_dir():
        if key is not None:
            raise CheckpointError(f"{path}: --key {key!r} picks an entry of a training checkpoint file; "
                                  "this is a model folder")
        return load_hf_folder(path), {}
    return load_checkpoint(path, key=key)


def checkpoint_files(folder: str | os.PathLike) -> list[Path]:
    """The checkpoint files directly inside ``folder`` (suffixes in any case, as
    :func:`load_checkpoint` matches them), sorted by name: a folder of models, one per file."""
    return sorted(f for f in Path(folder).iterdir() if f.suffix.lower() in SUPPORTED_SUFFIXES and f.is_file())


def is_training_checkpoint_file(path: str | os.PathLike) -> bool:
    """Whether ``path`` names a pickle-based file, the kind ``key`` picks an entry of."""
    return Path(path).suffix.lower() in PICKLE_SUFFIXES


def _require_file(path: Path) -> None:
    if not path.exists():
        raise CheckpointError(f"{path}: no such file")
    if not path.is_file():
        raise CheckpointError(f"{path}: not a regular file")


def _fsync(path: Path, flags: int) -> None:
    fd = os.open(path, flags)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _prepare_for_save(state_dict: Mapping[str, torch.Tensor]) -> StateDict:
    """Detach every tensor, copying those safetensors refuses: non-contiguous ones and
    any that share storage with a tensor already kept (tied weights, views)."""
    prepared: StateDict = {}
    kept_storages = set()
    for name, tensor in state_dict.items():
        if not isinstance(name, str):
            raise TypeError(f"state_dict key {name!r} is a {type(name).__name__}, not a str")
        if not isinstance(tensor, torch.Tensor):
            raise TypeError(f"state_dict[{name!r}] is a {type(tensor).__name__}, not a torch.Tensor")
        tensor = tensor.detach()
        storage = (tensor.device, tensor.untyped_storage().data_ptr())
        if storage in kept_storages or not tensor.is_contiguous():
            tensor = tensor.clone(memory_format=torch.contiguous_format)
        else:
            kept_storages.add(storage)
        prepared[name] = tensor
    return prepared


def _load_safetensors(path: Path, data: bytes | None = None) -> tuple[StateDict, dict[str, str]]:
    """From the file (memory-mapped), or from its bytes when they were already read."""
    try:
        if data is None:
            with safe_open(path, framework="pt") as f:
                metadata = f.metadata() or {}
                tensors = {name: f.get_tensor(name) for name in f.keys()}
        else:
            tensors = safetensors.torch.load(data)  # checks the header, so reading it again is safe
            metadata = json.loads(data[8 : 8 + int.from_bytes(data[:8], "little")]).get("__metadata__") or {}
    except SafetensorError as e:
        raise CheckpointError(f"{path}: not a valid safetensors file: {_safetensors_problem(path, e)}") from e
    return tensors, metadata


def read_tensor_specs(path: str | os.PathLike) -> dict[str, tuple[tuple[int, ...], str]]:
    """Name → (shape, dtype as torch spells it) of a .safetensors file's tensors, from its header alone."""
    path = Path(path)
    header, _ = read_safetensors_header(path)
    try:
        return {name: (tuple(int(d) for d in entry["shape"]), _SAFETENSORS_DTYPES.get(entry["dtype"], entry["dtype"]))
                for name, entry in header.items() if name != "__metadata__"}
    except (TypeError, KeyError, ValueError, AttributeError) as e:
        raise CheckpointError(f"{path}: malformed header ({type(e).__name__}: {e})") from None


_SAFETENSORS_DTYPES = {"F16": "float16", "BF16": "bfloat16", "F32": "float32", "F64": "float64",
                       "I64": "int64", "I32": "int32", "I16": "int16", "I8": "int8", "U8": "uint8", "BOOL": "bool"}


def _safetensors_problem(path: Path, error: Exception) -> str:
    """Say what is wrong with a file safetensors refused, more precisely than its own message
    (reading no more of it than its checked header)."""
    try:
        header, held = read_safetensors_header(path)
    except CheckpointError as e:
        return str(e).removeprefix(f"{path}: ")
    try:
        data_len = max(
            (entry["data_offsets"][1] for name, entry in header.items() if name != "__metadata__"), default=0
        )
    except (ValueError, AttributeError, TypeError, KeyError, IndexError):
        return f"malformed header ({error})"
    if data_len != held:
        return f"header describes {data_len} bytes of tensor data but the file holds {held} (truncated or altered?)"
    return str(error)


def _load_pickle(source: Path | io.BytesIO, path: Path | None = None, key: str | None = None) -> StateDict:
    path = source if path is None else path
    try:
        loaded = torch.load(source, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        # `from None`: torch's own message advises retrying with weights_only=False.
        raise _refusal_error(path, str(e)) from None
    except Exception as e:
        kind = type(e).__name__ if type(e).__module__ == "builtins" else f"{type(e).__module__}.{type(e).__name__}"
        reason = str(e).splitlines()[0] if str(e) else "file ends unexpectedly (truncated?)"
        raise CheckpointError(f"{path}: not a valid PyTorch checkpoint: {kind}: {reason}") from e
    try:
        found = find_state_dict(loaded, key)
    except AmbiguousCheckpointError as e:
        raise AmbiguousCheckpointError(f"{path}: {e}", e.candidates) from None
    except CheckpointError as e:
        raise CheckpointError(f"{path}: {e}") from None
    if found.note:
        _log.info("%s", found.note, extra={"checkpoint": str(path)})
    return found.state_dict


def _refusal_error(path: Path, message: str) -> CheckpointError:
    """Tell a pickle that torch's weights-only unpickler cannot parse (a corrupt file)
    from one that asks for objects other than tensors (an unsafe file)."""
    malformed = _MALFORMED_PICKLE.search(message)
    if malformed:
        return CheckpointError(f"{path}: not a valid PyTorch checkpoint: unreadable pickle data ({malformed.group()})")
    refused = re.search(r"GLOBAL (\S*)", message)
    if refused and _ends_inside_name(path, refused.group(1)):
        return CheckpointError(f"{path}: not a valid PyTorch checkpoint: the file ends inside its pickle (truncated?)")
    asks_for = f" (it asks for {refused.group(1)})" if refused else ""
    return UnsafeCheckpointError(
        f"{path}: the file tries to load objects other than tensors{asks_for}; weightspace never executes "
        "checkpoint code, so it was not loaded. Re-save its tensors as .safetensors where the file is trusted."
    )


def _ends_inside_name(path: Path, qualified_name: str) -> bool:
    """Whether a truncated legacy (non-zip) file was cut inside the GLOBAL name torch refused.

    torch reads the name up to a newline and drops its last byte, so a name cut off by the
    end of the file is reported one byte short of the file's tail. In a complete pickle more
    opcodes always follow a GLOBAL."""
    name = qualified_name.rpartition(".")[2].encode()
    if not name:
        return True
    with open(path, "rb") as f:
        f.seek(0, os.SEEK_END)
        f.seek(max(0, f.tell() - len(name) - 1))
        tail = f.read()
    # A name that ends in a newline was read whole: the file goes on (or stops) after a complete
    # GLOBAL, so it asked for that object; it is not cut off.
    return tail[:-1] == name and tail[-1:] != b"\n"


def _load_sharded(index_path: Path) -> StateDict:
    """Load the shards an index lists, each once, and check every indexed tensor is where it says."""
    weight_map = read_index(index_path)
    tensors: StateDict = {}
    for shard in sorted(set(weight_map.values())):
        shard_tensors, _ = load_checkpoint(index_path.parent / shard)
        expected = [name for name, s in weight_map.items() if s == shard]
        missing = [name for name in expected if name not in shard_tensors]
        if missing:
            raise CheckpointError(
                f"{index_path}: shard {shard} lacks {len(missing)} tensor(s) the index puts there: "
                f"{', '.join(missing[:5])}{', ...' if len(missing) > 5 else ''}"
            )
        tensors.update((name, shard_tensors[name]) for name in expected)
    return tensors
