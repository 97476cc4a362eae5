"""Model Stock (Jang et al. 2024): interpolate between the base and the average of the fine-tuned
models by a ratio set by how aligned their updates are (mean pairwise cosine of the deltas)."""

from __future__ import annotations

import torch
from torch import Tensor


def model_stock(tensors: Tensor, base: Tensor, *, filter_wise: bool = False, **_) -> Tensor:
    """``tensors [M, *shape]`` (M ≥ 2 fine-tunes), ``base [*shape]`` → ``[*shape]``.

    t = M·cos / (1 + (M − 1)·cos), the result t·mean + (1 − t)·base; per output row with
    ``filter_wise`` (vectors along the last axis), else over the whole tensor. Where 1 + (M − 1)·cos ≈ 0 the base is kept.
    """
    m = tensors.shape[0]
    # filter-wise: one ratio per vector along the last axis (an output row of a linear layer)
    rows = base.reshape(-1, base.shape[-1]) if filter_wise and base.dim() else base.reshape(1, -1)
    w0 = rows
    ws = tensors.reshape(m, *rows.shape)
    offsets = ws - w0  # [M, R, n]
    norms = torch.linalg.vector_norm(offsets, dim=-1)  # [M, R]
    dots = torch.einsum("irn,jrn->ijr", offsets, offsets)
    cos = (dots / (norms[:, None] * norms[None]).clamp(min=1e-6)).clamp(-1, 1)
    i, j = torch.triu_indices(m, m, offset=1)
    cos = cos[i, j].mean(0)[:, None]  # [R, 1]
    denominator = 1 + (m - 1) * cos
    singular = denominator.abs() < 1e-6
    t = torch.where(singular, torch.zeros_like(cos), m * cos / torch.where(singular, 1, denominator))
    average = ws.sum(0) / m
    return (t * average + (1 - t) * w0).reshape(base.shape)
