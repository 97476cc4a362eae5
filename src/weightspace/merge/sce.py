"""SCE (Wan et al. 2024, FuseChat): Select the entries where the task vectors vary most, Calculate
each model's weight from the energy of its task vector, Erase the entries that disagree with the
elected sign, then average what is left."""

from __future__ import annotations

import torch
from torch import Tensor


def sce(tensors: Tensor, base: Tensor, *, select_topk: float = 1.0, **_) -> Tensor:
    """``tensors [M, *shape]``, ``base [*shape]`` → merged ``[*shape]``, in the inputs' dtype.

    ``select_topk`` < 1 keeps, for all models alike, that fraction of the entries whose variance over
    the models is non-zero, the most varying ones."""
    deltas = tensors - base
    if select_topk < 1:
        deltas = deltas * _varying(deltas, select_topk)
    elected = torch.where(deltas.sum(0) >= 0, 1, -1).to(deltas.dtype)
    agree = deltas.sign() == elected
    energy = deltas.square().reshape(deltas.shape[0], -1).mean(1)
    total = float(energy.sum())
    weights = torch.full_like(energy, 1 / len(energy)) if abs(total) < 1e-6 else energy / total
    weights = weights.reshape(-1, *([1] * base.dim())) * agree
    return base + (deltas * weights).sum(0) / weights.sum(0).clamp(min=1e-6)


def _varying(deltas: Tensor, density: float) -> Tensor:
    if density <= 0:
        return torch.zeros_like(deltas[0])
    var = torch.var(deltas, dim=0, unbiased=False)
    k = int(int(torch.count_nonzero(var)) * density)
    mask = torch.zeros_like(var)
    if k:
        mask.view(-1)[torch.topk(var.abs().view(-1), k=k, largest=True).indices] = 1
    return mask
