"""Zoo store: exact round trips, self-describing files, queries, integrity checks, concurrent writers."""

from __future__ import annotations

import json
import multiprocessing as mp

import pytest
import torch
from safetensors.torch import load_file

from weightspace.errors import LayoutError, OutputError, ZooError
from weightspace.io import read_metadata, sha256_file
from weightspace.nets import CNN, MLP
from weightspace.zoo import Zoo

ARCH = MLP(16, (8,), 4)


def make_zoo(root, arch=ARCH, **kwargs) -> Zoo:
    return Zoo.create(root, arch.space, architecture=arch.config, task={"dataset": "toy"}, **kwargs)


def record(i: int, **extra) -> dict:
    return {
        "run_id": f"run{i % 3}",
        "seed": i,
        "epoch": i % 4,
        "step": 10 * (i % 4),
        "hparams": {"lr": 0.01 * (1 + i % 2), "optimizer": "adam" if i % 2 else "sgd"},
        "test_acc": i / 10,
        "train_loss": 1.0 - i / 20,
        **extra,
    }


def fill(zoo: Zoo, n: int, arch=ARCH, seed0: int = 0) -> torch.Tensor:
    w = arch.init(range(seed0, seed0 + n))
    assert zoo.add_many((f"m{i:03d}", w[i], record(i)) for i in range(n)) == n
    return w


# --------------------------------------------------------------------------- round trips


@pytest.mark.parametrize("arch", [ARCH, CNN(1, 8)], ids=["mlp", "cnn-bn"])
def test_add_load_round_trip_is_exact(tmp_path, arch):
    zoo = make_zoo(tmp_path / "zoo", arch)
    w = arch.init(range(5))
    w += 0.01 * torch.randn_like(w)  # BatchNorm constants perturbed too, so every coordinate is distinct data
    assert zoo.add("a", w[0], record(0))
    assert zoo.add("b", arch.space.unflatten(w[1]), record(1))  # a state dict works as well
    module = arch.module()
    module.load_state_dict(arch.space.unflatten(w[2]))
    assert zoo.add("c", module.state_dict(), record(2))  # with BatchNorm's integer num_batches_tracked
    assert zoo.add_many([("d", w[3], record(3)), ("e", w[4], record(4))]) == 2

    loaded, df = Zoo.open(tmp_path / "zoo").load(ids=["a", "b", "c", "d", "e"])
    assert list(df["model_id"]) == ["a", "b", "c", "d", "e"]
    assert loaded.dtype == w.dtype and torch.equal(loaded, w)
    assert len(zoo) == 5 and zoo.ids() == {"a", "b", "c", "d", "e"}


def test_load_follows_index_order(tmp_path):
    zoo = make_zoo(tmp_path)
    w = fill(zoo, 9)
    loaded, df = zoo.load()
    keys = list(zip(df["run_id"], df["epoch"], df["step"], df["model_id"]))
    assert keys == sorted(keys)
    for i, model_id in enumerate(df["model_id"]):
        assert torch.equal(loaded[i], w[int(model_id[1:])])


def test_a_zoo_mixing_epoch_and_step_checkpoints_loads_whole(tmp_path):
    """Epoch checkpoints have no step filter and step checkpoints no epoch (NULL): the index check sees
    SQLite's own values, not pandas' floats, so the whole zoo loads and the columns stay integers."""
    zoo = make_zoo(tmp_path)
    w = ARCH.init(range(2))
    zoo.add_many([("by-epoch", w[0], {"run_id": "a", "seed": 0, "epoch": 2, "step": None}),
                  ("by-step", w[1], {"run_id": "b", "seed": 1, "epoch": None, "step": 7})])
    loaded, df = zoo.load()
    assert torch.equal(loaded, w)
    assert df["epoch"].tolist()[0] == 2 and df["epoch"].isna().tolist() == [False, True]
    assert str(df["epoch"].dtype) == "Int64" and df["step"].tolist()[1] == 7


def test_file_metadata_describes_the_model(tmp_path):
    zoo = make_zoo(tmp_path)
    w = ARCH.init([7])[0]
    zoo.add("solo", w, record(7, note="hello"))
    path = tmp_path / "models" / "solo.safetensors"
    meta = read_metadata(path)
    assert meta["model_id"] == "solo" and meta["run_id"] == "run1" and meta["seed"] == "7"
    assert meta["epoch"] == "3" and meta["step"] == "30" and meta["val_acc"] == "null"
    assert json.loads(meta["hparams"]) == {"lr": 0.02, "optimizer": "adam"}
    assert json.loads(meta["extra"]) == {"note": "hello"}
    assert float(meta["test_acc"]) == 0.7
    assert meta["layout"] == ARCH.space.to_json()
    assert json.loads(meta["architecture"]) == json.loads(json.dumps(ARCH.config))
    tensors = load_file(path)
    assert set(tensors) == set(ARCH.space.names)
    assert torch.equal(ARCH.space.flatten(tensors), w)
    assert zoo.index()["sha256"][0] == sha256_file(path)


# --------------------------------------------------------------------------- queries


def test_where_filters_and_hparam_columns(tmp_path):
    zoo = make_zoo(tmp_path)
    fill(zoo, 12)
    df = zoo.index("epoch = ? AND test_acc > ?", (1, 0.4))
    assert sorted(df["model_id"]) == ["m005", "m009"]
    assert {"hp_lr", "hp_optimizer", "hparams", "extra", "sha256"} <= set(df.columns)
    assert list(df["hp_optimizer"]) == ["adam", "adam"] and list(df["hp_lr"]) == [0.02, 0.02]
    by_json = zoo.index("json_extract(hparams, '$.optimizer') = ?", ("sgd",))
    assert len(by_json) == 6 and set(by_json["hp_optimizer"]) == {"sgd"}
    loaded, sub = zoo.load("run_id = ?", ("run2",))
    assert loaded.shape == (4, ARCH.space.num_params) and set(sub["run_id"]) == {"run2"}
    assert len(zoo.index("seed > 100")) == 0


def test_bad_where_clause_names_clause_and_columns(tmp_path):
    zoo = make_zoo(tmp_path)
    fill(zoo, 2)
    with pytest.raises(ZooError, match=r"hp_lr > 0.*test_acc"):
        zoo.index("hp_lr > 0")
    with pytest.raises(ZooError, match="epoch = "):
        zoo.index("epoch = ?", ())  # missing parameter


def test_load_by_ids_rejects_unknown(tmp_path):
    zoo = make_zoo(tmp_path)
    fill(zoo, 3)
    with pytest.raises(ZooError, match="nope"):
        zoo.load(ids=["m000", "nope"])


# --------------------------------------------------------------------------- adding


def test_existing_id_returns_false_and_keeps_file(tmp_path):
    zoo = make_zoo(tmp_path)
    w = ARCH.init([1, 2])
    assert zoo.add("x", w[0], record(1))
    path = tmp_path / "models" / "x.safetensors"
    before = path.read_bytes()
    assert not zoo.add("x", w[1], record(2))
    assert zoo.add_many([("x", w[1], record(2)), ("y", w[1], record(2)), ("y", w[0], record(1))]) == 1
    assert path.read_bytes() == before
    assert torch.equal(zoo.load(ids=["x", "y"])[0], w[[0, 1]])
    assert len(zoo) == 2 and not list((tmp_path / ".staging").iterdir())


def test_race_loser_discards_its_file(tmp_path, monkeypatch):
    """A writer that passed the "already indexed?" check but lost the insert keeps the winner's file."""
    zoo = make_zoo(tmp_path)
    w = ARCH.init([1, 2])
    zoo.add("x", w[0], record(1))
    before = (tmp_path / "models" / "x.safetensors").read_bytes()
    monkeypatch.setattr(Zoo, "_existing", lambda self, ids: set())
    assert not zoo.add("x", w[1], record(2))
    assert (tmp_path / "models" / "x.safetensors").read_bytes() == before
    assert zoo.verify() == [] and not list((tmp_path / ".staging").iterdir())


def test_wrong_weights_raise_layout_error_and_write_nothing(tmp_path):
    zoo = make_zoo(tmp_path)
    p = ARCH.space.num_params
    with pytest.raises(LayoutError, match=str(p)):
        zoo.add("short", torch.zeros(p - 1), record(0))
    with pytest.raises(LayoutError):
        zoo.add("batched", torch.zeros(1, p), record(0))
    bad = ARCH.space.unflatten(torch.zeros(p))
    bad["layers.0.weight"] = torch.zeros(3, 3)
    with pytest.raises(LayoutError, match="layers.0.weight"):
        zoo.add_many([("fine", torch.zeros(p), record(0)), ("bad", bad, record(0))])
    assert len(zoo) == 0 and not list((tmp_path / "models").iterdir())


def test_bad_ids_and_records_raise_value_error(tmp_path):
    zoo = make_zoo(tmp_path)
    w = torch.zeros(ARCH.space.num_params)
    for bad in ["../x", ".hidden", "a/b", "", "sp ace"]:
        with pytest.raises(ValueError, match="safe file name"):
            zoo.add(bad, w, record(0))
    with pytest.raises(ValueError, match="seed"):
        zoo.add("ok", w, {"run_id": "r"})
    with pytest.raises(ValueError, match="sha256"):
        zoo.add("ok", w, {**record(0), "sha256": "x"})
    with pytest.raises(ValueError, match="extra"):
        zoo.add("ok", w, {**record(0), "blob": object()})
    assert len(zoo) == 0


# --------------------------------------------------------------------------- creating and opening


def test_create_existing_zoo_keeps_info_and_checks_layout(tmp_path):
    make_zoo(tmp_path, config={"epochs": 3})
    again = Zoo.create(tmp_path, ARCH.space, architecture={}, task={}, config={"epochs": 99})
    assert again.info["config"] == {"epochs": 3} and again.info["architecture"] == json.loads(json.dumps(ARCH.config))
    other = MLP(16, (9,), 4)
    with pytest.raises(ZooError, match=rf"{ARCH.space.name}.*{other.space.name}"):
        make_zoo(tmp_path, other)
    assert Zoo.open(tmp_path).space == ARCH.space


def test_open_non_zoo_names_path(tmp_path):
    with pytest.raises(ZooError, match=str(tmp_path / "empty")):
        Zoo.open(tmp_path / "empty")


def test_verify_reports_missing_corrupt_and_orphans(tmp_path):
    zoo = make_zoo(tmp_path)
    fill(zoo, 4)
    models = tmp_path / "models"
    (models / "m001.safetensors").unlink()
    data = bytearray((models / "m002.safetensors").read_bytes())
    data[-1] ^= 0xFF  # a tensor byte: still a valid safetensors file, but not the indexed one
    (models / "m002.safetensors").write_bytes(bytes(data))
    (models / "ghost.safetensors").write_bytes((models / "m000.safetensors").read_bytes())
    (models / ".m003.safetensors.123.abcd.tmp").write_bytes(b"partial")

    with pytest.raises(ZooError) as err:
        Zoo.open(tmp_path, verify=True)
    message = str(err.value)
    assert "m001" in message and "missing" in message
    assert "m002" in message and "checksum" in message
    assert "ghost" not in message  # orphans are informational

    problems = zoo.verify()
    assert len(problems) == 3
    assert [p for p in problems if p.startswith("orphan")] == [problems[-1]] and "ghost.safetensors" in problems[-1]
    with pytest.raises(ZooError, match=r"m001.*models/m001.safetensors"):
        zoo.load()


def test_orphan_alone_does_not_fail_open(tmp_path):
    zoo = make_zoo(tmp_path)
    fill(zoo, 2)
    (tmp_path / "models" / "ghost.safetensors").write_bytes(b"junk")
    assert Zoo.open(tmp_path, verify=True).verify() == [
        "orphan: models/ghost.safetensors is not in the index (a write interrupted before indexing); "
        "delete it or add the model again"
    ]


# --------------------------------------------------------------------------- concurrency


def _writer(root: str, worker: int, barrier, added) -> None:
    zoo = Zoo.open(root)
    w = ARCH.init(range(100 * worker, 100 * worker + 50))  # each writer has its own weights
    barrier.wait()
    shared = [(f"shared{i}", w[40 + i], {"run_id": "shared", "seed": worker, "step": i}) for i in range(10)]
    n = zoo.add_many(shared[:5])
    n += sum(zoo.add(*shared[i]) for i in range(5, 10))
    n += sum(zoo.add(f"w{worker}-{i:02d}", w[i], {"run_id": f"w{worker}", "seed": i, "step": i}) for i in range(40))
    added.put(n)


def test_concurrent_writers_keep_one_row_per_id(tmp_path):
    make_zoo(tmp_path)
    ctx = mp.get_context("spawn")
    barrier, added = ctx.Barrier(2), ctx.Queue()
    procs = [ctx.Process(target=_writer, args=(str(tmp_path), k, barrier, added)) for k in (1, 2)]
    for p in procs:
        p.start()
    counts = [added.get(timeout=240) for _ in procs]
    for p in procs:
        p.join(timeout=60)
    assert [p.exitcode for p in procs] == [0, 0]
    assert sum(counts) == 90  # return values stay honest when writers race on an id

    zoo = Zoo.open(tmp_path, verify=True)
    assert len(zoo) == 90
    assert zoo.verify() == []
    assert len(list((tmp_path / "models").iterdir())) == 90
    assert not list((tmp_path / ".staging").iterdir())
    weights, df = zoo.load()
    for model_id, seed, vec in zip(df["model_id"], df["seed"], weights):
        writer, i = (int(seed), int(model_id[6:]) + 40) if model_id.startswith("shared") else (
            int(model_id[1]), int(model_id.split("-")[1]))
        assert torch.equal(vec, ARCH.init([100 * writer + i])[0]), model_id


# --------------------------------------------------------------------------- export


def test_export_round_trip(tmp_path):
    zoo = make_zoo(tmp_path / "zoo", config={"lr": 0.1})
    fill(zoo, 6)
    out = zoo.export(tmp_path / "out", "epoch >= ?", (1,))
    weights, df = zoo.load("epoch >= ?", (1,))
    exported = load_file(out / "weights.safetensors")["weights"]
    assert torch.equal(exported, weights)
    meta = read_metadata(out / "weights.safetensors")
    assert json.loads(meta["model_ids"]) == list(df["model_id"])
    assert meta["layout"] == zoo.space.to_json()
    csv = (out / "models.csv").read_text().splitlines()
    assert len(csv) == len(df) + 1 and csv[0].startswith("model_id,")
    assert json.loads((out / "zoo.json").read_text())["config"] == {"lr": 0.1}

    zoo.export(out)  # overwriting an earlier export is fine
    assert load_file(out / "weights.safetensors")["weights"].shape[0] == 6
    (tmp_path / "busy").mkdir()
    (tmp_path / "busy" / "notes.txt").write_text("mine")
    with pytest.raises(OutputError, match="busy"):
        zoo.export(tmp_path / "busy")
    with pytest.raises(ZooError, match="nothing exported"):
        zoo.export(tmp_path / "none", "seed < 0")


def test_files_staged_by_one_writer_are_indexed_by_another(tmp_path):
    """The Ray backend's split: workers stage files without reading the index, one writer indexes
    them; ids already indexed are ignored and their staged files removed."""
    worker, indexer = make_zoo(tmp_path / "zoo"), Zoo.open(tmp_path / "zoo")
    w = fill(indexer, 2)
    w2 = ARCH.init(range(10, 13))
    staged = worker.stage_many([(f"m{i:03d}", w2[i], record(i)) for i in range(3)], skip_indexed=False)
    assert len(staged) == 3 and all(p.is_file() for p, _ in staged) and len(indexer) == 2
    assert indexer.commit_staged(staged) == 1  # m000 and m001 were there already
    assert not any(p.exists() for p, _ in staged)
    weights, df = indexer.load()
    assert list(df["model_id"]) == ["m000", "m001", "m002"]
    assert torch.equal(weights[:2], w[:2]) and torch.equal(weights[2], w2[2])
    assert indexer.verify() == [] and not any((tmp_path / "zoo" / ".staging").iterdir())
    assert torch.equal(indexer.load_rows(df.iloc[[2, 0]]), weights[[2, 0]])


def test_files_a_dead_writer_staged_are_dropped_once_their_ids_are_indexed(tmp_path):
    """A writer killed after staging leaves files (and a temp file, if killed mid-write); once another
    attempt indexed those ids they are dropped, while staged files of ids not indexed yet stay."""
    zoo = make_zoo(tmp_path / "zoo")
    w = ARCH.init(range(4))
    dead = zoo.stage_many([(f"m.{i}", w[i], record(i)) for i in range(3)], skip_indexed=False)
    half_written = dead[0][0].with_name(f".{dead[0][0].name}.4242.0123abcd.tmp")
    half_written.write_bytes(b"partial")
    stranger = tmp_path / "zoo" / ".staging" / "notes.txt"  # not a staged checkpoint: never touched
    stranger.write_text("x")
    assert zoo.add_many([(f"m.{i}", w[i], record(i)) for i in range(2)]) == 2  # the retry indexes m.0, m.1
    removed = zoo.drop_stale_staged()
    assert sorted(removed) == sorted(f".staging/{p.name}" for p in (dead[0][0], dead[1][0], half_written))
    assert dead[2][0].is_file() and stranger.is_file()  # m.2 is not indexed yet: it may still be committed
    assert zoo.commit_staged(dead[2:]) == 1 and zoo.drop_stale_staged() == []
    stranger.unlink()
    assert zoo.verify() == [] and len(zoo) == 3
