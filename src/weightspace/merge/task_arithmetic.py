"""Task arithmetic and its family: θ_base + λ Σ wᵢ δᵢ with δᵢ = θᵢ − θ_base, optionally sparsified
(TIES: top-k magnitude; DARE: random drop; breadcrumbs: drop outliers and the smallest; DELLA:
magnitude-ranked random drop) and optionally with a sign consensus (TIES): per coordinate a sign is
elected by the sign of Σ wᵢ δᵢ and only the deltas that agree with it are averaged.

One implementation with two options (``sparsify``, ``consensus``), as the family is one method.
"""

from __future__ import annotations

import torch
from torch import Tensor

from ..errors import ConfigError
from . import sparsify as sp

SPARSIFIERS = ("magnitude", "random", "magnitude_outliers", "della")


def task_arithmetic(
    tensors: Tensor,
    base: Tensor,
    *,
    weight: Tensor,
    density: Tensor,
    sparsify: str | None = None,
    consensus: bool = False,
    normalize: bool = False,
    rescale: bool = False,
    lambda_: float = 1.0,
    gamma: Tensor | None = None,
    epsilon: Tensor | None = None,
    generator: torch.Generator | None = None,
) -> Tensor:
    """``tensors [M, *shape]`` (the non-base models), ``base [*shape]`` → merged ``[*shape]``.

    ``weight``, ``density``, ``gamma`` and ``epsilon`` are per model (``Tensor[M]``). ``normalize``
    divides the summed deltas by the summed weights (of the agreeing models, with ``consensus``).
    """
    deltas = tensors - base
    if sparsify == "magnitude":
        deltas = sp.magnitude(deltas, density, rescale=rescale)
    elif sparsify == "random":
        deltas = sp.bernoulli(deltas, density, generator, rescale=rescale)
    elif sparsify == "magnitude_outliers":
        deltas = sp.magnitude_outliers(deltas, density, gamma, rescale=rescale)
    elif sparsify == "della":
        deltas = sp.della_magprune(deltas, density, epsilon, generator, rescale=rescale)
    elif sparsify is not None:
        raise ConfigError(f"sparsify: expected one of {list(SPARSIFIERS)} or None, got {sparsify!r}")
    w = weight.to(deltas.dtype).reshape(-1, *([1] * base.dim()))
    deltas = deltas * w
    if consensus:
        elected = torch.where(deltas.sum(0) >= 0, 1.0, -1.0).to(deltas.dtype)
        agree = (deltas.sign() == elected).to(deltas.dtype)
        mixed = (deltas * agree).sum(0)
        divisor = (w * agree).sum(0)
        divisor = torch.where(divisor == 0, torch.ones_like(divisor), divisor)
    else:
        mixed = deltas.sum(0)
        divisor = w.sum(0)
        divisor = torch.where(divisor.abs() < 1e-8, torch.ones_like(divisor), divisor)
    if normalize:
        mixed = mixed / divisor
    if lambda_ != 1:
        mixed = mixed * lambda_
    return (base + mixed).to(base.dtype)


def check_della(density: Tensor, epsilon: Tensor) -> None:
    """DELLA's keep probabilities density ± ε must lie in (0, 1) wherever something is dropped."""
    active = (density > 0) & (density < 1)
    bad = active & ((density - epsilon <= 0) | (density + epsilon >= 1))
    if bool(bad.any()):
        i = int(bad.nonzero()[0])
        raise ConfigError(f"epsilon: density ± epsilon must lie in (0, 1); model {i} has density "
                          f"{float(density[i])} and epsilon {float(epsilon[i])}")
