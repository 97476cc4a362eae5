"""Neuron-permutation symmetry: apply and draw permutations of hidden units."""

from __future__ import annotations

from collections.abc import Mapping

import torch
from torch import Tensor

from .space import WeightSpace


def permute(space: WeightSpace, weights: Tensor, perms: Mapping[str, Tensor]) -> Tensor:
    """Apply neuron permutations to ``Tensor[P]`` or ``Tensor[N, P]`` (one permutation set per model)."""
    idx = space.coordinate_permutation(perms)
    if idx.dim() == 1:
        return weights[..., idx]
    return torch.gather(weights, -1, idx)


def random_permutation(
    space: WeightSpace, n: int | None = None, generator: torch.Generator | None = None
) -> dict[str, Tensor]:
    """One random permutation per group (``[size]``), or ``n`` of them (``[n, size]``)."""
    out = {}
    for g in space.groups:
        if n is None:
            out[g.name] = torch.randperm(g.size, generator=generator)
        else:
            out[g.name] = torch.argsort(torch.rand(n, g.size, generator=generator), dim=-1)
    return out
