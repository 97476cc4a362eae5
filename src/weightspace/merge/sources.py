"""Where merged models come from, and the merge config that names them.

A model reference is a checkpoint file (``.safetensors``, or ``.pt``/``.bin`` read weights-only), a
Hugging Face model folder, or a zoo entry ``ZOO_DIR::MODEL_ID`` (in YAML also ``{zoo: DIR, id: ID}``).

The merge config is mergekit's YAML, for the keys it shares::

    merge_method: ties
    base_model: base.safetensors
    models:
      - model: runs/zoo::r003-e0020
        parameters: {weight: 0.5, density: 0.5}
      - model: finetuned-folder/
        parameters: {weight: 0.5, density: 0.7}
    parameters: {normalize: true}
    dtype: float32        # optional: output dtype
    seed: 0               # random sparsification (DARE, DELLA)
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import torch

from ..errors import ConfigError
from ..io import is_training_checkpoint_file, load_weights
from ..nets import Architecture, build_architecture
from ..safe_input import read_yaml
from ..space import StateDict, WeightSpace
from ..zoo import Zoo
from ..zoo.build import zoo_activation
from ..zoo.train import with_activation
from .registry import PER_MODEL, get_method

CONFIG_KEYS = {"merge_method", "base_model", "models", "parameters", "dtype", "seed"}
DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16, "float64": torch.float64}


def read_yaml_mapping(path: str | Path) -> dict:
    """One YAML file as a dict, through the bounded reader (:func:`weightspace.safe_input.read_yaml`);
    anything else is one line naming the file."""
    path = Path(path)
    data = read_yaml(path, "merge config")
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping of config keys (merge_method, models, ...), "
                          f"got {type(data).__name__}")
    return data


@dataclass(frozen=True)
class LoadedModel:
    """A model's floating-point tensors, and what is known about it: its zoo, its architecture."""

    ref: str
    state_dict: StateDict
    zoo: Zoo | None = None
    architecture: Architecture | None = None
    layout: WeightSpace | None = None
    model_id: str | None = None  # its id in ``zoo``


def _ref_string(ref) -> str:
    if isinstance(ref, Mapping):
        if set(ref) != {"zoo", "id"}:
            raise ConfigError(f"model {dict(ref)!r}: expected a path, 'ZOO_DIR::MODEL_ID', or {{zoo: DIR, id: ID}}")
        return f"{ref['zoo']}::{ref['id']}"
    if not isinstance(ref, str) or not ref:
        raise ConfigError(f"model {ref!r}: expected a path, 'ZOO_DIR::MODEL_ID', or {{zoo: DIR, id: ID}}")
    return ref


def load_model(ref, key: str | None = None) -> LoadedModel:
    """Read one model reference (see the module docstring); ``key`` picks the entry of a training
    checkpoint file (.pt, .bin, ...) that holds the model, and leaves other references alone."""
    ref = _ref_string(ref)
    if "::" in ref and not Path(ref).exists():
        root, _, model_id = ref.rpartition("::")
        zoo = Zoo.open(root)
        weights, rows = zoo.load(ids=[model_id])
        arch = None
        if zoo.info.get("architecture"):
            arch = with_activation(build_architecture(zoo.info["architecture"]), zoo_activation(zoo, rows))
        return LoadedModel(ref, zoo.space.unflatten(weights[0]), zoo, arch, zoo.space, model_id)
    path = Path(ref)
    state_dict, meta = load_weights(path, key if is_training_checkpoint_file(path) else None)
    arch = layout = None
    if meta.get("architecture") and json.loads(meta["architecture"]):
        arch = build_architecture(json.loads(meta["architecture"]))
    if meta.get("layout"):
        layout = WeightSpace.from_json(meta["layout"])
    return LoadedModel(ref, state_dict, None, arch, layout)


def check_key_applies(key: str | None, refs) -> None:
    """``--key`` is refused where none of the models is a training checkpoint file it could apply to."""
    if key is not None and not any(is_training_checkpoint_file(_ref_string(r)) for r in refs if r is not None):
        raise ConfigError(f"--key {key!r}: none of the models is a training checkpoint file (.pt, .pth, .bin, "
                          ".ckpt); --key picks an entry inside those")


@dataclass(frozen=True)
class MergeConfig:
    method: str
    models: tuple[str, ...]
    base: str | None
    parameters: dict  # method-wide values and per-model lists, as ``merge_state_dicts`` takes them
    dtype: str | None
    seed: int

    def to_dict(self) -> dict:
        return {"merge_method": self.method, "base_model": self.base, "models": list(self.models),
                "parameters": self.parameters, "dtype": self.dtype, "seed": self.seed}


def parse_merge_config(raw: Mapping) -> MergeConfig:
    """Validate a mergekit-style config; per-model ``parameters`` become lists in model order (a model
    that does not set one takes the method-wide value, else the method's default)."""
    unknown = sorted(set(raw) - CONFIG_KEYS)
    if unknown:
        raise ConfigError(f"merge config: unknown keys {unknown}; allowed: {sorted(CONFIG_KEYS)}")
    if "merge_method" not in raw:
        raise ConfigError("merge config: 'merge_method' is missing")
    method = get_method(raw["merge_method"])
    entries = raw.get("models")
    if not isinstance(entries, list) or not entries:
        raise ConfigError("merge config: 'models' must be a non-empty list of {model: ..., parameters: {...}}")
    base = None if raw.get("base_model") is None else _ref_string(raw["base_model"])
    shared = raw.get("parameters") or {}
    if not isinstance(shared, Mapping):
        raise ConfigError(f"merge config: 'parameters' must be a mapping, got {shared!r}")
    models, per_model = [], []
    for i, entry in enumerate(entries):
        if not isinstance(entry, Mapping) or "model" not in entry or set(entry) - {"model", "parameters"}:
            raise ConfigError(f"merge config: models[{i}]: expected {{model: ..., parameters: {{...}}}}, got {entry!r}")
        ref = _ref_string(entry["model"])
        params = entry.get("parameters") or {}
        if not isinstance(params, Mapping):
            raise ConfigError(f"merge config: models[{i}].parameters must be a mapping, got {params!r}")
        bad = sorted(set(params) - PER_MODEL)
        if bad:
            raise ConfigError(f"merge config: models[{i}].parameters {bad} are not per-model; "
                              f"per-model parameters are {sorted(PER_MODEL)}; put the others under 'parameters'")
        if ref == base and method.needs_base:
            continue  # mergekit lets the base appear among the models; it is not merged twice
        models.append(ref)
        per_model.append(dict(params))
    parameters = dict(shared)
    for name in sorted({k for p in per_model for k in p}):
        fallback = shared.get(name, method.parameters.get(name))
        parameters[name] = [p.get(name, fallback) for p in per_model]
    dtype = raw.get("dtype")
    if dtype is not None and dtype not in DTYPES:
        raise ConfigError(f"merge config: dtype: expected one of {sorted(DTYPES)}, got {dtype!r}")
    seed = raw.get("seed", 0)
    if not isinstance(seed, int) or isinstance(seed, bool):
        raise ConfigError(f"merge config: seed: expected an integer, got {seed!r}")
    return MergeConfig(method.name, tuple(models), base, parameters, dtype, seed)
