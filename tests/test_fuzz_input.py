"""Seeded, time-bounded fuzzing of everything weightspace reads from users: configs, zoo indexes
(their rows and their schema), zoo.json, safetensors headers, Hugging Face index files and training
checkpoints (nested dicts around a state dict) are mutated and fed to the commands.

Every case must end with exit 0, or exit 2 and one error line on stderr (after any ``note:`` lines); no traceback; no code from the
input runs (a sentinel file that payloads try to create never appears); memory stays under an
address-space limit set in the worker process; and nothing outside the case's output directory
changes. The cases run in one subprocess (one import of torch), for a fixed time budget.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import random
import resource
import shutil
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import torch
import yaml

SECONDS = 12.0  # the budget for cases, after the fixtures are built
MEMORY_LIMIT = 6 << 30  # address space of the worker; torch alone maps ~2 GB
ROOT = Path(__file__).parents[1]

BASE_CONFIG = {
    "name": "fuzz",
    "dataset": {"name": "digits", "seed": 0},
    "architecture": {"kind": "mlp", "widths": [4], "activation": "relu"},
    "population": {"runs": 1, "seed": 0, "hparams": {"lr": 0.05, "epochs": 1, "optimizer": ["sgd"]}},
    "training": {"batch_size": 64, "checkpoint_epochs": [1], "max_steps": 2, "chunk_size": 4},
}
VALUES = [None, True, False, 0, -1, 1, 2, 2.5, 1e308, float("nan"), float("inf"), 10**12, 2**63, "", "x",
          "../../outside", "/etc/passwd", "models/../../outside.safetensors", [], [1], ["a"], [[1]], {}, {"a": 1},
          "a" * 300, "mlp", "digits", "float64", "int64", [2, 4], [-3], "*"]


def _sentinel_payloads(sentinel: Path) -> list[str]:
    cmd = f"touch {sentinel}"
    return [f'!!python/object/apply:os.system ["{cmd}"]', f"!!python/object/new:os.system [\"{cmd}\"]",
            '!!python/name:os.system', "&a [*a]", "&x [" + ",".join(["*y"] * 3) + "]"]


class _Payload:
    """Unpickled the unsafe way, this would create the sentinel file."""

    def __init__(self, sentinel: Path):
        self.sentinel = sentinel

    def __reduce__(self):
        return (os.system, (f"touch {self.sentinel}",))


# Schemas another tool, or someone meaning harm, might give an index; the last two are still a zoo index.
ENDLESS = "WITH RECURSIVE r(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM r)"
SCHEMAS = [
    f"ALTER TABLE models RENAME TO m2; CREATE VIEW models AS {ENDLESS} SELECT m2.* FROM m2, r;",
    "ALTER TABLE models RENAME TO m2; CREATE VIEW models AS SELECT * FROM m2;",
    f"CREATE VIEW v AS {ENDLESS} SELECT x FROM r;",
    "CREATE TRIGGER t AFTER INSERT ON models BEGIN INSERT INTO models SELECT * FROM models; END;",
    f"CREATE TRIGGER t BEFORE DELETE ON models BEGIN SELECT count(*) FROM ({ENDLESS} SELECT x FROM r); END;",
    "ALTER TABLE models DROP COLUMN extra;",
    "ALTER TABLE models RENAME COLUMN seed TO seeds;",
    "ALTER TABLE models ADD COLUMN more TEXT;",
    ("CREATE TABLE m2 (model_id, run_id, seed, epoch, step, hparams, train_loss, train_acc, val_loss, val_acc, "
     "test_loss, test_acc, file, sha256, created, extra); INSERT INTO m2 SELECT * FROM models; DROP TABLE models; "
     "ALTER TABLE m2 RENAME TO models;"),
    "CREATE VIRTUAL TABLE notes USING fts5(text);",
    "CREATE TABLE notes (text TEXT); INSERT INTO notes VALUES ('kept by another tool');",
    "CREATE INDEX by_acc ON models (test_acc);",
]
KEYS = [None, None, "model_state", "ema", "model_state.layers", "checkpoint/model_state", "optimizer_state", "step",
        "model_state.layers.0", "", "nope"]


def _training_checkpoint(rng: random.Random, state: dict, sentinel: Path):
    """A training checkpoint around ``state``, mutated: leaves replaced, keys dropped or added, the
    state dict nested deeper, copied as an EMA, prefixed, or beside a pickle payload."""
    tree = {"step": 7, "model_state": dict(state),
            "optimizer_state": {"state": {0: {"step": 1, "exp_avg": torch.zeros(3)}},
                                "param_groups": [{"lr": 0.1, "params": [0]}]}}
    roll = rng.random()
    if roll < 0.15:
        tree["ema"] = {k: v * 0.5 for k, v in state.items()}
    elif roll < 0.25:
        tree = {"checkpoint": tree, "pytorch-lightning_version": "2.4"}
    elif roll < 0.35:
        tree["model_state"] = {f"module.{k}": v for k, v in state.items()}
    elif roll < 0.45:
        where = rng.choice([tree, tree["model_state"], tree["optimizer_state"]["state"][0]])
        where[rng.choice(["extra", "exp_avg", "step"])] = _Payload(sentinel)
    if rng.random() < 0.7:
        tree = _mutate_tree(rng, tree)
    return tree


def _mutate_tree(rng: random.Random, tree, depth: int = 0):
    """A copy of a JSON-like tree with one leaf replaced, a key dropped or an unknown key added."""
    if isinstance(tree, dict) and tree and depth < 6:
        key = rng.choice(sorted(tree, key=str))
        out = dict(tree)
        roll = rng.random()
        if roll < 0.1:
            del out[key]
        elif roll < 0.2:
            out[rng.choice(["epochs", "threads", "bogus", f"{key}x"])] = rng.choice(VALUES)
        else:
            out[key] = _mutate_tree(rng, tree[key], depth + 1)
        return out
    if isinstance(tree, list) and tree and depth < 6 and rng.random() < 0.7:
        out = list(tree)
        i = rng.randrange(len(out))
        out[i] = _mutate_tree(rng, out[i], depth + 1)
        return out
    return rng.choice(VALUES)


def _mutate_bytes(rng: random.Random, data: bytes, inserts: list[str]) -> bytes:
    data = bytearray(data)
    for _ in range(rng.randint(1, 4)):
        roll, at = rng.random(), rng.randrange(len(data) + 1)
        if roll < 0.3 and data:
            data[min(at, len(data) - 1)] ^= 1 << rng.randrange(8)
        elif roll < 0.5:
            del data[at: at + rng.randint(1, 16)]
        else:
            data[at:at] = rng.choice(inserts).encode()
    return bytes(data)


def _snapshot(root: Path, skip: Path) -> dict:
    state = {}
    for dirpath, dirnames, filenames in os.walk(root):
        d = Path(dirpath)
        if d == skip or skip in d.parents:
            dirnames[:] = []
            continue
        state[str(d)] = "dir"
        for f in filenames:
            st = os.lstat(d / f)
            state[str(d / f)] = (st.st_size, st.st_mtime_ns)
    return state


def _fixtures(work: Path) -> dict:
    """A trained zoo, an HF folder (two shards) of a matching init, and the base config, once."""
    from weightspace.cli import main
    from weightspace.io import load_checkpoint
    from weightspace.zoo.build import build_zoo

    base = work / "base"
    base.mkdir()
    (base / "cfg.yaml").write_text(yaml.safe_dump(BASE_CONFIG))
    zoo = build_zoo(BASE_CONFIG, out=base / "zoo", progress=False)
    assert len(zoo) == 1
    state, _ = load_checkpoint(next((base / "zoo" / "models").iterdir()))
    hf = base / "hf"
    hf.mkdir()
    from safetensors.torch import save_file

    names = sorted(state)
    half = len(names) // 2
    shards = {"model-00001-of-00002.safetensors": names[:half], "model-00002-of-00002.safetensors": names[half:]}
    weight_map = {}
    for shard, keys in shards.items():
        save_file({k: state[k].contiguous() for k in keys}, hf / shard)
        weight_map.update({k: shard for k in keys})
    (hf / "model.safetensors.index.json").write_text(json.dumps({"metadata": {}, "weight_map": weight_map}))
    assert main(["zoo", "info", str(base / "zoo")]) == 0
    return {"base": base}


def _case(rng: random.Random, base: Path, case: Path, sentinel: Path) -> tuple[str, list[list[str]]]:
    """Copy the fixtures into ``case``, mutate one input, and return the commands to run on it."""
    shutil.copytree(base, case / "in")
    zoo, hf, cfg = case / "in" / "zoo", case / "in" / "hf", case / "in" / "cfg.yaml"
    out = case / "out"
    inserts = _sentinel_payloads(sentinel) + ["\n  - ", ": ", "{", "]", "\x00", "\n", "'", "1e999", "-", "&a ", "*a"]
    kind = rng.choice(["config", "config-bytes", "index", "schema", "zoo.json", "header", "hf-index", "checkpoint"])
    if kind == "config":
        cfg.write_text(yaml.safe_dump(_mutate_tree(rng, BASE_CONFIG)))
    elif kind == "config-bytes":
        cfg.write_bytes(_mutate_bytes(rng, cfg.read_bytes(), inserts))
    elif kind == "index":
        column = rng.choice(["model_id", "run_id", "seed", "epoch", "step", "hparams", "test_acc", "file", "sha256",
                             "extra", "created"])
        value = rng.choice(VALUES)
        value = json.dumps(value) if isinstance(value, (list, dict)) and rng.random() < 0.5 else value
        value = value if isinstance(value, (type(None), int, float, str)) and not (
            isinstance(value, int) and abs(value) > 2**62) else str(value)
        con = sqlite3.connect(zoo / "index.sqlite")
        if rng.random() < 0.3:  # the same columns without constraints, as another tool might write them
            con.executescript("CREATE TABLE m2 AS SELECT * FROM models; DROP TABLE models; "
                              "ALTER TABLE m2 RENAME TO models;")
        with contextlib.suppress(sqlite3.Error):
            con.execute(f"UPDATE models SET {column} = ?", (value,))
            con.commit()
        con.close()
        if rng.random() < 0.2:
            (zoo / "index.sqlite").write_bytes(_mutate_bytes(rng, (zoo / "index.sqlite").read_bytes(), inserts))
    elif kind == "schema":
        con = sqlite3.connect(zoo / "index.sqlite")
        for script in rng.sample(SCHEMAS, rng.randint(1, 2)):
            with contextlib.suppress(sqlite3.Error):
                con.executescript(script)
        con.close()
    elif kind == "checkpoint":
        from weightspace.io import load_checkpoint

        state, _ = load_checkpoint(next((zoo / "models").iterdir()))
        torch.save(_training_checkpoint(rng, state, sentinel), case / "in" / "train.pt")
    elif kind == "zoo.json":
        info = json.loads((zoo / "zoo.json").read_text())
        text = json.dumps(_mutate_tree(rng, info))
        (zoo / "zoo.json").write_text(text if rng.random() < 0.7 else _mutate_bytes(rng, text.encode(), inserts)
                                      .decode("utf-8", "replace"))
    elif kind == "header":
        model = next((zoo / "models").iterdir())
        data = model.read_bytes()
        n = int.from_bytes(data[:8], "little")
        if rng.random() < 0.3:
            data = rng.choice([0, 1, n - 1, n + 1, 2**40, 2**64 - 1, len(data)]).to_bytes(8, "little") + data[8:]
        else:
            header = json.loads(data[8:8 + n])
            text = json.dumps(_mutate_tree(rng, header)).encode()
            text = text if rng.random() < 0.6 else _mutate_bytes(rng, text, inserts)
            data = len(text).to_bytes(8, "little") + text + data[8 + n:]
        model.write_bytes(data)
    else:
        index = hf / "model.safetensors.index.json"
        text = json.dumps(_mutate_tree(rng, json.loads(index.read_text())))
        index.write_text(text if rng.random() < 0.7 else _mutate_bytes(rng, text.encode(), inserts).decode(
            "utf-8", "replace"))
        if rng.random() < 0.2:  # a pickle shard that would run a command if it were unpickled unsafely
            (hf / "evil.bin").write_bytes(f"cposix\nsystem\n(S'touch {sentinel}'\ntR.".encode())
            index_map = json.loads(index.read_text()) if _is_json(index) else {}
            if isinstance(index_map, dict) and isinstance(index_map.get("weight_map"), dict) and index_map["weight_map"]:
                index_map["weight_map"][rng.choice(sorted(index_map["weight_map"]))] = "evil.bin"
                index.write_text(json.dumps(index_map))
        if rng.random() < 0.2:
            shard = next(hf.glob("*00001*"))
            shard.unlink()
            shard.symlink_to(case / "in" / "zoo" / "models" / next((zoo / "models").iterdir()).name)
    if kind.startswith("config"):
        return kind, [["zoo", "train", str(cfg), "--out", str(out), "--quiet"]]
    if kind == "checkpoint":
        ckpt, key = str(case / "in" / "train.pt"), rng.choice(KEYS)
        with_key = [] if key is None else ["--key", key]
        model = f"{zoo}::{next((zoo / 'models').iterdir()).stem}"
        return kind, [["analyze", ckpt, "--quiet", "--out", str(out / "a"), *with_key],
                      ["align", model, ckpt, "--out", str(out / "b.safetensors"), *with_key]]
    if kind == "hf-index":
        patched = {**BASE_CONFIG, "init_from": str(hf), "training": {**BASE_CONFIG["training"], "max_steps": 1}}
        cfg.write_text(yaml.safe_dump(patched))
        return kind, [["zoo", "train", str(cfg), "--out", str(out), "--quiet"]]
    return kind, [["zoo", "info", str(zoo)], ["zoo", "info", str(zoo), "--verify"],
                  ["zoo", "export", str(zoo), str(out)],
                  ["generate", "fit", "noise", "--zoo", str(zoo), "--out", str(out / "gen"), "--quiet"]]


def _is_json(path: Path) -> bool:
    try:
        json.loads(path.read_text())
        return True
    except ValueError:
        return False


def fuzz_worker(work: str, seconds: float, seed: int) -> None:
    """Run in a fresh process: prints one JSON line of what happened."""
    resource.setrlimit(resource.RLIMIT_AS, (MEMORY_LIMIT, MEMORY_LIMIT))
    import torch

    torch.set_num_threads(1)
    from weightspace.cli import main

    work = Path(work)
    sentinel = work / "PWNED"
    base = _fixtures(work)["base"]
    rng = random.Random(seed)
    failures, counts, cases = [], {}, 0
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        case = work / f"case{cases:04d}"
        kind, commands = _case(rng, base, case, sentinel)
        counts[kind] = counts.get(kind, 0) + 1
        for argv in commands:
            before = _snapshot(work, case / "out")
            err, out = io.StringIO(), io.StringIO()
            try:
                with contextlib.redirect_stderr(err), contextlib.redirect_stdout(out):
                    rc = main(argv)
            except BaseException as e:  # noqa: BLE001 - anything escaping main is a failure to report
                rc = f"escaped {type(e).__name__}: {e}"
            message = err.getvalue()
            errors = [line for line in message.splitlines() if not line.startswith("note: ")]
            problem = None
            if rc not in (0, 2):
                problem = f"exit {rc}"
            elif "Traceback" in message or len(errors) > 1 or (rc == 2 and not (errors and errors[0].startswith("error: "))):
                problem = "not one line"
            elif sentinel.exists():
                problem = "code ran"
            elif _snapshot(work, case / "out") != before:
                problem = "changed files outside the output directory"
            if problem:
                failures.append({"case": cases, "kind": kind, "argv": argv[1:3], "problem": problem,
                                 "stderr": message[-600:]})
        shutil.rmtree(case, ignore_errors=True)
        cases += 1
    maxrss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    print(json.dumps({"cases": cases, "kinds": counts, "failures": failures[:20], "n_failures": len(failures),
                      "maxrss": maxrss}))


def test_fuzzed_inputs_are_refused_in_one_line_without_side_effects(tmp_path):
    env = {**os.environ, "PYTHONPATH": f"{ROOT / 'src'}{os.pathsep}{ROOT}", "OMP_NUM_THREADS": "1"}
    code = f"from tests.test_fuzz_input import fuzz_worker; fuzz_worker({str(tmp_path)!r}, {SECONDS}, 0)"
    proc = subprocess.run(check=False, args=[sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=240,
                          cwd=ROOT)
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    assert result["cases"] >= 10 and len(result["kinds"]) >= 4, result
    assert result["n_failures"] == 0, json.dumps(result["failures"], indent=1)
    assert result["maxrss"] < 2 << 30, result["maxrss"]
    assert not (tmp_path / "PWNED").exists()
