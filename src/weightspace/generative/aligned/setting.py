"""The aligned method's data setting: hundreds of independent runs of G.pt's MLP 784→10→10 on
Fashion-MNIST (3 epochs of SGD on 6,000 images, one final checkpoint each), made in one batched
training call, plus held-out runs trained alike and never shown to the generator."""

from __future__ import annotations

from pathlib import Path

from torch import Tensor

from ...data import load_dataset
from ...errors import ConfigError
from ...jsonable import jsonable
from ...nets import build_architecture
from ...safe_input import check_int, check_str
from ...zoo.method_record import Fields, Record
from ...zoo.setting import HELDOUT_PREFIX, DataSetting, held_out_rows, register_method
from ...zoo.store import Zoo
from ...zoo.train import train_population
from ...zoo.trainer import HParams, Run, TrainConfig

DATASET = {"name": "fashion-mnist", "max_train": 6000}
ARCHITECTURE = {"kind": "mlp", "in_features": 784, "widths": [10], "out_features": 10, "activation": "relu"}
# G.pt's MLP and training recipe (3 epochs of SGD on 6,000 Fashion-MNIST images), but many runs with
# one final checkpoint each instead of a few runs' trajectories.
PRESETS = {
    "default": {"runs": 512, "heldout_runs": 100, "epochs": 3, "lr": 0.05, "dataset": DATASET,
                "architecture": ARCHITECTURE},
    "tiny": {"runs": 48, "heldout_runs": 12, "epochs": 6, "lr": 0.05, "dataset": {"name": "digits", "seed": 0},
             "architecture": {**ARCHITECTURE, "in_features": 64}},
}
# What build_data records (checked when a zoo is opened as this method's).
ZOO_RECORD = Record(Fields({"preset": lambda v, k: check_str(v, k, PRESETS), "seed": check_int}))


class AlignedSetting(DataSetting):
    name = "aligned"
    label = "Aligned Gaussian (weightspace)"
    record = ZOO_RECORD
    samples = 200

    def build(self, out: str | Path, *, preset: str = "default", progress: bool = True, seed: int = 0,
              runs: int | None = None, width: int | None = None) -> Zoo:
        """``runs`` (default: the preset's) independent runs of the MLP differing only in their seed,
        then the held-out runs (seeds after theirs). ``seed`` shifts every run's seed by ``seed * 100_000``.
        ``width`` (default: the preset's) is the hidden layer's number of neurons. Re-running skips runs
        already in the zoo."""
        if preset not in PRESETS:
            raise ConfigError(f"preset: expected one of {sorted(PRESETS)}, got {preset!r}")
        p = dict(PRESETS[preset])
        if runs is not None:
            p["runs"] = int(runs)
        if width is not None:
            p["architecture"] = {**p["architecture"], "widths": [check_int(width, "width", 1)]}
        dataset = load_dataset(**p["dataset"])
        arch = build_architecture(p["architecture"])
        train_cfg = TrainConfig(batch_size=64)
        config = {"method": "aligned", "preset": preset, "seed": int(seed), **p,
                  "training": {"batch_size": train_cfg.batch_size, "optimizer": "sgd", "momentum": 0.9}}
        zoo = Zoo.create(out, arch.space, architecture=arch.config, task=dataset.describe(), config=config)
        if zoo.info["config"] != jsonable(config):
            raise ConfigError(f"out: {out} holds a zoo built with another preset, seed or number of runs; "
                              "use another directory")
        hp = HParams(lr=p["lr"], momentum=0.9, optimizer="sgd", epochs=p["epochs"])
        first = int(seed) * 100_000
        todo = [Run(f"run{i:05d}", first + i, hp) for i in range(p["runs"])]
        todo += [Run(f"{HELDOUT_PREFIX}{i:05d}", first + 50_000 + i, hp) for i in range(p["heldout_runs"])]
        train_population(arch, dataset, todo, zoo, train_cfg, progress=progress)
        return zoo

    def training(self, zoo: Zoo) -> Tensor:
        """The final checkpoint of every training run."""
        weights, df = zoo.load()
        return weights[~held_out_rows(df)]

    def heldout(self, zoo: Zoo) -> Tensor:
        """The final checkpoint of every held-out run: fresh training runs, the novelty ceiling."""
        weights, df = zoo.load()
        return weights[held_out_rows(df)]

    def generator_config(self, zoo: Zoo) -> dict:
        return {"architecture": dict(zoo.info["architecture"])}


SETTING = register_method(AlignedSetting())
