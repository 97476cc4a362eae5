"""The :class:`Dataset` every loader returns, and what the loaders share: seeded (stratified)
splits, train-only standardisation, and the assembly of tensors with their record."""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import Tensor

from ..errors import ConfigError
from ..jsonable import jsonable

SPLITS = ("train", "val", "test")


@dataclass(frozen=True, eq=False)
class Dataset:
    """Train/val/test tensors plus the record of how they were made.

    ``eq=False``: comparing tensors element-wise has no single truth value.
    """

    name: str
    x_train: Tensor
    y_train: Tensor
    x_val: Tensor
    y_val: Tensor
    x_test: Tensor
    y_test: Tensor
    num_classes: int
    input_shape: tuple[int, ...]
    info: dict = field(default_factory=dict)

    def split(self, name: str) -> tuple[Tensor, Tensor]:
        if name not in SPLITS:
            raise ConfigError(
                f"unknown split {name!r} for data set {self.name!r}; allowed: {', '.join(SPLITS)}"
            )
        return getattr(self, f"x_{name}"), getattr(self, f"y_{name}")

    @property
    def sizes(self) -> dict[str, int]:
        return {s: int(self.split(s)[1].shape[0]) for s in SPLITS}

    def describe(self) -> dict:
        """JSON-ready summary, safe to mutate (a deep copy of ``info``)."""
        out = jsonable(self.info)
        out.update(
            name=self.name,
            num_classes=int(self.num_classes),
            input_shape=[int(d) for d in self.input_shape],
            sizes=self.sizes,
        )
        return out


def split_indices(y: np.ndarray, n_take: int, seed: int) -> tuple[np.ndarray, np.ndarray, bool]:
    """Seeded split of ``arange(len(y))`` into (rest, taken), stratified when possible.

    Falls back to a plain seeded shuffle when some class is too rare to
    stratify (tiny subsets); the caller records which one happened.
    """
    from sklearn.model_selection import train_test_split

    idx = np.arange(len(y))
    if n_take <= 0 or n_take >= len(y):
        raise ConfigError(
            f"cannot take {n_take} of {len(y)} examples; every split needs at least one example"
        )
    try:
        rest, taken = train_test_split(idx, test_size=n_take, random_state=seed, stratify=y)
        stratified = True
    except ValueError:
        rest, taken = train_test_split(idx, test_size=n_take, random_state=seed, stratify=None)
        stratified = False
    return np.sort(rest), np.sort(taken), stratified


def standardise(
    parts: dict[str, np.ndarray], scale: float, source_note: str
) -> tuple[dict[str, np.ndarray], dict]:
    """Scale, then standardise with one global mean/std fitted on train only.

    One scalar pair (not per-feature) keeps the transform trivially invertible
    and identical for flat and image layouts.
    """
    train = parts["train"].astype(np.float64) * scale
    mean = float(train.mean())
    std = float(train.std())
    if not math.isfinite(std) or std < 1e-12:
        std = 1.0
    out = {
        k: np.ascontiguousarray(((v.astype(np.float64) * scale - mean) / std).astype(np.float32))
        for k, v in parts.items()
    }
    norm = {
        "kind": "global_standardise",
        "scale": float(scale),
        "mean": mean,
        "std": std,
        "fit_on": "train",
        "formula": "x = (raw * scale - mean) / std",
        "raw": source_note,
    }
    return out, norm


def make_dataset(
    name: str,
    xs: dict[str, np.ndarray],
    ys: dict[str, np.ndarray],
    num_classes: int,
    input_shape: tuple[int, ...],
    info: dict,
) -> Dataset:
    """The :class:`Dataset` of arrays per split, its ``info`` completed with the split sizes."""
    tensors: dict[str, Tensor] = {}
    for s in SPLITS:
        x = np.ascontiguousarray(xs[s].reshape((len(xs[s]),) + tuple(input_shape)), dtype=np.float32)
        y = np.ascontiguousarray(ys[s], dtype=np.int64)
        tensors[f"x_{s}"] = torch.from_numpy(x)
        tensors[f"y_{s}"] = torch.from_numpy(y)
    sizes = {s: len(ys[s]) for s in SPLITS}
    total = sum(sizes.values())
    info = dict(info)
    info["sizes"] = sizes
    info["fractions"] = {s: sizes[s] / total for s in SPLITS}
    return Dataset(
        name=name,
        num_classes=int(num_classes),
        input_shape=tuple(int(d) for d in input_shape),
        info=jsonable(info),
        **tensors,
    )
