"""Where merged, aligned and compared models come from.

A model reference is a checkpoint file (``.safetensors``, or ``.pt``/``.bin`` read weights-only), a
Hugging Face model folder, or a zoo entry ``ZOO_DIR::MODEL_ID`` (in YAML also ``{zoo: DIR, id: ID}``).
:func:`open_source` gives a merge its tensors: safetensors files and folders lazily, shard by shard
(:class:`weightspace.shards.SafetensorsSource`); anything else read whole.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import torch

from ..errors import ConfigError
from ..io import is_training_checkpoint_file, load_weights
from ..nets import Architecture, build_architecture
from ..safe_input import read_yaml
from ..shards import SafetensorsSource, TensorSpec
from ..space import StateDict, WeightSpace
from ..zoo import Zoo
from ..zoo.build import zoo_activation
from ..zoo.trainer import with_activation
from .config import model_ref


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


def load_model(ref, key: str | None = None) -> LoadedModel:
    """Read one model reference (see the module docstring); ``key`` picks the entry of a training
    checkpoint file (.pt, .bin, ...) that holds the model, and leaves other references alone."""
    ref = model_ref(ref, "model")
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
    if key is not None and not any(is_training_checkpoint_file(model_ref(r, "model")) for r in refs if r is not None):
        raise ConfigError(f"--key {key!r}: none of the models is a training checkpoint file (.pt, .pth, .bin, "
                          ".ckpt); --key picks an entry inside those")


class StateDictSource:
    """A model read whole (a zoo entry, a pickle checkpoint), with the reading interface of
    :class:`~weightspace.shards.SafetensorsSource`."""

    def __init__(self, ref: str, state_dict: StateDict, folder: Path | None = None):
        self.path, self.folder, self._tensors = ref, folder, state_dict
        self.specs = {n: TensorSpec(tuple(t.shape), t.dtype) for n, t in state_dict.items()}

    def read(self, names) -> dict[str, torch.Tensor]:
        return {n: self._tensors[n] for n in names}


def open_source(ref: str, key: str | None = None) -> SafetensorsSource | StateDictSource:
    """A merge's view of one model reference: lazy for safetensors files and folders (``key``: see
    :func:`load_model`)."""
    if "::" not in ref or Path(ref).exists():
        path = Path(ref)
        if SafetensorsSource.is_source(path):
            return SafetensorsSource(path)
        return StateDictSource(ref, load_model(ref, key).state_dict, path if path.is_dir() else None)
    return StateDictSource(ref, load_model(ref, key).state_dict)
