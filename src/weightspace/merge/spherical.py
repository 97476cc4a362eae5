"""Interpolation on the sphere: SLERP between two models, and the Karcher (Riemannian) mean of many.

Both treat each tensor as one vector: its direction is interpolated along the great circle, and its
norm linearly.
"""

from __future__ import annotations

import torch
from torch import Tensor

from ..errors import ConfigError
from .tensors import work_dtype

BLOCK = 1 << 20  # entries per block of SLERP's norms and dot product


def slerp(tensors: Tensor, base: Tensor, *, t: float, dot_threshold: float = 0.9995, eps: float = 1e-8,
          **_) -> Tensor:
    """Spherical interpolation from ``base`` (t = 0) to ``tensors[0]`` (t = 1); linear interpolation
    when the two are nearly parallel or antiparallel (|cos| > ``dot_threshold``).

    In float32 (float64 inputs: float64), the result rounded to the inputs' dtype. Norms and the dot
    product are summed over blocks of 2²⁰ entries (the norm of the blocks' norms), as mergekit's
    ``mergekit-yaml`` does, so that the results agree bit for bit."""
    dt = work_dtype(base)
    a, b = base.reshape(-1), tensors[0].reshape(-1)
    tt = torch.tensor(t, dtype=dt)
    if a.numel() == 0:
        return base.clone()
    blocks = range(0, a.numel(), BLOCK)
    norm_a = torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(a[i:i + BLOCK].to(dt)) for i in blocks]))
    norm_b = torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(b[i:i + BLOCK].to(dt)) for i in blocks]))
    norm_a = torch.where(norm_a > eps, norm_a, 1)
    norm_b = torch.where(norm_b > eps, norm_b, 1)
    dot = torch.stack([((a[i:i + BLOCK].to(dt) / norm_a) * (b[i:i + BLOCK].to(dt) / norm_b)).sum()
                       for i in blocks]).sum().clamp(-1, 1)
    linear = dot.abs() > dot_threshold
    theta = torch.acos(torch.where(linear, 0, dot))
    coef_a = torch.where(linear, 1 - tt, torch.sin((1 - tt) * theta) / torch.sin(theta))
    coef_b = torch.where(linear, tt, torch.sin(tt * theta) / torch.sin(theta))
    out = torch.empty_like(a)
    for i in blocks:
        out[i:i + BLOCK] = coef_a * a[i:i + BLOCK].to(dt) + coef_b * b[i:i + BLOCK].to(dt)
    return out.reshape(base.shape)


def karcher(tensors: Tensor, base: Tensor | None, *, weight: Tensor, max_iter: int = 10, tol: float = 1e-5,
            **_) -> Tensor:
    """Weighted Karcher mean of the models' directions on the unit sphere (fixed-point iterations of
    the exponential map), scaled by the weighted mean norm: ``[M, *shape]`` → ``[*shape]``."""
    if tensors.shape[0] == 1:
        return tensors[0].clone()
    dt = work_dtype(tensors)
    x = tensors.reshape(tensors.shape[0], -1).to(dt)
    alpha = (weight / weight.sum()).to(dt)
    norms = torch.linalg.vector_norm(x, dim=1)
    valid = norms > tol
    if not bool(valid.any()):
        return torch.zeros_like(tensors[0])
    units = x[valid] / norms[valid, None]
    a = alpha[valid] / alpha[valid].sum()
    mean = (a[:, None] * units).sum(0)
    mean_norm = torch.linalg.vector_norm(mean)
    mean = units[0].clone() if mean_norm < tol else mean / mean_norm
    for _ in range(max_iter):
        dot = (units @ mean).clamp(-1, 1)
        theta = torch.arccos(dot)
        moving = theta >= tol
        coef = torch.where(moving, a * theta / torch.where(moving, torch.sin(theta), 1), 0)
        tangent = (coef[:, None] * (units - dot[:, None] * mean)).sum(0)
        tangent_norm = torch.linalg.vector_norm(tangent)
        if tangent_norm < tol:
            break
        mean = torch.cos(tangent_norm) * mean + torch.sin(tangent_norm) * (tangent / tangent_norm)
        unit_norm = torch.linalg.vector_norm(mean)
        if unit_norm > tol:
            mean = mean / unit_norm
    scale = (alpha * norms).sum()
    return (scale * mean).reshape(tensors.shape[1:]).to(tensors.dtype)


def nuslerp(tensors: Tensor, base: Tensor | None, *, weight: Tensor, nuslerp_row_wise: bool = False,
            nuslerp_flatten: bool = True, **_) -> Tensor:
    """SLERP between two models (or, with a base, between their task vectors) at t = w₂ / (w₁ + w₂):
    over the whole tensor (``nuslerp_flatten``, the default), or per row (``nuslerp_row_wise``) or
    per column. Computed in the inputs' dtype; linear where the two are (anti)parallel."""
    w = [float(v) for v in weight]
    t = 0.5 if abs(sum(w)) < 1e-6 else w[1] / sum(w)
    a, b = (tensors[0], tensors[1]) if base is None else (tensors[0] - base, tensors[1] - base)
    shape = a.shape
    if nuslerp_flatten:
        a, b = a.reshape(-1), b.reshape(-1)
    elif nuslerp_row_wise:
        a, b = a.transpose(0, -1), b.transpose(0, -1)
    out = _slerp_last_axis(a, b, t)
    if not nuslerp_flatten and nuslerp_row_wise:
        out = out.transpose(0, -1)
    out = out.reshape(shape)
    return out if base is None else base + out


def _slerp_last_axis(a: Tensor, b: Tensor, t: float, eps: float = 1e-8) -> Tensor:
    ua = a / torch.linalg.vector_norm(a, dim=-1, keepdim=True).clamp(min=1e-7)
    ub = b / torch.linalg.vector_norm(b, dim=-1, keepdim=True).clamp(min=1e-7)
    cos = (ua * ub).sum(-1, keepdim=True).clamp(-1, 1)
    parallel = (1 - cos.square()) <= eps**2
    theta = torch.acos(torch.where(parallel, 0, cos))
    spherical = (torch.sin((1 - t) * theta) * a + torch.sin(t * theta) * b) / torch.sin(theta)
    return torch.where(parallel, (1 - t) * a + t * b, spherical)


def multislerp(tensors: Tensor, base: Tensor | None, *, weight: Tensor, normalize_weights: bool = True,
               eps: float = 1e-8, **_) -> Tensor:
    """Weighted interpolation of M models (or task vectors, with a base) on the sphere, in one step:
    their directions mapped to the tangent space at their weighted mean direction, averaged there, and
    mapped back; the norm is the weighted mean norm. Computed in the inputs' dtype."""
    if tensors.shape[0] == 1:
        return tensors[0]
    x = tensors if base is None else tensors - base
    flat = x.reshape(x.shape[0], -1)
    w = weight.to(x.dtype)
    if normalize_weights:
        w = w / w.sum()
    norms = torch.linalg.vector_norm(flat, dim=-1, keepdim=True)
    units = flat / (norms + eps)
    mean = (units * w[:, None]).sum(0)
    mean_norm = torch.linalg.vector_norm(mean)
    if mean_norm < eps:
        if x.shape[0] != 2:
            raise ConfigError("multislerp: the weighted directions cancel out (e.g. a and -a with equal weights); "
                              "choose other weights")
        out = x[0] * w[0] + x[1] * w[1]
    else:
        mean = mean / mean_norm
        tangent = units - (units * mean).sum(-1, keepdim=True) * mean
        step = (tangent * w[:, None]).sum(0)
        length = torch.linalg.vector_norm(step) + eps
        out = (mean * torch.cos(length) + step * (torch.sin(length) / length)) * (norms[:, 0] * w).sum()
        out = out.reshape(x.shape[1:])
    return out if base is None else out + base
