"""BatchNorm statistics of models that were never trained as they are (averages, interpolations,
soups): their running means and variances are recomputed on data, as ``swa_utils.update_bn`` does,
for N models in one batched forward pass."""

from __future__ import annotations

import dataclasses

import torch
from torch import Tensor

from ..nets import Architecture


def has_batchnorm(arch: Architecture) -> bool:
    return any(e.name.endswith("running_mean") for e in arch.space.entries)


@torch.no_grad()
def recompute_batchnorm(arch: Architecture, weights: Tensor, x: Tensor) -> Tensor:
    """``weights [N, P]`` (or ``[P]``) with every BatchNorm's running statistics replaced by the
    statistics of its input on ``x`` (unbiased variance, as ``swa_utils.update_bn`` on one batch).
    Architectures without BatchNorm come back unchanged."""
    if not has_batchnorm(arch):
        return weights
    one = weights.dim() == 1
    w = weights[None] if one else weights
    # momentum 1: the running statistics become those of this batch (layers see corrected inputs in turn)
    train_arch = dataclasses.replace(arch, bn_momentum=1.0)
    _, buffers = train_arch.apply(arch.space.unflatten(w, cast=False), x, train=True)
    out = w.clone()
    for name, value in buffers.items():
        out[:, arch.space.slice(name)] = value.reshape(w.shape[0], -1).to(out.dtype)
    return out[0] if one else out
