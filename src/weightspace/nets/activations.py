"""Activation functions by name: for modules, for the batched forward, and the fused in-place
kernels the hand-written backward passes use."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import ConfigError

ACTIVATIONS = {
    "relu": F.relu,
    "leaky_relu": F.leaky_relu,
    "tanh": torch.tanh,
    "gelu": F.gelu,
    "sigmoid": torch.sigmoid,
}
# Non-decreasing activations commute with max-pooling: in evaluation, pooling first saves 3/4 of their work.
MONOTONE = {"relu", "leaky_relu", "tanh", "sigmoid"}


def activation(name: str):
    if name not in ACTIVATIONS:
        raise ConfigError(f"architecture.activation: expected one of {sorted(ACTIVATIONS)}, got {name!r}")
    return ACTIVATIONS[name]


class Activation(nn.Module):
    def __init__(self, name: str):
        super().__init__()
        self.fn = activation(name)

    def forward(self, x):
        return self.fn(x)


# For the hand-written backward passes: act(z) into ``out``, and the grad through act given the
# incoming grad ``g``, ``z`` and ``a = act(z)``, into ``out`` (may be ``g``): PyTorch's fused kernels.
ACTIVATIONS_OUT = {
    "relu": lambda z, out: torch.clamp(z, min=0, out=out),
    "leaky_relu": lambda z, out: torch.ops.aten.leaky_relu.out(z, 0.01, out=out),
    "tanh": lambda z, out: torch.tanh(z, out=out),
    "sigmoid": lambda z, out: torch.sigmoid(z, out=out),
}
ACTIVATION_GRADS = {
    "relu": lambda g, z, a, out: torch.ops.aten.threshold_backward.grad_input(g, z, 0.0, grad_input=out),
    "leaky_relu": lambda g, z, a, out: torch.ops.aten.leaky_relu_backward.grad_input(
        g, z, 0.01, False, grad_input=out),
    "tanh": lambda g, z, a, out: torch.ops.aten.tanh_backward.grad_input(g, a, grad_input=out),
    "sigmoid": lambda g, z, a, out: torch.ops.aten.sigmoid_backward.grad_input(g, a, grad_input=out),
}
