"""Samples of a fitted generator, written as a zoo of the training zoo's layout."""

from __future__ import annotations

from pathlib import Path

import torch

from ..errors import ConfigError
from ..generator import load_generator
from ..safe_input import read_json, safe_name
from ..zoo import Zoo
from ..zoo.setting import CLASSIFIER, setting_for_zoo

MAX_SAMPLES = 100_000
MAX_SAMPLE_VALUES = 1 << 28  # n × parameters held in memory at once (1 GiB of float32)


def write_samples(generator_dir: str | Path, n: int, out: str | Path, *, seed: int = 0, progress: bool = True) -> Zoo:
    """Draw ``n`` models (seeded) and store them, with their quality when the method defines one."""
    gdir = Path(generator_dir)
    if isinstance(n, bool) or not isinstance(n, int) or not 1 <= n <= MAX_SAMPLES:
        raise ConfigError(f"-n: expected a number of samples in [1, {MAX_SAMPLES}], got {n!r}")
    fit_file = gdir / "fit.json"
    if not fit_file.is_file():
        raise ConfigError(f"{gdir}: no fit.json; fit the generator with 'weightspace generate fit' first")
    fit = read_json(fit_file, "fit record", error=ConfigError)
    if not isinstance(fit, dict) or not all(isinstance(fit.get(k), t) for k, t in
                                            (("zoo", str), ("generator", str), ("config", dict))):
        raise ConfigError(f"{fit_file}: expected 'zoo' (a path), 'generator' (a name) and 'config' (an object)")
    safe_name(fit["generator"], f"{fit_file}: generator")
    train = Zoo.open(fit["zoo"])
    gen = load_generator(gdir)
    if n * train.space.num_params > MAX_SAMPLE_VALUES:
        raise ConfigError(f"-n: {n} samples of {train.space.num_params} parameters are more than "
                          f"{MAX_SAMPLE_VALUES} values; draw fewer at a time")
    weights = gen.sample(n, seed)
    if weights.shape != (n, train.space.num_params) or not bool(torch.isfinite(weights).all()):
        raise ConfigError(f"{gdir}: the generator gave {'non-finite' if weights.shape[0] == n else 'malformed'} "
                          "weights; refit it (nothing was written)")
    config = {"generator": fit["generator"], "generator_config": fit["config"], "seed": seed,
              "training_zoo": fit["zoo"], "training_method": train.info.get("config", {}).get("method")}
    zoo = Zoo.create(out, train.space, architecture=train.info["architecture"], task=train.info["task"], config=config)
    method = setting_for_zoo(train)
    quality = method.quality(train, weights) if method else None
    items = []
    for i, w in enumerate(weights):
        record = {"run_id": f"{fit['generator']}-{seed}", "seed": seed, "hparams": {}, "sample": i}
        if quality is not None:  # a classifier's quality is its test accuracy; a shape's goes to extra
            record["test_acc" if method.kind == CLASSIFIER else "quality"] = float(quality[i])
        items.append((f"{fit['generator']}-s{seed}-{i:05d}", w, record))
    zoo.add_many(items)
    return zoo
