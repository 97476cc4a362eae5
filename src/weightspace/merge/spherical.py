"""Interpolation on the sphere: SLERP between two models, and the Karcher (Riemannian) mean of many.

Both treat each tensor as one vector: its direction is interpolated along the great circle, and its
norm linearly.
"""

from __future__ import annotations

import torch
from torch import Tensor

from .tensors import work_dtype


def slerp(tensors: Tensor, base: Tensor, *, t: float, dot_threshold: float = 0.9995, eps: float = 1e-8,
          **_) -> Tensor:
    """Spherical interpolation from ``base`` (t = 0) to ``tensors[0]`` (t = 1); linear interpolation
    when the two are nearly parallel or antiparallel (|cos| > ``dot_threshold``)."""
    dt = work_dtype(base)
    a, b = base.reshape(-1).to(dt), tensors[0].reshape(-1).to(dt)
    if a.numel() == 0:
        return base.clone()
    norm_a, norm_b = torch.linalg.vector_norm(a), torch.linalg.vector_norm(b)
    norm_a = torch.where(norm_a > eps, norm_a, 1)
    norm_b = torch.where(norm_b > eps, norm_b, 1)
    dot = ((a / norm_a) * (b / norm_b)).sum().clamp(-1, 1)
    if dot.abs() > dot_threshold:
        coef_a, coef_b = 1 - t, t
    else:
        theta = torch.acos(dot)
        coef_a, coef_b = torch.sin((1 - t) * theta) / torch.sin(theta), torch.sin(t * theta) / torch.sin(theta)
    return (coef_a * a + coef_b * b).reshape(base.shape).to(base.dtype)


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
