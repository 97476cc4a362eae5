"""The gradient step of population training: N models, each on its own batch, one call.

The trainer keeps the population as one flat *state* ``Tensor[N·P]`` in a layout the step
chooses; ``pack`` and ``unpack`` convert from and to the zoo's ``[N, P]``. Elementwise optimizers
do not care about the order of the entries, so a step may lay the weights out for its products:

- :class:`FlatStep` (any architecture) keeps ``[N, P]`` row by row and calls the architecture's
  ``loss_and_grad``.
- :class:`PackedMLPStep` (plain MLPs) keeps the packed layout of the MLP's closed-form backward
  pass (:class:`~weightspace.nets.mlp.PackedMLPGradient`: each linear layer one ``[N, out, in + 1]``
  block, the bias as its last column), so a step allocates no large tensors: a fresh tensor per op
  doubled or tripled the step time here.
"""

from __future__ import annotations

import torch
from torch import Tensor

from ..nets import ACTIVATIONS_OUT, MLP, Architecture
from ..nets.mlp import PackedMLPGradient


def make_step(arch: Architecture, x: Tensor, y: Tensor, n_models: int, batch_size: int,
              dropout: Tensor | None = None, generator: torch.Generator | None = None):
    """The fastest step for ``arch``: packed for plain MLPs with a closed-form activation."""
    kind = PackedMLPStep if type(arch) is MLP and arch.activation in ACTIVATIONS_OUT else FlatStep
    return kind(arch, x, y, n_models, batch_size, dropout, generator)


class FlatStep:
    """State = the ``[N, P]`` weights row by row; returns BatchNorm's new buffers too."""

    def __init__(self, arch, x, y, n_models, batch_size, dropout, generator):
        self.arch, self.x, self.y, self.n = arch, x, y, n_models
        self.dropout, self.generator = dropout, generator
        self.xb = x.new_empty(n_models, batch_size, *x.shape[1:])
        self.yb = y.new_empty(n_models, batch_size)

    def pack(self, weights: Tensor) -> Tensor:
        return weights.reshape(-1).clone()

    def unpack(self, state: Tensor) -> Tensor:
        """A view: writes to it (BatchNorm statistics) change the state."""
        return state.view(self.n, -1)

    def __call__(self, state: Tensor, idx: Tensor) -> tuple[Tensor, dict[str, Tensor]]:
        """Gradient of each model's mean loss on its batch ``idx.view(N, B)``, and new buffers."""
        torch.index_select(self.x, 0, idx, out=self.xb.view(-1, *self.x.shape[1:]))
        torch.index_select(self.y, 0, idx, out=self.yb.view(-1))
        _, grad, buffers = self.arch.loss_and_grad(self.unpack(state), self.xb, self.yb, dropout=self.dropout,
                                                   generator=self.generator)
        return grad.view(-1), buffers


class PackedMLPStep:
    """State = the packed layout of :class:`~weightspace.nets.mlp.PackedMLPGradient` (per layer
    ``[N, out, in + 1]`` blocks, weight | bias); cross-entropy, no allocations per step."""

    def __init__(self, arch: MLP, x, y, n_models, batch_size, dropout, generator):
        self.gradient = PackedMLPGradient(arch, n_models, batch_size, dtype=x.dtype, device=x.device,
                                          dropout=dropout, generator=generator)
        self.pack, self.unpack = self.gradient.pack, self.gradient.unpack
        self.x = torch.cat([x, x.new_ones(len(x), 1)], 1)  # the ones column multiplies the first bias
        self.y = y
        self.xb = x.new_empty(n_models, batch_size, self.x.shape[1])
        self.yb = y.new_empty(n_models, batch_size)

    def __call__(self, state: Tensor, idx: Tensor) -> tuple[Tensor, dict[str, Tensor]]:
        """Gradient of each model's mean cross-entropy on its batch ``idx.view(N, B)``."""
        torch.index_select(self.x, 0, idx, out=self.xb.view(-1, self.x.shape[1]))
        torch.index_select(self.y, 0, idx, out=self.yb.view(-1))
        grad, _ = self.gradient(state, self.xb, self.yb)
        return grad, {}
