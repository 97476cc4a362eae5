"""Implicit shapes: HyperDiffusion's occupancy MLP over Fourier features of coordinates."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import ClassVar

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .activations import ACTIVATION_GRADS
from .base import Architecture
from .mlp import MLP, MLPModule


@dataclass(frozen=True, eq=True)
class OccupancyMLP(MLP):
    """Implicit shape: coordinates → Fourier features → MLP → occupancy logit (HyperDiffusion's net).

    ``in_features`` is the coordinate dimension (2 or 3); the encoding
    ``[x, sin(2^k π x), cos(2^k π x)]`` for k < ``n_frequencies`` is fixed, so it carries no weights.
    """

    in_features: int = 2
    widths: tuple[int, ...] = (32, 32, 32)
    out_features: int = 1
    activation: str = "relu"
    n_frequencies: int = 4
    kind: ClassVar[str] = "occupancy"
    output: ClassVar[str] = "sigmoid"  # one occupancy logit (binary cross-entropy)

    @property
    def sizes(self) -> list[int]:
        return [self.in_features * (1 + 2 * self.n_frequencies), *self.widths, self.out_features]

    def encode(self, x: Tensor) -> Tensor:
        freqs = (2.0 ** torch.arange(self.n_frequencies, dtype=x.dtype, device=x.device)) * math.pi
        xf = x[..., None] * freqs  # [..., d, L]
        return torch.cat([x, torch.sin(xf).flatten(-2), torch.cos(xf).flatten(-2)], dim=-1)

    def module(self) -> nn.Module:
        return OccupancyModule(self)

    def apply(self, params, x, *, train=False, dropout=None, generator=None):
        return super().apply(params, self.encode(x), train=train, dropout=dropout, generator=generator)

    def loss(self, outputs, targets):
        """Mean binary cross-entropy per model: ``outputs [N, B, 1]``, occupancy ``targets [N, B]`` in {0, 1}."""
        return F.binary_cross_entropy_with_logits(outputs[..., 0], targets.to(outputs.dtype), reduction="none").mean(1)

    def loss_and_grad(self, weights, x, y, *, dropout=None, generator=None):
        if self.activation not in ACTIVATION_GRADS:
            return Architecture.loss_and_grad(self, weights, x, y, dropout=dropout, generator=generator)
        return super().loss_and_grad(weights, self.encode(x), y, dropout=dropout, generator=generator)


class OccupancyModule(MLPModule):
    def __init__(self, arch: OccupancyMLP):
        super().__init__(arch.sizes, arch.activation)
        self.encode = arch.encode

    def forward(self, x):
        return super().forward(self.encode(x))
