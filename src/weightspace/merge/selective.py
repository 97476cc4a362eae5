"""Merges of a base and one other model that take the other's value only where it matters: NearSwap
(where the two are close) and Arcee Fusion (where the change is important)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

QUANTILE_SAMPLE = 1_000_000  # Arcee Fusion's quartiles of a larger tensor come from a sample this big
ROWS = 1 << 22  # entries per chunk of rows


def nearswap(tensors: Tensor, base: Tensor, *, t: float, **_) -> Tensor:
    """Interpolate from the base towards the other model by min(1, t / |difference|): entries closer
    than ``t`` are swapped for the other model's, distant ones move by t. In the inputs' dtype."""
    other = tensors[0]
    weight = (t / (base - other).abs().clamp(min=1e-6)).clamp(0, 1)
    return weight * other + (1 - weight) * base


def arcee_fusion(tensors: Tensor, base: Tensor, *, generator: torch.Generator | None = None, **_) -> Tensor:
    """The base plus the other model's change where that change is important: importance is
    |difference| × KL(softmax(other) ‖ softmax(base)) along the last axis, and entries above
    median + 1.5 IQR of it are taken. Quartiles of tensors with more than ``QUANTILE_SAMPLE`` entries
    come from a sample drawn with replacement from ``generator``. The mask is float32, so half-precision
    inputs give a float32 result. Rows are processed ``ROWS`` entries at a time."""
    other = tensors[0]
    width = other.shape[-1] if other.dim() else 1
    o_rows, b_rows = other.reshape(-1, width), base.reshape(-1, width)
    step = max(1, ROWS // width)
    importance = torch.empty(o_rows.shape, dtype=other.dtype)
    for i in range(0, len(o_rows), step):
        o, b = o_rows[i:i + step], b_rows[i:i + step]
        p, q = F.softmax(o, dim=-1) + 1e-8, F.softmax(b, dim=-1) + 1e-8
        importance[i:i + step] = (o - b).abs() * (p * torch.log(p / q)).sum(-1, keepdim=True)
    sample = importance.reshape(-1)
    if sample.numel() > QUANTILE_SAMPLE:
        sample = sample[torch.randint(sample.numel(), (QUANTILE_SAMPLE,), generator=generator)]
    ordered = torch.sort(sample).values
    q1, median, q3 = ordered[(torch.tensor([0.25, 0.5, 0.75]) * (ordered.numel() - 1)).long()]
    threshold = median + 1.5 * (q3 - q1)
    out = torch.empty(o_rows.shape, dtype=torch.promote_types(base.dtype, torch.float32))
    for i in range(0, len(o_rows), step):
        o, b = o_rows[i:i + step], b_rows[i:i + step]
        out[i:i + step] = b + (o - b) * (importance[i:i + step] >= threshold).float()
    return out.reshape(base.shape)
