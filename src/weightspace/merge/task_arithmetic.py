"""Task arithmetic and its family: θ_base + λ Σ wᵢ δᵢ with δᵢ = θᵢ − θ_base, optionally sparsified
(TIES: top-k magnitude; DARE: random drop; breadcrumbs: drop outliers and the smallest; DELLA:
magnitude-ranked random drop) and optionally with a sign consensus (TIES): per coordinate a sign is
elected by the sign of Σ wᵢ δᵢ and only the deltas that agree with it are averaged.

One implementation with two options (``sparsify``, ``consensus``), as the family is one method. It
runs in two passes so that a large tensor (a 65 M-entry embedding) never has its M task vectors
materialised at once: first, model by model, the mask of each δᵢ and the factor that rescales it
(they depend on the whole tensor); then the combination, entry by entry, in chunks. Every entry goes
through the operations, in the dtype, that one pass over the whole tensor would apply.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor

from ..errors import ConfigError
from . import sparsify as sp
from .topk import largest_magnitudes

SPARSIFIERS = ("magnitude", "random", "magnitude_outliers", "della")
CHUNK = 1 << 22  # entries per chunk of the second pass (a multiple of 8: masks are kept as bits)


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
    if sparsify is not None and sparsify not in SPARSIFIERS:
        raise ConfigError(f"sparsify: expected one of {list(SPARSIFIERS)} or None, got {sparsify!r}")
    m = tensors.shape[0]
    masks: list[tuple[Tensor, Tensor | None] | None] = [None] * m  # per model: (kept entries, rescale factor)
    work = sp.mask_dtype(sparsify, base.dtype)  # what a sparsified delta is computed in
    if sparsify is not None:
        for i in range(m):
            d = float(density[i])
            if d >= 1:
                continue  # kept whole, not rescaled
            if sparsify == "magnitude" and not rescale:  # the k largest |δ|, δ made chunk by chunk
                masks[i] = (_packed(largest_magnitudes(tensors[i], sp.keep_count(d, base.numel()), base)), None)
                continue
            delta = tensors[i] - base
            mask = sp.keep_mask(delta, sparsify, d, gamma=0.0 if gamma is None else float(gamma[i]),
                                epsilon=0.0 if epsilon is None else float(epsilon[i]), generator=generator)
            factor = None
            if rescale:
                delta = delta.to(work)
                factor = sp.rescale_factor(delta, delta * mask)
            masks[i] = (_packed(mask), factor)
            del delta
    w = weight.to(base.dtype)
    flat_in, flat_base = tensors.reshape(m, -1), base.reshape(-1)
    out = torch.empty_like(flat_base)
    for start in range(0, flat_base.numel(), CHUNK):
        part = slice(start, start + CHUNK)
        deltas = flat_in[:, part] - flat_base[part]
        for i, kept in enumerate(masks):
            if kept is not None:
                bits, factor = kept
                mask = torch.from_numpy(np.unpackbits(bits[start // 8:], count=deltas.shape[1]).view(np.bool_))
                d = deltas[i].to(work) * mask
                deltas[i] = d if factor is None else d * factor
        out[part] = _combine(deltas, flat_base[part], w, consensus, normalize, lambda_)
    return out.reshape(base.shape)


def _packed(mask: Tensor) -> np.ndarray:
    """A boolean mask as bits: one eighth of its bytes while the other models' masks are made."""
    return np.packbits(mask.reshape(-1).numpy())


def _combine(deltas: Tensor, base: Tensor, w: Tensor, consensus: bool, normalize: bool, lambda_: float) -> Tensor:
    w = w.reshape(-1, 1)
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
