"""Zoo building on Ray against the local backend, on this machine: the same 1,024-model zoo both ways.

The shipped ``digits-mlp`` config with 1,024 runs (4 chunks of 256; checkpoints at epochs 1 and the
last; every checkpoint evaluated on three splits and written to the zoo). The local backend is what
users run today (``weightspace zoo train``): the chunks one after another, torch at all cores
(the default) and, as a second reference, at one thread (``threads: 1`` in the config); the
overhead is taken against the faster of the two.
The Ray backend runs the same chunks as Ray tasks on a local Ray capped to this machine's cores
(one task per core, one torch thread each), timed two ways: ``cold`` includes starting and stopping
Ray (what ``--backend ray`` costs on a laptop), ``warm`` uses a Ray already running (a cluster).
Both zoos must hold bitwise the same weights. Overhead = Ray time / the faster local time (target ≤ 1.3).

Usage: python benchmarks/ray_scaling.py [--runs 1024] [--epochs 2]
Last line: one JSON object with the figures.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import tempfile

import ray
import torch
from _training import digits_config as config
from _training import timed

from weightspace.parallel import RayBackend
from weightspace.zoo.build import build_zoo


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--runs", type=int, default=1024)
    p.add_argument("--epochs", type=int, default=2)
    p.add_argument("--object-store-mb", type=int, default=200)
    args = p.parse_args()
    cores = os.cpu_count()
    cfg = config(args.runs, args.epochs)
    backend = RayBackend(num_cpus=cores, object_store_memory=args.object_store_mb * 2**20)
    tmp = tempfile.mkdtemp(prefix="ray_scaling_")
    try:
        torch.set_num_threads(cores)
        local, t_local = timed(lambda: build_zoo(cfg, out=os.path.join(tmp, "local"), progress=False))
        torch.set_num_threads(1)
        local1, t_local1 = timed(lambda: build_zoo(cfg, out=os.path.join(tmp, "local1"), progress=False))
        torch.set_num_threads(cores)
        cold, t_cold = timed(lambda: build_zoo(cfg, out=os.path.join(tmp, "cold"), progress=False, backend=backend))
        _, t_start = timed(lambda: ray.init(num_cpus=cores, object_store_memory=args.object_store_mb * 2**20,
                                            include_dashboard=False, logging_level="warning"))
        try:
            warm, t_warm = timed(lambda: build_zoo(cfg, out=os.path.join(tmp, "warm"), progress=False,
                                                   backend=backend))
        finally:
            ray.shutdown()
        w_local, d_local = local.load()
        same = all(torch.equal(w_local, z.load()[0]) and list(z.index()["model_id"]) == list(d_local["model_id"])
                   for z in (local1, cold, warm))
        best = min(t_local, t_local1)
        figures = {
            "models": args.runs,
            "checkpoints": len(d_local),
            "epochs": args.epochs,
            "chunks": -(-args.runs // cfg["training"]["chunk_size"]),
            "cores": cores,
            "seconds_local": round(t_local, 2),
            "seconds_local_1_thread": round(t_local1, 2),
            "seconds_ray_cold": round(t_cold, 2),
            "seconds_ray_warm": round(t_warm, 2),
            "seconds_ray_start": round(t_start, 2),
            "overhead_cold": round(t_cold / best, 3),
            "overhead_warm": round(t_warm / best, 3),
            "overhead_cold_vs_default_local": round(t_cold / t_local, 3),
            "target_overhead": 1.3,
            "bitwise_identical": same,
            "load_average": os.getloadavg()[0],
        }
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    print(json.dumps(figures))


if __name__ == "__main__":
    main()
