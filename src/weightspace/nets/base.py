"""The interface every architecture implements: a layout from an ``nn.Module``, an init, and a
forward of many models in one call (``apply``), with the loss and its gradient."""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from functools import cached_property
from typing import ClassVar

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..space import PermutationGroup, WeightSpace


class Architecture(ABC):
    """Abstract: a model family with a layout, an init, and a batched forward."""

    kind: ClassVar[str]

    @property
    @abstractmethod
    def input_shape(self) -> tuple[int, ...]: ...

    @abstractmethod
    def module(self) -> nn.Module:
        """A plain ``nn.Module`` computing the same function (for users and for tests)."""

    @abstractmethod
    def permutation_groups(self) -> list[PermutationGroup]: ...

    @abstractmethod
    def apply(
        self,
        params: Mapping[str, Tensor],
        x: Tensor,
        *,
        train: bool = False,
        dropout: Tensor | None = None,
        generator: torch.Generator | None = None,
    ) -> tuple[Tensor, dict[str, Tensor]]:
        """Outputs ``[N, B, out]`` of N models, and the updated buffers (BatchNorm in training mode).

        ``x`` is ``[B, *input_shape]`` (one batch for all models) or ``[N, B, *input_shape]``.
        """

    @property
    @abstractmethod
    def config(self) -> dict: ...

    @cached_property
    def space(self) -> WeightSpace:
        return WeightSpace.from_module(self.module(), self.permutation_groups(), self.name)

    @property
    @abstractmethod
    def name(self) -> str:
        """A short readable layout name, e.g. ``mlp-64x32x10-relu``."""

    def logits(self, weights: Tensor, x: Tensor) -> Tensor:
        """Evaluation-mode outputs ``[N, B, out]`` of the models ``weights: Tensor[N, P]``."""
        return self.apply(self.space.unflatten(weights, cast=False), x)[0]

    def loss(self, outputs: Tensor, targets: Tensor) -> Tensor:
        """Mean cross-entropy per model: ``outputs [N, B, classes]``, ``targets [N, B]`` → ``[N]``."""
        return F.cross_entropy(outputs.transpose(1, 2), targets, reduction="none").mean(1)

    def loss_and_grad(
        self, weights: Tensor, x: Tensor, y: Tensor, *, dropout: Tensor | None = None,
        generator: torch.Generator | None = None,
    ) -> tuple[Tensor, Tensor, dict[str, Tensor]]:
        """One training-mode pass of N models: per-model losses ``[N]``, their gradients ``[N, P]``
        (model i's gradient is that of its own loss), and the updated buffers."""
        w = weights.detach().requires_grad_(True)
        out, buffers = self.apply(self.space.unflatten(w, cast=False), x, train=True, dropout=dropout, generator=generator)
        losses = self.loss(out, y)
        (grad,) = torch.autograd.grad(losses.sum(), w)
        return losses.detach(), grad, buffers

    def init(self, seeds: Sequence[int], init_scale: Sequence[float] | Tensor | None = None) -> Tensor:
        """``Tensor[N, P]`` of fresh models, one per seed, independent of how models are batched.

        PyTorch's default rule for Linear and Conv (uniform in ±1/sqrt(fan_in), weights and biases),
        weights multiplied by ``init_scale``; BatchNorm starts at weight 1, bias 0, mean 0, var 1.
        """
        space = self.space
        scales = torch.ones(len(seeds)) if init_scale is None else torch.as_tensor(init_scale, dtype=torch.float32)
        rules = self._init_rules()
        out = torch.empty(len(seeds), space.num_params, dtype=space.dtype)
        for i, seed in enumerate(seeds):
            g = torch.Generator().manual_seed(int(seed))
            for e in space.entries:
                kind, value = rules[e.name]
                sl = out[i, space.slice(e.name)]
                if kind == "uniform":
                    scale = float(scales[i]) if e.name.endswith("weight") else 1.0
                    sl.copy_((torch.rand(e.numel, generator=g) * 2 - 1) * value * scale)
                else:
                    sl.fill_(value)
        return out

    def _init_rules(self) -> dict[str, tuple[str, float]]:
        rules = {}
        for prefix, m in self.module().named_modules():
            pre = prefix + "." if prefix else ""
            if isinstance(m, (nn.Linear, nn.Conv2d)):
                bound = 1.0 / math.sqrt(m.weight[0].numel())
                rules[pre + "weight"] = ("uniform", bound)
                if m.bias is not None:
                    rules[pre + "bias"] = ("uniform", bound)
            elif isinstance(m, nn.BatchNorm2d):
                rules.update({pre + "weight": ("const", 1.0), pre + "bias": ("const", 0.0),
                              pre + "running_mean": ("const", 0.0), pre + "running_var": ("const", 1.0)})
        return rules
