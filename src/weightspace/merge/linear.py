"""Weighted averages: linear (model soups' uniform average with weights, Wortsman et al. 2022), and
passthrough (one model copied, optionally scaled: what stacks layers of different models)."""

from __future__ import annotations

import torch
from torch import Tensor

from .tensors import work_dtype


def linear(tensors: Tensor, base: Tensor | None, *, weight: Tensor, normalize: bool = True, **_) -> Tensor:
    """Σ wᵢ θᵢ, divided by Σ wᵢ when ``normalize``: ``[M, *shape]`` → ``[*shape]``. Accumulated model by
    model in float32 (float64 inputs: float64), with the rounding of mergekit's accumulation."""
    dt = work_dtype(tensors)
    w = weight.to(dt)
    out = torch.zeros(tensors.shape[1:], dtype=dt)
    for t, c in zip(tensors, w):
        out.addcmul_(t, c)
    if normalize:
        out = out / w.sum()
    return out.to(tensors.dtype)


def passthrough(tensors: Tensor, base: Tensor | None, *, scale: Tensor, **_) -> Tensor:
    """The one model's tensor, times ``scale`` (default 1: unchanged)."""
    s = float(scale[0])
    return tensors[0] if s == 1 else tensors[0] * s
