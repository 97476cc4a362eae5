"""A fit through the command line, alone and beside one other busy process: ``--threads`` at its
default (one) against torch's own default (one thread per core, what the command used before).

The P-diff tiny preset (``weightspace generate data pdiff --preset tiny``), fitted with
``weightspace generate fit pdiff``, each fit in a fresh process, timed end to end (imports
included). The busy neighbour is a second Python process running 2-thread float32 matmuls
(512 × 512) without pause; the load average is read before each timing. Every figure is the best
of ``--repeats`` runs.

Last line: one JSON object with the figures.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
BUSY = """
import torch
torch.set_num_threads(2)
a = torch.randn(512, 512)
while True:
    a = torch.tanh(a @ a)
"""


def cli(*args: str, env: dict) -> float:
    start = time.perf_counter()
    subprocess.run([sys.executable, "-m", "weightspace.cli", *args], env=env, check=True,
                   stdout=subprocess.DEVNULL)
    return time.perf_counter() - start


def timed_fit(zoo: Path, out: Path, threads: int | None, env: dict, repeats: int) -> tuple[float, float]:
    """Best seconds of ``repeats`` fits, and the 1-minute load average before the first."""
    load = os.getloadavg()[0]
    best = float("inf")
    for i in range(repeats):
        extra = [] if threads is None else ["--threads", str(threads)]
        best = min(best, cli("generate", "fit", "pdiff", "--zoo", str(zoo), "--out", str(out / str(i)),
                             "--force", "--quiet", *extra, env=env))
    return best, load


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=2)
    args = parser.parse_args()
    cores = len(os.sched_getaffinity(0))
    env = {k: v for k, v in os.environ.items() if not k.endswith("_NUM_THREADS")}  # as a user's shell
    env["PYTHONPATH"] = str(ROOT / "src")
    figures: dict = {"cores": cores, "repeats": args.repeats}
    with tempfile.TemporaryDirectory() as tmp:
        zoo, out = Path(tmp) / "zoo", Path(tmp) / "fits"
        cli("generate", "data", "pdiff", "--preset", "tiny", "--out", str(zoo), "--quiet", env=env)
        for busy in (False, True):
            neighbour = subprocess.Popen([sys.executable, "-c", BUSY], env=env) if busy else None
            try:
                if busy:
                    time.sleep(2)  # the neighbour's threads running
                for name, threads in (("default", None), ("torch_default", cores)):
                    seconds, load = timed_fit(zoo, out, threads, env, args.repeats)
                    where = "beside_busy" if busy else "alone"
                    figures[f"seconds_{name}_{where}"] = round(seconds, 2)
                    figures[f"load_before_{name}_{where}"] = round(load, 2)
            finally:
                if neighbour is not None:
                    neighbour.kill()
                    neighbour.wait()
    figures["slowdown_beside_busy_default"] = round(figures["seconds_default_beside_busy"]
                                                    / figures["seconds_default_alone"], 2)
    figures["slowdown_beside_busy_torch_default"] = round(figures["seconds_torch_default_beside_busy"]
                                                          / figures["seconds_torch_default_alone"], 2)
    figures["ratio_torch_default_over_default_beside_busy"] = round(
        figures["seconds_torch_default_beside_busy"] / figures["seconds_default_beside_busy"], 2)
    print(json.dumps(figures))


if __name__ == "__main__":
    main()
