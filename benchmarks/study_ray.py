"""``weightspace study`` on a local Ray against the local backend: the same numbers, and both times.

Both run as users run them, each in a fresh process: ``weightspace study --preset P`` (methods in
worker processes, one per core) and the same with ``--backend ray`` (each method a Ray task on a
local Ray started for the command: its start and stop are in the time). Their ``results.json``
must be the same apart from the timings it records; the stage lines they print must be the same
apart from their seconds.

Usage: python benchmarks/study_ray.py [--preset tiny] [--methods a,b]
Last line: one JSON object with the figures.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from weightspace.registry import BUILTIN_METHODS


def numbers(out: Path) -> str:
    """results.json without its timings."""
    def strip(x):
        if isinstance(x, dict):
            return {k: strip(v) for k, v in x.items() if k not in ("timings_s", "total_seconds")}
        return [strip(v) for v in x] if isinstance(x, list) else x

    return json.dumps(strip(json.loads((out / "results.json").read_text())), sort_keys=True)


def stage_lines(stdout: str) -> list[str]:
    return sorted(re.sub(r" \(\d+ s\)$", "", line) for line in stdout.splitlines()
                  if line.endswith(" s)") and " done (" in line)


def study(out: Path, preset: str, methods: str, *extra: str) -> tuple[str, float]:
    start = time.perf_counter()
    run = subprocess.run([sys.executable, "-m", "weightspace.cli", "study", "--preset", preset, "--methods", methods,
                          "--out", str(out), *extra], check=True, capture_output=True, text=True)
    return run.stdout, time.perf_counter() - start


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--preset", default="tiny")
    p.add_argument("--methods", default=",".join(BUILTIN_METHODS))
    args = p.parse_args()
    load_before = os.getloadavg()[0]
    with tempfile.TemporaryDirectory() as tmp:
        here, t_local = study(Path(tmp) / "local", args.preset, args.methods)
        there, t_ray = study(Path(tmp) / "ray", args.preset, args.methods, "--backend", "ray")
        figures = {
            "preset": args.preset,
            "methods": args.methods.split(","),
            "cores": os.cpu_count(),
            "seconds_local": round(t_local, 1),
            "seconds_ray_local": round(t_ray, 1),
            "ratio_ray_to_local": round(t_ray / t_local, 3),
            "same_results": numbers(Path(tmp) / "local") == numbers(Path(tmp) / "ray"),
            "same_stage_lines": stage_lines(here) == stage_lines(there),
            "stage_lines": len(stage_lines(there)),
            "load_average_before": load_before,
            "load_average_after": os.getloadavg()[0],
        }
    print(json.dumps(figures))


if __name__ == "__main__":
    main()
