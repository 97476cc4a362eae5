"""What the weight-synthesis benchmarks share: training small populations in memory with the
batched trainer, and the machine's load next to every timing."""

from __future__ import annotations

import os

import torch

from weightspace.zoo.train import train_population
from weightspace.zoo.trainer import HParams, Run, TrainConfig


class MemorySink:
    """Collects checkpoints in memory instead of a zoo on disk, so a timing is training, not the disk."""

    def __init__(self):
        self.items = []

    def ids(self):
        return set()

    def add_many(self, items):
        self.items.extend(items)
        return len(items)


def train(arch, dataset, hparams: list[HParams], seeds: list[int], *, init=None, checkpoint_epochs=(),
          batch_size: int = 64) -> tuple[torch.Tensor, list[dict]]:
    """Train one run per (hparams, seed) in one batched program: checkpoints ``[K, P]`` and their records
    (run_id, epoch, ...), ordered by run then epoch."""
    runs = [Run(f"r{i:04d}", s, hp) for i, (hp, s) in enumerate(zip(hparams, seeds))]
    sink = MemorySink()
    config = TrainConfig(batch_size=batch_size, checkpoint_epochs=tuple(checkpoint_epochs), eval_splits=())
    train_population(arch, dataset, runs, sink, config, init=init, progress=False)
    items = sorted(sink.items, key=lambda it: it[0])
    return torch.stack([w if isinstance(w, torch.Tensor) else arch.space.flatten(w) for _, w, _ in items]), \
        [{"model_id": m, **r} for m, _, r in items]


def load() -> list[float]:
    """1-, 5- and 15-minute load averages (the machine is shared)."""
    return [round(v, 2) for v in os.getloadavg()]
