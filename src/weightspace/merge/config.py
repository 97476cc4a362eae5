"""mergekit's merge config, as its users write it, checked into a :class:`MergeConfig`.

Every key of mergekit 0.1.5's ``MergeConfiguration``: ``merge_method``, ``base_model``, ``models``
(``[{model, parameters}]``) or ``slices`` (``[{sources: [{model, layer_range, parameters}],
base_model, parameters}]``), ``parameters``, ``dtype`` (the dtype the merge computes in),
``out_dtype`` (the dtype written; default: the computed one), ``tokenizer_source`` (``base`` or a
model: whose tokenizer files are copied; ``union`` is refused), ``tokenizer: {source}``, and
``chat_template`` (``auto``, ``chatml`` or a Jinja template). weightspace adds ``seed`` (random
sparsification and sampling; mergekit's ``--random-seed``). Keys and values that are accepted but
change nothing (``int8_mask``, ``residual_weight``) are listed in :attr:`MergeConfig.notes`, one
line each.

A parameter is a scalar, a gradient (a list of numbers interpolated over the layers of a slice, as
mergekit does: layer i of n takes position t = i / (n − 1)), or a list of ``{filter, value}`` whose
first entry whose ``filter`` is a substring of the tensor's name (or that has none) applies.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path

import torch

from ..errors import ConfigError
from .registry import PER_MODEL, MergeMethod, get_method

CONFIG_KEYS = {"merge_method", "base_model", "models", "slices", "modules", "parameters", "dtype", "out_dtype",
               "tokenizer_source", "tokenizer", "chat_template", "seed"}
DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16, "float64": torch.float64}
NO_EFFECT = {"int8_mask": "int8_mask is accepted and changes nothing: sign masks are boolean here"}


@dataclass(frozen=True)
class Source:
    """One model's part of an output slice: its layers ``layer_range`` (None: all of them)."""

    model: str
    layer_range: tuple[int, int] | None
    parameters: Mapping = field(default_factory=dict)


@dataclass(frozen=True)
class OutputSlice:
    sources: tuple[Source, ...]
    base_model: str | None = None
    parameters: Mapping = field(default_factory=dict)


@dataclass(frozen=True)
class MergeConfig:
    """A checked config: ``slices`` is None when the config lists ``models`` (whole models)."""

    method: str
    models: tuple[Source, ...] | None
    slices: tuple[OutputSlice, ...] | None
    base_model: str | None
    parameters: Mapping
    dtype: str | None
    out_dtype: str | None
    tokenizer_source: str | None
    chat_template: str | None
    seed: int
    notes: tuple[str, ...] = ()

    def resolved(self) -> MergeConfig:
        """The same config with every model that is a local path made absolute: what repeats the merge
        from any directory."""
        def ref(r: str | None) -> str | None:
            return str(Path(r).resolve()) if r is not None and Path(r).exists() else r

        def source(s: Source) -> Source:
            return replace(s, model=ref(s.model))

        tokenizer = self.tokenizer_source if self.tokenizer_source == "base" else ref(self.tokenizer_source)
        return replace(self, base_model=ref(self.base_model), tokenizer_source=tokenizer,
                       models=None if self.models is None else tuple(map(source, self.models)),
                       slices=None if self.slices is None else tuple(
                           replace(sl, base_model=ref(sl.base_model), sources=tuple(map(source, sl.sources)))
                           for sl in self.slices))

    def referenced_models(self) -> list[str]:
        """Every model the config names, base first, each once."""
        refs = [self.base_model] if self.base_model else []
        for s in self.models or ():
            refs.append(s.model)
        for sl in self.slices or ():
            refs += ([sl.base_model] if sl.base_model else []) + [s.model for s in sl.sources]
        return list(dict.fromkeys(refs))

    def to_dict(self) -> dict:
        """The config in mergekit's schema (plus ``seed``): what repeats this merge."""
        def source(s: Source) -> dict:
            d = {"model": s.model}
            if s.layer_range is not None:
                d["layer_range"] = list(s.layer_range)
            if s.parameters:
                d["parameters"] = dict(s.parameters)
            return d

        out: dict = {"merge_method": self.method}
        if self.slices is not None:
            out["slices"] = [{"sources": [source(s) for s in sl.sources],
                              **({"base_model": sl.base_model} if sl.base_model else {}),
                              **({"parameters": dict(sl.parameters)} if sl.parameters else {})} for sl in self.slices]
        else:
            out["models"] = [source(s) for s in self.models]
        for key, value in (("base_model", self.base_model), ("parameters", dict(self.parameters) or None),
                           ("dtype", self.dtype), ("out_dtype", self.out_dtype),
                           ("tokenizer_source", self.tokenizer_source), ("chat_template", self.chat_template)):
            if value is not None:
                out[key] = value
        out["seed"] = self.seed
        return out


def parse_merge_config(raw: Mapping) -> MergeConfig:
    """Check a mergekit config (see the module docstring); errors name the key and what was expected."""
    unknown = sorted(set(raw) - CONFIG_KEYS)
    if unknown:
        raise ConfigError(f"merge config: unknown keys {unknown}; allowed: {sorted(CONFIG_KEYS)}")
    if "merge_method" not in raw:
        raise ConfigError("merge config: 'merge_method' is missing")
    method = get_method(raw["merge_method"])
    if raw.get("modules") is not None:
        raise ConfigError("merge config: 'modules' (architectures of several modules, e.g. vision + text) is not "
                          "supported; use 'models' or 'slices'")
    notes: list[str] = []
    base = None if raw.get("base_model") is None else model_ref(raw["base_model"], "base_model")
    parameters = _parameters(raw.get("parameters"), "parameters", method, notes)
    has_models, has_slices = raw.get("models") is not None, raw.get("slices") is not None
    if has_models == has_slices:
        raise ConfigError("merge config: give exactly one of 'models' (whole models) or 'slices' (layer ranges)")
    models = slices = None
    if has_models:
        models = tuple(_source(e, f"models[{i}]", method, notes, slice_=False)
                       for i, e in enumerate(_list(raw["models"], "models")))
    else:
        slices = tuple(_slice(e, f"slices[{i}]", method, notes) for i, e in enumerate(_list(raw["slices"], "slices")))
    dtype, out_dtype = _dtype(raw, "dtype"), _dtype(raw, "out_dtype")
    tokenizer_source = _tokenizer_source(raw)
    chat_template = raw.get("chat_template")
    if chat_template is not None and not isinstance(chat_template, str):
        raise ConfigError(f"merge config: chat_template: expected 'auto', 'chatml' or a Jinja template, got {chat_template!r}")
    seed = raw.get("seed", 0)
    if not isinstance(seed, int) or isinstance(seed, bool):
        raise ConfigError(f"merge config: seed: expected an integer, got {seed!r}")
    return MergeConfig(method.name, models, slices, base, parameters, dtype, out_dtype, tokenizer_source,
                       chat_template, seed, tuple(dict.fromkeys(notes)))


def model_ref(ref, where: str) -> str:
    """A model reference as a string: a path, ``ZOO_DIR::MODEL_ID``, or ``{zoo: DIR, id: ID}``."""
    if isinstance(ref, Mapping) and set(ref) == {"zoo", "id"}:
        return f"{ref['zoo']}::{ref['id']}"
    if not isinstance(ref, str) or not ref:
        raise ConfigError(f"merge config: {where}: expected a path, 'ZOO_DIR::MODEL_ID' or {{zoo: DIR, id: ID}}, "
                          f"got {ref!r}")
    return ref


def _list(value, where: str) -> list:
    if not isinstance(value, list) or not value:
        raise ConfigError(f"merge config: '{where}' must be a non-empty list")
    return value


def _dtype(raw: Mapping, key: str) -> str | None:
    value = raw.get(key)
    if value is not None and value not in DTYPES:
        raise ConfigError(f"merge config: {key}: expected one of {sorted(DTYPES)}, got {value!r}")
    return value


def _tokenizer_source(raw: Mapping) -> str | None:
    source = raw.get("tokenizer_source")
    tokenizer = raw.get("tokenizer")
    if tokenizer is not None:
        if source is not None:
            raise ConfigError("merge config: give 'tokenizer_source' or 'tokenizer', not both")
        if not isinstance(tokenizer, Mapping) or set(tokenizer) - {"source"}:
            raise ConfigError(f"merge config: tokenizer: only {{source: ...}} is supported (added tokens and padding "
                              f"re-map the embeddings, which weightspace does not do), got {tokenizer!r}")
        source = tokenizer.get("source")
    if source is None:
        return None
    if source == "union":
        raise ConfigError("merge config: tokenizer_source: 'union' builds a new vocabulary and re-maps the "
                          "embeddings, which weightspace does not do; use 'base' or a model")
    return model_ref(source, "tokenizer_source")


def _source(entry, where: str, method: MergeMethod, notes: list[str], *, slice_: bool) -> Source:
    allowed = {"model", "parameters", "layer_range"} if slice_ else {"model", "parameters"}
    if not isinstance(entry, Mapping) or "model" not in entry or set(entry) - allowed:
        shape = "{model: ..., layer_range: [start, end], parameters: {...}}" if slice_ else "{model: ..., parameters: {...}}"
        raise ConfigError(f"merge config: {where}: expected {shape}, got {entry!r}")
    params = _parameters(entry.get("parameters"), f"{where}.parameters", method, notes)
    shared = sorted(set(params) - PER_MODEL)
    if shared:
        raise ConfigError(f"merge config: {where}.parameters {shared} are not per-model; per-model parameters are "
                          f"{sorted(PER_MODEL)}; put the others under 'parameters'")
    layer_range = None
    if slice_:
        r = entry.get("layer_range")
        if (not isinstance(r, list) or len(r) != 2 or not all(isinstance(v, int) and not isinstance(v, bool) for v in r)
                or not 0 <= r[0] < r[1]):
            raise ConfigError(f"merge config: {where}.layer_range: expected [start, end] with 0 <= start < end, got {r!r}")
        layer_range = (r[0], r[1])
    return Source(model_ref(entry["model"], f"{where}.model"), layer_range, params)


def _slice(entry, where: str, method: MergeMethod, notes: list[str]) -> OutputSlice:
    if not isinstance(entry, Mapping) or "sources" not in entry or set(entry) - {"sources", "base_model", "parameters",
                                                                                  "residual_weight"}:
        raise ConfigError(f"merge config: {where}: expected {{sources: [...], base_model: ..., parameters: {{...}}}}, "
                          f"got {entry!r}")
    if "residual_weight" in entry:
        notes.append("residual_weight is accepted and changes nothing (mergekit 0.1.5 does not use it either)")
    sources = tuple(_source(s, f"{where}.sources[{j}]", method, notes, slice_=True)
                    for j, s in enumerate(_list(entry["sources"], f"{where}.sources")))
    lengths = {s.layer_range[1] - s.layer_range[0] for s in sources}
    if len(lengths) > 1:
        raise ConfigError(f"merge config: {where}: every source must span as many layers, got layer ranges "
                          f"{[list(s.layer_range) for s in sources]}")
    base = None if entry.get("base_model") is None else model_ref(entry["base_model"], f"{where}.base_model")
    return OutputSlice(sources, base, _parameters(entry.get("parameters"), f"{where}.parameters", method, notes))


def _parameters(value, where: str, method: MergeMethod, notes: list[str]) -> dict:
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        raise ConfigError(f"merge config: {where}: expected a mapping of parameter names to values, got {value!r}")
    unknown = sorted(set(value) - set(method.parameters))
    if unknown:
        raise ConfigError(f"merge config: {where}: {unknown} are not parameters of merge method '{method.name}'; "
                          f"it takes {sorted(method.parameters)}")
    for name, setting in value.items():
        _check_setting(setting, f"{where}.{name}")
        if name in NO_EFFECT:
            notes.append(NO_EFFECT[name])
    return dict(value)


def _is_scalar(v) -> bool:
    return isinstance(v, (bool, int, float, str))


def _check_setting(setting, where: str) -> None:
    if _is_scalar(setting):
        return
    conditions = [setting] if isinstance(setting, Mapping) else setting
    if isinstance(conditions, list) and conditions and all(_is_scalar(v) for v in conditions):
        return  # a gradient
    if isinstance(conditions, list) and conditions and all(
            isinstance(c, Mapping) and "value" in c and not set(c) - {"value", "filter"}
            and (c.get("filter") is None or isinstance(c["filter"], str)) for c in conditions):
        for c in conditions:
            _check_setting(c["value"], where)
        return
    raise ConfigError(f"merge config: {where}: expected a number, a boolean, a gradient [v0, v1, ...] or a list of "
                      f"{{filter: NAME_PART, value: ...}}, got {setting!r}")


def evaluate(setting, tensor: str, t: float, kind, where: str):
    """A setting's value for one tensor at position ``t`` in [0, 1] of its slice's layers (None where
    no filter matches). ``kind``: the parameter's default value (its type) or ``REQUIRED`` (a number)."""
    if isinstance(setting, Mapping):
        setting = [setting]
    if _is_scalar(setting):
        return _validate(setting, kind, where)
    if all(_is_scalar(v) for v in setting):
        values = [_validate(v, kind, where) for v in setting]
        if not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in values):
            return values[int(t * (len(values) - 1))]
        scaled = t * (len(values) - 1)
        i0 = int(scaled)
        i1 = min(len(values) - 1, i0 + 1)
        frac = scaled - i0
        return _validate((1 - frac) * values[i0] + frac * values[i1], kind, where)
    for condition in setting:
        name = condition.get("filter")
        if name is None or name == "*" or name in tensor:
            return evaluate(condition["value"], tensor, t, kind, where)
    return None


_TRUE, _FALSE = ("true", "yes", "on", "t", "y", "1"), ("false", "no", "off", "f", "n", "0")


def _validate(value, kind, where: str):
    """``value`` as the parameter's type, converted as mergekit's (pydantic's lax) validation does:
    numbers from numeric strings and booleans, booleans from 0/1 and true/false words."""
    if isinstance(kind, bool):
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in _TRUE + _FALSE:
            return value.lower() in _TRUE
        if isinstance(value, (int, float)) and value in (0, 1):
            return bool(value)
        raise ConfigError(f"merge config: {where}: expected true or false, got {value!r}")
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise ConfigError(f"merge config: {where}: expected a number, got {value!r}") from None
    if isinstance(kind, int) and not isinstance(kind, bool):
        if number != int(number) or isinstance(value, str):
            raise ConfigError(f"merge config: {where}: expected an integer, got {value!r}")
        return int(number)
    return number
