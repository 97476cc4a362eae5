"""Learned probes: read a model through what it computes on a few inputs learned for the purpose.

Each model is run on K probe inputs; its K output vectors (``asinh`` of the logits, layer-normed),
beside the per-tensor statistics, go to an MLP that predicts the target. The probes are not data:
they start as noise and are trained with the MLP, through a deep *linear* generator (latent codes →
two linear maps → inputs) as in ProbeGen (Kahana et al. 2024), whose linear bottleneck keeps probes from
fitting one model's quirks. Because a model is read by its function, the prediction is invariant to
every neuron permutation, and to any other change of weights that computes the same function.

Models of one layout may compute with different activations (a zoo's runs each draw one), so the
forward takes each model's activation; models of one activation are evaluated in one batched call.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import Tensor, nn

from ..errors import ConfigError
from ..nets import Architecture
from ..zoo.trainer import with_activation


class ProbeNet(nn.Module):
    """Probe generator, layer norm of the probe outputs, and the MLP head."""

    def __init__(self, input_shape: Sequence[int], out_features: int, stats_dim: int, *, probes: int, latent: int,
                 hidden: int, dropout: float):
        super().__init__()
        self.input_shape, self.probes = tuple(input_shape), probes
        self.latent = nn.Parameter(torch.randn(probes, latent))
        self.generator = nn.Sequential(nn.Linear(latent, 2 * latent), nn.Linear(2 * latent, math.prod(input_shape)))
        self.norm = nn.LayerNorm(probes * out_features)
        self.head = nn.Sequential(nn.Linear(probes * out_features + stats_dim, hidden), nn.ReLU(), nn.Dropout(dropout),
                                  nn.Linear(hidden, hidden // 2), nn.ReLU(), nn.Linear(hidden // 2, 1))
        self.register_buffer("stats_mean", torch.zeros(stats_dim))  # standardisation, set in fit, saved
        self.register_buffer("stats_std", torch.ones(stats_dim))

    def probe_inputs(self) -> Tensor:
        return self.generator(self.latent).reshape(self.probes, *self.input_shape)

    def forward(self, weights: Tensor, stats: Tensor, archs: list[Architecture], which: Tensor) -> Tensor:
        """``weights [B, P]``; ``archs[which[i]]`` computes model i's function."""
        x = self.probe_inputs()
        outs = None
        for k, arch in enumerate(archs):
            rows = which == k
            if bool(rows.any()):
                o = arch.logits(weights[rows], x)
                if outs is None:
                    outs = o.new_zeros(len(weights), *o.shape[1:])
                outs = outs.index_put((rows,), o)
        # asinh: log-like for the huge logits of blown-up models; overflowed ones stay finite
        outs = torch.nan_to_num(outs, nan=0.0, posinf=1e30, neginf=-1e30)
        f = self.norm(torch.asinh(outs.reshape(len(weights), -1)))
        return self.head(torch.cat([f, (stats - self.stats_mean) / self.stats_std], 1)).squeeze(1)


def activation_architectures(arch: Architecture, activations: Sequence[str | None] | None, n: int
                             ) -> tuple[list[Architecture], Tensor]:
    """The distinct architectures the ``n`` models compute with (None: ``arch``'s own activation), and
    each model's index into them."""
    if activations is None:
        return [arch], torch.zeros(n, dtype=torch.long)
    names = [a if isinstance(a, str) else None for a in activations]
    if len(names) != n:
        raise ConfigError(f"activations: expected one per model ({n}), got {len(names)}")
    distinct = sorted(set(names), key=lambda a: (a is not None, a or ""))
    archs = [with_activation(arch, a) for a in distinct]
    return archs, torch.tensor([distinct.index(a) for a in names], dtype=torch.long)
