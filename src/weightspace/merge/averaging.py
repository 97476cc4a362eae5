"""Averages of checkpoints along one training run: SWA (equal weights) and EMA, as the averaging
functions of ``torch.optim.swa_utils`` folded over ``[T, ..., P]`` checkpoints.

The rule is a small function passed as an argument (``get_swa_avg_fn()``, ``get_ema_avg_fn(decay)``),
so SWA and EMA differ only in it; recompute BatchNorm statistics afterwards
(``merge.batchnorm.recompute_batchnorm``): averaged running statistics are not the statistics of
the averaged network.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor
from torch.optim.swa_utils import get_ema_avg_fn, get_swa_avg_fn

from ..errors import ConfigError

AvgFn = Callable[[Tensor, Tensor, Tensor | int], Tensor]


def average_checkpoints(checkpoints: Tensor, avg_fn: AvgFn) -> Tensor:
    """Fold ``avg_fn(averaged, current, num_averaged)`` over ``checkpoints [T, ..., P]`` in order
    (what ``AveragedModel.update_parameters`` does after each step): ``[..., P]``."""
    if checkpoints.dim() < 2 or checkpoints.shape[0] == 0:
        raise ConfigError(f"checkpoints: expected [T, ..., P] with T ≥ 1, got {tuple(checkpoints.shape)}")
    avg = checkpoints[0].clone()
    for t in range(1, checkpoints.shape[0]):
        avg = avg_fn(avg, checkpoints[t], torch.tensor(t))
    return avg


def swa(checkpoints: Tensor, start: int = 0) -> Tensor:
    """Stochastic weight averaging: the equal-weight average of ``checkpoints[start:]``."""
    if not 0 <= start < checkpoints.shape[0]:
        raise ConfigError(f"start: expected an index in [0, {checkpoints.shape[0]}), got {start}")
    return average_checkpoints(checkpoints[start:], get_swa_avg_fn())


def ema(checkpoints: Tensor, decay: float = 0.999) -> Tensor:
    """Exponential moving average: avg ← decay·avg + (1 − decay)·w, from the first checkpoint."""
    if not 0.0 <= decay <= 1.0:
        raise ConfigError(f"decay: expected a number in [0, 1], got {decay}")
    return average_checkpoints(checkpoints, get_ema_avg_fn(decay))
