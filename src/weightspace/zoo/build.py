"""From a config to a zoo on disk: data, architecture, population, training."""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from pathlib import Path

import pandas as pd
import torch
import yaml
from torch import Tensor

from ..data import Dataset, load_dataset
from ..errors import ConfigError, LayoutError, ZooError
from ..io import load_weights
from ..jsonable import jsonable
from ..nets import ACTIVATIONS, Architecture, build_architecture
from ..parallel import resolve_backend
from ..task import Task
from .config import population, read_config, resolve_config
from .store import INDEX, Zoo
from .train import train_population
from .trainer import TrainConfig, with_activation


def architecture_for(arch_cfg: Mapping, dataset: Dataset) -> Architecture:
    """Fill the input/output sizes an architecture config leaves to the data set."""
    cfg = dict(arch_cfg)
    shape = dataset.input_shape
    if cfg.get("kind") == "cnn":
        cfg.setdefault("in_channels", shape[0])
        cfg.setdefault("image_size", shape[-1])
    else:
        cfg.setdefault("in_features", math.prod(shape))
    cfg.setdefault("out_features", dataset.num_classes)
    return build_architecture(cfg)


def build_zoo(source, *, out: str | Path | None = None, progress: bool = True, append: bool = False,
              backend="local", address: str | None = None) -> Zoo:
    """Train the zoo a config describes (a path, a shipped example name, or a dict) and return it.

    Running it again on the same output resumes: finished checkpoints are kept and skipped. An
    existing zoo takes new runs only under the config it records; ``append=True`` adds runs of
    another config, each checkpoint recording that config (``extra`` column, key ``config``).
    Everything is read and checked before the zoo directory is touched. ``backend="ray"`` trains
    the chunks as Ray tasks (a local Ray, or the cluster at ``address``; or pass a
    :class:`~weightspace.parallel.RayBackend`), to the same weights.
    """
    ray_backend = resolve_backend(backend, address)
    cfg = resolve_config(read_config(source), None if out is None else str(out))
    runs = population(cfg)
    previous = torch.get_num_threads()
    if cfg["threads"]:
        torch.set_num_threads(cfg["threads"])
    try:  # the caller's thread count comes back: later work in this process must not change numerics
        return _build(cfg, runs, progress, append, ray_backend)
    finally:
        torch.set_num_threads(previous)


def _build(cfg: dict, runs, progress: bool, append: bool, ray_backend) -> Zoo:
    dataset = load_dataset(cfg["dataset"]["name"], **{k: v for k, v in cfg["dataset"].items() if k != "name"})
    arch = architecture_for(cfg["architecture"], dataset)
    cfg["architecture"] = arch.config
    train_cfg = TrainConfig(**{k: tuple(v) if isinstance(v, list) else v for k, v in cfg["training"].items()})
    if train_cfg.trainable:
        arch.space.mask(train_cfg.trainable)  # a pattern that matches nothing fails here, not mid-way
    init = None
    if cfg["init_from"]:
        source = cfg["init_from"]  # a path, or {path, key} for a training checkpoint
        sd, _ = load_weights(*((source["path"], source["key"]) if isinstance(source, dict) else (source,)))
        init = arch.space.flatten(sd)
    zoo = Zoo.create(cfg["out"], arch.space, architecture=arch.config, task=dataset.describe(), config=cfg)
    extra = _appended_config(zoo, cfg, runs) if append else _require_same_config(zoo, cfg)
    config_file = Path(cfg["out"]) / "config.yaml"
    if not config_file.exists():
        config_file.write_text(yaml.safe_dump(cfg, sort_keys=False))
    train_population(arch, dataset, runs, zoo, train_cfg, init=init, progress=progress, extra=extra,
                     backend=ray_backend)
    return zoo


# Keys that do not change what is trained: where the zoo is, how many threads train it.
_NOT_COMPARED = ("out", "threads")


def _comparable(cfg: Mapping) -> dict:
    return {k: v for k, v in jsonable(cfg).items() if k not in _NOT_COMPARED}


def _first_difference(a, b, where: str = "") -> str | None:
    if isinstance(a, dict) and isinstance(b, dict):
        for key in sorted(set(a) | set(b), key=str):
            diff = _first_difference(a.get(key), b.get(key), f"{where}.{key}" if where else str(key))
            if diff:
                return diff
        return None
    return None if a == b else f"{where}: {a!r} recorded, {b!r} given"


def _require_same_config(zoo: Zoo, cfg: Mapping) -> None:
    diff = _first_difference(_comparable(zoo.info.get("config") or {}), _comparable(cfg))
    if diff:
        raise ZooError(f"zoo {zoo.root} was trained with another config ({diff}); train into a new directory, or "
                       "pass --append to add these runs with their own config recorded")


def _appended_config(zoo: Zoo, cfg: Mapping, runs) -> dict | None:
    """The per-checkpoint record of an appended config; refused if its run ids are already taken
    by checkpoints of another config (they would be skipped as done)."""
    ours = _comparable(cfg)
    if not _first_difference(_comparable(zoo.info.get("config") or {}), ours):
        return None
    taken = zoo.index("run_id IN (SELECT value FROM json_each(?))", (json.dumps([r.run_id for r in runs]),))
    for run_id, extra in zip(taken["run_id"], taken["extra"]):
        theirs = json.loads(extra).get("config", _comparable(zoo.info.get("config") or {}))
        if _first_difference(theirs, ours):
            raise ZooError(f"zoo {zoo.root}: run {run_id} is already there under another config; give the appended "
                           "runs their own population.run_prefix")
    return {"config": ours}


def zoo_activation(zoo: Zoo, index: pd.DataFrame | None = None) -> str | None:
    """The one activation the models of ``index`` (default: the whole zoo) trained with, as their
    records say; None when none records one.

    Runs of one zoo may each draw an activation (the layout is the same), so the zoo's architecture
    alone does not say what function a model computes: models of several activations cannot share
    one evaluation, and asking for one is an error naming them.
    """
    index = zoo.index() if index is None else index
    if "hp_activation" not in index:
        return None
    found = sorted({a for a in index["hp_activation"] if isinstance(a, str)})
    unknown = [a for a in found if a not in ACTIVATIONS]
    if unknown:
        raise ZooError(f"{zoo.root / INDEX}: hparams.activation {unknown[0]!r} is not one of {sorted(ACTIVATIONS)}")
    if len(found) > 1:
        raise ZooError(f"zoo {zoo.root}: these models trained with different activations {found}; evaluate one at a "
                       "time, e.g. --where \"json_extract(hparams, '$.activation') = '" + found[0] + "'\"")
    return found[0] if found else None


def model_activations(index: pd.DataFrame) -> list[str | None] | None:
    """Each model's recorded activation (None where its record has none), in the index's order; None
    when the index records none at all."""
    if "hp_activation" not in index:
        return None
    return [a if isinstance(a, str) else None for a in index["hp_activation"]]


def task_for_zoo(zoo: Zoo, index: pd.DataFrame | None = None) -> Task:
    """The zoo's data set (same split and normalisation) and architecture, rebuilt from what it
    recorded, with the activation the models of ``index`` (default: all) trained with."""
    info = zoo.info.get("task") or {}
    options = info.get("options", {})
    if not isinstance(options, dict):
        raise ZooError(f"{zoo.root / 'zoo.json'}: task.options must be an object, got {options!r:.80}")
    try:
        arch = build_architecture(zoo.info.get("architecture") or {})
        if arch.space.entries != zoo.space.entries:
            raise LayoutError(f"architecture '{arch.name}' does not have the zoo's layout '{zoo.space.name}'")
        arch = with_activation(arch, zoo_activation(zoo, index))
        return Task(load_dataset(info.get("name"), **options), arch)
    except (ConfigError, LayoutError) as e:  # what zoo.json records, not what the user typed
        raise ZooError(f"{zoo.root / 'zoo.json'}: {e}") from None


def accuracy_on_test(zoo: Zoo, weights: Tensor) -> Tensor:
    """Test accuracy ``Tensor[n]`` of each weight vector on the zoo's task: a classifier method's quality."""
    task = task_for_zoo(zoo)
    return task.accuracy(weights.detach().to(task.dataset.x_test.device), "test")


def predictions_on_test(zoo: Zoo, weights: Tensor) -> Tensor:
    """Predicted test labels ``LongTensor[n, examples]`` of each weight vector on the zoo's task."""
    task = task_for_zoo(zoo)
    return task.predictions(weights.detach().to(task.dataset.x_test.device), "test")
