"""Safetensors files and Hugging Face folders read lazily and written shard by shard: round trips
through safetensors' and weightspace's own readers, writes in any order from several threads, nothing
left behind by an aborted write, and malformed headers refused in one line."""

import json
from concurrent.futures import ThreadPoolExecutor

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import save_file

from weightspace.errors import CheckpointError
from weightspace.io import load_hf_folder
from weightspace.shards import SafetensorsSource, ShardWriter, TensorSpec, shard_plan


def _tensors():
    g = torch.Generator().manual_seed(0)
    return {"embed.weight": torch.randn(40, 8, generator=g).bfloat16(), "layers.0.w": torch.randn(8, 8, generator=g),
            "layers.0.b": torch.randn(8, generator=g).half(), "layers.1.w": torch.randn(8, 8, generator=g).double(),
            "steps": torch.tensor(7), "empty": torch.zeros(0, 3), "head.weight": torch.randn(40, 8, generator=g)}


def test_sharded_write_round_trips_through_safetensors_and_the_lazy_reader(tmp_path):
    tensors = _tensors()
    specs = [(n, TensorSpec(tuple(t.shape), t.dtype)) for n, t in tensors.items()]
    writer = ShardWriter(tmp_path, specs, max_shard_bytes=700, metadata={"note": "x"})
    with ThreadPoolExecutor(3) as pool:  # any order, several threads
        list(pool.map(lambda n: writer.write(n, tensors[n]), reversed(list(tensors))))
    written = writer.close()
    assert len(written) > 2 and (tmp_path / "model.safetensors.index.json") in written
    index = json.loads((tmp_path / "model.safetensors.index.json").read_text())
    assert index["metadata"]["total_size"] == sum(t.numel() * t.element_size() for t in tensors.values())
    assert not list(tmp_path.glob(".*.tmp"))
    for shard in set(index["weight_map"].values()):
        with safe_open(tmp_path / shard, "pt") as f:
            assert f.metadata() == {"format": "pt", "note": "x"}
            for name in f.keys():  # noqa: SIM118 (a safe_open handle is not iterable)
                assert torch.equal(f.get_tensor(name), tensors[name])
    loaded = load_hf_folder(tmp_path)
    assert list(loaded) == list(tensors) and all(torch.equal(loaded[n], tensors[n]) for n in tensors)
    source = SafetensorsSource(tmp_path)
    assert source.specs == dict(specs)
    assert all(torch.equal(t, tensors[n]) for n, t in source.read(["head.weight", "steps"]).items())


def test_one_shard_is_model_safetensors_without_an_index(tmp_path):
    tensors = _tensors()
    writer = ShardWriter(tmp_path, [(n, TensorSpec(tuple(t.shape), t.dtype)) for n, t in tensors.items()],
                         max_shard_bytes=0)
    for n, t in tensors.items():
        writer.write(n, t)
    assert writer.close() == [tmp_path / "model.safetensors"]
    assert SafetensorsSource(tmp_path).specs["layers.1.w"] == TensorSpec((8, 8), torch.float64)


def test_missing_tensor_or_wrong_shape_and_abort_leave_nothing(tmp_path):
    specs = [("a", TensorSpec((2, 2), torch.float32)), ("b", TensorSpec((3,), torch.float32))]
    writer = ShardWriter(tmp_path, specs, max_shard_bytes=0)
    with pytest.raises(CheckpointError, match="expected shape"):
        writer.write("a", torch.zeros(2, 3))
    writer.write("a", torch.zeros(2, 2))
    with pytest.raises(CheckpointError, match="never written: b"):
        writer.close()
    assert list(tmp_path.iterdir()) == []


def test_shard_plan_cuts_by_bytes_and_keeps_large_tensors_alone():
    specs = [(str(i), TensorSpec((n,), torch.uint8)) for i, n in enumerate([4, 4, 10, 1, 1])]
    assert shard_plan(specs, 8) == [["0", "1"], ["2"], ["3", "4"]]
    assert shard_plan(specs, 0) == [["0", "1", "2", "3", "4"]]


def test_malformed_headers_are_one_line(tmp_path):
    path = tmp_path / "m.safetensors"
    save_file({"w": torch.zeros(4, 4)}, str(path))
    data = path.read_bytes()
    assert data.count(b'"shape":[4,4]') == 1
    path.write_bytes(data.replace(b'"shape":[4,4]', b'"shape":[4,5]'))  # no longer fits its 64 bytes
    with pytest.raises(CheckpointError, match=r"tensor 'w': shape \[4, 5\].*do not fit") as e:
        SafetensorsSource(path)
    assert "\n" not in str(e.value)
    (tmp_path / "folder").mkdir()
    with pytest.raises(CheckpointError, match="no model.safetensors"):
        SafetensorsSource(tmp_path / "folder")
