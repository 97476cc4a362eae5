"""From a checked merge config and its opened models to one job per output tensor.

Layers are found by name, for any architecture: the first numbered component of a tensor's name
(``model.layers.7.mlp.up_proj.weight`` → stack ``model.layers``, layer 7). ``models:`` merges every
tensor of the models, which must all have the same tensors; a per-layer gradient spreads over the
layers of each stack (t = i / (n − 1)), other tensors take its first value (t = 0), as mergekit's.
``slices:`` builds the output's layer stack from the listed ranges, in order, renumbered; the tensors
outside it come from the first slice's sources if their name says embedding (``embed``, ``wte``,
``wpe``), else from the last slice's (final norm, output head) — mergekit's pre- and post-weights of
the common architectures.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import torch

from ..errors import ConfigError, LayoutError
from ..shards import TensorSpec
from .config import DTYPES, MergeConfig, Source, evaluate
from .registry import PER_MODEL, REQUIRED, MergeMethod, get_method

_LAYER = re.compile(r"^(?P<stack>.+?)\.(?P<index>\d+)\.(?P<rest>.+)$")
_EMBEDDING = re.compile(r"embed|(^|[._])(wte|wpe)([._]|$)", re.IGNORECASE)


@dataclass(frozen=True)
class Job:
    """One output tensor: the (model, tensor name) pairs it is merged from, in model order (the base
    apart), and the method's parameters for it (per-model ones as lists, one value per model)."""

    out: str
    inputs: tuple[tuple[str, str], ...]
    base: tuple[str, str] | None
    parameters: Mapping
    spec: TensorSpec  # of the output
    compute: torch.dtype | None  # what the inputs are cast to before merging; None: not a float tensor

    @property
    def label(self) -> str:
        """The order in which mergekit runs its tensors (and draws random numbers for them)."""
        return max(name for _, name in (*self.inputs, *([self.base] if self.base else [])))


@dataclass(frozen=True)
class MergePlan:
    method: MergeMethod
    jobs: tuple[Job, ...]
    layers: Mapping[str, tuple[int, int]]  # stack → (layers in the donor model, layers in the output)
    donor: str  # the model whose config.json the output takes


def layer_of(name: str) -> tuple[str, int, str] | None:
    """(stack, layer index, rest of the name), or None for a tensor outside any numbered stack."""
    m = _LAYER.match(name)
    return (m["stack"], int(m["index"]), m["rest"]) if m else None


def stacks(specs: Mapping[str, TensorSpec]) -> dict[str, int]:
    """Each numbered stack of a model and its number of layers."""
    out: dict[str, int] = {}
    for name in specs:
        layer = layer_of(name)
        if layer:
            out[layer[0]] = max(out.get(layer[0], 0), layer[1] + 1)
    return out


def plan_merge(config: MergeConfig, sources: Mapping[str, object]) -> MergePlan:
    """The jobs of a merge; ``sources`` maps every referenced model to its opened tensors (``.specs``)."""
    method = get_method(config.method)
    if config.slices is None:
        return _plan_models(config, method, sources)
    return _plan_slices(config, method, sources)


def _base_and_models(method: MergeMethod, base: str | None, entries: Sequence[Source], where: str):
    """The base (or None) and the merged entries, as the method's base policy makes them."""
    refs = [e.model for e in entries]
    if method.base == "none":
        if base is not None and base not in refs:
            raise ConfigError(f"merge config: {where}: merge method '{method.name}' takes no base model; list "
                              f"{base} among the models or remove base_model")
        base = None
    elif base is not None:
        entries = [e for e in entries if e.model != base]  # listed among the models too: not merged twice
    if method.base == "required" and base is None:
        raise ConfigError(f"merge config: {where}: merge method '{method.name}' needs a base_model")
    n = len(entries)
    if n < method.min_models or (method.max_models is not None and n > method.max_models):
        most = "" if method.max_models is None else f" and at most {method.max_models}"
        raise ConfigError(f"merge config: {where}: merge method '{method.name}' needs at least {method.min_models}"
                          f"{most} models besides the base, got {n}")
    return base, list(entries)


def _order(names: Sequence[str]) -> list[str]:
    """Embeddings, then the layers in order (each layer's tensors in the model's order), then the rest."""
    position = {n: i for i, n in enumerate(names)}

    def key(name):
        layer = layer_of(name)
        if layer is None:
            return (0 if _EMBEDDING.search(name) else 2, "", 0, position[name])
        return (1, layer[0], layer[1], position[name])

    return sorted(names, key=key)


def _plan_models(config: MergeConfig, method: MergeMethod, sources) -> MergePlan:
    base, entries = _base_and_models(method, config.base_model, config.models, "models")
    refs = [e.model for e in entries] + ([base] if base else [])
    names = list(sources[refs[0]].specs)
    for ref in refs[1:]:
        theirs = sources[ref].specs
        missing, extra = [n for n in names if n not in theirs], [n for n in theirs if n not in sources[refs[0]].specs]
        if missing or extra:
            raise LayoutError(f"{ref} does not have the tensors of {refs[0]}: missing {missing[:5]}, extra {extra[:5]}")
    counts = stacks(sources[refs[0]].specs)
    jobs = []
    for name in _order(names):
        layer = layer_of(name)
        t = 0.0 if layer is None else _position(layer[1], counts[layer[0]])
        inputs = tuple((e.model, name) for e in entries)
        jobs.append(_job(config, method, name, inputs, (base, name) if base else None, entries, (config.parameters,),
                         t, sources))
    return MergePlan(method, tuple(jobs), {s: (n, n) for s, n in counts.items()}, config.base_model or entries[0].model)


def _position(index: int, count: int) -> float:
    return index / (count - 1) if count > 1 else 1.0


def _plan_slices(config: MergeConfig, method: MergeMethod, sources) -> MergePlan:
    first_model = config.slices[0].sources[0].model
    found = stacks(sources[first_model].specs)
    if len(found) != 1:
        raise LayoutError(f"{first_model}: slices need one stack of numbered layers, found {sorted(found) or 'none'}")
    stack = next(iter(found))
    per_slice = []
    for i, sl in enumerate(config.slices):
        base, entries = _base_and_models(method, sl.base_model or config.base_model, sl.sources, f"slices[{i}]")
        if base is not None and base not in [s.model for s in sl.sources]:
            raise ConfigError(f"merge config: slices[{i}]: the base model {base} must be one of the slice's sources")
        for s in sl.sources:
            count = stacks(sources[s.model].specs).get(stack, 0)
            if s.layer_range[1] > count:
                raise ConfigError(f"merge config: slices[{i}]: layer_range {list(s.layer_range)} of {s.model}: it has "
                                  f"{count} layers in '{stack}'")
        per_slice.append((sl, base, entries))
    jobs, out_layer = [], 0
    outside = [n for n in sources[first_model].specs if layer_of(n) is None or layer_of(n)[0] != stack]
    pre = [n for n in outside if _EMBEDDING.search(n)]
    post = [n for n in outside if not _EMBEDDING.search(n)]
    jobs += _outside_jobs(config, method, pre, per_slice[0], sources)
    for sl, base, entries in per_slice:
        lead = sl.sources[0]
        length = lead.layer_range[1] - lead.layer_range[0]
        base_source = next((s for s in sl.sources if s.model == base), None)
        for offset in range(length):
            prefix = f"{stack}.{lead.layer_range[0] + offset}."
            rests = [n[len(prefix):] for n in sources[lead.model].specs if n.startswith(prefix)]
            for rest in rests:
                def at(s: Source, rest=rest, offset=offset, lead=lead) -> tuple[str, str]:
                    name = f"{stack}.{s.layer_range[0] + offset}.{rest}"
                    if name not in sources[s.model].specs:
                        raise LayoutError(f"{s.model}: has no tensor {name!r} (layer {offset} of slice {lead.model}"
                                          f"[{lead.layer_range[0]}:{lead.layer_range[1]}])")
                    return s.model, name

                jobs.append(_job(config, method, f"{stack}.{out_layer}.{rest}", tuple(at(e) for e in entries),
                                 at(base_source) if base_source else None, entries,
                                 (sl.parameters, config.parameters), _position(offset, length), sources))
            out_layer += 1
    jobs += _outside_jobs(config, method, post, per_slice[-1], sources)
    donor = config.base_model or first_model
    return MergePlan(method, tuple(jobs), {stack: (found[stack], out_layer)}, donor)


def _outside_jobs(config, method, names, slice_plan, sources) -> list[Job]:
    sl, base, entries = slice_plan
    return [_job(config, method, n, tuple((e.model, n) for e in entries), (base, n) if base else None, entries,
                 (sl.parameters, config.parameters), 0.0, sources) for n in names]


def _job(config: MergeConfig, method: MergeMethod, out: str, inputs, base, entries: Sequence[Source],
         scopes: Sequence[Mapping], t: float, sources) -> Job:
    specs = [sources[ref].specs[name] for ref, name in (*inputs, *([base] if base else []))]
    if any(s.shape != specs[0].shape for s in specs):
        raise LayoutError(f"tensor '{out}': the models' shapes differ: "
                          f"{[list(s.shape) for s in specs]} (from {[r for r, _ in (*inputs, *([base] if base else []))]})")
    floats = [s.dtype.is_floating_point for s in specs]
    if not all(floats):
        if any(floats):
            raise LayoutError(f"tensor '{out}': some models hold it as a float tensor, others not")
        return Job(out, inputs, base, {}, specs[0], None)
    compute = DTYPES[config.dtype] if config.dtype else _promoted([s.dtype for s in specs])
    written = compute
    if config.out_dtype:
        written = DTYPES[config.out_dtype]
    elif method.float32_result and compute in (torch.float16, torch.bfloat16):
        written = torch.float32
    parameters = {}
    for pname, default in method.parameters.items():
        if pname in PER_MODEL:
            values = [_resolve(pname, default, [e.parameters, *scopes], name, t, method)
                      for e, (_, name) in zip(entries, inputs)]
            parameters[pname] = values
        else:
            parameters[pname] = _resolve(pname, default, scopes, out, t, method)
    return Job(out, inputs, base, parameters, TensorSpec(specs[0].shape, written), compute)


def _resolve(name: str, default, scopes: Sequence[Mapping], tensor: str, t: float, method: MergeMethod):
    for scope in scopes:
        if name in scope:
            value = evaluate(scope[name], tensor, t, default, f"parameters.{name}")
            if value is not None:
                return value
    if default is REQUIRED:
        raise ConfigError(f"merge config: merge method '{method.name}' needs parameter '{name}' (for tensor {tensor})")
    return default


def _promoted(dtypes: Sequence[torch.dtype]) -> torch.dtype:
    out = dtypes[0]
    for d in dtypes[1:]:
        out = torch.promote_types(out, d)
    return out
