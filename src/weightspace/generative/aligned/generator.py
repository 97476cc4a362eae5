"""weightspace's own generator: a low-rank Gaussian over many independent runs aligned to their barycenter."""

from __future__ import annotations

import torch
from torch import Tensor

from ...align import match_permutations
from ...errors import ConfigError, LayoutError
from ...generator import Generator, seeded
from ...nets import build_architecture
from ...symmetry import permute, random_permutation, scale_neurons

RESIDUALS = ("diagonal", "isotropic", "none")


def barycenter_alignment(space, weights: Tensor, *, iterations: int = 10) -> tuple[Tensor, dict[str, Tensor]]:
    """Every model aligned to the barycenter of the aligned set: ``(aligned [N, P], permutations)``.

    First every model is matched to the first one; then, up to ``iterations`` times, all are matched
    to the mean of the aligned set, until the permutations stop changing (a fixed point of weight
    matching to the mean)."""
    perms = match_permutations(space, weights[0], weights)
    for _ in range(int(iterations)):
        new = match_permutations(space, permute(space, weights, perms).mean(0), weights)
        if all(torch.equal(new[g], perms[g]) for g in perms):
            break
        perms = new
    return permute(space, weights, perms), perms


def incoming_norms(space, weights: Tensor) -> dict[str, Tensor]:
    """Per permutation group, the norm of each neuron's producing coordinates (incoming weights and
    bias): ``{group: [N, size]}``; positive scaling of a ReLU neuron multiplies it."""
    sd = space.unflatten(weights, cast=False)
    n = weights.shape[0]
    return {g.name: sum(sd[t].movedim(axis + 1, 1).reshape(n, g.size, -1).square().sum(-1)
                        for t, axis in g.axes if axis == 0).sqrt() for g in space.groups}


class AlignedGaussian(Generator):
    """Probabilistic PCA in the permutation-aligned space of many independent runs.

    ``rank``: principal directions kept (``None``: all, ``N - 1``); the variance they leave over is
    drawn independently per coordinate with that coordinate's own variance (``residual="diagonal"``,
    factor analysis), spread evenly over all coordinates (``"isotropic"``, probabilistic PCA) or
    dropped (``"none"``). ``align=False`` fits the same
    Gaussian to the runs as trained (the ablation of the symmetry). ``temperature`` scales the
    standard deviations of the draws (1 = the fitted Gaussian). Samples are drawn in the aligned
    space and given a random neuron order each (``permute_output``). ``normalise_scale`` (ReLU
    layouts without BatchNorm) first moves every hidden neuron's scale to its outgoing weights (unit
    incoming norm), removing the positive-scaling symmetry as well; samples then take the neuron
    norms of one random aligned run, so they come out on the runs' own scales."""

    name = "aligned"

    def __init__(self, architecture: dict | None = None, rank: int | None = 16, align: bool = True,
                 residual: str = "isotropic", temperature: float = 1.0, iterations: int = 10,
                 permute_output: bool = True, normalise_scale: bool = False, seed: int = 0):
        if architecture is None:
            raise ConfigError("architecture: expected the zoo's architecture config (e.g. generator_config(zoo))")
        if rank is not None and int(rank) < 1:
            raise ConfigError(f"rank: expected a positive integer or None, got {rank!r}")
        if residual not in RESIDUALS:
            raise ConfigError(f"residual: expected one of {list(RESIDUALS)}, got {residual!r}")
        if not float(temperature) >= 0:
            raise ConfigError(f"temperature: expected a number >= 0, got {temperature!r}")
        self.architecture = dict(architecture)
        self.space = build_architecture(self.architecture).space
        self.rank = None if rank is None else int(rank)
        self.align, self.residual = bool(align), residual
        self.temperature, self.iterations = float(temperature), int(iterations)
        self.permute_output, self.seed = bool(permute_output), int(seed)
        self.normalise_scale = bool(normalise_scale)

    def fit(self, weights: Tensor, *, progress: bool = True, **context) -> AlignedGaussian:
        if weights.dim() != 2 or weights.shape[1] != self.space.num_params or len(weights) < 2:
            raise LayoutError(f"weights: expected [N >= 2, {self.space.num_params}] for layout "
                              f"'{self.space.name}', got {tuple(weights.shape)}")
        w = weights.detach().to(torch.float64)
        norms = incoming_norms(self.space, w) if self.normalise_scale else {}
        if norms:  # every hidden neuron's incoming weights to unit norm, its scale moved to its outputs
            w = scale_neurons(self.space, w, {g: 1 / n.clamp_min(1e-12) for g, n in norms.items()})
        if self.align and self.space.groups:
            w, perms = barycenter_alignment(self.space, w, iterations=self.iterations)
            norms = {g: torch.gather(n, 1, perms[g]) for g, n in norms.items()}
        self.norms = {g: n.float() for g, n in norms.items()}
        mean = w.mean(0)
        _, s, vt = torch.linalg.svd(w - mean, full_matrices=False)
        variances = s**2 / len(w)
        k = min(self.rank or len(w) - 1, len(w) - 1)
        if self.residual == "isotropic":  # probabilistic PCA: the variance left over, spread evenly
            left = torch.full_like(mean, float(variances[k:].sum()) / max(w.shape[1] - k, 1))
            scales = (variances[:k] - left[0]).clamp_min(0).sqrt()
        elif self.residual == "diagonal":  # each coordinate's own variance left over by the k directions
            x = w - mean
            left = (x - (x @ vt[:k].T) @ vt[:k]).square().mean(0)
            scales = variances[:k].sqrt()
        else:
            left, scales = torch.zeros_like(mean), variances[:k].sqrt()
        self.mean, self.components, self.scales = mean.float(), vt[:k].float(), scales.float()
        self.residual_std = left.sqrt().float()
        return self

    def sample(self, n: int, seed: int = 0) -> Tensor:
        if not hasattr(self, "mean"):
            raise ConfigError("aligned: not fitted; call fit(weights) or load_state(state) first")
        g = seeded(seed)
        z = torch.randn(int(n), len(self.scales), generator=g)
        eps = torch.randn(int(n), len(self.mean), generator=g)
        w = self.mean + self.temperature * ((z * self.scales) @ self.components + self.residual_std * eps)
        if self.norms:  # back to the runs' own scales: each sample takes one random run's neuron norms
            run = torch.randint(0, len(next(iter(self.norms.values()))), (int(n),), generator=g)
            w = scale_neurons(self.space, w, {name: norm[run] for name, norm in self.norms.items()})
        if self.permute_output and self.space.groups:
            w = permute(self.space, w, random_permutation(self.space, n=int(n), generator=g))
        return w

    def config(self) -> dict:
        return {"architecture": self.architecture, "rank": self.rank, "align": self.align, "residual": self.residual,
                "temperature": self.temperature, "iterations": self.iterations,
                "permute_output": self.permute_output, "normalise_scale": self.normalise_scale, "seed": self.seed}

    def state(self) -> dict[str, Tensor]:
        return {"mean": self.mean, "components": self.components, "scales": self.scales,
                "residual_std": self.residual_std, **{f"norms.{g}": n for g, n in self.norms.items()}}

    def load_state(self, state: dict[str, Tensor]) -> None:
        self.mean, self.components = state["mean"], state["components"]
        self.scales, self.residual_std = state["scales"], state["residual_std"]
        self.norms = {k.split(".", 1)[1]: v for k, v in state.items() if k.startswith("norms.")}
