"""The registry of merge methods: name → a pure function over one tensor of M models, its reference,
whether it needs a base model, and its parameters with defaults (``REQUIRED`` where there is none).

Names and defaults follow mergekit 0.1.5, whose YAML its users already write; per-model parameters
(``weight``, ``density``, ``gamma``, ``epsilon``) take one value for all models or one per model.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from functools import partial
from types import MappingProxyType

from torch import Tensor

from ..errors import ConfigError
from .linear import linear
from .model_stock import model_stock
from .spherical import karcher, slerp
from .task_arithmetic import task_arithmetic

REQUIRED = object()
PER_MODEL = frozenset({"weight", "density", "gamma", "epsilon"})


@dataclass(frozen=True)
class MergeMethod:
    """``fn(tensors [M, *shape], base [*shape] | None, **parameters) -> [*shape]``."""

    name: str
    fn: Callable[..., Tensor]
    reference: str
    needs_base: bool
    parameters: Mapping[str, object]
    min_models: int = 1  # besides the base
    max_models: int | None = None
    random: bool = False  # draws from the seeded generator


def _ta(name, reference, sparsify, consensus, normalize, rescale, extra=()):
    params = {"weight": 1.0, "density": 1.0, "normalize": normalize, "rescale": rescale, "lambda": 1.0, **dict(extra)}
    return MergeMethod(name, partial(task_arithmetic, sparsify=sparsify, consensus=consensus), reference,
                       needs_base=True, parameters=params, random=sparsify in ("random", "della"))


_METHODS = (
    MergeMethod("linear", linear, "https://arxiv.org/abs/2203.05482", needs_base=False,
                parameters={"weight": 1.0, "normalize": True}),
    MergeMethod("slerp", slerp, "https://en.wikipedia.org/wiki/Slerp", needs_base=True,
                parameters={"t": REQUIRED}, max_models=1),
    MergeMethod("karcher", karcher, "https://en.wikipedia.org/wiki/Fr%C3%A9chet_mean", needs_base=False,
                parameters={"weight": 1.0, "max_iter": 10, "tol": 1e-5}),
    MergeMethod("model_stock", model_stock, "https://arxiv.org/abs/2403.19522", needs_base=True,
                parameters={"filter_wise": False}, min_models=2),
    _ta("task_arithmetic", "https://arxiv.org/abs/2212.04089", None, False, False, False),
    _ta("ties", "https://arxiv.org/abs/2306.01708", "magnitude", True, True, False),
    _ta("dare_linear", "https://arxiv.org/abs/2311.03099", "random", False, False, True),
    _ta("dare_ties", "https://arxiv.org/abs/2311.03099", "random", True, False, True),
    _ta("breadcrumbs", "https://arxiv.org/abs/2312.06795", "magnitude_outliers", False, False, False,
        {"gamma": 0.01}),
    _ta("breadcrumbs_ties", "https://arxiv.org/abs/2312.06795", "magnitude_outliers", True, False, False,
        {"gamma": 0.01}),
    _ta("della", "https://arxiv.org/abs/2406.11617", "della", True, True, True, {"epsilon": 0.15}),
    _ta("della_linear", "https://arxiv.org/abs/2406.11617", "della", False, False, True, {"epsilon": 0.15}),
)

METHODS: Mapping[str, MergeMethod] = MappingProxyType({m.name: m for m in _METHODS})


def get_method(name: str) -> MergeMethod:
    if name not in METHODS:
        raise ConfigError(f"merge method: expected one of {sorted(METHODS)}, got {name!r}")
    return METHODS[name]
