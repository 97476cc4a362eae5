"""G.pt's data setting: SGD trajectories of many seeds of the MLP 784→10→10 (7,960 weights, the
paper's) on Fashion-MNIST (scored on its full 10,000-image test set, where a run makes over a
thousand errors; trained on a 5,000-image subset to keep a run's trajectory short), 32 runs × 21
checkpoints (every 12 SGD steps over 3 epochs, the init included), plus 16 held-out runs trained alike
and never shown to the generator. The original used 10,228 runs × 200 checkpoints on MNIST. The
``tiny`` preset keeps the 64→10→10 MLP on scikit-learn's digits for tests. A CPU-sized denoiser
learns a few dozen runs and not a few hundred (docs/generators.md), so the default keeps the number
of runs it can learn.
"""

from __future__ import annotations

from pathlib import Path
from typing import ClassVar

import torch
from torch import Tensor

from ...data import load_dataset
from ...errors import ConfigError
from ...jsonable import jsonable
from ...nets import build_architecture
from ...safe_input import check_int, check_str
from ...zoo.method_record import Fields, Record
from ...zoo.setting import (
    HELDOUT_PREFIX,
    DataSetting,
    PaperCall,
    held_out_rows,
    register_method,
)
from ...zoo.store import Zoo
from ...zoo.train import train_population
from ...zoo.trainer import HParams, Run, TrainConfig

# The paper's MLP 784→10→10 on Fashion-MNIST (MNIST's drop-in replacement, offline here).
DATASET = {"name": "fashion-mnist", "max_train": 6000}
ARCHITECTURE = {"kind": "mlp", "in_features": 784, "widths": [10], "out_features": 10, "activation": "relu"}
# Runs differ only in their seed (init and data order), as G.pt's MNIST runs do; held-out runs are
# trained alike (seeds after the training runs') and never shown to the generator.
PRESETS = {
    "default": {"runs": 32, "heldout_runs": 16, "epochs": 3, "every_steps": 12, "lr": 0.05,
                "dataset": DATASET, "architecture": ARCHITECTURE,
                # chunks of 640 keep the token count of the 760-weight digits MLP at 64 (16 per model);
                # 3,000 steps, not the generator's default 9,000: three seeds' fits within the study's
                # CPU time (docs/study.md, "Time")
                "generator": {"chunk_size": 640, "train_steps": 3000}},
    "tiny": {"runs": 6, "heldout_runs": 2, "epochs": 6, "every_steps": 34, "lr": 0.05,
             "dataset": {"name": "digits", "seed": 0},
             "architecture": {**ARCHITECTURE, "in_features": 64}, "generator": {}},
}
LOSS_METRICS = ("train_loss", "val_loss", "test_loss")
ALIGNED_ON_GPT = "Aligned Gaussian (weightspace), G.pt's data"
# What build_data records and the code below reads (checked when a zoo is opened as G.pt's): the
# preset's generator settings become constructor arguments, so no other key is accepted there.
ZOO_RECORD = Record(Fields(
    {"preset": lambda v, k: check_str(v, k, PRESETS), "seed": check_int},
    {"generator": Fields(optional={"chunk_size": lambda v, k: check_int(v, k, 1),
                                   "train_steps": lambda v, k: check_int(v, k, 1)}, closed=True)}))


class GptSetting(DataSetting):
    name = "gpt"
    label = "G.pt"
    record = ZOO_RECORD
    paper = PaperCall("replicates", replicates=True, beats_noise=False, interpolates=False)
    # the paper's 0.05/0.1 in the generator's normalised space, converted to raw weights
    paper_sigmas = (0.012, 0.024)
    samples = 128  # the paper prompts G.pt 128 times
    options: ClassVar[dict] = {"tiny": {"train_steps": 150}}

    def build(self, out: str | Path, *, preset: str = "default", progress: bool = True, seed: int = 0) -> Zoo:
        """SGD trajectories of many seeds of the MLP, one checkpoint every ``every_steps`` steps (step 0,
        the random init, included), then the held-out runs. ``seed`` shifts every run's seed by
        ``seed * 10_000``. Re-running skips runs already in the zoo."""
        if preset not in PRESETS:
            raise ConfigError(f"preset: expected one of {sorted(PRESETS)}, got {preset!r}")
        p = PRESETS[preset]
        dataset = load_dataset(**p["dataset"])
        arch = build_architecture(p["architecture"])
        train_cfg = TrainConfig(batch_size=64, every_steps=p["every_steps"])
        config = {"method": "gpt", "preset": preset, "seed": int(seed), **p,
                  "training": {"batch_size": train_cfg.batch_size, "every_steps": train_cfg.every_steps,
                               "optimizer": "sgd", "momentum": 0.9}}
        zoo = Zoo.create(out, arch.space, architecture=arch.config, task=dataset.describe(), config=config)
        if zoo.info["config"] != jsonable(config):
            raise ConfigError(f"out: {out} holds a G.pt zoo built with another preset or seed "
                              f"({zoo.info['config'].get('preset')!r}, seed {zoo.info['config'].get('seed')!r}); "
                              "use another directory")
        hp = HParams(lr=p["lr"], momentum=0.9, optimizer="sgd", epochs=p["epochs"])
        first = int(seed) * 10_000
        runs = [Run(f"run{i:04d}", first + i, hp) for i in range(p["runs"])]
        runs += [Run(f"{HELDOUT_PREFIX}{i:04d}", first + p["runs"] + i, hp) for i in range(p["heldout_runs"])]
        train_population(arch, dataset, runs, zoo, train_cfg, progress=progress)
        return zoo

    def generator_config(self, zoo: Zoo) -> dict:
        """The architecture and the preset's token size."""
        return {"architecture": dict(zoo.info["architecture"]), **zoo.info["config"].get("generator", {})}

    def companions(self, zoo: Zoo) -> dict[str, tuple[str, dict]]:
        """weightspace's generator fitted on the same training runs' final checkpoints, so the report
        shows G.pt and it side by side on one data set, against the same held-out runs."""
        return {ALIGNED_ON_GPT: ("aligned", {"architecture": dict(zoo.info["architecture"])})}

    def training(self, zoo: Zoo) -> Tensor:
        """The final checkpoint of every training run: what the paper compares G.pt's samples against
        (a training run's own final checkpoint is compared with the other runs' only)."""
        weights, df = zoo.load()
        return weights[_final_rows(df) & ~held_out_rows(df)]

    def heldout(self, zoo: Zoo) -> Tensor:
        """The final checkpoint of every held-out run (trained like the training runs, never fitted on)."""
        weights, df = zoo.load()
        return weights[_final_rows(df) & held_out_rows(df)]

    def fit_context(self, zoo: Zoo, metric: str = "test_loss") -> dict:
        """Every checkpoint of the training runs with its run, step and loss (G.pt conditions on test
        loss for MNIST); the held-out runs are left out."""
        if metric not in LOSS_METRICS:
            raise ConfigError(f"metric: expected one of {LOSS_METRICS}, got {metric!r}")
        weights, df = zoo.load()
        keep = ~held_out_rows(df)
        df = df[keep.numpy()]
        return {
            "checkpoints": weights[keep],
            "run_ids": df["run_id"].tolist(),
            "steps": torch.tensor(df["step"].to_numpy(dtype="int64")),
            "losses": torch.tensor(df[metric].to_numpy(dtype="float32")),
        }


def _final_rows(df) -> Tensor:
    last = df.groupby("run_id")["step"].transform("max")
    return torch.tensor((df["step"] == last).to_numpy(dtype=bool))


SETTING = register_method(GptSetting())
