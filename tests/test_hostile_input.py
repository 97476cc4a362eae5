"""Issue 9: each input that once broke weightspace (a traceback, a silent reinterpretation, memory or
disk blown up, a file read or written where it should not be), reproduced, and the one-line refusal
or correct behaviour it gets now."""

from __future__ import annotations

import gzip
import json
import shutil
import sqlite3
import struct
import subprocess
import sys
import tracemalloc
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from safetensors.torch import save_file

from weightspace.cli import main
from weightspace.errors import CheckpointError, IdxFormatError, UnsafeCheckpointError, ZooError
from weightspace.io import load_checkpoint, load_hf_folder
from weightspace.safe_input import OUTPUT_MARKER, read_idx
from weightspace.zoo import Zoo
from weightspace.zoo.store import COLUMN_TYPES

CONFIG = {
    "name": "tiny",
    "dataset": {"name": "digits", "seed": 0},
    "architecture": {"kind": "mlp", "widths": [8]},
    "population": {"runs": 2, "seed": 0, "hparams": {"lr": 0.05, "epochs": 1}},
    "training": {"chunk_size": 2},
}


def _cfg(tmp_path: Path, cfg=CONFIG, name="cfg.yaml") -> Path:
    path = tmp_path / name
    path.write_text(cfg if isinstance(cfg, str) else yaml.safe_dump(cfg))
    return path


def refused(capsys, argv, *needles) -> str:
    """Run the CLI; it must exit 2 with exactly one line on stderr containing ``needles``."""
    rc = main([str(a) for a in argv])
    err = capsys.readouterr().err
    assert rc == 2, err
    assert err.startswith("error: ") and err.count("\n") == 1 and "Traceback" not in err, err
    for needle in needles:
        assert needle in err, err
    return err


def ok(capsys, argv) -> str:
    rc = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    assert rc == 0, err
    return out


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("trained")
    assert main(["zoo", "train", str(_cfg(root)), "--out", str(root / "zoo"), "--quiet"]) == 0
    return root / "zoo"


@pytest.fixture
def zoo_copy(trained, tmp_path) -> Path:
    shutil.copytree(trained, tmp_path / "zoo")
    return tmp_path / "zoo"


# ------------------------------------------------------------------------- 1. YAML alias bombs
ALIAS_BOMB = """name: bomb
dataset: {name: digits}
architecture: {kind: mlp, widths: [8]}
population:
  runs: 1
  hparams:
    lr:
      choice: &a9 [&a8 [&a7 [&a6 [&a5 [&a4 [&a3 [&a2 [&a1 [&a0 [0.1,0.1,0.1,0.1,0.1,0.1,0.1,0.1,0.1,0.1],
        *a0,*a0,*a0,*a0,*a0,*a0,*a0,*a0,*a0], *a1,*a1,*a1,*a1,*a1,*a1,*a1,*a1,*a1], *a2,*a2,*a2,*a2,*a2,*a2,*a2,*a2,
        *a2], *a3,*a3,*a3,*a3,*a3,*a3,*a3,*a3,*a3], *a4,*a4,*a4,*a4,*a4,*a4,*a4,*a4,*a4], *a5,*a5,*a5,*a5,*a5,*a5,*a5,
        *a5,*a5], *a6,*a6,*a6,*a6,*a6,*a6,*a6,*a6,*a6], *a7,*a7,*a7,*a7,*a7,*a7,*a7,*a7,*a7], *a8,*a8,*a8,*a8,*a8]
"""


def test_alias_bomb_is_refused_before_it_expands(tmp_path, capsys):
    path = _cfg(tmp_path, ALIAS_BOMB)
    assert path.stat().st_size < 1000  # expands to 5·10⁹ numbers
    tracemalloc.start()
    try:
        refused(capsys, ["zoo", "train", path, "--out", tmp_path / "z", "--quiet"], "expands to more than 100000 values")
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 20e6 and not (tmp_path / "z").exists()


def test_recursive_anchor_and_deep_nesting_are_refused(tmp_path, capsys):
    refused(capsys, ["zoo", "train", _cfg(tmp_path, "a: &x [*x]\n"), "--out", tmp_path / "z"], "refers to itself")
    refused(capsys, ["zoo", "train", _cfg(tmp_path, "a: " + "[" * 40 + "]" * 40 + "\n"), "--out", tmp_path / "z"],
            "nested more than 32 levels")
    refused(capsys, ["zoo", "train", _cfg(tmp_path, "a: " + "[" * 5000 + "\n"), "--out", tmp_path / "z"], "config")
    assert not (tmp_path / "z").exists()


# ------------------------------------------------------------------------- 2. path traversal
def _set_file(zoo_dir: Path, file: str) -> None:
    with sqlite3.connect(zoo_dir / "index.sqlite") as con:
        con.execute("UPDATE models SET file = ? WHERE rowid = (SELECT MIN(rowid) FROM models)", (file,))


@pytest.mark.parametrize("how", ["absolute", "dotdot", "symlink"])
def test_index_paths_outside_the_zoo_are_refused(zoo_copy, tmp_path, capsys, how):
    outside = tmp_path / "outside.safetensors"
    first = min((zoo_copy / "models").iterdir())
    shutil.copy(first, outside)  # same bytes, same checksum: only the path gives it away
    if how == "absolute":
        _set_file(zoo_copy, str(outside))
    elif how == "dotdot":
        _set_file(zoo_copy, "models/../../outside.safetensors")
    else:
        first.unlink()
        first.symlink_to(outside)
    with pytest.raises(ZooError, match="outside"):
        Zoo.open(zoo_copy).load()
    refused(capsys, ["zoo", "export", zoo_copy, tmp_path / "export"], "outside")
    assert not (tmp_path / "export").exists()
    refused(capsys, ["zoo", "info", zoo_copy, "--verify"], "outside")


def test_hf_shard_linked_outside_the_folder_is_refused(tmp_path):
    folder, elsewhere = tmp_path / "hf", tmp_path / "elsewhere"
    folder.mkdir()
    elsewhere.mkdir()
    save_file({"w": torch.ones(2)}, elsewhere / "secret.safetensors")
    (folder / "model-00001.safetensors").symlink_to(elsewhere / "secret.safetensors")
    (folder / "model.safetensors.index.json").write_text(json.dumps({"weight_map": {"w": "model-00001.safetensors"}}))
    with pytest.raises(CheckpointError, match="outside"):
        load_hf_folder(folder)


# ------------------------------------------------------------------------- 3. checksums on load
def test_flipped_byte_is_caught_on_load_unless_opted_out(zoo_copy, tmp_path, capsys):
    first = min((zoo_copy / "models").iterdir())
    data = bytearray(first.read_bytes())
    data[-1] ^= 0x01  # a tensor byte: still a valid file
    first.write_bytes(bytes(data))
    with pytest.raises(ZooError, match="checksum mismatch"):
        Zoo.open(zoo_copy).load()
    refused(capsys, ["zoo", "export", zoo_copy, tmp_path / "e"], "checksum mismatch", first.name)
    assert not (tmp_path / "e").exists()
    weights, _ = Zoo.open(zoo_copy, checksums=False).load()
    assert weights.shape[0] == 2
    assert Zoo.open(zoo_copy).load(verify=False)[0].shape[0] == 2
    ok(capsys, ["zoo", "export", zoo_copy, tmp_path / "e", "--no-verify"])


# ------------------------------------------------------------------------- 4. appending another config
def test_second_train_with_another_config_is_refused_or_appended(zoo_copy, tmp_path, capsys):
    other = {**CONFIG, "population": {**CONFIG["population"], "hparams": {"lr": 0.02, "epochs": 1}}}
    path = _cfg(tmp_path, other, "other.yaml")
    refused(capsys, ["zoo", "train", path, "--out", zoo_copy, "--quiet"],
            "population.hparams.lr: 0.05 recorded, 0.02 given", "--append")
    assert len(Zoo.open(zoo_copy)) == 2
    # same run ids under another config: they would be skipped as done
    refused(capsys, ["zoo", "train", path, "--out", zoo_copy, "--quiet", "--append"], "run_prefix")
    other["population"]["run_prefix"] = "lr02-"
    ok(capsys, ["zoo", "train", _cfg(tmp_path, other, "other.yaml"), "--out", zoo_copy, "--quiet", "--append"])
    df = Zoo.open(zoo_copy).index()
    appended = df[df["run_id"].str.startswith("lr02-")]
    assert len(df) == 4 and len(appended) == 2
    assert all(json.loads(e)["config"]["population"]["hparams"]["lr"] == 0.02 for e in appended["extra"])
    ok(capsys, ["zoo", "train", _cfg(tmp_path), "--out", zoo_copy, "--quiet"])  # the zoo's own config resumes


# ------------------------------------------------------------------------- 5. someone else's directory
def test_outputs_must_be_new_or_the_same_commands(trained, tmp_path, capsys):
    zoo_before = sorted(p.name for p in (trained / "models").iterdir())
    ok(capsys, ["generate", "fit", "noise", "--zoo", trained, "--out", tmp_path / "gen", "--set", "sigma=0.01"])
    refused(capsys, ["generate", "sample", tmp_path / "gen", "-n", 2, "--out", trained], "not an output of",
            "'weightspace generate sample'", "--force")
    refused(capsys, ["generate", "fit", "noise", "--zoo", trained, "--out", trained], "zoo train")
    assert sorted(p.name for p in (trained / "models").iterdir()) == zoo_before

    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "report.html").write_text("my own report")
    (mine / "config.yaml").write_text("mine")
    refused(capsys, ["audit", "--train", trained, "--generated", trained, "--out", mine], "no " + OUTPUT_MARKER)
    refused(capsys, ["zoo", "train", _cfg(tmp_path), "--out", mine, "--quiet"], str(mine))
    assert (mine / "report.html").read_text() == "my own report" and (mine / "config.yaml").read_text() == "mine"

    ok(capsys, ["generate", "sample", tmp_path / "gen", "-n", 2, "--out", tmp_path / "s"])
    ok(capsys, ["generate", "sample", tmp_path / "gen", "-n", 2, "--out", tmp_path / "s"])  # its own: fine
    ok(capsys, ["zoo", "train", _cfg(tmp_path), "--out", mine, "--quiet", "--force"])
    assert len(Zoo.open(mine)) == 2


def test_failed_command_leaves_no_output(trained, tmp_path, capsys):
    refused(capsys, ["generate", "fit", "nosuch", "--zoo", trained, "--out", tmp_path / "a" / "b"], "nosuch")
    assert not (tmp_path / "a").exists()


# ------------------------------------------------------------------------- 6. read-only storage
def test_zoo_on_read_only_storage_can_be_read(trained, tmp_path):
    shutil.copytree(trained, tmp_path / "ro")
    script = tmp_path / "read.py"
    script.write_text(f"from weightspace.zoo import Zoo\nz = Zoo.open({str(tmp_path / 'ro')!r})\n"
                      "print(len(z), tuple(z.load()[0].shape), len(z.verify()))\n")
    cmd = (f"mount --bind {tmp_path / 'ro'} {tmp_path / 'ro'} && mount -o remount,bind,ro {tmp_path / 'ro'} && "
           f"! touch {tmp_path / 'ro' / 'probe'} 2>/dev/null && {sys.executable} {script}")
    probe = subprocess.run(["unshare", "-m", "true"], capture_output=True, check=False) if shutil.which("unshare") else None
    if probe is None or probe.returncode != 0:
        pytest.skip("needs unshare -m (root) to mount a read-only view")
    env = {"PYTHONPATH": str(Path(__file__).parents[1] / "src"), "OMP_NUM_THREADS": "1", "PATH": "/usr/bin:/bin"}
    result = subprocess.run(check=False, args=["unshare", "-m", "sh", "-c", cmd], capture_output=True, text=True, env=env, timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["2", "(2,", "610)", "0"]


# ------------------------------------------------------------------------- 7. values given another meaning
@pytest.mark.parametrize("patch,message", [
    ({"training": {"trainable": "layers.1.*"}}, "training.trainable: expected a list"),
    ({"architecture": {"kind": "mlp", "widths": "32"}}, "architecture.widths: expected a list"),
    ({"architecture": {"kind": "mlp", "widths": [8.5]}}, "architecture.widths[0]: expected an integer"),
    ({"population": {"runs": 2, "hparams": {"lr": float("nan")}}}, "population.hparams.lr: expected a finite number"),
    ({"population": {"runs": 2, "hparams": {"lr": {"uniform": [0.1, float("inf")]}}}}, "lr.uniform[1]"),
    ({"training": {"max_steps": -1}}, "training.max_steps: expected an integer in [1,"),
    ({"training": {"max_steps": 0}}, "training.max_steps"),
    ({"training": {"every_steps": 0}}, "training.every_steps"),
    ({"population": {"runs": True}}, "population.runs: expected an integer"),
    ({"training": {"checkpoint_epochs": [-1]}}, "training.checkpoint_epochs[0]"),
    ({"population": {"runs": 2, "hparams": {"epochs": 2.5}}}, "population.hparams.epochs"),
    ({"population": {"runs": 2, "hparams": {"optimizer": {"uniform": [0, 1]}}}}, "population.hparams.optimizer"),
    ({"architecture": {"kind": "mlp", "widths": [8], "activation": 3}}, "architecture.activation"),
    ({"dataset": {"name": "digits", "seed": "0"}}, "seed"),
])
def test_every_key_is_type_and_range_checked(tmp_path, capsys, patch, message):
    refused(capsys, ["zoo", "train", _cfg(tmp_path, {**CONFIG, **patch}), "--out", tmp_path / "z", "--quiet"], message)
    assert not (tmp_path / "z").exists()


# ------------------------------------------------------------------------- 8. memory from small inputs
def test_huge_claimed_safetensors_header_is_not_read(tmp_path):
    path = tmp_path / "sparse.safetensors"
    with open(path, "wb") as f:
        f.write((900_000_000).to_bytes(8, "little"))
        f.truncate(900_000_100)  # sparse: the claimed header "fits" the file
    tracemalloc.start()
    try:
        with pytest.raises(CheckpointError, match="header length 900000000 is more than"):
            load_checkpoint(path)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 10e6


def test_gzip_idx_is_read_only_as_far_as_its_header_says(tmp_path):
    header = struct.pack(">I", 0x00000801) + struct.pack(">I", 10)
    bomb = tmp_path / "labels.gz"
    with gzip.open(bomb, "wb") as f:
        f.write(header + bytes(10))
        f.write(bytes(200_000_000))  # ~200 kB compressed
    assert bomb.stat().st_size < 400_000
    tracemalloc.start()
    try:
        with pytest.raises(IdxFormatError, match="longer than its header says"):
            read_idx(bomb)
        claims = tmp_path / "claims.gz"
        with gzip.open(claims, "wb") as f:
            f.write(struct.pack(">I", 0x00000803) + struct.pack(">III", 60000, 4000, 4000))
        with pytest.raises(IdxFormatError, match="more than the"):
            read_idx(claims)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 10e6


@pytest.mark.parametrize("patch,message", [
    ({"threads": 100000}, "threads: expected an integer in [1, 1024]"),
    ({"population": {"runs": 10**12}}, "population.runs: expected an integer in [1, 1000000]"),
])
def test_counts_have_upper_bounds(tmp_path, capsys, patch, message):
    refused(capsys, ["zoo", "train", _cfg(tmp_path, {**CONFIG, **patch}), "--out", tmp_path / "z"], message)
    assert not (tmp_path / "z").exists()


def test_sample_count_has_an_upper_bound(trained, tmp_path, capsys):
    ok(capsys, ["generate", "fit", "noise", "--zoo", trained, "--out", tmp_path / "gen"])
    refused(capsys, ["generate", "sample", tmp_path / "gen", "-n", 10**9, "--out", tmp_path / "s"], "-n: expected")
    refused(capsys, ["generate", "sample", tmp_path / "gen", "-n", 0, "--out", tmp_path / "s"], "-n: expected")
    assert not (tmp_path / "s").exists()


# ------------------------------------------------------------------------- 9. tracebacks → one line
def _hf_index(tmp_path, weight_map) -> Path:
    folder = tmp_path / "hf"
    folder.mkdir(exist_ok=True)
    (folder / "model.safetensors.index.json").write_text(json.dumps({"weight_map": weight_map}))
    return folder


@pytest.mark.parametrize("shard", [{"a": 1}, ["x.safetensors"], 3, None])
def test_shard_names_that_are_not_strings(tmp_path, shard):
    with pytest.raises(CheckpointError, match="shard names must be plain file names"):
        load_hf_folder(_hf_index(tmp_path, {"w": shard}))


def _sql(zoo_dir: Path, script: str) -> None:
    con = sqlite3.connect(zoo_dir / "index.sqlite")
    con.executescript(script)
    con.close()


# The same columns without their constraints, as another tool might write the index.
_UNCONSTRAINED = "CREATE TABLE m2 AS SELECT * FROM models; DROP TABLE models; ALTER TABLE m2 RENAME TO models;"


@pytest.mark.parametrize("damage,message", [
    (lambda z: (z / "index.sqlite").write_bytes(b"not sqlite" * 100), "index.sqlite"),
    (lambda z: _sql(z, "UPDATE models SET hparams = '[1, 2]'"), "hparams"),
    (lambda z: _sql(z, "UPDATE models SET seed = 'seven'"), "seed"),
    (lambda z: _sql(z, _UNCONSTRAINED + "UPDATE models SET sha256 = NULL"), "sha256"),
    (lambda z: _sql(z, "UPDATE models SET file = x'2e2e'"), "file"),
    (lambda z: _sql(z, "DROP TABLE models"), "not a zoo index"),
])
def test_damaged_index_is_one_line(zoo_copy, tmp_path, capsys, damage, message):
    for name in ("index.sqlite-wal", "index.sqlite-shm"):
        (zoo_copy / name).unlink(missing_ok=True)
    damage(zoo_copy)
    for argv in (["zoo", "info", zoo_copy], ["zoo", "info", zoo_copy, "--verify"],
                 ["zoo", "export", zoo_copy, tmp_path / "e"]):
        refused(capsys, argv, message)
    assert not (tmp_path / "e").exists()


def _contents(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


ENDLESS = "WITH RECURSIVE r(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM r)"
_TYPED = ", ".join(f"{c} {'TEXT' if c == 'seed' else t}" for c, t in COLUMN_TYPES)
_RETYPED = f"CREATE TABLE m2 ({_TYPED}); INSERT INTO m2 SELECT * FROM models; DROP TABLE models; " \
           "ALTER TABLE m2 RENAME TO models;"


@pytest.mark.parametrize("schema,message", [
    (f"ALTER TABLE models RENAME TO m2; CREATE VIEW models AS {ENDLESS} SELECT m2.* FROM m2, r;",
     "holds view 'models', which would run a query its author wrote on every read"),
    ("CREATE VIEW recent AS SELECT * FROM models WHERE epoch > 0;", "holds view 'recent'"),
    ("CREATE TRIGGER grow AFTER INSERT ON models BEGIN INSERT INTO models SELECT * FROM models; END;",
     "holds trigger 'grow', which would run statements on every write"),
    ("ALTER TABLE models DROP COLUMN extra;", "table 'models' has columns model_id, run_id, seed"),
    (_RETYPED, "column models.seed is declared 'TEXT' (TEXT affinity); expected INTEGER"),
    ("CREATE VIRTUAL TABLE notes USING fts5(text);", "holds virtual table 'notes'"),
], ids=["endless view", "view", "trigger", "missing column", "wrong type", "virtual table"])
def test_index_schema_is_checked_before_the_first_query(zoo_copy, tmp_path, capsys, schema, message):
    """Each command that reads (or writes) the index refuses it in one line, quickly (the endless view is
    never queried), and leaves the zoo as it was."""
    for name in ("index.sqlite-wal", "index.sqlite-shm"):
        (zoo_copy / name).unlink(missing_ok=True)
    _sql(zoo_copy, schema)
    before = _contents(zoo_copy)
    for argv in (["zoo", "info", zoo_copy], ["zoo", "info", zoo_copy, "--verify"],
                 ["zoo", "export", zoo_copy, tmp_path / "e"], ["analyze", zoo_copy, "--quiet"],
                 ["soup", zoo_copy, "--out", tmp_path / "s.safetensors", "--quiet"],
                 ["zoo", "train", _cfg(tmp_path), "--out", zoo_copy, "--quiet"]):
        refused(capsys, argv, f"{zoo_copy / 'index.sqlite'}: not a zoo index: {message}")
    assert _contents(zoo_copy) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cfg.yaml", "zoo"]


def test_endless_where_ends_in_one_line_and_changes_nothing(zoo_copy, tmp_path, capsys):
    where = f"epoch IN ({ENDLESS} SELECT x FROM r)"
    before = _contents(zoo_copy)
    err = refused(capsys, ["zoo", "export", zoo_copy, tmp_path / "e", "--where", where],
                  f"where condition {where!r}: the query ran past its budget of")
    assert "SQLite steps" in err
    assert _contents(zoo_copy) == before and not (tmp_path / "e").exists()
    ok(capsys, ["zoo", "export", zoo_copy, tmp_path / "e", "--where", f"epoch IN ({ENDLESS} SELECT x FROM r LIMIT 3)"])


def test_models_dir_that_is_a_file(zoo_copy, capsys):
    shutil.rmtree(zoo_copy / "models")
    (zoo_copy / "models").write_text("")
    refused(capsys, ["zoo", "info", zoo_copy, "--verify"], "bad entries")


@pytest.mark.parametrize("entries,message", [
    ([["w", [2], "nn"]], "dtype 'nn'"),
    ([["w", [2], "Tensor"]], "dtype 'Tensor'"),
    ([["w", [2], "int64"]], "dtype 'int64'"),
    ([["w", [-2], "float32"]], "expected a size"),
    ([["w", [2**40, 2**40], "float32"]], "expected a size"),
    ([["w", [2**30, 2**30], "float32"]], "more than"),
    ([["w", "22", "float32"]], "expected a shape"),
])
def test_malformed_layout_is_one_line(zoo_copy, capsys, entries, message):
    info = json.loads((zoo_copy / "zoo.json").read_text())
    info["layout"]["entries"] = entries
    (zoo_copy / "zoo.json").write_text(json.dumps(info))
    refused(capsys, ["zoo", "info", zoo_copy], "layout", message)


def test_out_that_is_a_file_or_cannot_be_made(trained, tmp_path, capsys):
    (tmp_path / "file").write_text("x")
    refused(capsys, ["zoo", "export", trained, tmp_path / "file"], "exists and is not a directory")
    refused(capsys, ["zoo", "export", trained, tmp_path / "file" / "sub"], "file exists and is not a directory")
    assert (tmp_path / "file").read_text() == "x"


def test_config_path_that_is_a_directory(tmp_path, capsys):
    (tmp_path / "dir.yaml").mkdir()
    refused(capsys, ["zoo", "train", tmp_path / "dir.yaml", "--out", tmp_path / "z"], "expected a regular file")
    assert not (tmp_path / "z").exists()


@pytest.mark.parametrize("make,message", [
    (lambda p: np.save(p, np.array([{"a": 1}], dtype=object)), "not a readable .npy"),
    (lambda p: p.write_bytes(b"\x93NUMPY garbage"), "not a readable .npy"),
    (lambda p: np.save(p, np.zeros((0, 5), dtype=np.int64)), "at least one model"),
    (lambda p: np.save(p, np.zeros((2, 5), dtype=np.float32)), "integer predicted labels"),
])
def test_bad_npy_for_audit(trained, tmp_path, capsys, make, message):
    make(tmp_path / "pred.npy")
    refused(capsys, ["audit", "--train", trained, "--generated", tmp_path / "pred.npy", "--out", tmp_path / "a"],
            message)
    assert not (tmp_path / "a").exists()


@pytest.mark.parametrize("value", ["{a: 1}", "[[1]]", "&x [*x]", "!!python/name:os.system"])
def test_set_values_must_be_plain(trained, tmp_path, capsys, value):
    refused(capsys, ["generate", "fit", "noise", "--zoo", trained, "--out", tmp_path / "g", "--set", f"sigma={value}"],
            "--set sigma")
    assert not (tmp_path / "g").exists()


def test_set_value_of_the_wrong_type(trained, tmp_path, capsys):
    refused(capsys, ["generate", "fit", "noise", "--zoo", trained, "--out", tmp_path / "g", "--set", "sigma=abc"],
            "option 'sigma' expects a float")


@pytest.mark.parametrize("damage,message", [
    (lambda g: (g / "fit.json").write_text("{"), "fit.json"),
    (lambda g: (g / "fit.json").write_text("[]"), "fit.json"),
    (lambda g: (g / "generator.json").write_text('{"generator": "noise", "config": 3}'), "generator.json"),
    (lambda g: (g / "generator.json").write_text('{"generator": "os", "config": {}}'), "expected one of"),
    (lambda g: (g / "state.safetensors").write_bytes(b"12345678"), "state.safetensors"),
    (lambda g: save_file({"other": torch.ones(1)}, g / "state.safetensors"), "state.safetensors"),
])
def test_corrupt_fitted_generator(trained, tmp_path, capsys, damage, message):
    gen = tmp_path / "gen"
    ok(capsys, ["generate", "fit", "noise", "--zoo", trained, "--out", gen])
    damage(gen)
    refused(capsys, ["generate", "sample", gen, "-n", 2, "--out", tmp_path / "s"], message)
    assert not (tmp_path / "s").exists()


def test_nan_or_empty_generated_sets(trained, tmp_path, capsys):
    files = tmp_path / "files"
    files.mkdir()
    state = load_checkpoint(min((trained / "models").iterdir()))[0]
    save_file({k: torch.full_like(v, float("nan")) for k, v in state.items()}, files / "a.safetensors")
    refused(capsys, ["audit", "--train", trained, "--generated", files, "--out", tmp_path / "a"], "non-finite")
    empty = tmp_path / "empty"
    empty.mkdir()
    refused(capsys, ["audit", "--train", trained, "--generated", empty, "--out", tmp_path / "a"], "no checkpoint files")
    assert not (tmp_path / "a").exists()


def test_broken_pipe_is_quiet(trained):
    proc = subprocess.run(check=False, args=f"{sys.executable} -m weightspace.cli zoo info {trained} | head -c 10",
                          shell=True, capture_output=True, text=True, timeout=120,
                          env={"PYTHONPATH": str(Path(__file__).parents[1] / "src"), "OMP_NUM_THREADS": "1"})
    assert proc.stdout == "zoo       " and proc.stderr == ""


def test_usage_errors_are_one_line(capsys):
    with pytest.raises(SystemExit) as e:
        main(["zoo", "export"])
    err = capsys.readouterr().err
    assert e.value.code == 2 and err.startswith("error: ") and err.count("\n") == 1


# ------------------------------------------------------------------------- 10. smaller
def test_refused_pickle_with_trailing_bytes_is_unsafe_not_truncated(tmp_path):
    evil = tmp_path / "evil.pt"
    evil.write_bytes(b"cposix\nsystem\n(S'echo pwned'\ntR.\nsystem\n")
    with pytest.raises(UnsafeCheckpointError, match="posix.system"):
        load_checkpoint(evil)
    cut = tmp_path / "cut.pt"
    cut.write_bytes(b"cposix\nsyst")
    with pytest.raises(CheckpointError, match="truncated"):
        load_checkpoint(cut)


def test_audit_matches_suffixes_in_any_case(trained, tmp_path, capsys):
    files = tmp_path / "files"
    files.mkdir()
    for i, f in enumerate(sorted((trained / "models").iterdir())[:2]):
        shutil.copy(f, files / f"m{i}.SafeTensors")
    ok(capsys, ["audit", "--train", trained, "--generated", files, "--out", tmp_path / "a"])
    assert (tmp_path / "a" / "report.html").exists()


def test_verify_checks_layout_orphans_and_leftovers(zoo_copy, capsys):
    first = min((zoo_copy / "models").iterdir())
    save_file({"layers.0.weight": torch.zeros(3, 3)}, zoo_copy / "models" / "ghost.safetensors")
    (zoo_copy / ".staging" / "x.123.abcd.safetensors").write_bytes(b"partial")
    info = json.loads((zoo_copy / "zoo.json").read_text())
    info["layout"]["entries"][0][2] = "float64"  # the layout no longer matches the files
    (zoo_copy / "zoo.json").write_text(json.dumps(info))
    err = refused(capsys, ["zoo", "info", zoo_copy, "--verify"], "does not hold layout")
    assert first.name in err
    info["layout"]["entries"][0][2] = "float32"
    (zoo_copy / "zoo.json").write_text(json.dumps(info))
    out = ok(capsys, ["zoo", "info", zoo_copy, "--verify"])
    assert "orphan: models/ghost.safetensors" in out and "leftover: .staging/x.123.abcd.safetensors" in out
    out = ok(capsys, ["zoo", "info", zoo_copy, "--clean"])
    assert "removed 2 unindexed files" in out
    assert not (zoo_copy / "models" / "ghost.safetensors").exists() and not any((zoo_copy / ".staging").iterdir())
    assert len(Zoo.open(zoo_copy, verify=True)) == 2


@pytest.mark.parametrize("name", ["../escape", "/tmp/abs", "a/b", ".hidden"])
def test_config_name_cannot_leave_runs(tmp_path, capsys, monkeypatch, name):
    monkeypatch.chdir(tmp_path)
    refused(capsys, ["zoo", "train", _cfg(tmp_path, {**CONFIG, "name": name}), "--quiet"], "name: expected a plain name")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cfg.yaml"]


def test_generator_error_lists_every_registered_generator(trained, tmp_path, capsys):
    err = refused(capsys, ["generate", "fit", "nosuch", "--zoo", trained, "--out", tmp_path / "g"])
    for name in ("pdiff", "hyperrep", "gpt", "hyperdiffusion", "noise", "average", "gaussian"):
        assert name in err


@pytest.mark.parametrize("methods", ["", ",", "pdiff,", "pdiff,pdiff", "nosuch"])
def test_study_methods_must_name_methods(tmp_path, capsys, methods):
    refused(capsys, ["study", "--methods", methods, "--out", tmp_path / "s", "--preset", "tiny"], "--methods")
    assert not (tmp_path / "s").exists()


def test_every_output_argument_is_claimed():
    """A command with an output directory declares it through ``add_output``, so ``main`` claims it:
    the next command cannot forget the rule."""
    import argparse

    from weightspace.cli import build_parser

    def leaves(parser, path):
        subs = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
        if not subs:
            yield path, parser
        for action in subs:
            for name, child in action.choices.items():
                yield from leaves(child, (*path, name))

    found = 0
    for path, parser in leaves(build_parser(), ()):
        if any(a.dest == "out" for a in parser._actions):
            found += 1
            assert parser.get_default("output_command"), f"weightspace {' '.join(path)}: --out not declared by add_output"
            assert any(a.dest == "force" for a in parser._actions)
    assert found >= 9


def test_single_file_outputs_are_never_replaced_without_force(tmp_path, capsys):
    """merge/soup/align write one .safetensors file (and its settings .yaml): a user's existing file
    of that name is refused, and kept byte for byte; --force replaces it."""
    from weightspace.cli import main

    target = tmp_path / "mine.safetensors"
    target.write_bytes(b"my own model")
    for argv in (["merge", str(tmp_path / "missing.yaml"), str(target)],
                 ["soup", str(tmp_path / "nozoo"), "--out", str(target)],
                 ["align", "a.safetensors", "b.safetensors", "--out", str(target)]):
        assert main(argv) == 2
        err = capsys.readouterr().err
        assert "exists" in err and "--force" in err and len(err.strip().splitlines()) == 1
        assert target.read_bytes() == b"my own model"
    (tmp_path / "settings.yaml").write_text("mine: true\n")  # the settings file beside the output counts too
    assert main(["merge", str(tmp_path / "missing.yaml"), str(tmp_path / "settings.safetensors")]) == 2
    assert "settings.yaml exists" in capsys.readouterr().err
    # With --force the refusal is gone (what fails next is the missing config, not the output rule).
    assert main(["merge", str(tmp_path / "missing.yaml"), str(target), "--force"]) == 2
    assert "exists;" not in capsys.readouterr().err and target.read_bytes() == b"my own model"


@pytest.mark.parametrize("key,value,message", [
    ("architecture", {"kind": "mlp", "widths": "abc"}, "architecture (mlp)"),
    ("architecture", {"kind": "mlp", "widths": [4], "in_features": 3, "out_features": 10}, "does not have the zoo's layout"),
    ("task", {"name": "digits", "options": {"root": 3}}, "unknown option(s) 'root'"),
    ("task", {"name": "digits", "options": [1]}, "task.options must be an object"),
])
def test_zoo_json_task_and_architecture_are_named(zoo_copy, trained, tmp_path, capsys, key, value, message):
    info = json.loads((zoo_copy / "zoo.json").read_text())
    info[key] = value
    (zoo_copy / "zoo.json").write_text(json.dumps(info))
    refused(capsys, ["audit", "--train", zoo_copy, "--generated", trained, "--out", tmp_path / "a"],
            str(zoo_copy / "zoo.json"), message)
    assert not (tmp_path / "a").exists()


# ------------------------------------------------------------- a method zoo's own zoo.json and index
HD_CONFIG = {"method": "hyperdiffusion", "preset": "tiny",
             "shapes": {"source": "auto", "n_train": 4, "n_test": 4, "classes": None, "seed": 0},
             "decode": {"resolution": 48, "n_points": 96}, "samples": {"factor": 1.1, "cap": 256}}


@pytest.mark.parametrize("config,file,key", [
    ({"method": "pdiff", "preset": "tiny", "seed": 0}, "zoo.json", "config.trainable"),
    ({"method": "pdiff", "preset": "tiny", "seed": 0, "trainable": "norms.*"}, "zoo.json", "config.trainable"),
    ({"method": "hyperrep", "seed": 0}, "zoo.json", "config.preset"),
    ({"method": "gpt", "preset": "tiny", "seed": 0, "generator": {"evil": 1}}, "zoo.json", "config.generator.evil"),
    ({"method": "gpt", "preset": "tiny", "seed": 0, "generator": {"chunk_size": "big"}}, "zoo.json",
     "config.generator.chunk_size"),
    ({"method": "hyperdiffusion", "preset": "tiny"}, "zoo.json", "config.shapes"),
    ({**HD_CONFIG, "shapes": {**HD_CONFIG["shapes"], "path": "/etc"}}, "zoo.json", "config.shapes.path"),
    ({**HD_CONFIG, "decode": {"resolution": 10**9, "n_points": 96}}, "zoo.json", "config.decode.resolution"),
    (HD_CONFIG, "index.sqlite", "shape_index"),  # the checkpoints lack their training shape
    ({"method": "aligned", "preset": "tiny", "seed": "0"}, "zoo.json", "config.seed"),
    ({"method": "aligned", "preset": "huge", "seed": 0}, "zoo.json", "config.preset"),
])
def test_method_zoo_with_a_damaged_record_is_one_line(zoo_copy, tmp_path, capsys, config, file, key):
    """A zoo.json that claims a built-in method is checked against what that method records before
    any of its code reads the zoo: ``generate fit`` and ``audit`` refuse it naming the file and key."""
    info = json.loads((zoo_copy / "zoo.json").read_text())
    (zoo_copy / "zoo.json").write_text(json.dumps({**info, "config": config}))
    refused(capsys, ["generate", "fit", config["method"], "--zoo", zoo_copy, "--out", tmp_path / "g"], file, key)
    assert not (tmp_path / "g").exists()
    weights = tmp_path / "gen.safetensors"
    save_file({"weights": torch.zeros(2, Zoo.open(zoo_copy).space.num_params)}, weights)
    refused(capsys, ["audit", "--train", zoo_copy, "--generated", weights, "--out", tmp_path / "a"], file, key)
    assert not (tmp_path / "a").exists()
