"""The baselines a generator of weights must beat: they make "new" models from the training
checkpoints without learning anything (Zeng et al. 2025, Sec. 4).

- ``noise``: a random training checkpoint plus ``sigma * N(0, I)`` (a sweep of sigma draws the whole
  novelty–quality frontier: :func:`noise_sweep`);
- ``average``: the uniform average of ``k`` distinct random training checkpoints;
- ``gaussian``: every coordinate drawn independently from ``N(mean, std)`` over the checkpoints;
- ``aligned-interpolation``: ``(1 - λ) a + λ π(b)`` for two random checkpoints, ``π`` the neuron
  permutation that weight matching finds to bring ``b`` closest to ``a`` (Git Re-Basin), so the two
  ends compute alike and the blend does not collapse as a plain average of unaligned models does.

All take the optional fit context ``mask`` (``bool[P]`` or indices): the coordinates a method models
(P-diff: the last BatchNorm layers). Noise is added, and Gaussian coordinates are drawn, only there;
elsewhere the noise baseline keeps its chosen checkpoint's values and the Gaussian baseline the
mean. Coordinates equal in every checkpoint keep that exact value in averages and Gaussian draws
(a float mean of equal numbers need not be that number), so frozen layers stay bit-identical.
"""

from __future__ import annotations

import torch
from torch import Tensor

from .align import match_permutations
from .errors import ConfigError, LayoutError
from .generator import Generator, seeded
from .space import WeightSpace
from .symmetry import permute


def _as_weights(weights: Tensor) -> Tensor:
    if not isinstance(weights, Tensor) or weights.dim() != 2 or weights.shape[0] < 1:
        shape = tuple(weights.shape) if isinstance(weights, Tensor) else type(weights).__name__
        raise LayoutError(f"weights: expected a Tensor[N, P] with N >= 1, got {shape}")
    return weights.detach()


def _shared(w: Tensor) -> Tensor:
    """``bool[P]``: the coordinates equal in every checkpoint."""
    return (w == w[:1]).all(0)


def _as_mask(mask, num_params: int, device: torch.device) -> Tensor:
    """A ``bool[P]`` mask from a mask, an index tensor or None (all coordinates)."""
    if mask is None:
        return torch.ones(num_params, dtype=torch.bool, device=device)
    mask = torch.as_tensor(mask, device=device)
    if mask.dtype != torch.bool:
        index, mask = mask.long(), torch.zeros(num_params, dtype=torch.bool, device=device)
        mask[index] = True
    if mask.shape != (num_params,):
        raise LayoutError(f"mask: expected bool[{num_params}] or indices, got shape {tuple(mask.shape)}")
    if not bool(mask.any()):
        raise ConfigError("mask: expected at least one modelled coordinate, got none")
    return mask


def _require_fitted(gen: Generator, key: str) -> None:
    if not hasattr(gen, key):
        raise ConfigError(f"{gen.name}: not fitted; call fit(weights) or load_state(state) first")


class NoiseAddition(Generator):
    """A uniformly chosen training checkpoint plus Gaussian noise.

    ``relative=True`` multiplies ``sigma`` by one number, the standard deviation of all modelled
    training weights (every entry of ``weights[:, mask]``), so one list of sigmas means about the
    same on different layouts; ``relative=False`` adds noise on the raw scale, as the paper did."""

    name = "noise"

    def __init__(self, sigma: float = 0.01, relative: bool = False):
        if not float(sigma) >= 0:
            raise ConfigError(f"sigma: expected a number >= 0, got {sigma!r}")
        self.sigma = float(sigma)
        self.relative = bool(relative)

    def fit(self, weights: Tensor, *, progress: bool = True, mask=None, **context) -> NoiseAddition:
        w = _as_weights(weights)
        self.weights = w
        self.mask = _as_mask(mask, w.shape[1], w.device)
        self.scale = w[:, self.mask].std(correction=0) if self.relative else torch.ones((), device=w.device)
        return self

    def sample(self, n: int, seed: int = 0) -> Tensor:
        _require_fitted(self, "weights")
        g = seeded(seed)
        idx = torch.randint(0, self.weights.shape[0], (int(n),), generator=g)
        noise = torch.randn(int(n), self.weights.shape[1], generator=g).to(self.weights.device)
        step = (self.sigma * self.scale.to(self.weights.dtype)) * self.mask.to(self.weights.dtype)
        return self.weights[idx.to(self.weights.device)] + noise * step

    def config(self) -> dict:
        return {"sigma": self.sigma, "relative": self.relative}

    def state(self) -> dict[str, Tensor]:
        _require_fitted(self, "weights")
        return {"weights": self.weights, "mask": self.mask, "scale": self.scale}

    def load_state(self, state: dict[str, Tensor]) -> None:
        self.weights, self.mask, self.scale = state["weights"], state["mask"].bool(), state["scale"]


def noise_sweep(sigmas, *, relative: bool = False) -> list[NoiseAddition]:
    """Unfitted noise baselines, one per sigma, to trace the novelty–quality frontier."""
    return [NoiseAddition(sigma=s, relative=relative) for s in sigmas]


class AverageOfK(Generator):
    """The uniform average of ``k`` distinct training checkpoints chosen at random.

    Each sample is a fresh average (a selection matrix with ``1/k`` entries times the weights), so
    nothing accumulates between samples, unlike the in-place bug of the paper's released code."""

    name = "average"

    def __init__(self, k: int = 16):
        if int(k) != k or int(k) < 1:
            raise ConfigError(f"k: expected a positive integer, got {k!r}")
        self.k = int(k)

    def fit(self, weights: Tensor, *, progress: bool = True, **context) -> AverageOfK:
        w = _as_weights(weights)
        if self.k > w.shape[0]:
            raise ConfigError(f"k: expected at most the number of training checkpoints ({w.shape[0]}), got {self.k}")
        self.weights = w
        return self

    def sample(self, n: int, seed: int = 0) -> Tensor:
        _require_fitted(self, "weights")
        n_train = self.weights.shape[0]
        # k distinct indices per sample: the first k of an independent random permutation per row
        chosen = torch.rand(int(n), n_train, generator=seeded(seed)).argsort(dim=1)[:, : self.k]
        select = torch.zeros(int(n), n_train, dtype=self.weights.dtype)
        select.scatter_(1, chosen, 1.0 / self.k)
        return torch.where(_shared(self.weights), self.weights[0], select.to(self.weights.device) @ self.weights)

    def config(self) -> dict:
        return {"k": self.k}

    def state(self) -> dict[str, Tensor]:
        _require_fitted(self, "weights")
        return {"weights": self.weights}

    def load_state(self, state: dict[str, Tensor]) -> None:
        if self.k > state["weights"].shape[0]:
            raise ConfigError(f"k: expected at most {state['weights'].shape[0]} for this state, got {self.k}")
        self.weights = state["weights"]


class PerParameterGaussian(Generator):
    """Each coordinate drawn independently from ``N(mean, std)``, the maximum-likelihood fit
    (population std) over the training checkpoints: no correlations between parameters at all."""

    name = "gaussian"

    def fit(self, weights: Tensor, *, progress: bool = True, mask=None, **context) -> PerParameterGaussian:
        w = _as_weights(weights)
        shared = _shared(w)
        self.mean = torch.where(shared, w[0], w.mean(dim=0))
        std = w.std(dim=0, correction=0)
        self.std = torch.where(_as_mask(mask, w.shape[1], w.device) & ~shared, std, torch.zeros_like(std))
        return self

    def sample(self, n: int, seed: int = 0) -> Tensor:
        _require_fitted(self, "mean")
        noise = torch.randn(int(n), self.mean.shape[0], generator=seeded(seed)).to(self.mean)
        return self.mean + noise * self.std

    def config(self) -> dict:
        return {}

    def state(self) -> dict[str, Tensor]:
        _require_fitted(self, "mean")
        return {"mean": self.mean, "std": self.std}

    def load_state(self, state: dict[str, Tensor]) -> None:
        self.mean, self.std = state["mean"], state["std"]


class AlignedInterpolation(Generator):
    """The point at ``lam`` on the line between two distinct random checkpoints after aligning the
    second to the first by weight matching over the ``space``'s permutation groups (a JSON layout or
    a ``WeightSpace``). ``lam`` runs from 0 (a copy of the first) to 0.5 (the aligned midpoint); a
    sweep of ``lam`` draws this baseline's frontier. No BatchNorm reset: it applies to layouts
    without BatchNorm statistics (a blend of running statistics is not the blend's statistics)."""

    name = "aligned-interpolation"

    def __init__(self, lam: float = 0.5, space: str | WeightSpace | None = None, align: bool = True):
        if not 0 <= float(lam) <= 1:
            raise ConfigError(f"lam: expected a number in [0, 1], got {lam!r}")
        if space is None:
            raise ConfigError("space: expected the checkpoints' layout (a WeightSpace or its to_json())")
        self.lam, self.align = float(lam), bool(align)
        self.space = space if isinstance(space, WeightSpace) else WeightSpace.from_json(space)

    def fit(self, weights: Tensor, *, progress: bool = True, **context) -> AlignedInterpolation:
        w = _as_weights(weights)
        if w.shape[0] < 2 or w.shape[1] != self.space.num_params:
            raise LayoutError(f"weights: expected [N >= 2, {self.space.num_params}] for layout "
                              f"'{self.space.name}', got {tuple(w.shape)}")
        self.weights = w
        return self

    def sample(self, n: int, seed: int = 0) -> Tensor:
        _require_fitted(self, "weights")
        n_train = self.weights.shape[0]
        pairs = torch.rand(int(n), n_train, generator=seeded(seed)).argsort(dim=1)[:, :2]
        a, b = self.weights[pairs[:, 0]], self.weights[pairs[:, 1]]
        if self.align:
            b = permute(self.space, b, match_permutations(self.space, a, b))
        return (1 - self.lam) * a + self.lam * b

    def config(self) -> dict:
        return {"lam": self.lam, "space": self.space.to_json(), "align": self.align}

    def state(self) -> dict[str, Tensor]:
        _require_fitted(self, "weights")
        return {"weights": self.weights}

    def load_state(self, state: dict[str, Tensor]) -> None:
        self.weights = state["weights"]
