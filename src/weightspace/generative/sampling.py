"""Samples of a fitted generator, written as a zoo of the training zoo's layout."""

from __future__ import annotations

import json
from pathlib import Path

from ..errors import ConfigError
from ..zoo import Zoo
from .base import load_generator
from .methods import zoo_method


def write_samples(generator_dir: str | Path, n: int, out: str | Path, *, seed: int = 0, progress: bool = True) -> Zoo:
    """Draw ``n`` models (seeded) and store them, with their quality when the method defines one."""
    gdir = Path(generator_dir)
    fit_file = gdir / "fit.json"
    if not fit_file.exists():
        raise ConfigError(f"{gdir}: no fit.json; fit the generator with 'weightspace generate fit' first")
    fit = json.loads(fit_file.read_text())
    if n < 1:
        raise ConfigError(f"-n: expected a positive number of samples, got {n}")
    train = Zoo.open(fit["zoo"])
    gen = load_generator(gdir)
    weights = gen.sample(n, seed)
    config = {"generator": fit["generator"], "generator_config": fit["config"], "seed": seed,
              "training_zoo": fit["zoo"], "training_method": train.info.get("config", {}).get("method")}
    zoo = Zoo.create(out, train.space, architecture=train.info["architecture"], task=train.info["task"], config=config)
    module = zoo_method(train)
    quality = module.quality(train, weights) if module else None
    items = []
    for i, w in enumerate(weights):
        record = {"run_id": f"{fit['generator']}-{seed}", "seed": seed, "hparams": {}, "sample": i}
        if quality is not None:  # a classifier's quality is its test accuracy; a shape's goes to extra
            record["test_acc" if hasattr(module, "predictions") else "quality"] = float(quality[i])
        items.append((f"{fit['generator']}-s{seed}-{i:05d}", w, record))
    zoo.add_many(items)
    return zoo
