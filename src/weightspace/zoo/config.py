"""Zoo configs: YAML in, a validated and fully resolved config out (saved next to the zoo)."""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import asdict, fields
from importlib import resources
from pathlib import Path

import numpy as np
import yaml

from ..data import DATASETS
from ..errors import ConfigError
from ..nets import ARCHITECTURES
from .train import HParams, Run, TrainConfig, _generator

TOP_KEYS = {"name", "out", "dataset", "architecture", "population", "training", "init_from", "threads"}
DISTRIBUTIONS = ("uniform", "log_uniform", "choice")


def example_configs() -> list[str]:
    """Names of the configs shipped with weightspace (usable wherever a config path is)."""
    return sorted(p.name.removesuffix(".yaml") for p in resources.files("weightspace.configs").iterdir()
                  if p.name.endswith(".yaml"))


def read_config(source: str | Path | Mapping) -> dict:
    """A config from a YAML file, the name of a shipped example, or a dict."""
    if isinstance(source, Mapping):
        return dict(source)
    path = Path(source)
    if not path.exists():
        if str(source) in example_configs():
            path = Path(str(resources.files("weightspace.configs") / f"{source}.yaml"))
        else:
            raise ConfigError(f"{source}: no such config file (shipped examples: {', '.join(example_configs())})")
    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError as e:
        raise ConfigError(f"{path}: not valid YAML: {e}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping of config keys, got {type(data).__name__}")
    return data


def _section(cfg: Mapping, key: str, allowed: set[str] | None = None) -> dict:
    val = cfg.get(key) or {}
    if not isinstance(val, Mapping):
        raise ConfigError(f"{key}: expected a mapping, got {val!r}")
    if allowed is not None:
        unknown = set(val) - allowed
        if unknown:
            raise ConfigError(f"{key}: unknown keys {sorted(unknown)}; allowed: {sorted(allowed)}")
    return dict(val)


def resolve_config(raw: Mapping, out: str | None = None) -> dict:
    """Fill defaults, infer layer sizes from the data set, validate every value (errors name the key)."""
    unknown = set(raw) - TOP_KEYS
    if {"base", "tasks"} <= unknown:
        raise ConfigError("config: this is a knowledge-regions config (base, tasks), not a zoo config; "
                          "build it with `weightspace regions DIR --build CONFIG --by task`")
    if unknown:
        raise ConfigError(f"config: unknown keys {sorted(unknown)}; allowed: {sorted(TOP_KEYS)}")
    name = str(raw.get("name", "zoo"))
    data = _section(raw, "dataset")
    ds_name = data.pop("name", None)
    if ds_name not in DATASETS:
        raise ConfigError(f"dataset.name: expected one of {sorted(DATASETS)}, got {ds_name!r}")
    arch = _section(raw, "architecture")
    kind = arch.get("kind")
    if kind not in ARCHITECTURES:
        raise ConfigError(f"architecture.kind: expected one of {sorted(ARCHITECTURES)}, got {kind!r}")
    if kind == "cnn":
        data.setdefault("image", True)
    pop = _section(raw, "population", {"runs", "seed", "run_prefix", "hparams"})
    train = _section(raw, "training", {f.name for f in fields(TrainConfig)})
    hp_space = dict(pop.get("hparams") or {})
    bad = set(hp_space) - {f.name for f in fields(HParams)}
    if bad:
        raise ConfigError(f"population.hparams: unknown keys {sorted(bad)}; allowed: {[f.name for f in fields(HParams)]}")
    for key, spec in hp_space.items():
        _check_distribution(key, spec)
    runs = pop.get("runs", 16)
    if not isinstance(runs, int) or runs < 1:
        raise ConfigError(f"population.runs: expected a positive integer, got {runs!r}")
    try:
        train_cfg = TrainConfig(**{k: tuple(v) if isinstance(v, list) else v for k, v in train.items()})
    except TypeError as e:
        raise ConfigError(f"training: {e}") from None
    if train_cfg.batch_size < 1 or train_cfg.chunk_size < 1 or (train_cfg.every_steps or 1) < 1:
        raise ConfigError("training: batch_size, chunk_size and every_steps must be positive integers")
    threads = raw.get("threads")
    if threads is not None and (not isinstance(threads, int) or threads < 1):
        raise ConfigError(f"threads: expected a positive integer or null, got {threads!r}")
    return {
        "name": name,
        "out": str(out or raw.get("out") or Path("runs") / name),
        "dataset": {"name": ds_name, **data},
        "architecture": arch,
        "population": {"runs": runs, "seed": int(pop.get("seed", 0)), "run_prefix": str(pop.get("run_prefix", "r")),
                       "hparams": hp_space},
        "training": {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(train_cfg).items()},
        "init_from": raw.get("init_from"),
        "threads": threads,
    }


def _check_distribution(key: str, spec) -> None:
    if isinstance(spec, Mapping):
        if len(spec) != 1 or next(iter(spec)) not in DISTRIBUTIONS:
            raise ConfigError(
                f"population.hparams.{key}: expected a value, a list of choices, or one of "
                f"{{{', '.join(d + ': ...' for d in DISTRIBUTIONS)}}}; got {dict(spec)!r}"
            )
        (dist, args), = spec.items()
        if dist != "choice" and (not isinstance(args, list) or len(args) != 2):
            raise ConfigError(f"population.hparams.{key}.{dist}: expected [low, high], got {args!r}")
        if dist == "log_uniform" and min(args) <= 0:
            raise ConfigError(f"population.hparams.{key}.log_uniform: bounds must be > 0, got {args!r}")


def _draw(spec, rng: np.random.Generator):
    if isinstance(spec, list):
        spec = {"choice": spec}
    if not isinstance(spec, Mapping):
        return spec
    (dist, args), = spec.items()
    if dist == "choice":
        return args[int(rng.integers(len(args)))]
    lo, hi = float(args[0]), float(args[1])
    if dist == "uniform":
        return float(rng.uniform(lo, hi))
    return float(math.exp(rng.uniform(math.log(lo), math.log(hi))))


def population(resolved: Mapping) -> list[Run]:
    """The runs a resolved config describes: seeds and hyper-parameters drawn reproducibly."""
    pop = resolved["population"]
    rng = np.random.default_rng(pop["seed"])
    runs = []
    for i in range(pop["runs"]):
        values = {k: _draw(spec, rng) for k, spec in sorted(pop["hparams"].items())}
        seed = int(_generator(pop["seed"], i).initial_seed() % 2**31)
        runs.append(Run(f"{pop['run_prefix']}{i:05d}", seed, HParams(**values)))
    return runs
