"""Weighted averages: linear (model soups' uniform average with weights, Wortsman et al. 2022)."""

from __future__ import annotations

from torch import Tensor

from .tensors import work_dtype


def linear(tensors: Tensor, base: Tensor | None, *, weight: Tensor, normalize: bool = True, **_) -> Tensor:
    """Σ wᵢ θᵢ, divided by Σ wᵢ when ``normalize``: ``[M, *shape]`` → ``[*shape]``."""
    dt = work_dtype(tensors)
    w = weight.to(dt).reshape(-1, *([1] * (tensors.dim() - 1)))
    out = (tensors.to(dt) * w).sum(0)
    if normalize:
        out = out / weight.to(dt).sum()
    return out.to(tensors.dtype)
