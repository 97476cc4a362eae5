"""A mixture of aligned Gaussians, one per basin: where runs aligned to one barycenter are not linearly
connected, a single Gaussian spreads its samples between them; clusters of runs, each aligned to its
own barycenter, keep each Gaussian inside one group of mutually close runs."""

from __future__ import annotations

import torch
from torch import Tensor

from ...errors import ConfigError, LayoutError
from ...generator import Generator, seeded
from ...nets import build_architecture
from .generator import AlignedGaussian, barycenter_alignment


def kmeans(x: Tensor, k: int, *, iterations: int = 50, generator: torch.Generator) -> Tensor:
    """Cluster labels ``[N]`` of the rows of ``x`` (k-means++ start, Lloyd iterations until the
    labels stop changing)."""
    centres = x[torch.randint(len(x), (1,), generator=generator)]
    for _ in range(1, k):
        d = torch.cdist(x, centres).min(1).values.square()
        centres = torch.cat([centres, x[torch.multinomial(d / d.sum(), 1, generator=generator)]])
    labels = torch.cdist(x, centres).argmin(1)
    for _ in range(iterations):
        centres = torch.stack([x[labels == j].mean(0) if (labels == j).any() else centres[j] for j in range(k)])
        new = torch.cdist(x, centres).argmin(1)
        if torch.equal(new, labels):
            break
        labels = new
    return labels


class AlignedMixture(Generator):
    """``components`` aligned Gaussians: the runs are aligned to their common barycenter and split by
    k-means in that space; each cluster is fitted by :class:`AlignedGaussian` (aligned again to its
    own barycenter) with the remaining options; a sample comes from a cluster drawn in proportion
    to its size. A cluster needs at least 2 runs."""

    name = "aligned-mixture"

    def __init__(self, architecture: dict | None = None, components: int = 2, rank: int | None = 16,
                 align: bool = True, residual: str = "isotropic", temperature: float = 1.0, iterations: int = 10,
                 permute_output: bool = True, normalise_scale: bool = False, seed: int = 0):
        if architecture is None:
            raise ConfigError("architecture: expected the zoo's architecture config (e.g. generator_config(zoo))")
        if int(components) < 1:
            raise ConfigError(f"components: expected a positive integer, got {components!r}")
        self.architecture, self.components, self.seed = dict(architecture), int(components), int(seed)
        self.gaussian = {"rank": rank, "align": align, "residual": residual, "temperature": temperature,
                         "iterations": iterations, "permute_output": permute_output,
                         "normalise_scale": normalise_scale}
        self.gaussian = {k: v for k, v in AlignedGaussian(self.architecture, **self.gaussian).config().items()
                         if k in self.gaussian}  # checked and normalised by the Gaussian itself
        self.space = build_architecture(self.architecture).space

    def _part(self, i: int) -> AlignedGaussian:
        return AlignedGaussian(self.architecture, **self.gaussian, seed=self.seed + i)

    def fit(self, weights: Tensor, *, progress: bool = True, **context) -> AlignedMixture:
        if weights.dim() != 2 or weights.shape[1] != self.space.num_params or len(weights) < 2 * self.components:
            raise LayoutError(f"weights: expected [N >= {2 * self.components}, {self.space.num_params}] for "
                              f"{self.components} components of layout '{self.space.name}', got {tuple(weights.shape)}")
        w = weights.detach().to(torch.float64)
        aligned = w
        if self.gaussian["align"] and self.space.groups:
            aligned = barycenter_alignment(self.space, w, iterations=self.gaussian["iterations"])[0]
        labels = kmeans(aligned, self.components, generator=seeded(self.seed))
        sizes = torch.bincount(labels, minlength=self.components)
        if sizes.min() < 2:
            raise ConfigError(f"components: a cluster of {int(sizes.min())} run(s); expected at least 2 in each of "
                              f"{self.components} (fewer components)")
        self.parts = [self._part(i).fit(weights[labels == i], progress=progress) for i in range(self.components)]
        self.proportions = sizes.float() / len(w)
        return self

    def sample(self, n: int, seed: int = 0) -> Tensor:
        if not hasattr(self, "parts"):
            raise ConfigError("aligned-mixture: not fitted; call fit(weights) or load_state(state) first")
        g = seeded(seed)
        which = torch.multinomial(self.proportions, int(n), replacement=True, generator=g)
        out = torch.empty(int(n), self.space.num_params)
        for i, part in enumerate(self.parts):
            rows = torch.nonzero(which == i).flatten()
            if len(rows):
                out[rows] = part.sample(len(rows), seed=int(torch.randint(2**31, (1,), generator=g))).float()
        return out

    def config(self) -> dict:
        return {"architecture": self.architecture, "components": self.components, "seed": self.seed,
                **self.gaussian}

    def state(self) -> dict[str, Tensor]:
        if not hasattr(self, "parts"):
            raise ConfigError("aligned-mixture: not fitted; call fit(weights) first")
        return {"proportions": self.proportions,
                **{f"part{i}.{k}": v for i, p in enumerate(self.parts) for k, v in p.state().items()}}

    def load_state(self, state: dict[str, Tensor]) -> None:
        self.proportions = state["proportions"]
        self.parts = []
        for i in range(len(self.proportions)):
            part = self._part(i)
            part.load_state({k.split(".", 1)[1]: v for k, v in state.items() if k.startswith(f"part{i}.")})
            self.parts.append(part)
