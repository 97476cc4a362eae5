"""Hyper-Representations' data setting: a zoo of independently trained small CNNs, several checkpoints
each. The original generated the 2,464 weights of a 3-conv + 2-FC LeakyReLU CNN on SVHN from 2,896
checkpoints and was audited against the autoencoder's reconstructions of its training checkpoints.
Here: a CNN with conv channels 1→8→6→4, FC 4→20→10, LeakyReLU, no BatchNorm (1,048 weights) on
Fashion-MNIST averaged to 7×7 pixels, trained on a 5,000-image subset and scored on a stratified
2,000-image test subset, so a model makes hundreds of test errors; 100 independently trained runs × 4
checkpoints (epochs 2, 4, 6, 8; Adam with varied learning rate, init scale and dropout, so accuracies
spread), plus 20 held-out runs trained alike and never shown to the generator. The ``tiny`` preset
uses 8×8 scikit-learn digits.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import ClassVar

import torch
from torch import Tensor

from ...data import load_dataset
from ...errors import ConfigError
from ...generator import seeded
from ...nets import build_architecture
from ...safe_input import check_int, check_str
from ...zoo.method_record import Fields, Record
from ...zoo.setting import (
    HELDOUT_PREFIX,
    DataSetting,
    PaperCall,
    Reference,
    held_out_rows,
    register_method,
)
from ...zoo.store import Zoo
from ...zoo.train import train_population
from ...zoo.trainer import HParams, Run, TrainConfig

DATASET = {"name": "fashion-mnist", "image": True, "image_size": 7, "max_train": 6000, "max_test": 2000}
ARCHITECTURE = {"kind": "cnn", "in_channels": 1, "image_size": 7, "channels": [8, 6, 4], "fc_widths": [20],
                "out_features": 10, "kernel_size": 3, "activation": "leaky_relu", "batchnorm": False}
PRESETS = {
    "default": {"runs": 100, "heldout_runs": 20, "epochs": 10, "checkpoint_epochs": [2, 4, 6, 8],
                "dataset": DATASET},
    "tiny": {"runs": 8, "heldout_runs": 2, "epochs": 4, "checkpoint_epochs": [2],
             "dataset": {"name": "digits", "seed": 0, "image": True}},
}
ACCURACY_METRICS = ("test_acc", "val_acc", "train_acc")
# What build_data records (checked when a zoo is opened as Hyper-Representations').
ZOO_RECORD = Record(Fields({"preset": lambda v, k: check_str(v, k, PRESETS), "seed": check_int}))


def zoo_runs(n: int, epochs: int, seed: int = 0, prefix: str = "run") -> list[Run]:
    """``n`` independent runs of ``epochs`` epochs, seeds ``seed``..``seed + n - 1``, each with its own mildly
    varied hyper-parameters (Adam lr log-uniform in [0.004, 0.03], init scale in [0.7, 1.3], dropout in
    {0, 0.05, 0.1}, drawn from ``seed``): the zoo then spans a range of accuracies, as the original zoos
    varied their training."""
    g = seeded(12345 + seed)
    lrs = torch.exp(torch.empty(n).uniform_(math.log(0.004), math.log(0.03), generator=g))
    scales = torch.empty(n).uniform_(0.7, 1.3, generator=g)
    drops = torch.tensor([0.0, 0.05, 0.1])[torch.randint(3, (n,), generator=g)]
    return [Run(f"{prefix}{i:04d}", seed + i, HParams(lr=round(float(lrs[i]), 5), init_scale=round(float(scales[i]), 3),
                                                      dropout=float(drops[i]), optimizer="adam", epochs=epochs))
            for i in range(n)]


class HyperRepSetting(DataSetting):
    name = "hyperrep"
    label = "Hyper-Representations"
    record = ZOO_RECORD
    paper = PaperCall("replicates", replicates=True, beats_noise=False, interpolates=False)
    paper_sigmas = (0.02, 0.04)
    samples = 200  # the paper samples 200 models from Hyper-Representations
    # Sampled as published: the original code drew every latent dimension with one shared random
    # state, so each sample is one training latent plus jitter (independent draws per dimension mix
    # unaligned models and give chance-level accuracy).
    options: ClassVar[dict] = {"default": {"shared_seed": True}, "tiny": {"steps": 150, "shared_seed": True}}

    def build(self, out: str | Path, *, preset: str = "default", progress: bool = True, seed: int = 0) -> Zoo:
        """Independently trained CNNs, checkpoints at several epochs each, then the held-out runs
        (``tiny``: 8 + 2 runs × 2 checkpoints on digits, seconds; ``default``: 100 + 20 runs × 4
        checkpoints on Fashion-MNIST). ``seed`` shifts every run's seed by ``seed * 10_000``.
        Re-running skips runs already in the zoo."""
        if preset not in PRESETS:
            raise ConfigError(f"preset: expected one of {sorted(PRESETS)}, got {preset!r}")
        p = PRESETS[preset]
        dataset = load_dataset(**p["dataset"])
        arch = build_architecture({**ARCHITECTURE, "image_size": dataset.input_shape[-1]})
        train_cfg = TrainConfig(batch_size=32, checkpoint_epochs=tuple(p["checkpoint_epochs"]))
        config = {"method": "hyperrep", "preset": preset, "seed": int(seed), **p,
                  "training": {"batch_size": train_cfg.batch_size, "optimizer": "adam"}}
        zoo = Zoo.create(out, arch.space, architecture=arch.config, task=dataset.describe(), config=config)
        if (zoo.info["config"].get("preset"), zoo.info["config"].get("seed")) != (preset, int(seed)):
            raise ConfigError(f"preset: the zoo at {out} was built with preset {zoo.info['config'].get('preset')!r} "
                              f"and seed {zoo.info['config'].get('seed')!r}, got {preset!r} and {seed!r}; "
                              "use another directory")
        first = int(seed) * 10_000
        runs = zoo_runs(p["runs"], p["epochs"], first) + zoo_runs(p["heldout_runs"], p["epochs"], first + p["runs"],
                                                                  HELDOUT_PREFIX)
        train_population(arch, dataset, runs, zoo, train_cfg, progress=progress)
        return zoo

    def generator_config(self, zoo: Zoo) -> dict:
        """The architecture (it defines the tokens)."""
        return {"architecture": dict(zoo.info["architecture"])}

    def training(self, zoo: Zoo) -> Tensor:
        """Every checkpoint of the training runs, all epochs: the original trained its autoencoder on
        all of them and selected the best models only when sampling (see :meth:`fit_context`)."""
        return zoo.load(ids=_index(zoo, False)["model_id"].tolist())[0]

    def heldout(self, zoo: Zoo) -> Tensor:
        """Every checkpoint of the held-out runs (trained like the training runs, never fitted on)."""
        return zoo.load(ids=_index(zoo, True)["model_id"].tolist())[0]

    def final_epoch(self, zoo: Zoo) -> Tensor:
        """Each training run's last checkpoint (neighbouring epochs of one run would otherwise be each
        other's nearest neighbours in the paper's min-L2 histogram)."""
        df = _index(zoo, False)
        return torch.tensor((df["step"] == df.groupby("run_id")["step"].transform("max")).to_numpy(dtype=bool))

    def reference(self, zoo: Zoo, generator) -> Reference:
        """What the paper compares Hyper-Representations' samples with: the fitted autoencoder's
        reconstruction (encode, then decode) of every training checkpoint, all epochs. The held-out
        runs stay as they are: fresh runs are the control whose answer is known, and the decoder's
        reconstructions of runs it never saw are not fresh runs (they score at chance on the default
        zoo: docs/study.md)."""
        return Reference("reconstructions", generator.reconstruct(self.training(zoo)))

    def noise_source(self, zoo: Zoo, generator) -> Tensor:
        """The paper's noise baseline starts from the reconstructed top ``top_fraction`` (the models
        the KDE is fitted on)."""
        return generator.reconstruct(self.training(zoo)[generator.stats["anchor_rows"]])

    def fit_context(self, zoo: Zoo, metric: str = "test_acc") -> dict:
        """``accuracies``: one per training row (same order). The original ranked its models by test
        accuracy; ``metric="val_acc"`` keeps the test split out of the selection."""
        if metric not in ACCURACY_METRICS:
            raise ConfigError(f"metric: expected one of {ACCURACY_METRICS}, got {metric!r}")
        df = _index(zoo, False)
        return {"accuracies": torch.as_tensor(df[metric].to_numpy(dtype="float32"))}


def _index(zoo: Zoo, held_out: bool):
    df = zoo.index()
    return df[(held_out_rows(df) == held_out).numpy()]


SETTING = register_method(HyperRepSetting())
