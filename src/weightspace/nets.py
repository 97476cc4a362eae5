"""Small architectures with a batched functional forward: many models, one call.

Each architecture gives (a) an ordinary ``nn.Module`` whose state dict defines the layout, and
(b) ``apply(params, x)``, the same function evaluated for N models at once from a batched state
dict (``name -> Tensor[N, *shape]``) with bmm / grouped convolutions instead of a loop over models.
Tests check (b) against (a) model by model.
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from functools import cached_property
from typing import ClassVar

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .errors import ConfigError
from .space import PermutationGroup, WeightSpace

ACTIVATIONS = {
    "relu": F.relu,
    "leaky_relu": F.leaky_relu,
    "tanh": torch.tanh,
    "gelu": F.gelu,
    "sigmoid": torch.sigmoid,
}
# Non-decreasing activations commute with max-pooling: in evaluation, pooling first saves 3/4 of their work.
MONOTONE = {"relu", "leaky_relu", "tanh", "sigmoid"}


def _activation(name: str):
    if name not in ACTIVATIONS:
        raise ConfigError(f"architecture.activation: expected one of {sorted(ACTIVATIONS)}, got {name!r}")
    return ACTIVATIONS[name]


class _Act(nn.Module):
    def __init__(self, name: str):
        super().__init__()
        self.fn = _activation(name)

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


def inverted_dropout(h: Tensor, p: Tensor | None, generator: torch.Generator | None) -> Tensor:
    """Inverted dropout with a per-model rate ``p: Tensor[N]``; ``h`` is ``[N, B, ...]``."""
    if p is None:
        return h
    keep = (1.0 - p).reshape(-1, *([1] * (h.dim() - 1)))
    mask = torch.rand(h.shape, generator=generator, device=h.device) < keep
    return h * mask / keep


def _max_pool_2x2(h: Tensor) -> Tensor:
    """``F.max_pool2d(h, 2)``, equal to it, as the maximum of four strided views: 2-10x faster on
    the many-channel maps of N models at once."""
    rows, cols = h.shape[-2] // 2 * 2, h.shape[-1] // 2 * 2
    return torch.maximum(torch.maximum(h[..., 0:rows:2, 0:cols:2], h[..., 1:rows:2, 0:cols:2]),
                         torch.maximum(h[..., 0:rows:2, 1:cols:2], h[..., 1:rows:2, 1:cols:2]))


def _conv(h: Tensor, w: Tensor, b: Tensor | None, groups: int) -> Tensor:
    """``F.conv2d(h, w, b, padding=k // 2, groups=groups)`` for odd square kernels ``k``, by the
    fastest route measured on CPU for N models' maps: a 1x1 map meets only the kernels' centres (a
    batched matmul); one group is one matmul over unfolded patches (2x faster than the convolution
    for few input channels); several groups go channels-last (3-10x faster)."""
    k = w.shape[-1]
    n, c_in, height, width = h.shape
    if height == 1 and width == 1:
        x = h.reshape(n, groups, c_in // groups).transpose(0, 1)  # [G, B, Cin/G]
        centre = w[..., k // 2, k // 2].reshape(groups, -1, c_in // groups)  # [G, Cout/G, Cin/G]
        out = torch.bmm(x, centre.transpose(1, 2)).transpose(0, 1).reshape(n, -1, 1, 1)
        return out if b is None else out + b.reshape(1, -1, 1, 1)
    if groups == 1:
        patches = F.unfold(h, k, padding=k // 2).transpose(1, 2).reshape(-1, c_in * k * k)
        flat = w.reshape(w.shape[0], -1).T
        out = patches @ flat if b is None else torch.addmm(b, patches, flat)
        return out.reshape(n, height, width, -1).permute(0, 3, 1, 2)  # a channels-last view
    return F.conv2d(h.contiguous(memory_format=torch.channels_last), w, b, padding=k // 2, groups=groups)


def _same_for_all(t: Tensor) -> bool:
    """Whether the models' slices ``t[0], t[1], …`` of a stacked parameter are all equal."""
    return t.shape[0] == 1 or bool((t == t[:1]).all())


def _linear(x: Tensor, w: Tensor, b: Tensor) -> Tensor:
    """x: [B, in] (shared) or [N, B, in]; w: [N, out, in]; b: [N, out] → [N, B, out]."""
    if x.dim() == 2:
        return torch.matmul(x, w.transpose(1, 2)) + b[:, None, :]
    return torch.baddbmm(b[:, None, :], x, w.transpose(1, 2))


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


def _mlp_groups(prefix: str, widths: Sequence[int]) -> list[PermutationGroup]:
    groups = []
    for i, w in enumerate(widths):
        axes = [(f"{prefix}.{i}.weight", 0), (f"{prefix}.{i}.bias", 0), (f"{prefix}.{i + 1}.weight", 1)]
        groups.append(PermutationGroup(f"{prefix}.{i}", w, tuple(axes)))
    return groups


class _MLPModule(nn.Module):
    def __init__(self, sizes: Sequence[int], activation: str):
        super().__init__()
        self.layers = nn.ModuleList(nn.Linear(a, b) for a, b in zip(sizes[:-1], sizes[1:]))
        self.act = _Act(activation)

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

    def __post_init__(self):
        object.__setattr__(self, "widths", tuple(int(w) for w in self.widths))
        _activation(self.activation)

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
        return _MLPModule(self.sizes, self.activation)

    def permutation_groups(self):
        return _mlp_groups("layers", self.widths)

    def apply(self, params, x, *, train=False, dropout=None, generator=None):
        act = _activation(self.activation)
        h = x
        n = len(self.sizes) - 1
        for i in range(n):
            h = _linear(h, params[f"layers.{i}.weight"], params[f"layers.{i}.bias"])
            if i < n - 1:
                h = act(h)
                if train:
                    h = inverted_dropout(h, dropout, generator)
        return h, {}

    def loss_and_grad(self, weights, x, y, *, dropout=None, generator=None):
        """Closed-form backward pass, features-first (``[N, features, B]``) so every product is one bmm
        and the softmax runs over a contiguous axis: about twice as fast as autograd for small MLPs.
        Tests check it against :meth:`Architecture.loss_and_grad`."""
        if self.activation not in ACTIVATION_GRADS:
            return super().loss_and_grad(weights, x, y, dropout=dropout, generator=generator)
        act, backward = ACTIVATIONS[self.activation], ACTIVATION_GRADS[self.activation]
        params = self.space.unflatten(weights.detach(), cast=False)
        n_layers = len(self.sizes) - 1
        h = x.transpose(1, 2)
        inputs, saved = [], []
        for i in range(n_layers):
            inputs.append(h)
            z = torch.baddbmm(params[f"layers.{i}.bias"][:, :, None], params[f"layers.{i}.weight"], h)
            if i == n_layers - 1:
                break
            a = act(z)
            keep = None if dropout is None else inverted_dropout(torch.ones_like(a), dropout, generator)
            h = a if keep is None else a * keep
            saved.append((z, a, keep))
        losses, g = self._output_grad(z, y)
        # g is the gradient of the *summed* loss; the 1/B of the mean rides on the output layer's
        # products (every later g is already scaled).
        scale = 1.0 / x.shape[1]
        zero = g.new_zeros(())  # baddbmm's ignored input (beta=0): a scaled product in one call
        grads = torch.empty_like(weights)
        views = self.space.unflatten(grads, cast=False)
        for i in reversed(range(n_layers)):
            alpha = scale if i == n_layers - 1 else 1.0
            views[f"layers.{i}.weight"].copy_(torch.baddbmm(zero, g, inputs[i].transpose(1, 2), beta=0, alpha=alpha))
            torch.sum(g, 2, out=views[f"layers.{i}.bias"]).mul_(alpha)
            if i:
                z, a, keep = saved[i - 1]
                w_t = params[f"layers.{i}.weight"].transpose(1, 2)
                gh = torch.baddbmm(zero, w_t, g, beta=0, alpha=alpha)
                g = backward(gh, z, a, gh)
                if keep is not None:
                    g = g * keep
        return losses, grads, {}

    def _output_grad(self, out: Tensor, y: Tensor) -> tuple[Tensor, Tensor]:
        """Losses ``[N]`` and d(summed loss)/d(outputs) for features-first outputs ``[N, classes, B]``."""
        logp = out.log_softmax(1)
        losses = F.nll_loss(logp, y, reduction="none").mean(1)
        g = logp.exp_()
        return losses, g.scatter_add_(1, y[:, None, :], torch.full_like(g[:, :1], -1.0))


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

    @property
    def sizes(self) -> list[int]:
        return [self.in_features * (1 + 2 * self.n_frequencies), *self.widths, self.out_features]

    def encode(self, x: Tensor) -> Tensor:
        freqs = (2.0 ** torch.arange(self.n_frequencies, dtype=x.dtype, device=x.device)) * math.pi
        xf = x[..., None] * freqs  # [..., d, L]
        return torch.cat([x, torch.sin(xf).flatten(-2), torch.cos(xf).flatten(-2)], dim=-1)

    def module(self) -> nn.Module:
        return _OccupancyModule(self)

    def apply(self, params, x, *, train=False, dropout=None, generator=None):
        return super().apply(params, self.encode(x), train=train, dropout=dropout, generator=generator)

    def loss(self, outputs, targets):
        """Mean binary cross-entropy per model: ``outputs [N, B, 1]``, occupancy ``targets [N, B]`` in {0, 1}."""
        return F.binary_cross_entropy_with_logits(outputs[..., 0], targets.to(outputs.dtype), reduction="none").mean(1)

    def loss_and_grad(self, weights, x, y, *, dropout=None, generator=None):
        if self.activation not in ACTIVATION_GRADS:
            return Architecture.loss_and_grad(self, weights, x, y, dropout=dropout, generator=generator)
        return super().loss_and_grad(weights, self.encode(x), y, dropout=dropout, generator=generator)

    def _output_grad(self, out, y):
        logits, target = out[:, 0, :], y.to(out.dtype)
        losses = F.binary_cross_entropy_with_logits(logits, target, reduction="none").mean(1)
        return losses, (torch.sigmoid(logits) - target)[:, None, :]


class _OccupancyModule(_MLPModule):
    def __init__(self, arch: OccupancyMLP):
        super().__init__(arch.sizes, arch.activation)
        self.encode = arch.encode

    def forward(self, x):
        return super().forward(self.encode(x))


class _CNNModule(nn.Module):
    def __init__(self, arch: CNN):
        super().__init__()
        chans = [arch.in_channels, *arch.channels]
        k = arch.kernel_size
        self.convs = nn.ModuleList(
            nn.Conv2d(a, b, k, padding=k // 2, bias=not arch.batchnorm) for a, b in zip(chans[:-1], chans[1:])
        )
        self.norms = nn.ModuleList(nn.BatchNorm2d(c) for c in arch.channels) if arch.batchnorm else None
        fc = [arch.channels[-1], *arch.fc_widths, arch.out_features]
        self.fcs = nn.ModuleList(nn.Linear(a, b) for a, b in zip(fc[:-1], fc[1:]))
        self.act = _Act(arch.activation)

    def forward(self, x):
        for i, conv in enumerate(self.convs):
            x = conv(x)
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
        _activation(self.activation)
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
        return _CNNModule(self)

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
        return groups + _mlp_groups("fcs", self.fc_widths)

    def apply(self, params, x, *, train=False, dropout=None, generator=None):
        """While every model has the same input and, in evaluation, the same weights up to a layer
        (P-diff's models differ only in late BatchNorm layers), ``h`` holds one copy for all of them:
        that prefix is computed once, then copied to one channel group per model."""
        act = _activation(self.activation)
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
            if shared and not train and _same_for_all(w) and (b is None or _same_for_all(b)):
                h = _conv(h, w[0], None if b is None else b[0], 1)
            else:  # a shared h meets every model's kernels at once (groups=1)
                h = _conv(h, w.reshape(-1, *w.shape[2:]), None if b is None else b.reshape(-1),
                          1 if shared else n_models)
                shared = False
            if self.batchnorm:
                norm = {k: v for k, v in params.items() if k.startswith(f"norms.{i}.")}
                if shared and (train or not all(_same_for_all(v) for v in norm.values())):
                    h, shared = h.repeat(1, n_models, 1, 1), False  # one channel group per model from here
                h, new = self._batchnorm({k: v[:1] for k, v in norm.items()} if shared else norm, i, h, train)
                buffers.update(new)
            pool = i < len(self.channels) - 1
            if pool and pool_first:
                h = act(_max_pool_2x2(h))
            else:
                h = act(h)
                h = F.max_pool2d(h, 2) if pool else h
        h = h.mean(dim=(2, 3))
        if not shared:
            h = h.reshape(h.shape[0], n_models, -1).transpose(0, 1)  # [N, B, C]
        n_fc = len(self.fc_widths) + 1
        for j in range(n_fc):
            h = _linear(h, params[f"fcs.{j}.weight"], params[f"fcs.{j}.bias"])
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
            if shared and _same_for_all(weight) and _same_for_all(bias):
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
            v = _linear(v, params[f"fcs.{j}.weight"], params[f"fcs.{j}.bias"])
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


ARCHITECTURES: dict[str, type[Architecture]] = {a.kind: a for a in (MLP, CNN, OccupancyMLP)}


def build_architecture(config: Mapping) -> Architecture:
    """An architecture from its config dict (as saved in a zoo), with errors naming the bad key."""
    config = dict(config)
    kind = config.pop("kind", None)
    if kind not in ARCHITECTURES:
        raise ConfigError(f"architecture.kind: expected one of {sorted(ARCHITECTURES)}, got {kind!r}")
    cls = ARCHITECTURES[kind]
    fields = {f for f in cls.__dataclass_fields__}
    unknown = set(config) - fields
    if unknown:
        raise ConfigError(f"architecture: unknown keys {sorted(unknown)} for kind {kind!r}; allowed: {sorted(fields)}")
    try:
        return cls(**config)
    except (TypeError, ValueError, OverflowError) as e:  # e.g. int() of a width that is not a number
        raise ConfigError(f"architecture ({kind}): {e}") from None
