"""From a config to a zoo on disk: data, architecture, population, training."""

from __future__ import annotations

import math
from collections.abc import Mapping
from pathlib import Path

import torch
import yaml

from ..data import Dataset, load_dataset
from ..io import load_weights
from ..nets import Architecture, build_architecture
from ..parallel import resolve_backend
from ..task import Task
from .config import population, read_config, resolve_config
from .store import Zoo
from .train import TrainConfig, train_population


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


def build_zoo(source, *, out: str | Path | None = None, progress: bool = True, backend="local",
              address: str | None = None) -> Zoo:
    """Train the zoo a config describes (a path, a shipped example name, or a dict) and return it.

    Running it again on the same output resumes: finished checkpoints are kept and skipped.
    ``backend="ray"`` trains the chunks as Ray tasks (a local Ray, or the cluster at ``address``;
    or pass a :class:`~weightspace.parallel.RayBackend`), to the same weights.
    """
    ray_backend = resolve_backend(backend, address)
    cfg = resolve_config(read_config(source), None if out is None else str(out))
    if cfg["threads"]:
        torch.set_num_threads(cfg["threads"])
    dataset = load_dataset(cfg["dataset"]["name"], **{k: v for k, v in cfg["dataset"].items() if k != "name"})
    arch = architecture_for(cfg["architecture"], dataset)
    cfg["architecture"] = arch.config
    init = None
    if cfg["init_from"]:
        sd, _ = load_weights(cfg["init_from"])
        init = arch.space.flatten(sd)
    zoo = Zoo.create(cfg["out"], arch.space, architecture=arch.config, task=dataset.describe(), config=cfg)
    config_file = Path(cfg["out"]) / "config.yaml"
    if not config_file.exists():
        config_file.write_text(yaml.safe_dump(cfg, sort_keys=False))
    train_cfg = TrainConfig(**{k: tuple(v) if isinstance(v, list) else v for k, v in cfg["training"].items()})
    train_population(arch, dataset, population(cfg), zoo, train_cfg, init=init, progress=progress,
                     backend=ray_backend)
    return zoo


def task_for_zoo(zoo: Zoo) -> Task:
    """The zoo's data set (same split and normalisation) and architecture, rebuilt from what it recorded."""
    info = zoo.info["task"]
    return Task(load_dataset(info["name"], **info.get("options", {})), build_architecture(zoo.info["architecture"]))
