"""The gradient step of population training: N models, each on its own batch, one call.

The trainer keeps the population as one flat *state* ``Tensor[N·P]`` in a layout the step
chooses; ``pack`` and ``unpack`` convert from and to the zoo's ``[N, P]``. Elementwise optimizers
do not care about the order of the entries, so a step may lay the weights out for its products:

- :class:`FlatStep` (any architecture) keeps ``[N, P]`` row by row and calls the architecture's
  ``loss_and_grad``.
- :class:`PackedMLPStep` (plain MLPs) stores each linear layer as one contiguous
  ``[N, out, in + 1]`` block, the bias as the last column, and gives every layer's input a last
  row of ones. The biases then ride along in the products both ways (no broadcast adds, no bias
  sums), every product writes into a preallocated tensor, and the gradients land in place. It
  allocates no large tensors per step: with glibc's allocator a fresh half-megabyte tensor per op
  can cost hundreds of page faults a step, which doubled or tripled the step time here.
"""

from __future__ import annotations

import torch
from torch import Tensor

from ..nets import (
    ACTIVATION_GRADS,
    ACTIVATIONS_OUT,
    MLP,
    Architecture,
    inverted_dropout,
)


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
    """State = per layer ``[N, out, in + 1]`` blocks (weight | bias); cross-entropy, no allocations."""

    def __init__(self, arch: MLP, x, y, n_models, batch_size, dropout, generator):
        n, b = n_models, batch_size
        self.n, self.widths, self.dropout, self.generator = n, arch.widths, dropout, generator
        self.act, self.act_grad = ACTIVATIONS_OUT[arch.activation], ACTIVATION_GRADS[arch.activation]
        self.shapes = [(out, inp + 1) for inp, out in zip(arch.sizes[:-1], arch.sizes[1:])]
        self.order = _packed_order(arch, n)
        self.inverse = torch.argsort(self.order)
        self.x = torch.cat([x, x.new_ones(len(x), 1)], 1)  # the ones column multiplies the first bias
        self.y = y
        self.xb = x.new_empty(n, b, self.x.shape[1])
        self.yb = y.new_empty(n, b)
        self.z = [x.new_empty(n, w, b) for w in self.widths]
        self.a = [x.new_ones(n, w + 1, b) for w in self.widths]  # rows < w: activations; last row: ones
        self.pre = [x.new_empty(n, w, b) for w in self.widths] if dropout is not None else None
        self.gh = [x.new_empty(n, w, b) for w in self.widths]
        self.probs = x.new_empty(n, arch.out_features, b)
        self.out = x.new_empty(n, arch.out_features, b)
        self.minus_one = x.new_full((n, 1, b), -1.0)
        self.grad = x.new_empty(len(self.order))
        self.grads = self._blocks(self.grad)
        self.inputs = [self.xb.transpose(1, 2), *self.a]  # each layer's input, features first
        self.hidden = [a[:, :w] for a, w in zip(self.a, self.widths)]
        self.state = self.weights = self.weights_t = None  # views of the state, made on first use

    def pack(self, weights: Tensor) -> Tensor:
        return weights.reshape(-1)[self.order.to(weights.device)]

    def unpack(self, state: Tensor) -> Tensor:
        """A new ``[N, P]`` tensor (not a view)."""
        return state[self.inverse.to(state.device)].view(self.n, -1)

    def _blocks(self, flat: Tensor) -> list[Tensor]:
        blocks, start = [], 0
        for rows, cols in self.shapes:
            size = self.n * rows * cols
            blocks.append(flat[start : start + size].view(self.n, rows, cols))
            start += size
        return blocks

    def __call__(self, state: Tensor, idx: Tensor) -> tuple[Tensor, dict[str, Tensor]]:
        """Gradient of each model's mean cross-entropy on its batch ``idx.view(N, B)``."""
        if state is not self.state:  # the trainer updates one state in place: its views stay valid
            self.state, self.weights = state, self._blocks(state)
            self.weights_t = [wk[:, :, :w].transpose(1, 2) for wk, w in zip(self.weights[1:], self.widths)]
        torch.index_select(self.x, 0, idx, out=self.xb.view(-1, self.x.shape[1]))
        torch.index_select(self.y, 0, idx, out=self.yb.view(-1))
        keeps = []
        for k in range(len(self.widths)):
            torch.bmm(self.weights[k], self.inputs[k], out=self.z[k])
            if self.dropout is None:
                self.act(self.z[k], self.hidden[k])
                keeps.append(None)
            else:
                self.act(self.z[k], self.pre[k])
                keeps.append(inverted_dropout(torch.ones_like(self.pre[k]), self.dropout, self.generator))
                torch.mul(self.pre[k], keeps[k], out=self.hidden[k])
        torch.bmm(self.weights[-1], self.inputs[-1], out=self.out)
        torch.softmax(self.out, 1, out=self.probs)
        g = self.probs.scatter_add_(1, self.yb[:, None, :], self.minus_one)  # d(summed loss)/d(outputs)
        alpha = 1.0 / self.xb.shape[1]  # the mean over the batch rides on the output layer's products
        for k in reversed(range(len(self.shapes))):
            torch.baddbmm(self.grads[k], g, self.inputs[k].transpose(1, 2), beta=0, alpha=alpha, out=self.grads[k])
            if k:
                gh = self.gh[k - 1]
                torch.baddbmm(gh, self.weights_t[k - 1], g, beta=0, alpha=alpha, out=gh)
                activated = self.hidden[k - 1] if self.dropout is None else self.pre[k - 1]
                g = self.act_grad(gh, self.z[k - 1], activated, gh)
                if keeps[k - 1] is not None:
                    g.mul_(keeps[k - 1])
                alpha = 1.0
        return self.grad, {}


def _packed_order(arch: MLP, n: int) -> Tensor:
    """Where each packed entry comes from in the row-major ``[N, P]`` weights."""
    space = arch.space
    position = space.unflatten(torch.arange(n * space.num_params).view(n, -1), cast=False)
    blocks = [torch.cat([position[f"layers.{k}.weight"], position[f"layers.{k}.bias"][:, :, None]], 2).reshape(-1)
              for k in range(len(arch.sizes) - 1)]
    return torch.cat(blocks)
