"""Zoo configs: YAML in, a validated and fully resolved config out (saved next to the zoo)."""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import asdict, fields
from importlib import resources
from pathlib import Path

import numpy as np

from ..data import DATASETS
from ..errors import ConfigError
from ..nets import ACTIVATIONS, ARCHITECTURES
from ..safe_input import (
    check_bool,
    check_float,
    check_int,
    check_list,
    check_str,
    read_yaml,
    safe_name,
)
from .trainer import OPTIMIZERS, HParams, Run, TrainConfig, seeded_generator

TOP_KEYS = {"name", "out", "dataset", "architecture", "population", "training", "init_from", "threads"}
DISTRIBUTIONS = ("uniform", "log_uniform", "choice")


def example_configs() -> list[str]:
    """Names of the configs shipped with weightspace (usable wherever a config path is)."""
    return sorted(p.name.removesuffix(".yaml") for p in resources.files("weightspace.configs").iterdir()
                  if p.name.endswith(".yaml"))


# Upper bounds: far above any zoo this toolkit trains on one machine, far below what exhausts it.
MAX_RUNS = 1_000_000
MAX_THREADS = 1024
MAX_EPOCHS = 100_000
MAX_STEPS = 10**9
MAX_WIDTH = 1 << 16


def read_config(source: str | Path | Mapping) -> dict:
    """A config from a YAML file (bounded: see :func:`weightspace.safe_input.read_yaml`), the name
    of a shipped example, or a dict."""
    if isinstance(source, Mapping):
        return dict(source)
    path = Path(source)
    if not path.exists():
        if str(source) in example_configs():
            path = Path(str(resources.files("weightspace.configs") / f"{source}.yaml"))
        else:
            raise ConfigError(f"{source}: no such config file (shipped examples: {', '.join(example_configs())})")
    data = read_yaml(path, "config")
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping of config keys, got {type(data).__name__}")
    return data


def _section(cfg: Mapping, key: str, allowed: set[str] | None = None, where: str | None = None) -> dict:
    where = where or key
    val = cfg.get(key)
    val = {} if val is None else val
    if not isinstance(val, Mapping):
        raise ConfigError(f"{where}: expected a mapping, got {val!r}")
    if allowed is not None:
        unknown = set(val) - allowed
        if unknown:
            raise ConfigError(f"{where}: unknown keys {sorted(unknown, key=str)}; allowed: {sorted(allowed)}")
    return dict(val)


def _pos_int(hi: int):
    return lambda v, key: check_int(v, key, 1, hi)


# Type and range of every architecture key a config may set (the rest are filled from the data set).
_ARCH_KEYS = {
    "kind": lambda v, key: check_str(v, key, sorted(ARCHITECTURES)),
    "in_features": _pos_int(MAX_WIDTH),
    "out_features": _pos_int(MAX_WIDTH),
    "in_channels": _pos_int(MAX_WIDTH),
    "image_size": _pos_int(MAX_WIDTH),
    "widths": lambda v, key: check_list(v, key, _pos_int(MAX_WIDTH), max_len=64),
    "channels": lambda v, key: check_list(v, key, _pos_int(MAX_WIDTH), min_len=1, max_len=64),
    "fc_widths": lambda v, key: check_list(v, key, _pos_int(MAX_WIDTH), max_len=64),
    "activation": check_str,
    "kernel_size": _pos_int(64),
    "batchnorm": check_bool,
    "bn_momentum": lambda v, key: check_float(v, key, 0.0, 1.0, open_lo=True),
    "n_frequencies": lambda v, key: check_int(v, key, 0, 64),
}

# Each hyper-parameter's check, applied to a fixed value, every choice, and both bounds of a range.
_HPARAMS = {
    "lr": lambda v, key: check_float(v, key, 0.0, open_lo=True),
    "weight_decay": lambda v, key: check_float(v, key, 0.0),
    "init_scale": lambda v, key: check_float(v, key, 0.0, open_lo=True),
    "dropout": lambda v, key: check_float(v, key, 0.0, 0.999),
    "optimizer": lambda v, key: check_str(v, key, OPTIMIZERS),
    "momentum": lambda v, key: check_float(v, key, 0.0, 0.999),
    "train_fraction": lambda v, key: check_float(v, key, 0.0, 1.0, open_lo=True),
    "epochs": lambda v, key: check_int(v, key, 1, MAX_EPOCHS),
    "activation": lambda v, key: check_str(v, key, tuple(ACTIVATIONS)),  # per run; the layout stays the same
}

_TRAINING = {
    "batch_size": _pos_int(1 << 20),
    "checkpoint_epochs": lambda v, key: tuple(check_list(v, key, _pos_int(MAX_EPOCHS))),
    "every_steps": lambda v, key: check_int(v, key, 1, MAX_STEPS, none=True),
    "max_steps": lambda v, key: check_int(v, key, 1, MAX_STEPS, none=True),
    "trainable": lambda v, key: None if v is None else tuple(check_list(v, key, check_str, min_len=1)),
    "chunk_size": _pos_int(1 << 20),
    "eval_splits": lambda v, key: tuple(check_list(v, key, lambda s, k: check_str(s, k, ("train", "val", "test")))),
}


def resolve_config(raw: Mapping, out: str | None = None) -> dict:
    """Fill defaults, infer layer sizes from the data set, validate the type and range of every
    value (errors name the key); nothing is read or written here."""
    unknown = set(raw) - TOP_KEYS
    if {"base", "tasks"} <= unknown:
        raise ConfigError("config: this is a knowledge-regions config (base, tasks), not a zoo config; "
                          "build it with `weightspace regions DIR --build CONFIG --by task`")
    if unknown:
        raise ConfigError(f"config: unknown keys {sorted(unknown, key=str)}; allowed: {sorted(TOP_KEYS)}")
    name = safe_name(raw.get("name", "zoo"), "name")
    data = _section(raw, "dataset")
    ds_name = data.pop("name", None)
    if not isinstance(ds_name, str) or ds_name not in DATASETS:
        raise ConfigError(f"dataset.name: expected one of {sorted(DATASETS)}, got {ds_name!r}")
    if "root" in data:
        check_str(data["root"], "dataset.root")
    arch = _section(raw, "architecture", set(_ARCH_KEYS))
    kind = arch.get("kind")
    if not isinstance(kind, str) or kind not in ARCHITECTURES:
        raise ConfigError(f"architecture.kind: expected one of {sorted(ARCHITECTURES)}, got {kind!r}")
    for key, check in _ARCH_KEYS.items():
        if key in arch:
            check(arch[key], f"architecture.{key}")
    if kind == "cnn":
        data.setdefault("image", True)
    pop = _section(raw, "population", {"runs", "seed", "run_prefix", "hparams"})
    train = _section(raw, "training", {f.name for f in fields(TrainConfig)})
    hp_space = _section(pop, "hparams", set(_HPARAMS), "population.hparams")
    for key, spec in hp_space.items():
        _check_distribution(key, spec)
    runs = check_int(pop.get("runs", 16), "population.runs", 1, MAX_RUNS)
    seed = check_int(pop.get("seed", 0), "population.seed", 0, 2**63 - 1)
    run_prefix = safe_name(pop.get("run_prefix", "r"), "population.run_prefix")
    train = {k: _TRAINING[k](v, f"training.{k}") for k, v in train.items()}
    train_cfg = TrainConfig(**train)
    threads = check_int(raw.get("threads"), "threads", 1, MAX_THREADS, none=True)
    out_value = raw.get("out")
    if out_value is not None:
        check_str(out_value, "out")
    init_from = raw.get("init_from")
    if isinstance(init_from, Mapping):
        if set(init_from) != {"path", "key"}:
            raise ConfigError(f"init_from: expected a checkpoint path or {{path: FILE, key: ENTRY}}, got {init_from!r}")
        init_from = {"path": check_str(init_from["path"], "init_from.path"),
                     "key": check_str(init_from["key"], "init_from.key")}
    elif init_from is not None:
        check_str(init_from, "init_from")
    return {
        "name": name,
        "out": str(out or out_value or Path("runs") / name),
        "dataset": {"name": ds_name, **data},
        "architecture": arch,
        "population": {"runs": runs, "seed": seed, "run_prefix": run_prefix, "hparams": hp_space},
        "training": {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(train_cfg).items()},
        "init_from": init_from,
        "threads": threads,
    }


def _check_distribution(key: str, spec) -> None:
    """A fixed value, a list of choices, or one of {uniform|log_uniform: [low, high]} / {choice: [...]},
    every value of which passes the hyper-parameter's own check."""
    where = f"population.hparams.{key}"
    check = _HPARAMS[key]
    if isinstance(spec, list):
        spec = {"choice": spec}
    if not isinstance(spec, Mapping):
        check(spec, where)
        return
    if len(spec) != 1 or next(iter(spec)) not in DISTRIBUTIONS:
        raise ConfigError(
            f"{where}: expected a value, a list of choices, or one of "
            f"{{{', '.join(d + ': ...' for d in DISTRIBUTIONS)}}}; got {dict(spec)!r}"
        )
    (dist, args), = spec.items()
    if dist == "choice":
        check_list(args, f"{where}.choice", check, min_len=1)
        return
    if key in ("optimizer", "epochs"):
        raise ConfigError(f"{where}.{dist}: {key} takes a value or a list of choices, not a range")
    low, high = check_list(args, f"{where}.{dist}", check, min_len=2, max_len=2)
    if low > high:
        raise ConfigError(f"{where}.{dist}: expected [low, high] with low ≤ high, got {args!r}")
    if dist == "log_uniform" and low <= 0:
        raise ConfigError(f"{where}.log_uniform: bounds must be > 0, got {args!r}")


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
        seed = int(seeded_generator(pop["seed"], i).initial_seed() % 2**31)
        runs.append(Run(f"{pop['run_prefix']}{i:05d}", seed, HParams(**values)))
    return runs
