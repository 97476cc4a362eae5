"""Task: a data set scored by an architecture, for many weight vectors in one batched call."""

from __future__ import annotations

from dataclasses import dataclass

import pandas as pd
import torch
from torch import Tensor

from .data import Dataset
from .errors import LayoutError
from .nets import Architecture
from .parallel import RayBackend, map_rows

SPLITS = ("train", "val", "test")


@dataclass(frozen=True)
class Task:
    dataset: Dataset
    arch: Architecture
    # Models × examples evaluated per call; bounds activation memory (a CNN's feature maps grow with both).
    max_cells: int = 2**16

    def _check(self, weights: Tensor) -> Tensor:
        if weights.dim() == 1:
            weights = weights[None]
        if weights.shape[-1] != self.arch.space.num_params:
            raise LayoutError(
                f"expected {self.arch.space.num_params} parameters for layout '{self.arch.name}', "
                f"got {weights.shape[-1]}"
            )
        return weights

    @torch.no_grad()
    def logits(self, weights: Tensor, split: str = "test") -> Tensor:
        """``[N, examples, classes]`` for ``weights: Tensor[N, P]``, in chunks of models and examples."""
        weights = self._check(weights)
        x, _ = self.dataset.split(split)
        n, m = weights.shape[0], x.shape[0]
        ex_chunk = max(1, min(m, self.max_cells // max(1, min(n, 64))))
        mod_chunk = max(1, self.max_cells // ex_chunk)
        rows = []
        for i in range(0, n, mod_chunk):
            w = weights[i : i + mod_chunk]
            rows.append(torch.cat([self.arch.logits(w, x[j : j + ex_chunk]) for j in range(0, m, ex_chunk)], 1))
        return torch.cat(rows)

    def predictions(self, weights: Tensor, split: str = "test", *, backend: RayBackend | None = None,
                    block_size: int = 1024) -> Tensor:
        """Predicted labels ``LongTensor[N, examples]``; with a Ray backend, blocks of models are Ray tasks."""
        if backend is not None:
            return torch.cat(map_rows(_predictions, self._check(weights), block_size=block_size, backend=backend,
                                      desc="predicting", task=self, split=split))
        return self.logits(weights, split).argmax(-1)

    def accuracy(self, weights: Tensor, split: str = "test") -> Tensor:
        _, y = self.dataset.split(split)
        return (self.predictions(weights, split) == y).float().mean(-1)

    def loss(self, weights: Tensor, split: str = "test") -> Tensor:
        """Mean loss per model, ``Tensor[N]``."""
        return self._scores(weights, split)[0]

    def evaluate(self, weights: Tensor, splits: tuple[str, ...] = SPLITS, *, backend: RayBackend | None = None,
                 block_size: int = 1024) -> pd.DataFrame:
        """Loss and accuracy of every model on every split: one row per model.

        With a :class:`~weightspace.parallel.RayBackend`, blocks of ``block_size`` models are Ray tasks
        (many generated models, say); the task (its data set) goes to the object store once.
        """
        if backend is not None:
            parts = map_rows(_evaluate, self._check(weights), block_size=block_size, backend=backend,
                             desc="evaluating", task=self, splits=splits)
            return pd.concat(parts, ignore_index=True) if parts else self.evaluate(weights[:0], splits)
        cols = {}
        for split in splits:
            loss, acc = self._scores(weights, split)
            cols[f"{split}_loss"], cols[f"{split}_acc"] = loss.numpy(), acc.numpy()
        return pd.DataFrame(cols)

    def _scores(self, weights: Tensor, split: str) -> tuple[Tensor, Tensor]:
        _, y = self.dataset.split(split)
        logits = self.logits(weights, split)
        return self.arch.loss(logits, y.expand(logits.shape[0], -1)), (logits.argmax(-1) == y).float().mean(-1)


def _predictions(weights: Tensor, *, task: Task, split: str) -> Tensor:
    return task.predictions(weights, split)


def _evaluate(weights: Tensor, *, task: Task, splits: tuple[str, ...]) -> pd.DataFrame:
    return task.evaluate(weights, splits)
