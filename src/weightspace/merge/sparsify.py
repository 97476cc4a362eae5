"""Which entries of one model's task vector δ a sparsified merge keeps (a boolean mask), and the
factor that restores its L1 norm: masks are made per model on the whole tensor (the choices depend
on all of it), and applied by the caller, chunk by chunk.

A positive density keeps at least one entry of a non-empty tensor: with k = int(density · numel)
a bias of 3 entries at density 0.2 would otherwise lose its whole update (mergekit #9, #411).
Dtypes as mergekit's: random masks on float16 are drawn and applied in float32 (``torch.bernoulli``
has no float16 kernel on CPU), everything else in the task vector's own dtype.
"""

from __future__ import annotations

import torch
from torch import Tensor

from .topk import largest_magnitudes

RESCALE_EPS = 1e-7


def keep_count(density: float, numel: int) -> int:
    """Entries kept: int(density · numel), at least 1 when density > 0."""
    if density <= 0:
        return 0
    return min(numel, max(1, int(density * numel)))


def mask_dtype(method: str, dtype: torch.dtype) -> torch.dtype:
    """The dtype a sparsifier's mask is applied (and the rescaling computed) in."""
    return torch.float32 if method in ("random", "della") and dtype == torch.float16 else dtype


def keep_mask(delta: Tensor, method: str, density: float, *, gamma: float = 0.0, epsilon: float = 0.0,
              generator: torch.Generator | None = None) -> Tensor:
    """``delta``'s entries kept: ``magnitude`` (TIES: the k largest magnitudes, among equal ones those
    mergekit's sort keeps), ``magnitude_outliers`` (breadcrumbs: drop the ``gamma`` fraction of largest
    magnitudes, then the smallest), ``random`` (DARE: each entry with probability ``density``, drawn
    in :func:`mask_dtype` from ``generator``) or ``della`` (keep probability rising linearly with the
    magnitude's rank along the tensor's axis 1, from density − ε to density + ε)."""
    dtype = mask_dtype(method, delta.dtype)
    if method == "magnitude":
        return largest_magnitudes(delta, keep_count(density, delta.numel()))
    if method == "magnitude_outliers":
        return _outliers(delta, density, gamma)
    if method == "random":
        return torch.bernoulli(torch.full(delta.shape, density, dtype=dtype), generator=generator).bool()
    if method == "della":
        return _della(delta, density, epsilon, dtype, generator).bool()
    raise ValueError(f"unknown sparsification {method!r}")


def rescale_factor(delta: Tensor, kept: Tensor) -> Tensor | None:
    """‖δ‖₁ / ‖kept‖₁ in their dtype, or None (leave ``kept`` as is) where either norm is below 1e-7."""
    before, after = delta.abs().sum(), kept.abs().sum()
    if before < RESCALE_EPS or after < RESCALE_EPS:
        return None
    return before / after


def _outliers(delta: Tensor, density: float, gamma: float) -> Tensor:
    n = delta.numel()
    keep = keep_count(density, n)
    bottom = max(0, n - keep - int(gamma * n))  # fewer outliers go when both would leave less than `keep`
    order = torch.sort(delta.abs().reshape(-1).float(), descending=False).indices
    mask = torch.zeros(n, dtype=torch.bool)
    mask[order[bottom:bottom + keep]] = True
    return mask.reshape(delta.shape)


def _della(delta: Tensor, density: float, epsilon: float, dtype: torch.dtype, generator) -> Tensor:
    if density <= 0:
        return torch.zeros(delta.shape, dtype=dtype)
    rows = delta if delta.dim() > 1 else delta.unsqueeze(0)
    ranks = rows.abs().argsort(dim=1).argsort(dim=1).to(dtype) + 1
    lo, hi = ranks.min(dim=1, keepdim=True).values, ranks.max(dim=1, keepdim=True).values
    # a row of one entry has no rank spread: it keeps with probability `density`
    spread = torch.where(hi > lo, ((ranks - lo) / (hi - lo)).clamp(0, 1), 0.5)
    probs = (density - epsilon) + spread * 2 * epsilon
    return torch.bernoulli(probs, generator=generator).to(dtype).reshape(delta.shape)
