"""What the checks on untrusted input cost, and what they save.

1. Checksums on load: ``Zoo.load()`` now hashes each file as it reads it (one read, SHA-256 of the
   bytes, then parsing them). Timed against ``Zoo.load(verify=False)``, which reads as before
   (memory-mapped safetensors, no hash): 1,024 checkpoints of a digits MLP (64→32→10, 2,410
   parameters, 10 kB files) and 128 of an MNIST-sized MLP (784→300→100→10, 266,610 parameters,
   1 MB files). Both ways alternate, best of ``REPEATS``, files in the page cache (as after training).
2. The YAML alias bomb: a config of a few hundred bytes whose ``lr: {choice: [...]}`` expands to
   10**levels numbers. The previous ``zoo train`` (yaml.safe_load, then the expanded config written
   into zoo.json) is replayed by its own two calls; the new one refuses it before anything is built.
   Peak memory from tracemalloc (Python allocations; it slows the "before" path several-fold),
   seconds and bytes that would go to zoo.json; each level multiplies them by ten.
3. Query budgets on a zoo index: the seconds until an endless ``--where`` (a recursive WITH with no
   end; before, it ran until killed) and an endless view named ``models`` are refused; and what the
   budget costs a legitimate read: every row of an index of ``ROWS`` models fetched through the
   bounded connection against a plain ``sqlite3`` one (best of ``REPEATS``), with the steps it used
   against the budget it had (both grow with the rows, so the share holds for larger indexes).

Last line: one JSON object with the figures.
"""

from __future__ import annotations

import json
import os
import sqlite3
import tempfile
import time
import tracemalloc
from pathlib import Path

import torch
import yaml

from weightspace.errors import ConfigError, ZooError
from weightspace.nets import MLP
from weightspace.safe_input import connect_sqlite, read_yaml
from weightspace.zoo import Zoo
from weightspace.zoo.store import COLUMNS

REPEATS = 5
ROWS = 200_000
ENDLESS = "WITH RECURSIVE r(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM r)"
ZOOS = {"digits_mlp_1024": (MLP(64, (32,), 10), 1024), "mnist_mlp_128": (MLP(784, (300, 100), 10), 128)}


def _zoo(root: Path, arch, n: int) -> Zoo:
    zoo = Zoo.create(root, arch.space, architecture=arch.config, task={})
    weights = arch.init(range(n))
    zoo.add_many([(f"m{i:05d}", weights[i], {"run_id": f"r{i}", "seed": i}) for i in range(n)])
    return zoo


def time_loads(root: Path) -> dict:
    out = {}
    for name, (arch, n) in ZOOS.items():
        zoo = _zoo(root / name, arch, n)
        zoo.load()  # warm the page cache
        best = {True: float("inf"), False: float("inf")}
        for _ in range(REPEATS):
            for verify in (False, True):
                start = time.perf_counter()
                zoo.load(verify=verify)
                best[verify] = min(best[verify], time.perf_counter() - start)
        size = sum(p.stat().st_size for p in (root / name / "models").iterdir())
        out[name] = {"models": n, "params": arch.space.num_params, "megabytes": round(size / 1e6, 1),
                     "seconds_without_checksums": round(best[False], 3),
                     "seconds_with_checksums": round(best[True], 3),
                     "ratio_with_vs_without": round(best[True] / best[False], 3)}
    return out


def measure_bomb(root: Path, levels: int) -> dict:
    path = root / f"bomb{levels}.yaml"
    path.write_text(_chained(levels))
    result = {"levels": levels, "file_bytes": path.stat().st_size}
    tracemalloc.start()
    start = time.perf_counter()
    data = yaml.safe_load(path.read_text())  # what read_config did
    text = json.dumps(data)  # what Zoo.create wrote to zoo.json
    result.update(before_seconds=round(time.perf_counter() - start, 3),
                  before_peak_megabytes=round(tracemalloc.get_traced_memory()[1] / 1e6, 1),
                  before_zoo_json_megabytes=round(len(text) / 1e6, 1))
    del data, text
    tracemalloc.stop()
    tracemalloc.start()
    start = time.perf_counter()
    try:
        read_yaml(path)
        refused = ""
    except ConfigError as e:
        refused = str(e).split(": ", 1)[1]
    result.update(after_seconds=round(time.perf_counter() - start, 4),
                  after_peak_megabytes=round(tracemalloc.get_traced_memory()[1] / 1e6, 2), after_refusal=refused)
    tracemalloc.stop()
    return result


def _chained(levels: int) -> str:
    """The config with the anchors nested inside lr's choice list, as the issue's 600-byte file."""
    inner = "&a0 [" + ",".join(["0.1"] * 10) + "]"
    for i in range(1, levels):
        inner = f"&a{i} [{inner}," + ",".join([f"*a{i - 1}"] * 9) + "]"
    return ("name: bomb\ndataset: {name: digits}\narchitecture: {kind: mlp, widths: [8]}\npopulation:\n"
            f"  runs: 1\n  hparams:\n    lr: {{choice: {inner}}}\n")


def measure_budgets(root: Path) -> dict:
    arch = MLP(64, (32,), 10)
    zoo = _zoo(root / "budget", arch, 1)
    index = zoo.root / "index.sqlite"

    def refused_after(call) -> dict:
        start, cpu = time.perf_counter(), time.process_time()
        try:
            call()
        except ZooError:
            return {"seconds": round(time.perf_counter() - start, 2), "cpu_seconds": round(time.process_time() - cpu, 2)}
        raise AssertionError("not refused")

    endless_where = refused_after(lambda: zoo.index(f"epoch IN ({ENDLESS} SELECT x FROM r)"))
    con = sqlite3.connect(index)
    columns = ", ".join(c if c not in ("model_id", "run_id", "seed", "hparams") else
                        {"model_id": "printf('m%07d', x)", "run_id": "printf('r%06d', x / 20)", "seed": "x / 20",
                         "hparams": "json_object('lr', 0.001 * (x % 7), 'epochs', 20)"}[c] for c in COLUMNS)
    con.execute(f"INSERT INTO models {ENDLESS.replace('FROM r)', f'FROM r WHERE x < {ROWS})')} "
                f"SELECT {columns} FROM r, (SELECT * FROM models LIMIT 1)")
    con.commit()
    con.close()
    sql = f"SELECT {', '.join(COLUMNS)} FROM models ORDER BY run_id, epoch, step, model_id"
    best = {"bounded": float("inf"), "plain": float("inf")}
    for _ in range(REPEATS):
        for kind in ("bounded", "plain"):
            con = connect_sqlite(index) if kind == "bounded" else sqlite3.connect(index)
            start = time.perf_counter()
            rows = con.execute(sql).fetchall()
            best[kind] = min(best[kind], time.perf_counter() - start)
            if kind == "bounded":
                used, budget = con.steps, con.budget
            con.close()
    con = sqlite3.connect(index)
    con.executescript(f"ALTER TABLE models RENAME TO m2; CREATE VIEW models AS {ENDLESS} SELECT m2.* FROM m2, r;")
    con.close()
    endless_view = refused_after(lambda: Zoo.open(zoo.root))
    return {"endless_where_refused_after": endless_where, "endless_view_refused_after": endless_view,
            "rows": len(rows), "index_megabytes": round(index.stat().st_size / 1e6, 1),
            "steps_used": used, "budget": budget, "share_of_budget": round(used / budget, 3),
            "read_seconds_bounded": round(best["bounded"], 3), "read_seconds_plain": round(best["plain"], 3),
            "ratio_bounded_vs_plain": round(best["bounded"] / best["plain"], 3)}


def main() -> None:
    torch.set_num_threads(1)
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        loads = time_loads(root)
        bombs = [measure_bomb(root, levels) for levels in (5, 6)]
        budgets = measure_budgets(root)
    print(json.dumps({"load": loads, "alias_bomb": bombs, "query_budget": budgets, "load_avg": os.getloadavg()[0]}))


if __name__ == "__main__":
    main()
