"""The registry of merge methods: name → a pure function over one tensor of M models, its reference,
what it does with a base model, and its parameters with defaults (``REQUIRED`` where there is none).

Names, defaults and model counts follow mergekit 0.1.5, whose YAML its users already write; per-model
parameters (``weight``, ``density``, ``gamma``, ``epsilon``, ``scale``) take one value for all models
or one per model. Every method computes in the dtype of its inputs (the config's ``dtype``), except
where mergekit's does otherwise: linear, SLERP and Karcher work in float32 for half-precision inputs.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from functools import partial
from types import MappingProxyType

from torch import Tensor

from ..errors import ConfigError
from .linear import linear, passthrough
from .model_stock import model_stock
from .sce import sce
from .selective import arcee_fusion, nearswap
from .spherical import karcher, multislerp, nuslerp, slerp
from .task_arithmetic import task_arithmetic

REQUIRED = object()
PER_MODEL = frozenset({"weight", "density", "gamma", "epsilon", "scale"})
BASE_POLICIES = ("required", "optional", "none")


@dataclass(frozen=True)
class MergeMethod:
    """``fn(tensors [M, *shape], base [*shape] | None, **parameters) -> [*shape]``."""

    name: str
    fn: Callable[..., Tensor]
    reference: str
    base: str  # "required", "optional" or "none" (a base model is one of the models like any other)
    parameters: Mapping[str, object]
    min_models: int = 1  # besides the base
    max_models: int | None = None
    random: bool = False  # draws from the seeded generator
    float32_result: bool = False  # half-precision inputs give float32 (mergekit's arcee_fusion does)

    @property
    def needs_base(self) -> bool:
        return self.base == "required"


def _ta(name, reference, sparsify, consensus, normalize, rescale, extra=()):
    params = {"weight": 1.0, "density": 1.0, "normalize": normalize, "rescale": rescale, "lambda": 1.0,
              "int8_mask": False, **dict(extra)}
    return MergeMethod(name, partial(task_arithmetic, sparsify=sparsify, consensus=consensus), reference,
                       base="required", parameters=params, random=sparsify in ("random", "della"))


_METHODS = (
    MergeMethod("linear", linear, "https://arxiv.org/abs/2203.05482", base="none",
                parameters={"weight": 1.0, "normalize": True}),
    MergeMethod("passthrough", passthrough, "https://github.com/arcee-ai/mergekit", base="none",
                parameters={"scale": 1.0}, max_models=1),
    MergeMethod("slerp", slerp, "https://en.wikipedia.org/wiki/Slerp", base="required",
                parameters={"t": REQUIRED}, max_models=1),
    MergeMethod("nuslerp", nuslerp, "https://github.com/arcee-ai/mergekit", base="optional",
                parameters={"weight": REQUIRED, "nuslerp_row_wise": False, "nuslerp_flatten": True},
                min_models=2, max_models=2),
    MergeMethod("multislerp", multislerp, "https://goddard.blog/posts/multislerp-wow-what-a-cool-idea",
                base="optional", parameters={"weight": REQUIRED, "normalize_weights": True, "eps": 1e-8}),
    MergeMethod("karcher", karcher, "https://en.wikipedia.org/wiki/Fr%C3%A9chet_mean", base="none",
                parameters={"weight": 1.0, "max_iter": 10, "tol": 1e-5}),
    MergeMethod("model_stock", model_stock, "https://arxiv.org/abs/2403.19522", base="required",
                parameters={"filter_wise": False}, min_models=2),
    MergeMethod("sce", sce, "https://arxiv.org/abs/2408.07990", base="required",
                parameters={"select_topk": 1.0, "int8_mask": False}),
    MergeMethod("nearswap", nearswap, "https://huggingface.co/alchemonaut/QuartetAnemoi-70B-t0.0001",
                base="required", parameters={"t": REQUIRED}, max_models=1),
    MergeMethod("arcee_fusion", arcee_fusion, "https://arcee.ai", base="required", parameters={},
                max_models=1, random=True, float32_result=True),
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
