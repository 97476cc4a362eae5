"""A zoo built on a Ray cluster of several nodes against the local backend, and a node lost mid-build.

The cluster is simulated on this machine (``ray.cluster_utils.Cluster``): a head node that holds
the driver and its actors (the zoo's index writer, the progress counter) and no CPU for tasks,
and two worker nodes of one CPU and a 200 MiB object store each, so the cluster has this machine's
two cores, as the local backend does. The work is the shipped ``digits-mlp`` config with 1,024
runs (4 chunks of 256; checkpoints at epoch 1 and the last).

- local: ``weightspace zoo train`` as users run it today, torch at all cores (the default) and at
  one thread; the faster is the reference.
- cluster: the same build with ``RayBackend(address=HEAD)`` on the running cluster (its start is
  timed apart: a cluster is started once for many jobs), twice: the first build also starts the
  job's worker processes on each node (what one ``--backend ray --address`` command pays), the
  second finds them running.
- one node: the same build on a local Ray of this machine's two CPUs, its workers running (one
  node, the same CPUs: what several nodes cost over one).
- node loss: the same build again, one worker node removed (every process of it killed at once)
  while it trains a chunk and after the zoo's first checkpoints are indexed; the build finishes on
  the remaining node. Reported: checkpoints expected, indexed, duplicated (files in models/ beyond
  one per indexed id), left in .staging, problems ``zoo info --verify`` finds, and whether the
  zoo is bitwise the local one.

Usage: python benchmarks/ray_cluster.py [--runs 1024] [--epochs 20]
Last line: one JSON object with the figures.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import tempfile
import threading
import time

import psutil
import ray
import torch
from _training import digits_config as config
from _training import timed
from ray.cluster_utils import Cluster

from weightspace.errors import WeightspaceError
from weightspace.parallel import RayBackend
from weightspace.zoo import Zoo
from weightspace.zoo.build import build_zoo

STORE = 200 * 2**20


def running_a_chunk(node) -> bool:
    """Whether a Ray worker under this node's raylet is running a block (process title)."""
    raylet = psutil.Process(node.all_processes["raylet"][0].process.pid)
    for p in raylet.children(recursive=True):
        try:
            if p.cmdline()[:1] and p.cmdline()[0].startswith("ray::_run_block"):
                return True
        except psutil.Error:
            pass
    return False


def indexed(root: str) -> int:
    try:
        return len(Zoo.open(root))
    except (WeightspaceError, OSError):  # not created yet
        return 0


def same(a: Zoo, b: Zoo) -> bool:
    (wa, da), (wb, db) = a.load(), b.load()
    return torch.equal(wa, wb) and list(da["model_id"]) == list(db["model_id"])


def lose_a_node_mid_build(cluster: Cluster, nodes: list, cfg: dict, out: str, backend: RayBackend) -> dict:
    """Build ``cfg`` into ``out`` and remove the first of ``nodes`` seen training a chunk once the zoo
    has its first checkpoints."""
    result: dict = {}

    def build():
        try:
            result["zoo"] = build_zoo(cfg, out=out, progress=False, backend=backend)
        except WeightspaceError as e:  # a build that fails says so in the figures
            result["error"] = f"{type(e).__name__}: {e}"

    start = time.perf_counter()
    thread = threading.Thread(target=build)
    thread.start()
    while not (busy := [n for n in nodes if running_a_chunk(n)]) or not indexed(out):
        if not thread.is_alive():
            raise RuntimeError(f"the build ended before a node could be lost: {result}")
        time.sleep(0.05)
    node = busy[0]
    at_loss, t_loss = indexed(out), time.perf_counter() - start
    cluster.remove_node(node, allow_graceful=False)
    thread.join()
    return {**result, "seconds": time.perf_counter() - start, "seconds_at_loss": t_loss,
            "checkpoints_at_loss": at_loss}


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--runs", type=int, default=1024)
    p.add_argument("--epochs", type=int, default=20)
    args = p.parse_args()
    cfg = config(args.runs, args.epochs)
    expected = 2 * args.runs
    load_before = os.getloadavg()[0]
    tmp = tempfile.mkdtemp(prefix="ray_cluster_")
    try:
        build_zoo(config(4, 1), out=os.path.join(tmp, "warm-up"), progress=False)  # data set, imports
        local, t_local = timed(lambda: build_zoo(cfg, out=os.path.join(tmp, "local"), progress=False))
        torch.set_num_threads(1)
        _, t_local1 = timed(lambda: build_zoo(cfg, out=os.path.join(tmp, "local1"), progress=False))
        torch.set_num_threads(os.cpu_count())

        def start():
            c = Cluster(initialize_head=True,
                        head_node_args={"num_cpus": 0, "object_store_memory": STORE, "include_dashboard": False})
            workers = [c.add_node(num_cpus=1, object_store_memory=STORE) for _ in range(2)]
            c.wait_for_nodes()
            c.connect()
            return c, workers

        (cluster, workers), t_start = timed(start)
        try:
            backend = RayBackend(address=cluster.address)
            first, t_first = timed(lambda: build_zoo(cfg, out=os.path.join(tmp, "first"), progress=False,
                                                     backend=backend))
            on_cluster, t_cluster = timed(lambda: build_zoo(cfg, out=os.path.join(tmp, "cluster"), progress=False,
                                                            backend=backend))
            loss = lose_a_node_mid_build(cluster, workers, cfg, os.path.join(tmp, "loss"), backend)
        finally:
            ray.shutdown()
            cluster.shutdown()
        # the same two CPUs as one Ray node, already running: what is the cost of several nodes?
        ray.init(num_cpus=2, object_store_memory=STORE, include_dashboard=False, logging_level="warning")
        try:  # a first build of two chunks starts the two workers, as on the cluster
            build_zoo(config(512, 1), out=os.path.join(tmp, "one-node-warm-up"), progress=False, backend=RayBackend())
            one_node, t_one_node = timed(lambda: build_zoo(cfg, out=os.path.join(tmp, "one-node"), progress=False,
                                                           backend=RayBackend()))
        finally:
            ray.shutdown()
        zoo = Zoo.open(os.path.join(tmp, "loss"))
        index = zoo.index()
        ids = list(index["model_id"])
        problems, leftovers = zoo.inspect()
        files = os.listdir(os.path.join(tmp, "loss", "models"))
        best = min(t_local, t_local1)
        figures = {
            "models": args.runs,
            "checkpoints": expected,
            "epochs": args.epochs,
            "chunks": -(-args.runs // cfg["training"]["chunk_size"]),
            "nodes": "head (driver, actors, 0 CPU) + 2 workers x 1 CPU, 200 MiB object store each",
            "seconds_local": round(t_local, 2),
            "seconds_local_1_thread": round(t_local1, 2),
            "seconds_cluster_start": round(t_start, 2),
            "seconds_cluster_first_build": round(t_first, 2),
            "seconds_cluster": round(t_cluster, 2),
            "overhead_cluster_first_build": round(t_first / best, 3),
            "overhead_cluster": round(t_cluster / best, 3),
            "cluster_bitwise_identical": same(local, on_cluster) and same(local, first),
            "seconds_one_node_ray": round(t_one_node, 2),
            "cluster_vs_one_node_ray": round(t_cluster / t_one_node, 3),
            "one_node_bitwise_identical": same(local, one_node),
            "node_loss": {
                "seconds": round(loss["seconds"], 2),
                "lost_after_seconds": round(loss["seconds_at_loss"], 2),
                "checkpoints_indexed_when_lost": loss["checkpoints_at_loss"],
                "error": loss.get("error"),
                "checkpoints_expected": expected,
                "checkpoints_present": sum((zoo.root / f).is_file() for f in index["file"]),
                "checkpoints_indexed_twice": len(ids) - len(set(ids)),
                "checkpoints_duplicated": len(files) - len(set(ids)),
                "left_in_staging": len(os.listdir(os.path.join(tmp, "loss", ".staging"))),
                "verify_problems": len(problems) + len(leftovers),
                "bitwise_identical": same(local, zoo),
                "overhead_vs_cluster": round(loss["seconds"] / t_cluster, 3),
            },
            "load_average_before": load_before,
            "load_average_after": os.getloadavg()[0],
        }
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    print(json.dumps(figures))


if __name__ == "__main__":
    main()
