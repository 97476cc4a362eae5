"""Merging whole models: a list of state dicts (any architecture), or a zoo's ``[N, P]`` weights.

Both paths run the registry's per-tensor functions on the M models of one tensor at once, tensor by
tensor in state-dict (layout) order, drawing random sparsification from one generator seeded by
``seed``: the same order in which mergekit draws from the global generator.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence

import torch
from torch import Tensor

from ..errors import ConfigError, LayoutError
from ..space import StateDict, WeightSpace
from .config import NO_EFFECT
from .registry import PER_MODEL, REQUIRED, MergeMethod, get_method
from .task_arithmetic import check_della


def resolve_parameters(method: MergeMethod, parameters: Mapping | None, n_models: int) -> dict:
    """The method's keyword arguments: its defaults overridden by ``parameters``, per-model values as
    ``Tensor[M]``; parameters that change nothing (``int8_mask``) are checked and left out."""
    parameters = dict(parameters or {})
    unknown = sorted(set(parameters) - set(method.parameters))
    if unknown:
        raise ConfigError(f"parameters {unknown} are not parameters of merge method '{method.name}'; "
                          f"it takes {sorted(method.parameters)}")
    out = {}
    for name, default in method.parameters.items():
        value = parameters.get(name, default)
        if value is REQUIRED:
            raise ConfigError(f"merge method '{method.name}' needs parameter '{name}'")
        if name in PER_MODEL:
            values = value if isinstance(value, (list, tuple, Tensor)) else [value] * n_models
            if len(values) != n_models:
                raise ConfigError(f"parameter '{name}': expected one value or {n_models} (one per model), "
                                  f"got {len(values)}")
            try:
                value = torch.as_tensor([float(v) for v in values], dtype=torch.float64)
            except (TypeError, ValueError):
                raise ConfigError(f"parameter '{name}': expected numbers, got {values!r}") from None
        if name not in NO_EFFECT:
            out["lambda_" if name == "lambda" else name] = value
    if method.name.startswith("della"):
        check_della(out["density"], out["epsilon"])
    return out


def _check_count(method: MergeMethod, n_models: int, has_base: bool) -> None:
    if method.base == "required" and not has_base:
        raise ConfigError(f"merge method '{method.name}' needs a base model")
    if method.base == "none" and has_base:
        raise ConfigError(f"merge method '{method.name}' takes no base model; list it among the models")
    if n_models < method.min_models or (method.max_models is not None and n_models > method.max_models):
        most = "" if method.max_models is None else f" and at most {method.max_models}"
        raise ConfigError(f"merge method '{method.name}' needs at least {method.min_models}{most} models "
                          f"besides the base, got {n_models}")


def merge_tensor(method: MergeMethod, tensors: Tensor, base: Tensor | None, params: dict,
                 generator: torch.Generator | None = None) -> Tensor:
    """One output tensor: ``tensors [M, *shape]`` (and ``base``) through the method, with the keyword
    arguments of :func:`resolve_parameters`; random methods draw from ``generator``."""
    return method.fn(tensors, base, **params, **({"generator": generator} if method.random else {}))


def _merge_tensors(method: MergeMethod, items: Iterator[tuple[str, Tensor, Tensor | None]], params: dict,
                   seed: int) -> Iterator[tuple[str, Tensor]]:
    generator = torch.Generator().manual_seed(seed)
    for name, tensors, base in items:
        yield name, merge_tensor(method, tensors, base, params, generator)


def merge_state_dicts(
    models: Sequence[Mapping[str, Tensor]],
    method: str,
    *,
    base: Mapping[str, Tensor] | None = None,
    parameters: Mapping | None = None,
    seed: int = 0,
    dtype: torch.dtype | None = None,
    out_dtype: torch.dtype | None = None,
) -> StateDict:
    """Merge state dicts of any architecture with a registered method (``METHODS``).

    Every model (and the base) must have the same tensor names, shapes and dtypes; the error names the
    first tensor that differs. Integer tensors (e.g. ``num_batches_tracked``) are copied when all
    models agree on them. ``dtype``: what the floating-point tensors are cast to and merged in
    (default: their own); ``out_dtype``: what the results are cast to (default: as computed).
    """
    m = get_method(method)
    _check_count(m, len(models), base is not None)
    everyone = [*models, *([base] if base is not None else [])]
    label = [f"model {i}" for i in range(len(models))] + (["the base model"] if base is not None else [])
    names = list(everyone[0])
    for who, sd in zip(label, everyone):
        missing, extra = [n for n in names if n not in sd], [n for n in sd if n not in everyone[0]]
        if missing or extra:
            raise LayoutError(f"{who} does not have the tensors of model 0: missing {missing[:5]}, extra {extra[:5]}")
    params = resolve_parameters(m, parameters, len(models))
    merged, floats = {}, []
    for name in names:
        ref = everyone[0][name]
        for who, sd in zip(label, everyone):
            t = sd[name]
            if t.shape != ref.shape or t.dtype != ref.dtype:
                raise LayoutError(f"tensor '{name}': {who} has shape {tuple(t.shape)} and dtype {t.dtype}, "
                                  f"model 0 has {tuple(ref.shape)} and {ref.dtype}")
        if ref.is_floating_point():
            floats.append(name)
        elif all(torch.equal(sd[name], ref) for sd in everyone):
            merged[name] = ref.clone()
        else:
            raise LayoutError(f"tensor '{name}' is not floating point and differs between models; "
                              "there is no way to merge it")
    cast = (lambda t: t) if dtype is None else (lambda t: t.to(dtype))
    items = ((n, cast(torch.stack([sd[n] for sd in models])), None if base is None else cast(base[n])) for n in floats)
    for name, tensor in _merge_tensors(m, items, params, seed):
        merged[name] = tensor if out_dtype is None else tensor.to(out_dtype)
    return {n: merged[n] for n in names}


def merge_weights(
    space: WeightSpace,
    weights: Tensor,
    method: str,
    *,
    base: Tensor | None = None,
    parameters: Mapping | None = None,
    seed: int = 0,
) -> Tensor:
    """Merge the models of a zoo, ``weights [N, P]`` (and ``base [P]``), into one ``Tensor[P]``.

    Equal to ``merge_state_dicts`` on the same models; each tensor of the N models is a view of
    ``weights``, nothing is copied per model."""
    if weights.dim() != 2 or weights.shape[1] != space.num_params:
        raise LayoutError(f"weights: expected [N, {space.num_params}] for layout '{space.name}', "
                          f"got {tuple(weights.shape)}")
    if base is not None and tuple(base.shape) != (space.num_params,):
        raise LayoutError(f"base: expected [{space.num_params}] for layout '{space.name}', got {tuple(base.shape)}")
    m = get_method(method)
    _check_count(m, weights.shape[0], base is not None)
    params = resolve_parameters(m, parameters, weights.shape[0])
    stacked = space.unflatten(weights, cast=False)
    base_sd = None if base is None else space.unflatten(base, cast=False)
    items = ((e.name, stacked[e.name], None if base_sd is None else base_sd[e.name]) for e in space.entries)
    merged = dict(_merge_tensors(m, items, params, seed))
    return torch.cat([merged[e.name].reshape(-1) for e in space.entries])
