"""Compare two study runs (output folders of `weightspace study`) model by model.

For every per-model CSV the two runs share (`<method>_per_model_seed_<s>.csv`) and every group both
hold (generated, training reference, baselines), the largest absolute difference of each shared
numeric column; then every number and string of `results.json` the two runs share (timings left
out). A refactoring that keeps behaviour prints 0 differences. Usage:

    python scripts/compare_studies.py RUN_A RUN_B
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pandas as pd


def compare(a: Path, b: Path) -> pd.DataFrame:
    rows = []
    for fa in sorted(a.glob("*_per_model_seed_*.csv")):
        fb = b / fa.name
        if not fb.is_file():
            continue
        ta, tb = pd.read_csv(fa), pd.read_csv(fb)
        for group in sorted(set(ta["group"]) & set(tb["group"])):
            ga, gb = ta[ta["group"] == group].reset_index(drop=True), tb[tb["group"] == group].reset_index(drop=True)
            if len(ga) != len(gb):
                rows.append({"file": fa.name, "group": group, "column": "rows", "max |difference|": np.inf})
                continue
            for column in sorted(set(ga.columns) & set(gb.columns)):
                if column == "group" or not (pd.api.types.is_numeric_dtype(ga[column])
                                             and pd.api.types.is_numeric_dtype(gb[column])):
                    continue
                x, y = ga[column].to_numpy(float), gb[column].to_numpy(float)
                same_nan = np.isnan(x) == np.isnan(y)
                diff = np.where(np.isnan(x) & np.isnan(y), 0.0, np.abs(x - y))
                rows.append({"file": fa.name, "group": group, "column": column,
                             "max |difference|": float(np.max(diff)) if same_nan.all() else np.inf})
    return pd.DataFrame(rows)


TIMING_KEYS = ("seconds", "timings_s", "elapsed", "duration")


def _leaves(tree, path=()):
    if isinstance(tree, dict):
        for k, v in tree.items():
            yield from _leaves(v, (*path, str(k)))
    elif isinstance(tree, list):
        for i, v in enumerate(tree):
            yield from _leaves(v, (*path, str(i)))
    else:
        yield "/".join(path), tree


def compare_results(a: Path, b: Path) -> tuple[int, list[str]]:
    """Shared leaves of the two results.json compared; returns (count, the ones that differ)."""
    la, lb = (dict(_leaves(json.loads((d / "results.json").read_text()))) for d in (a, b))
    shared = [k for k in la if k in lb and not any(t in k for t in TIMING_KEYS)]
    differ = [f"{k}: {la[k]!r} vs {lb[k]!r}" for k in shared if la[k] != lb[k]
              and not (isinstance(la[k], float) and isinstance(lb[k], float) and np.isnan(la[k]) and np.isnan(lb[k]))]
    return len(shared), differ


def main(argv: list[str]) -> int:
    if len(argv) != 2:
        print(__doc__.strip().splitlines()[-1].strip(), file=sys.stderr)
        return 2
    table = compare(Path(argv[0]), Path(argv[1]))
    if table.empty:
        print("no per-model tables in common")
        return 1
    summary = table.groupby("file")["max |difference|"].max()
    print(summary.to_string())
    changed = table[table["max |difference|"] > 0]
    print(f"\n{len(table)} group × column pairs compared over {table['file'].nunique()} tables; "
          f"{len(changed)} differ" + ("" if changed.empty else ":\n" + changed.to_string(index=False)))
    differ: list[str] = []
    if (Path(argv[0]) / "results.json").is_file() and (Path(argv[1]) / "results.json").is_file():
        count, differ = compare_results(Path(argv[0]), Path(argv[1]))
        print(f"results.json: {count} shared values compared; {len(differ)} differ"
              + "".join(f"\n  {d}" for d in differ[:40]))
    return 0 if changed.empty and not differ else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
