"""Small CNNs (Hyper-Representations' and P-diff's), evaluated for N models with grouped
convolutions and, where maps reach 1x1, matrix products."""

from __future__ import annotations

import itertools
from dataclasses import asdict, dataclass
from typing import ClassVar

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..errors import ConfigError
from ..space import PermutationGroup
from .activations import ACTIVATIONS_OUT, MONOTONE, Activation, activation
from .base import Architecture
from .mlp import mlp_groups
from .ops import conv, inverted_dropout, linear, max_pool_2x2, same_for_all


class CNNModule(nn.Module):
    def __init__(self, arch: CNN):
        super().__init__()
        chans = [arch.in_channels, *arch.channels]
        k = arch.kernel_size
        self.convs = nn.ModuleList(
            nn.Conv2d(a, b, k, padding=k // 2, bias=not arch.batchnorm) for a, b in itertools.pairwise(chans)
        )
        self.norms = nn.ModuleList(nn.BatchNorm2d(c) for c in arch.channels) if arch.batchnorm else None
        fc = [arch.channels[-1], *arch.fc_widths, arch.out_features]
        self.fcs = nn.ModuleList(nn.Linear(a, b) for a, b in itertools.pairwise(fc))
        self.act = Activation(arch.activation)

    def forward(self, x):
        for i, layer in enumerate(self.convs):
            x = layer(x)
            if self.norms is not None:
                x = self.norms[i](x)
            x = self.act(x)
            if i < len(self.convs) - 1:
                x = F.max_pool2d(x, 2)
        x = x.mean(dim=(2, 3))
        for i, fc in enumerate(self.fcs):
            x = fc(x)
            if i < len(self.fcs) - 1:
                x = self.act(x)
        return x


@dataclass(frozen=True, eq=True)
class CNN(Architecture):
    """Conv blocks (conv → [BatchNorm] → act → 2×2 max-pool, no pool after the last), global average
    pool, then fully connected layers: the small CNNs of Hyper-Representations zoos (no BatchNorm,
    LeakyReLU) and of P-diff (BatchNorm)."""

    in_channels: int
    image_size: int
    channels: tuple[int, ...] = (8, 8, 8)
    fc_widths: tuple[int, ...] = (16,)
    out_features: int = 10
    kernel_size: int = 3
    activation: str = "relu"
    batchnorm: bool = True
    bn_momentum: float = 0.1
    kind: ClassVar[str] = "cnn"

    def __post_init__(self):
        object.__setattr__(self, "channels", tuple(int(c) for c in self.channels))
        object.__setattr__(self, "fc_widths", tuple(int(c) for c in self.fc_widths))
        activation(self.activation)
        if self.image_size < 2 ** (len(self.channels) - 1):
            raise ConfigError(
                f"architecture.image_size: {self.image_size} is too small for {len(self.channels)} pooled blocks"
            )

    @property
    def config(self) -> dict:
        return {"kind": self.kind, **asdict(self)}

    @property
    def name(self) -> str:
        convs = "x".join(map(str, (self.in_channels, *self.channels)))
        fcs = "x".join(map(str, (*self.fc_widths, self.out_features)))
        return f"cnn-{convs}{'-bn' if self.batchnorm else ''}-{fcs}-{self.activation}"

    @property
    def input_shape(self):
        return (self.in_channels, self.image_size, self.image_size)

    def module(self) -> nn.Module:
        return CNNModule(self)

    def permutation_groups(self):
        groups = []
        n = len(self.channels)
        for i, c in enumerate(self.channels):
            axes = [(f"convs.{i}.weight", 0)]
            if self.batchnorm:
                axes += [(f"norms.{i}.{t}", 0) for t in ("weight", "bias", "running_mean", "running_var")]
            else:
                axes.append((f"convs.{i}.bias", 0))
            axes.append((f"convs.{i + 1}.weight", 1) if i < n - 1 else ("fcs.0.weight", 1))
            groups.append(PermutationGroup(f"convs.{i}", c, tuple(axes)))
        return groups + mlp_groups("fcs", self.fc_widths)

    def apply(self, params, x, *, train=False, dropout=None, generator=None):
        """While every model has the same input and, in evaluation, the same weights up to a layer
        (P-diff's models differ only in late BatchNorm layers), ``h`` holds one copy for all of them:
        that prefix is computed once, then copied to one channel group per model."""
        act = activation(self.activation)
        n_models = params["convs.0.weight"].shape[0]
        shared = x.dim() == 4  # h is one [B, C, H, W] for every model
        if shared:
            h = x
        else:  # [N, B, C, H, W] → [B, N*C, H, W]: each model's channels are one group
            h = x.transpose(0, 1).reshape(x.shape[1], -1, *x.shape[3:])
        pool_first = not train and self.activation in MONOTONE
        buffers = {}
        for i in range(len(self.channels)):
            if not train and h.shape[-2:] == (1, 1):  # a 1x1 map: the rest is matrix products per model
                return self._vector_tail(params, i, h, shared, n_models, act), buffers
            w = params[f"convs.{i}.weight"]
            b = None if self.batchnorm else params[f"convs.{i}.bias"]
            if shared and not train and same_for_all(w) and (b is None or same_for_all(b)):
                h = conv(h, w[0], None if b is None else b[0], 1)
            else:  # a shared h meets every model's kernels at once (groups=1)
                h = conv(h, w.reshape(-1, *w.shape[2:]), None if b is None else b.reshape(-1),
                          1 if shared else n_models)
                shared = False
            if self.batchnorm:
                norm = {k: v for k, v in params.items() if k.startswith(f"norms.{i}.")}
                if shared and (train or not all(same_for_all(v) for v in norm.values())):
                    h, shared = h.repeat(1, n_models, 1, 1), False  # one channel group per model from here
                h, new = self._batchnorm({k: v[:1] for k, v in norm.items()} if shared else norm, i, h, train)
                buffers.update(new)
            pool = i < len(self.channels) - 1
            if pool and pool_first:
                h = act(max_pool_2x2(h))
            else:
                h = act(h)
                h = F.max_pool2d(h, 2) if pool else h
        h = h.mean(dim=(2, 3))
        if not shared:
            h = h.reshape(h.shape[0], n_models, -1).transpose(0, 1)  # [N, B, C]
        n_fc = len(self.fc_widths) + 1
        for j in range(n_fc):
            h = linear(h, params[f"fcs.{j}.weight"], params[f"fcs.{j}.bias"])
            if j < n_fc - 1:
                h = act(h)
                if train:
                    h = inverted_dropout(h, dropout, generator)
        return h, buffers

    def _vector_tail(self, params, start: int, h: Tensor, shared: bool, n_models: int, act) -> Tensor:
        """Evaluation from conv ``start`` on, where the maps are 1x1: each convolution meets only its
        kernels' centres, so it is a matrix product per model with the BatchNorm folded into it, and
        the global average pool is the identity. Models stay in their own rows (``[N, B, C]``), so
        nothing is transposed between layers (P-diff's 992-channel layer: most of the evaluation)."""
        v = h.reshape(h.shape[0], -1)
        if not shared:
            v = v.reshape(v.shape[0], n_models, -1).transpose(0, 1)  # [N, B, C]
        for i in range(start, len(self.channels)):
            w = params[f"convs.{i}.weight"]
            k = w.shape[-1]
            weight = w[..., k // 2, k // 2]  # [N, out, in]
            if self.batchnorm:
                pre = f"norms.{i}."
                scale = params[pre + "weight"] / (params[pre + "running_var"] + 1e-5).sqrt()
                weight, bias = weight * scale[..., None], params[pre + "bias"] - params[pre + "running_mean"] * scale
            else:
                bias = params[f"convs.{i}.bias"]
            if shared and same_for_all(weight) and same_for_all(bias):
                v = torch.addmm(bias[0], v, weight[0].T)
            else:  # the bias as one more input column: one product, no pass to broadcast it
                ones = v.new_ones(*v.shape[:-1], 1)
                x = torch.cat([v, ones], -1).expand(n_models, -1, -1) if shared else torch.cat([v, ones], -1)
                v, shared = torch.bmm(x, torch.cat([weight, bias[..., None]], -1).transpose(1, 2)), False
            inplace = ACTIVATIONS_OUT.get(self.activation)
            v = inplace(v, v) if inplace is not None else act(v)
        if shared:
            v = v.expand(n_models, *v.shape)
        n_fc = len(self.fc_widths) + 1
        for j in range(n_fc):
            v = linear(v, params[f"fcs.{j}.weight"], params[f"fcs.{j}.bias"])
            if j < n_fc - 1:
                v = act(v)
        return v

    def _batchnorm(self, params, i, h, train):
        pre = f"norms.{i}."
        shape = params[pre + "running_mean"].shape
        mean = params[pre + "running_mean"].detach().reshape(-1).clone()
        var = params[pre + "running_var"].detach().reshape(-1).clone()
        out = F.batch_norm(h, mean, var, params[pre + "weight"].reshape(-1), params[pre + "bias"].reshape(-1),
                           training=train, momentum=self.bn_momentum, eps=1e-5)
        if not train:
            return out, {}
        return out, {pre + "running_mean": mean.reshape(shape), pre + "running_var": var.reshape(shape)}
