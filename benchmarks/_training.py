"""What the weight-synthesis benchmarks share: training small populations in memory with the
batched trainer, and the machine's load next to every timing."""

from __future__ import annotations

import math
import os
import time

import torch

from weightspace.zoo.config import read_config
from weightspace.zoo.trainer import HParams, Run, TrainConfig, plan_chunks, train_chunks


def train_in_memory(arch, dataset, runs: list[Run], config: TrainConfig, *, init=None) -> list[tuple]:
    """The batched trainer with a list as its sink instead of a zoo on disk, so a timing is training,
    not the disk: ``[(model_id, weights [P], record), ...]``."""
    x, _ = dataset.split("train")
    chunks = plan_chunks(arch, runs, set(), math.ceil(len(x) / config.batch_size), config)
    items: list[tuple] = []

    def sink(new):
        items.extend(new)
        return len(new)

    train_chunks(arch, dataset, chunks, sink, config, init=init, progress=False)
    return items


def train(arch, dataset, hparams: list[HParams], seeds: list[int], *, init=None, checkpoint_epochs=(),
          batch_size: int = 64) -> tuple[torch.Tensor, list[dict]]:
    """Train one run per (hparams, seed) in one batched program: checkpoints ``[K, P]`` and their records
    (run_id, epoch, ...), ordered by run then epoch."""
    runs = [Run(f"r{i:04d}", s, hp) for i, (hp, s) in enumerate(zip(hparams, seeds))]
    config = TrainConfig(batch_size=batch_size, checkpoint_epochs=tuple(checkpoint_epochs), eval_splits=())
    items = sorted(train_in_memory(arch, dataset, runs, config, init=init), key=lambda it: it[0])
    return torch.stack([w if isinstance(w, torch.Tensor) else arch.space.flatten(w) for _, w, _ in items]), \
        [{"model_id": m, **r} for m, _, r in items]


def load() -> list[float]:
    """1-, 5- and 15-minute load averages (the machine is shared)."""
    return [round(v, 2) for v in os.getloadavg()]


def digits_config(runs: int, epochs: int) -> dict:
    """The shipped ``digits-mlp`` zoo config with ``runs`` runs of ``epochs`` epochs, one checkpoint
    after the first epoch besides the last."""
    cfg = read_config("digits-mlp")
    cfg["population"]["runs"] = runs
    cfg["population"]["hparams"]["epochs"] = epochs
    cfg["training"]["checkpoint_epochs"] = [1]
    return cfg


def timed(fn):
    """``fn()`` and the seconds it took."""
    t = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - t
