"""A permutation-invariant network on weights: each hidden layer's neurons as a set (DeepSets).

Each neuron of a permutation group is described by everything its index selects: its incoming
weights and bias, its outgoing weights. Along axes that *other* groups permute (the incoming
weights' input neurons, say) the entries are summarised by mean, std, min and max, so a neuron's
description does not change when other layers are reordered; axes nobody permutes (kernel
positions, input channels, output classes) are kept as they are. A per-group MLP embeds every
neuron, mean- and max-pooling over the neurons removes the group's own order, and a last MLP maps
the pooled vectors (plus the tensors no group touches) to the prediction. The output is therefore
exactly invariant to every neuron permutation of the layout.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from ..space import WeightSpace

SET_STATISTICS = 4  # mean, std, min, max over permuted axes


def _permuted_axes(space: WeightSpace) -> set[tuple[str, int]]:
    return {(t, a) for g in space.groups for t, a in g.axes}


def neuron_inputs(weights: Tensor, space: WeightSpace) -> tuple[list[Tensor], Tensor]:
    """Per group ``Tensor[N, size, d_g]`` of neuron descriptions, and ``Tensor[N, d_free]`` of the
    tensors no group permutes (raw values)."""
    params = space.unflatten(weights, cast=False)
    n = weights.shape[0]
    permuted = _permuted_axes(space)
    groups = []
    for g in space.groups:
        parts = []
        for tname, axis in g.axes:
            t = params[tname]
            others = [a for a in range(t.dim() - 1) if a != axis]
            fixed = [a for a in others if (tname, a) not in permuted]
            moving = [a for a in others if (tname, a) in permuted]
            t = t.permute(0, 1 + axis, *(1 + a for a in fixed), *(1 + a for a in moving))
            n_fixed = math.prod(t.shape[2 : 2 + len(fixed)])
            t = t.reshape(n, g.size, n_fixed, -1)
            if moving:
                t = torch.cat([t.mean(-1, keepdim=True), t.std(-1, correction=0, keepdim=True),
                               t.amin(-1, keepdim=True), t.amax(-1, keepdim=True)], -1)
            parts.append(t.reshape(n, g.size, -1))
        groups.append(torch.cat(parts, -1))
    touched = {t for t, _ in permuted}
    free = [params[e.name].reshape(n, -1) for e in space.entries if e.name not in touched]
    return groups, (torch.cat(free, 1) if free else weights.new_zeros(n, 0))


class NeuronSetNet(nn.Module):
    """φ_g per group (shared by its neurons), mean+max pooling, then ρ on the pooled vectors."""

    def __init__(self, group_dims: list[int], free_dim: int, hidden: int):
        super().__init__()
        self.phis = nn.ModuleList(
            nn.Sequential(nn.Linear(d, hidden), nn.ReLU(), nn.Linear(hidden, hidden), nn.ReLU()) for d in group_dims
        )
        self.rho = nn.Sequential(nn.Linear(2 * hidden * len(group_dims) + free_dim, hidden), nn.ReLU(),
                                 nn.Linear(hidden, hidden), nn.ReLU(), nn.Linear(hidden, 1))
        # Input standardisation, learned in fit and saved with the weights.
        for i, d in enumerate(group_dims):
            self.register_buffer(f"group{i}_mean", torch.zeros(d))
            self.register_buffer(f"group{i}_std", torch.ones(d))
        self.register_buffer("free_mean", torch.zeros(free_dim))
        self.register_buffer("free_std", torch.ones(free_dim))

    def set_standardisation(self, groups: list[Tensor], free: Tensor) -> None:
        for i, x in enumerate(groups):
            flat = x.reshape(-1, x.shape[-1])
            getattr(self, f"group{i}_mean").copy_(flat.mean(0))
            getattr(self, f"group{i}_std").copy_(flat.std(0, correction=0).clamp_min(1e-8))
        self.free_mean.copy_(free.mean(0))
        self.free_std.copy_(free.std(0, correction=0).clamp_min(1e-8))

    def forward(self, groups: list[Tensor], free: Tensor) -> Tensor:
        pooled = []
        for i, (phi, x) in enumerate(zip(self.phis, groups)):
            h = phi((x - getattr(self, f"group{i}_mean")) / getattr(self, f"group{i}_std"))
            pooled += [h.mean(1), h.amax(1)]
        pooled.append((free - self.free_mean) / self.free_std)
        return self.rho(torch.cat(pooled, 1)).squeeze(1)
