"""What the Ray tests share: small zoo configs, the checks that Ray gives the local results, and what
they do to a running build from outside (see which node each block ran on, kill the workers running
blocks, wait for the zoo to grow). Nothing here is in weightspace itself."""

from __future__ import annotations

import os
import threading
import time
import uuid
from collections import Counter
from pathlib import Path

import pandas as pd
import psutil
import torch

import weightspace.align
import weightspace.parallel
import weightspace.zoo.blocks
import weightspace.zoo.ray_backend
from weightspace.align import aligned_l2, aligned_l2_fast
from weightspace.audit.novelty import ModelSet, novelty_table
from weightspace.audit.similarity import (
    chamfer_distance,
    error_iou,
    prediction_agreement,
)
from weightspace.errors import WeightspaceError
from weightspace.zoo import Zoo
from weightspace.zoo.blocks import map_zoo
from weightspace.zoo.build import task_for_zoo

BLOCK = "ray::_run_block"  # the process title of a Ray worker while it runs a block (idle: ray::IDLE)
WRITER = "ray::_IndexWriter"  # the zoo index writer's actor
COUNTER = "ray::Counter"  # the progress counter's actor


def config(**training) -> dict:
    """12 small MLPs in 3 chunks of 4, half with dropout: dropout masks depend on the chunk."""
    return {
        "name": "t",
        "dataset": {"name": "digits", "seed": 0},
        "architecture": {"kind": "mlp", "widths": [16]},
        "population": {"runs": 12, "seed": 0,
                       "hparams": {"dropout": [0.0, 0.1], "epochs": 2, "lr": {"log_uniform": [0.01, 0.1]}}},
        "training": {"checkpoint_epochs": [1], "chunk_size": 4, **training},
    }


def long_config(chunks: int = 2) -> dict:
    """``chunks`` chunks of 256 models, 512 checkpoints each: a chunk writes its first 256 at epoch 1
    and trains 3 more epochs (seconds) before its last write, time enough to be killed in between."""
    cfg = config(chunk_size=256)
    cfg["population"]["runs"] = 256 * chunks
    cfg["population"]["hparams"]["epochs"] = 4
    return cfg


def assert_same_zoo(a: Zoo, b: Zoo) -> None:
    wa, da = a.load()
    wb, db = b.load()
    assert list(da["model_id"]) == list(db["model_id"])
    assert torch.equal(wa, wb)
    cols = ["run_id", "seed", "epoch", "step", "hparams", "test_acc", "train_loss"]
    assert da[cols].equals(db[cols])


def _mean_abs(weights, rows, *, scale):
    return rows[["model_id"]].assign(v=weights.abs().mean(1).numpy() * scale)


def audit_blocks_equal_local(zoo: Zoo, backend) -> None:
    """The audit's blocks on ``backend`` give the local numbers: evaluation and predictions of many
    models, pairwise similarity, aligned distances, Chamfer distances, the novelty table, and a map
    over the zoo's blocks (blocks of 5 to 7 models, so that each call is several tasks)."""
    w, _ = zoo.load()
    task = task_for_zoo(zoo)
    pred = task.predictions(w)
    assert torch.equal(task.predictions(w, backend=backend, block_size=7), pred)
    pd.testing.assert_frame_equal(task.evaluate(w, backend=backend, block_size=7), task.evaluate(w))
    labels = task.dataset.y_test
    assert torch.equal(error_iou(pred[:5], pred, labels, chunk_size=7, backend=backend),
                       error_iou(pred[:5], pred, labels))
    assert torch.equal(prediction_agreement(pred[:5], pred, chunk_size=7, backend=backend),
                       prediction_agreement(pred[:5], pred))
    space = zoo.space
    assert torch.equal(aligned_l2(space, w[:3], w[:6], chunk_pairs=5, backend=backend), aligned_l2(space, w[:3], w[:6]))
    torch.testing.assert_close(aligned_l2_fast(space, w[:4], w, block_size=5, backend=backend),
                               aligned_l2_fast(space, w[:4], w))
    points = [torch.randn(n, 2, generator=torch.Generator().manual_seed(n)) for n in (5, 9, 7, 3, 8)]
    torch.testing.assert_close(chamfer_distance(points[:2], points, block_size=2, backend=backend),
                               chamfer_distance(points[:2], points))
    gen = w[:3] + 0.01 * torch.randn(3, w.shape[1], generator=torch.Generator().manual_seed(0))
    sets = [ModelSet("training", task.accuracy(w), weights=w, predictions=pred, is_training=True),
            ModelSet("generated", task.accuracy(gen), weights=gen, predictions=task.predictions(gen))]
    pd.testing.assert_frame_equal(novelty_table(sets, labels, space=space, aligned="exact", backend=backend),
                                  novelty_table(sets, labels, space=space, aligned="exact"))
    on_ray = pd.concat(map_zoo(_mean_abs, zoo, where="epoch = ?", params=(2,), block_size=5, backend=backend,
                               scale=2.0), ignore_index=True)
    here = pd.concat(map_zoo(_mean_abs, zoo, where="epoch = ?", params=(2,), block_size=5, scale=2.0),
                     ignore_index=True)
    assert len(here) == len(zoo) // 2
    pd.testing.assert_frame_equal(on_ray, here)


class OnNode:
    """A block function that first notes the Ray node it runs on (one empty file per call in ``log``)."""

    def __init__(self, fn, log: Path):
        self.fn, self.log = fn, str(log)

    def __call__(self, block, *shared, **kwargs):
        import ray

        node = ray.get_runtime_context().get_node_id()
        Path(self.log, f"{node}.{os.getpid()}.{uuid.uuid4().hex[:8]}").touch()
        return self.fn(block, *shared, **kwargs)


def record_nodes(monkeypatch, log: Path) -> None:
    """Every ``map_blocks`` of the zoo build, the audit's blocks, alignment and ``map_zoo`` notes its
    blocks' nodes in ``log`` (see :func:`nodes_used`)."""
    log.mkdir(parents=True, exist_ok=True)
    map_blocks = getattr(weightspace.parallel.map_blocks, "__wrapped__", weightspace.parallel.map_blocks)

    def recorded(fn, blocks, *shared, **kwargs):
        return map_blocks(OnNode(fn, log), blocks, *shared, **kwargs)

    recorded.__wrapped__ = map_blocks  # recording again replaces this log
    for module in (weightspace.parallel, weightspace.zoo.ray_backend, weightspace.align, weightspace.zoo.blocks):
        monkeypatch.setattr(module, "map_blocks", recorded)


def nodes_used(log: Path) -> Counter:
    """Blocks started per node id (a retried block counts once per attempt)."""
    return Counter(p.name.split(".")[0] for p in Path(log).iterdir())


def processes(root_pid: int, title: str) -> list[psutil.Process]:
    """The processes below ``root_pid`` (a raylet, or this process for a local Ray) titled ``title``."""
    found = []
    for p in psutil.Process(root_pid).children(recursive=True):
        try:
            cmd = p.cmdline()
        except psutil.Error:  # gone meanwhile
            continue
        if cmd and cmd[0].startswith(title):
            found.append(p)
    return found


def kill(procs: list[psutil.Process]) -> int:
    """SIGKILL each of ``procs`` (our own Ray workers); how many were still there to kill."""
    killed = 0
    for p in procs:
        try:
            p.kill()
            killed += 1
        except psutil.NoSuchProcess:
            pass
    return killed


def indexed(root: Path) -> int:
    """Checkpoints in the zoo at ``root`` now (0 while it is being created)."""
    try:
        return len(Zoo.open(root))
    except (WeightspaceError, OSError):
        return 0


def wait_for(condition, what: str, timeout: float = 240.0, every: float = 0.05):
    """Poll ``condition()`` until it is truthy; returns its value."""
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        value = condition()
        if value:
            return value
        time.sleep(every)
    raise TimeoutError(f"waited {timeout:.0f} s for {what}")


class InBackground:
    """``fn()`` in a thread: ``result()`` waits and returns its value or raises its exception."""

    def __init__(self, fn):
        self.value, self.error = None, None
        self.thread = threading.Thread(target=self._run, args=(fn,), daemon=True)
        self.thread.start()

    def _run(self, fn):
        try:
            self.value = fn()
        except BaseException as e:  # noqa: BLE001 - handed to result(), which raises it
            self.error = e

    def running(self) -> bool:
        return self.thread.is_alive()

    def result(self, timeout: float = 300.0):
        self.thread.join(timeout)
        if self.thread.is_alive():
            raise TimeoutError(f"still running after {timeout:.0f} s")
        if self.error is not None:
            raise self.error
        return self.value
