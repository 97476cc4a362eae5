"""Sparsification of task vectors, for M models at once: ``deltas [M, *shape]`` → same shape.

Each model has its own density (``Tensor[M]``); one sort of the stacked rows serves them all.
A positive density keeps at least one entry of a non-empty tensor: with k = int(density · numel)
a bias of 3 entries at density 0.2 would otherwise lose its whole update (mergekit #9, #411).
"""

from __future__ import annotations

import torch
from torch import Tensor


def _rows(t: Tensor) -> Tensor:
    return t.reshape(t.shape[0], -1)


def _per_model(x: Tensor, like: Tensor) -> Tensor:
    """``Tensor[M]`` → broadcastable against ``like [M, *shape]``."""
    return x.reshape(-1, *([1] * (like.dim() - 1))).to(like.dtype)


def _keep_count(density: Tensor, numel: int) -> Tensor:
    """Entries kept per model: int(density · numel), at least 1 when density > 0."""
    k = (density.double() * numel).floor().long()
    return torch.where(density > 0, k.clamp_min(1), torch.zeros_like(k)).clamp_max(numel)


def rescale_l1(deltas: Tensor, kept: Tensor, eps: float = 1e-7) -> Tensor:
    """``kept`` scaled, per model, to the L1 norm of ``deltas`` (left as is when either norm < eps)."""
    before, after = _rows(deltas).abs().sum(1), _rows(kept).abs().sum(1)
    ok = (before >= eps) & (after >= eps)
    scale = torch.where(ok, before / torch.where(ok, after, torch.ones_like(after)), torch.ones_like(after))
    return kept * _per_model(scale, kept)


def _finish(deltas: Tensor, mask: Tensor, density: Tensor, rescale: bool) -> Tensor:
    kept = deltas * mask
    if rescale:
        kept = rescale_l1(deltas, kept)
    # density ≥ 1 keeps the update untouched (no rescaling either)
    return torch.where(_per_model(density >= 1, deltas).bool(), deltas, kept)


def _ranks(magnitude: Tensor, descending: bool, dim: int = 1) -> Tensor:
    """Position of each entry in its row's sort by magnitude (0 = first): one sort and one scatter."""
    order = torch.argsort(magnitude, dim=dim, descending=descending)
    positions = torch.arange(magnitude.shape[dim], device=magnitude.device)
    positions = positions.reshape(-1, *([1] * (magnitude.dim() - dim - 1))).expand_as(order)
    return torch.empty_like(order).scatter_(dim, order, positions)


def magnitude(deltas: Tensor, density: Tensor, *, rescale: bool = False) -> Tensor:
    """Keep the ``density`` fraction of largest-magnitude entries of each model's delta (TIES).

    A selection (``kthvalue``, about 4× faster than a sort) finds each model's k-th largest
    magnitude; only models with ties at that threshold are sorted, so that exactly k entries are
    kept, the ones mergekit's sort keeps."""
    rows = _rows(deltas)
    mag = rows.abs().float()
    k = _keep_count(density, rows.shape[1])
    threshold = torch.full((rows.shape[0], 1), float("inf"), device=rows.device)
    for kk in k.unique().tolist():  # usually one density for all models
        if kk > 0:
            sel = k == kk
            threshold[sel] = torch.kthvalue(mag[sel], rows.shape[1] - kk + 1, dim=1, keepdim=True).values
    mask = mag >= threshold
    tied = mask.sum(1) > k
    if bool(tied.any()):
        mask[tied] = _ranks(mag[tied], descending=True) < k[tied, None]
    return _finish(deltas, mask.reshape(deltas.shape).to(deltas.dtype), density, rescale)


def magnitude_outliers(deltas: Tensor, density: Tensor, gamma: Tensor, *, rescale: bool = False) -> Tensor:
    """Drop the ``gamma`` fraction of largest entries, then the smallest, keeping ``density`` (breadcrumbs).

    Fewer outliers are dropped when both together would leave less than ``density``."""
    rows = _rows(deltas)
    n = rows.shape[1]
    keep = _keep_count(density, n)
    top = (gamma.double() * n).floor().long()
    bottom = (n - keep - top).clamp_min(0)
    rank = _ranks(rows.abs().float(), descending=False)
    mask = ((rank >= bottom[:, None]) & (rank < (bottom + keep)[:, None])).reshape(deltas.shape)
    return _finish(deltas, mask.to(deltas.dtype), density, rescale)


def bernoulli(deltas: Tensor, density: Tensor, generator: torch.Generator, *, rescale: bool = True) -> Tensor:
    """Keep each entry with probability ``density`` (DARE), rescaled to the delta's L1 norm.

    The draws come in model order, tensor by tensor, from ``generator``: the stream mergekit draws
    from the global generator one model at a time, so a seeded run matches it exactly."""
    probs = _per_model(density, deltas).float().expand(deltas.shape).contiguous()
    mask = torch.bernoulli(probs, generator=generator)
    return _finish(deltas, mask.to(deltas.dtype), density, rescale)


def della_magprune(deltas: Tensor, density: Tensor, epsilon: Tensor, generator: torch.Generator, *,
                   rescale: bool = True) -> Tensor:
    """Keep each entry with a probability rising linearly with its magnitude rank along the tensor's
    input axis (a vector's only axis), from density − ε to density + ε (DELLA's MagPrune).

    A row of one entry (an input axis of size 1) has no rank spread and keeps with ``density``."""
    x = deltas if deltas.dim() > 2 else deltas.reshape(deltas.shape[0], 1, -1)
    axis = 2  # the tensor's axis 1 (after the model axis); for vectors the only axis
    rank = _ranks(x.abs(), descending=False, dim=axis).float()
    n = x.shape[axis]
    spread = rank / (n - 1) if n > 1 else torch.full_like(rank, 0.5)
    d, e = _per_model(density, x).float(), _per_model(epsilon, x).float()
    probs = ((d - e) + spread.clamp(0, 1) * 2 * e).clamp(0, 1).contiguous()
    mask = torch.bernoulli(probs, generator=generator).reshape(deltas.shape)
    return _finish(deltas, mask.to(deltas.dtype), density, rescale)
