"""Neuron symmetries: apply and draw permutations of hidden units; rescale ReLU neurons."""

from __future__ import annotations

from collections.abc import Mapping

import torch
from torch import Tensor

from .errors import LayoutError
from .space import WeightSpace


def permute(space: WeightSpace, weights: Tensor, perms: Mapping[str, Tensor]) -> Tensor:
    """Apply neuron permutations to ``Tensor[P]`` or ``Tensor[N, P]`` (one permutation set per model)."""
    # The index is built on the CPU (the layout's offsets live there) and moved to the weights.
    idx = space.coordinate_permutation({k: v.cpu() for k, v in perms.items()}).to(weights.device)
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


def permutation_pool(space: WeightSpace, size: int, generator: torch.Generator | None = None) -> Tensor:
    """``LongTensor[K, P]`` coordinate permutations for augmentation: the identity first, then
    ``size - 1`` random neuron permutations (just the identity when ``size <= 1`` or the layout
    has no permutation groups). Drawn once, so views pick from a fixed set, as the originals do."""
    identity = torch.arange(space.num_params)[None]
    if size <= 1 or not space.groups:
        return identity
    perms = random_permutation(space, n=size - 1, generator=generator)
    return torch.cat([identity, space.coordinate_permutation(perms)])


def scale_neurons(space: WeightSpace, weights: Tensor, factors: Mapping[str, Tensor]) -> Tensor:
    """Apply the positive-scaling symmetry of ReLU / LeakyReLU nets to ``Tensor[P]`` or ``Tensor[N, P]``.

    ``factors[g]`` is a positive ``Tensor[size]`` (one for every model) or ``Tensor[N, size]``:
    neuron i of group g has its producing coordinates (the group's axis-0 entries: weight rows and
    bias) multiplied by ``c_i`` and its consuming coordinates (the next layer's input axis) divided
    by it. Since ``act(c x) = c act(x)`` for c > 0 (and max-pooling and averaging commute with it),
    the function is unchanged while the vector moves, off the permutation orbit. BatchNorm'd
    groups normalise the scale away instead, so they are refused.
    """
    lead = tuple(weights.shape[:-1])
    if weights.dim() not in (1, 2) or weights.shape[-1] != space.num_params:
        raise LayoutError(f"weights: expected [{space.num_params}] or [N, {space.num_params}] for layout "
                          f"'{space.name}', got {tuple(weights.shape)}")
    dtype = weights.dtype if weights.dtype.is_floating_point else torch.float32
    pieces = {e.name: torch.ones(*lead, *e.shape, dtype=dtype, device=weights.device) for e in space.entries}
    for name, c in factors.items():
        g = space.group(name)
        bn = sorted({t for t, _ in g.axes if "norms." in t or "running_" in t})
        if bn:
            raise LayoutError(f"factors: group '{name}' feeds BatchNorm tensors {bn}, which normalise a neuron's "
                              "scale away; positive scaling is a symmetry only of groups without BatchNorm")
        c = torch.as_tensor(c, dtype=dtype, device=weights.device)
        if c.shape not in ((g.size,), (*lead, g.size)):
            raise LayoutError(f"factors['{name}']: expected shape [{g.size}] or {[*lead, g.size]}, "
                              f"got {list(c.shape)}")
        if not bool((c > 0).all()):
            raise LayoutError(f"factors['{name}']: expected positive factors (the symmetry needs c > 0)")
        c_lead = tuple(c.shape[:-1])
        for tname, axis in g.axes:
            if axis > 1:
                raise LayoutError(f"group '{name}': axis {axis} of '{tname}' is neither an output (0) nor an "
                                  "input (1) axis; cannot tell how to scale it")
            t = pieces[tname]
            shape = [1] * t.dim()
            shape[: len(c_lead)] = c_lead
            shape[len(lead) + axis] = g.size
            pieces[tname] = t * c.reshape(shape) if axis == 0 else t / c.reshape(shape)
    scale = torch.cat([pieces[e.name].reshape(*lead, -1) for e in space.entries], dim=-1)
    return (weights * scale).to(weights.dtype)
