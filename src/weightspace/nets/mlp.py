"""Fully connected nets, with a closed-form backward pass."""

from __future__ import annotations

import functools
import itertools
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import ClassVar

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..space import PermutationGroup
from .activations import ACTIVATION_GRADS, ACTIVATIONS_OUT, Activation, activation
from .base import Architecture
from .ops import inverted_dropout, linear


def mlp_groups(prefix: str, widths: Sequence[int]) -> list[PermutationGroup]:
    groups = []
    for i, w in enumerate(widths):
        axes = [(f"{prefix}.{i}.weight", 0), (f"{prefix}.{i}.bias", 0), (f"{prefix}.{i + 1}.weight", 1)]
        groups.append(PermutationGroup(f"{prefix}.{i}", w, tuple(axes)))
    return groups


class MLPModule(nn.Module):
    def __init__(self, sizes: Sequence[int], activation: str):
        super().__init__()
        self.layers = nn.ModuleList(nn.Linear(a, b) for a, b in itertools.pairwise(sizes))
        self.act = Activation(activation)

    def forward(self, x):
        for i, layer in enumerate(self.layers):
            x = layer(x)
            if i < len(self.layers) - 1:
                x = self.act(x)
        return x


@dataclass(frozen=True, eq=True)
class MLP(Architecture):
    """Fully connected net ``in → widths... → out`` (G.pt's MNIST MLP is ``MLP(784, (10,), 10)``)."""

    in_features: int
    widths: tuple[int, ...]
    out_features: int
    activation: str = "relu"
    kind: ClassVar[str] = "mlp"
    output: ClassVar[str] = "softmax"  # what the loss reads: class logits (cross-entropy)

    def __post_init__(self):
        object.__setattr__(self, "widths", tuple(int(w) for w in self.widths))
        activation(self.activation)

    @property
    def config(self) -> dict:
        return {"kind": self.kind, **asdict(self)}

    @property
    def name(self) -> str:
        return f"{self.kind}-{'x'.join(map(str, self.sizes))}-{self.activation}"

    @property
    def input_shape(self):
        return (self.in_features,)

    @property
    def sizes(self) -> list[int]:
        return [self.in_features, *self.widths, self.out_features]

    def module(self) -> nn.Module:
        return MLPModule(self.sizes, self.activation)

    def permutation_groups(self):
        return mlp_groups("layers", self.widths)

    def apply(self, params, x, *, train=False, dropout=None, generator=None):
        act = activation(self.activation)
        h = x
        n = len(self.sizes) - 1
        for i in range(n):
            h = linear(h, params[f"layers.{i}.weight"], params[f"layers.{i}.bias"])
            if i < n - 1:
                h = act(h)
                if train:
                    h = inverted_dropout(h, dropout, generator)
        return h, {}

    def loss_and_grad(self, weights, x, y, *, dropout=None, generator=None):
        """The closed-form pass of :class:`PackedMLPGradient` (about twice as fast as autograd for
        small MLPs) on per-model batches ``x [N, B, in]``. Tests check it against
        :meth:`Architecture.loss_and_grad`."""
        if self.activation not in ACTIVATION_GRADS:
            return super().loss_and_grad(weights, x, y, dropout=dropout, generator=generator)
        n, b = x.shape[:2]
        kernel = PackedMLPGradient(self, n, b, dtype=x.dtype, device=x.device, dropout=dropout, generator=generator)
        grad, losses = kernel(kernel.pack(weights.detach()), torch.cat([x, x.new_ones(n, b, 1)], 2), y, losses=True)
        return losses, kernel.unpack(grad), {}


class PackedMLPGradient:
    """The closed-form backward pass of N models of one MLP, each on its own batch of B examples.

    It works in a *packed* layout of the weights: each linear layer is one contiguous
    ``[N, out, in + 1]`` block (weight | bias), and every layer's input, features first
    (``[N, features, B]``), gets a last row of ones. The biases then ride along in the products both
    ways (no broadcast adds, no bias sums), every product is one bmm writing into a tensor allocated
    here once, and the gradients land in place: a trainer calling it every step allocates no large
    tensors (with glibc's allocator a fresh half-megabyte tensor per op can cost hundreds of page
    faults a step). The loss is the architecture's: cross-entropy over its outputs, or binary
    cross-entropy of one logit (``output == "sigmoid"``, occupancy MLPs).
    """

    def __init__(self, arch: MLP, n_models: int, batch_size: int, *, dtype: torch.dtype = torch.float32,
                 device: torch.device | str = "cpu", dropout: Tensor | None = None,
                 generator: torch.Generator | None = None):
        n, b = n_models, batch_size
        self.n, self.widths, self.sigmoid = n, arch.widths, arch.output == "sigmoid"
        self.dropout, self.generator = dropout, generator
        self.act, self.act_grad = ACTIVATIONS_OUT[arch.activation], ACTIVATION_GRADS[arch.activation]
        self.shapes = [(out, inp + 1) for inp, out in itertools.pairwise(arch.sizes)]
        self.order = packed_order(arch, n)
        self.inverse = torch.argsort(self.order)
        like = {"dtype": dtype, "device": device}
        self.z = [torch.empty(n, w, b, **like) for w in self.widths]
        self.a = [torch.ones(n, w + 1, b, **like) for w in self.widths]  # rows < w: activations; last: ones
        self.pre = [torch.empty(n, w, b, **like) for w in self.widths] if dropout is not None else None
        self.gh = [torch.empty(n, w, b, **like) for w in self.widths]
        self.probs = torch.empty(n, arch.out_features, b, **like)
        self.out = torch.empty(n, arch.out_features, b, **like)
        self.minus_one = torch.full((n, 1, b), -1.0, **like)
        self.grad = torch.empty(len(self.order), **like)
        self.grads = self._blocks(self.grad)
        self.hidden = [a[:, :w] for a, w in zip(self.a, self.widths)]
        self.state = self.weights = self.weights_t = None  # views of the state, made on first use

    def pack(self, weights: Tensor) -> Tensor:
        """The packed state of ``weights [N, P]`` (a new tensor)."""
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

    def __call__(self, state: Tensor, x: Tensor, y: Tensor, *, losses: bool = False
                 ) -> tuple[Tensor, Tensor | None]:
        """The gradient (packed, in a buffer the next call overwrites) of each model's mean loss on its
        batch ``x [N, B, in + 1]`` (last feature all ones), ``y [N, B]``; with ``losses`` the losses
        ``[N]`` too."""
        if state is not self.state:  # a trainer updates one state in place: its views stay valid
            self.state, self.weights = state, self._blocks(state)
            self.weights_t = [wk[:, :, :w].transpose(1, 2) for wk, w in zip(self.weights[1:], self.widths)]
        inputs = [x.transpose(1, 2), *self.a]  # each layer's input, features first
        keeps = []
        for k in range(len(self.widths)):
            torch.bmm(self.weights[k], inputs[k], out=self.z[k])
            if self.dropout is None:
                self.act(self.z[k], self.hidden[k])
                keeps.append(None)
            else:
                self.act(self.z[k], self.pre[k])
                keeps.append(inverted_dropout(torch.ones_like(self.pre[k]), self.dropout, self.generator))
                torch.mul(self.pre[k], keeps[k], out=self.hidden[k])
        torch.bmm(self.weights[-1], inputs[-1], out=self.out)
        loss = g = None
        if self.sigmoid:  # d(summed loss)/d(outputs)
            if losses:
                loss = F.binary_cross_entropy_with_logits(self.out[:, 0], y.to(self.out.dtype), reduction="none").mean(1)
            g = torch.sigmoid(self.out, out=self.probs).sub_(y[:, None, :].to(self.out.dtype))
        else:
            if losses:
                loss = F.cross_entropy(self.out, y, reduction="none").mean(1)
            torch.softmax(self.out, 1, out=self.probs)
            g = self.probs.scatter_add_(1, y[:, None, :], self.minus_one)
        alpha = 1.0 / x.shape[1]  # the mean over the batch rides on the output layer's products
        for k in reversed(range(len(self.shapes))):
            torch.baddbmm(self.grads[k], g, inputs[k].transpose(1, 2), beta=0, alpha=alpha, out=self.grads[k])
            if k:
                gh = self.gh[k - 1]
                torch.baddbmm(gh, self.weights_t[k - 1], g, beta=0, alpha=alpha, out=gh)
                activated = self.hidden[k - 1] if self.dropout is None else self.pre[k - 1]
                g = self.act_grad(gh, self.z[k - 1], activated, gh)
                if keeps[k - 1] is not None:
                    g.mul_(keeps[k - 1])
                alpha = 1.0
        return self.grad, loss


@functools.lru_cache(maxsize=32)
def packed_order(arch: MLP, n: int) -> Tensor:
    """Where each packed entry comes from in the row-major ``[N, P]`` weights."""
    space = arch.space
    position = space.unflatten(torch.arange(n * space.num_params).view(n, -1), cast=False)
    blocks = [torch.cat([position[f"layers.{k}.weight"], position[f"layers.{k}.bias"][:, :, None]], 2).reshape(-1)
              for k in range(len(arch.sizes) - 1)]
    return torch.cat(blocks)
