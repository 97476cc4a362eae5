"""P-diff's data setting: a BatchNorm CNN trained to convergence on Fashion-MNIST (averaged to 7×7
pixels, a 5,000-image training subset; scored on a stratified 2,000-image test subset, where it makes
hundreds of errors; the ``tiny`` preset uses scikit-learn's digits), then only the affine weight and
bias of its last two BatchNorm layers (2,048 values, as ResNet-18's) fine-tuned for 200 SGD steps, a
checkpoint after every step.
A second fine-tune from the same base, alike but with its own data order (run ``heldout``), is never
shown to the generator: what a model that generalises within the fine-tune looks like.

The zoo holds the base model (run ``base``), the fine-tune trajectory (run ``finetune``) and the
held-out one (run ``heldout``); the generator is fit on the fine-tune checkpoints after step 0
(step 0 is the base model itself).
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import ClassVar

from torch import Tensor

from ...data import load_dataset
from ...errors import ConfigError
from ...nets import CNN
from ...safe_input import check_int, check_list, check_str
from ...zoo.method_record import Fields, Record
from ...zoo.setting import DataSetting, PaperCall, register_method
from ...zoo.store import Zoo
from ...zoo.train import train_population
from ...zoo.trainer import HParams, Run, TrainConfig

TRAINABLE = ("norms.1.weight", "norms.1.bias", "norms.2.weight", "norms.2.bias")
BASE_RUN, FINETUNE_RUN, HELDOUT_RUN = "base", "finetune", "heldout"

PRESETS = {
    # The paper's fine-tune: the last two BatchNorm layers' 2,048 affine values (ResNet-18's count:
    # 2 × (32 + 992)), 200 steps, one checkpoint each. The base is trained until its validation
    # accuracy stops improving while its training loss keeps falling (docs/generators.md).
    "default": {"base_epochs": 15, "base_lr": 0.002, "finetune_steps": 200, "channels": (16, 32, 992),
                "dataset": {"name": "fashion-mnist", "image": True, "image_size": 7, "max_train": 6000,
                            "max_test": 2000}},
    "tiny": {"base_epochs": 2, "base_lr": 0.01, "finetune_steps": 20, "channels": (16, 32, 32),
             "dataset": {"name": "digits", "image": True}},
}
BASE_OPTIMIZER = "adam"
FINETUNE_HPARAMS = {"lr": 0.2, "optimizer": "sgd", "momentum": 0.9}
# What build_data records and the code below reads (checked when a zoo is opened as P-diff's).
ZOO_RECORD = Record(Fields({"preset": lambda v, k: check_str(v, k, PRESETS), "seed": check_int,
                            "trainable": lambda v, k: check_list(v, k, check_str, min_len=1)}))


class PDiffSetting(DataSetting):
    name = "pdiff"
    label = "P-diff"
    record = ZOO_RECORD
    paper = PaperCall("interpolates", replicates=False, beats_noise=False, interpolates=True)
    paper_sigmas = (0.06, 0.12)
    samples = 200  # the paper generates 200 models per P-diff setting
    options: ClassVar[dict] = {"tiny": {"ae_steps": 200, "ddpm_steps": 200}}
    # every checkpoint is a fine-tune of one base (its frozen layers shared): plain L2, as the paper
    aligned = False

    def build(self, out: str | Path, *, preset: str = "default", progress: bool = True, seed: int = 0) -> Zoo:
        """Train the base CNN, then fine-tune its last two BatchNorm layers one checkpoint per step,
        twice: the training trajectory and the held-out one. ``seed`` shifts the runs' seeds (init and
        data order) by ``seed * 10_000``.

        Resumable: runs whose checkpoints are all in the zoo are skipped."""
        if preset not in PRESETS:
            raise ConfigError(f"preset: expected one of {sorted(PRESETS)}, got {preset!r}")
        p = PRESETS[preset]
        made = Path(out) / "zoo.json"
        if made.is_file():  # fail before training, and before the layout check of another preset's zoo
            recorded = Zoo.open(out).info.get("config", {})
            if (recorded.get("preset"), recorded.get("seed")) != (preset, int(seed)):
                raise ConfigError(f"preset: the zoo at {out} was built with preset {recorded.get('preset')!r} and "
                                  f"seed {recorded.get('seed')!r}, not {preset!r} and {seed!r}; use another directory")
        dataset = load_dataset(**p["dataset"])
        arch = CNN(dataset.input_shape[0], dataset.input_shape[-1], out_features=dataset.num_classes,
                   channels=p["channels"], fc_widths=())
        config = {"method": "pdiff", "preset": preset, "seed": int(seed), "dataset": p["dataset"],
                  "channels": list(p["channels"]), "trainable": list(TRAINABLE), "base": {"lr": p["base_lr"], "optimizer": BASE_OPTIMIZER, "epochs": p["base_epochs"]},
                  "finetune": {**FINETUNE_HPARAMS, "steps": p["finetune_steps"]}}
        zoo = Zoo.create(out, arch.space, architecture=arch.config, task=dataset.describe(), config=config)
        evals = ("val", "test")
        first = int(seed) * 10_000
        base_hp = HParams(lr=p["base_lr"], optimizer=BASE_OPTIMIZER, epochs=p["base_epochs"])
        train_population(arch, dataset, [Run(BASE_RUN, first, base_hp)],
                         zoo, TrainConfig(eval_splits=evals), progress=progress)
        base = base_weights(zoo)
        steps_per_epoch = math.ceil(dataset.x_train.shape[0] / TrainConfig().batch_size)
        ft = HParams(**FINETUNE_HPARAMS, epochs=math.ceil(p["finetune_steps"] / steps_per_epoch))
        train_population(arch, dataset, [Run(FINETUNE_RUN, first + 1, ft), Run(HELDOUT_RUN, first + 2, ft)], zoo,
                         TrainConfig(every_steps=1, max_steps=p["finetune_steps"], trainable=TRAINABLE,
                                     eval_splits=evals),
                         init=base, progress=progress)
        return zoo

    def training(self, zoo: Zoo) -> Tensor:
        """The fine-tune checkpoints after step 0, in step order: ``Tensor[steps, P]``."""
        return _trajectory(zoo, FINETUNE_RUN)

    def heldout(self, zoo: Zoo) -> Tensor:
        """The held-out fine-tune's checkpoints after step 0 (same schedule, own data order)."""
        return _trajectory(zoo, HELDOUT_RUN)

    def fit_context(self, zoo: Zoo) -> dict:
        """``mask``: the fine-tuned coordinates, the only ones P-diff models."""
        return {"mask": zoo.space.mask(tuple(zoo.info["config"].get("trainable", TRAINABLE)))}


def base_weights(zoo: Zoo) -> Tensor:
    """The trained base model ``Tensor[P]`` (its last checkpoint)."""
    w, _ = zoo.load("run_id = ?", (BASE_RUN,))
    if w.shape[0] == 0:
        raise ConfigError(f"zoo {zoo.root}: no {BASE_RUN!r} run; build it with the P-diff setting")
    return w[-1]


def _trajectory(zoo: Zoo, run: str) -> Tensor:
    w, _ = zoo.load("run_id = ? AND step > 0", (run,))
    if w.shape[0] == 0:
        raise ConfigError(f"zoo {zoo.root}: no {run!r} checkpoints; build it with the P-diff setting")
    return w


SETTING = register_method(PDiffSetting())
