"""Safetensors files and Hugging Face folders, read tensor by tensor and written shard by shard.

Reading: every header (and a folder's index) is checked once, through the bounded readers of
:mod:`weightspace.safe_input`; each read then opens its shard memory-mapped (``safe_open``) and
closes it again, so a tensor's pages stay mapped only while the tensor is in use and a folder larger
than memory is never resident at once.

Writing: the names, shapes and dtypes of all tensors are known before any is computed, so every
shard's header is written first and each tensor goes to its offset as soon as it exists, then is
released. Shards are temporary files until :meth:`ShardWriter.close` renames them, so readers never
see a half-written model.
"""

from __future__ import annotations

import json
import math
import os
import secrets
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors import SafetensorError, safe_open

from .errors import CheckpointError, InputError
from .safe_input import inside_root, read_json, read_safetensors_header

DTYPES = {"F64": torch.float64, "F32": torch.float32, "F16": torch.float16, "BF16": torch.bfloat16,
          "I64": torch.int64, "I32": torch.int32, "I16": torch.int16, "I8": torch.int8, "U8": torch.uint8,
          "BOOL": torch.bool}
DTYPE_NAMES = {v: k for k, v in DTYPES.items()}
INDEX_NAME = "model.safetensors.index.json"
SINGLE_NAME = "model.safetensors"


@dataclass(frozen=True)
class TensorSpec:
    shape: tuple[int, ...]
    dtype: torch.dtype

    @property
    def numel(self) -> int:
        return math.prod(self.shape)

    @property
    def nbytes(self) -> int:
        return self.numel * self.dtype.itemsize


def header_specs(path: Path) -> dict[str, TensorSpec]:
    """Name → spec of a .safetensors file's tensors, from its checked header: known dtypes, shapes of
    non-negative integers, and data offsets that fit the shape and lie inside the file."""
    header, held = read_safetensors_header(path)
    specs = {}
    for name, entry in header.items():
        if name == "__metadata__":
            continue
        try:
            dtype = DTYPES[entry["dtype"]]
            shape = tuple(entry["shape"])
            begin, end = entry["data_offsets"]
            ok = all(isinstance(d, int) and d >= 0 for d in shape) and isinstance(begin, int) and isinstance(end, int)
        except (KeyError, TypeError, ValueError):
            raise CheckpointError(f"{path}: tensor {name!r}: malformed header entry {entry!r}") from None
        if not ok or not 0 <= begin <= end <= held or end - begin != math.prod(shape) * dtype.itemsize:
            raise CheckpointError(f"{path}: tensor {name!r}: shape {entry['shape']} and data offsets "
                                  f"{entry['data_offsets']} do not fit its {held} bytes of tensor data")
        specs[name] = TensorSpec(shape, dtype)
    return specs


def read_index(index_path: Path) -> dict[str, str]:
    """A Hugging Face index's ``weight_map`` (tensor name → shard file), checked: a non-empty mapping
    of names to plain file names that exist inside the index's folder (through symlinks too)."""
    index = read_json(index_path, "index file", error=CheckpointError)
    weight_map = index.get("weight_map") if isinstance(index, dict) else None
    if not isinstance(weight_map, dict) or not weight_map:
        raise CheckpointError(f"{index_path}: 'weight_map' must be a non-empty mapping of tensor name to shard file")
    outside = sorted({repr(s) for s in weight_map.values() if not isinstance(s, str) or Path(s).name != s})
    if outside:
        raise CheckpointError(f"{index_path}: shard names must be plain file names, got {', '.join(outside[:5])}")
    shards = sorted(set(weight_map.values()))
    for shard in shards:
        try:
            inside_root(index_path.parent, shard, f"{index_path}: shard")
        except InputError as e:
            raise CheckpointError(str(e)) from None
    absent = [s for s in shards if not (index_path.parent / s).is_file()]
    if absent:
        raise CheckpointError(f"{index_path}: missing shard file(s): {', '.join(absent)}")
    return weight_map


class SafetensorsSource:
    """The tensors of one .safetensors file or of a Hugging Face folder of them (single file or
    sharded with an index), read lazily: ``specs`` from the checked headers, tensors on demand."""

    def __init__(self, path: str | os.PathLike):
        path = Path(path)
        self.path = path
        if path.is_dir():
            self.folder = path
            if (path / INDEX_NAME).is_file():
                files = self._sharded(path / INDEX_NAME)
            elif (path / SINGLE_NAME).is_file():
                files = self._single(path / SINGLE_NAME)
            else:
                raise CheckpointError(f"{path}: no {SINGLE_NAME} or {INDEX_NAME} in this folder")
        else:
            if not path.is_file():
                raise CheckpointError(f"{path}: no such file")
            self.folder = None
            files = self._single(path)
        self.files: dict[str, Path] = files

    def _single(self, file: Path) -> dict[str, Path]:
        self.specs = header_specs(file)
        return dict.fromkeys(self.specs, file)

    def _sharded(self, index_path: Path) -> dict[str, Path]:
        weight_map = read_index(index_path)
        specs: dict[str, TensorSpec] = {}
        for shard in sorted(set(weight_map.values())):
            held = header_specs(index_path.parent / shard)
            missing = [n for n, s in weight_map.items() if s == shard and n not in held]
            if missing:
                raise CheckpointError(f"{index_path}: shard {shard} lacks {len(missing)} tensor(s) the index puts "
                                      f"there: {', '.join(missing[:5])}{', ...' if len(missing) > 5 else ''}")
            specs.update((n, held[n]) for n, s in weight_map.items() if s == shard)
        self.specs = {n: specs[n] for n in weight_map}
        return {n: index_path.parent / s for n, s in weight_map.items()}

    @staticmethod
    def is_source(path: str | os.PathLike) -> bool:
        """Whether ``path`` is a .safetensors file or a folder this class reads."""
        path = Path(path)
        if path.is_dir():
            return (path / INDEX_NAME).is_file() or (path / SINGLE_NAME).is_file()
        return path.suffix == ".safetensors"

    def read(self, names: Sequence[str]) -> dict[str, torch.Tensor]:
        """The named tensors, each backed by its shard's memory map until it is released."""
        out = {}
        by_file: dict[Path, list[str]] = {}
        for name in names:
            if name not in self.files:
                raise CheckpointError(f"{self.path}: has no tensor {name!r}")
            by_file.setdefault(self.files[name], []).append(name)
        for file, group in by_file.items():
            try:
                with safe_open(file, framework="pt") as f:
                    out.update((n, f.get_tensor(n)) for n in group)
            except SafetensorError as e:
                raise CheckpointError(f"{file}: not a valid safetensors file: {e}") from None
        return {n: out[n] for n in names}


def shard_plan(specs: Iterable[tuple[str, TensorSpec]], max_bytes: int) -> list[list[str]]:
    """Names in order, cut into shards of at most ``max_bytes`` (a larger tensor gets a shard of its
    own; ``max_bytes <= 0``: one shard)."""
    shards: list[list[str]] = [[]]
    size = 0
    for name, spec in specs:
        if shards[-1] and max_bytes > 0 and size + spec.nbytes > max_bytes:
            shards.append([])
            size = 0
        shards[-1].append(name)
        size += spec.nbytes
    return shards


def shard_names(count: int) -> list[str]:
    """Hugging Face's file names: ``model.safetensors``, or ``model-00001-of-00003.safetensors``, ..."""
    if count == 1:
        return [SINGLE_NAME]
    return [f"model-{i + 1:05d}-of-{count:05d}.safetensors" for i in range(count)]


class ShardWriter:
    """Writes tensors whose specs are fixed up front into the shards of a Hugging Face folder.

    ``write(name, tensor)`` may be called from several threads, in any order; ``close()`` checks that
    every tensor was written, syncs the files, renames them into place and writes the index (when
    there is more than one shard). ``abort()`` removes the temporary files.
    """

    def __init__(self, folder: str | os.PathLike, specs: Sequence[tuple[str, TensorSpec]], *, max_shard_bytes: int,
                 metadata: Mapping[str, str] | None = None, single_name: str = SINGLE_NAME):
        self.folder = Path(folder)
        self.specs = dict(specs)
        plan = shard_plan(specs, max_shard_bytes)
        self.names = [single_name] if len(plan) == 1 else shard_names(len(plan))
        self._where: dict[str, tuple[int, int]] = {}  # name -> (fd, absolute offset)
        self._left = set(self.specs)
        self._temps: list[Path] = []
        self._fds: list[int] = []
        tag = f"{os.getpid()}.{secrets.token_hex(4)}"
        try:
            for final, names in zip(self.names, plan):
                header = {"__metadata__": {"format": "pt", **(metadata or {})}}
                offset = 0
                for n in names:
                    spec = self.specs[n]
                    header[n] = {"dtype": DTYPE_NAMES[spec.dtype], "shape": list(spec.shape),
                                 "data_offsets": [offset, offset + spec.nbytes]}
                    offset += spec.nbytes
                raw = json.dumps(header, separators=(",", ":")).encode()
                raw += b" " * (-len(raw) % 8)
                temp = self.folder / f".{final}.{tag}.tmp"
                fd = os.open(temp, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o666)
                self._temps.append(temp)
                self._fds.append(fd)
                _write_all(fd, len(raw).to_bytes(8, "little") + raw, 0)
                start = 8 + len(raw)
                os.ftruncate(fd, start + offset)
                for n in names:
                    self._where[n] = (fd, start + header[n]["data_offsets"][0])
        except BaseException:
            self.abort()
            raise
        self._plan = plan

    def write(self, name: str, tensor: torch.Tensor) -> None:
        spec = self.specs[name]
        if tuple(tensor.shape) != spec.shape or tensor.dtype != spec.dtype:
            raise CheckpointError(f"tensor {name!r}: expected shape {spec.shape} and {spec.dtype}, got "
                                  f"{tuple(tensor.shape)} and {tensor.dtype}")
        fd, offset = self._where[name]
        data = tensor.detach().cpu().contiguous().reshape(-1)
        if spec.numel:
            _write_all(fd, data.view(torch.uint8).numpy().data, offset)
        self._left.discard(name)

    def close(self) -> list[Path]:
        """The shard files (and index) in place; returns the paths written."""
        if self._left:
            self.abort()
            left = sorted(self._left)
            raise CheckpointError(f"{self.folder}: {len(left)} tensor(s) were never written: {', '.join(left[:5])}")
        try:
            for fd in self._fds:
                os.fsync(fd)
                os.close(fd)
            self._fds = []
            written = []
            for temp, final in zip(self._temps, self.names):
                os.replace(temp, self.folder / final)
                written.append(self.folder / final)
            self._temps = []
            if len(self.names) > 1:
                total = sum(s.nbytes for s in self.specs.values())
                index = {"metadata": {"total_size": total},
                         "weight_map": {n: self.names[i] for i, names in enumerate(self._plan) for n in names}}
                temp = self.folder / f".{INDEX_NAME}.{os.getpid()}.tmp"
                temp.write_text(json.dumps(index, indent=2) + "\n")
                os.replace(temp, self.folder / INDEX_NAME)
                written.append(self.folder / INDEX_NAME)
        except BaseException:
            self.abort()
            raise
        return written

    def abort(self) -> None:
        for fd in self._fds:
            os.close(fd)
        self._fds = []
        for temp in self._temps:
            temp.unlink(missing_ok=True)
        self._temps = []


def _write_all(fd: int, data, offset: int) -> None:
    view = memoryview(data).cast("B")
    while len(view):
        n = os.pwrite(fd, view, offset)
        view, offset = view[n:], offset + n
