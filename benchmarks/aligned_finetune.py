"""Fine-tuning as a post-step of weightspace's own generator, with the baselines fine-tuned alike.

A few SGD steps on the training data lift any model, so a generator may only claim them if the
baselines get the same steps. Groups (100 models each): the aligned Gaussian's samples, noise added to
a training run at three σ (the middle one puts it at about the runs' own aligned spacing), and the
aligned midpoint of two runs; each before and after ``--steps`` steps of SGD (lr 0.05, momentum
0.9, batch 64, one seed for all groups). Columns: median test accuracy, median max error-IoU to
the training runs, median aligned min-L2 over the runs' own spacing, with the held-out runs beside.
The ratio against what users use today: fine-tuned generated accuracy over fine-tuned noise's at
the runs' spacing.

Usage: python benchmarks/aligned_finetune.py [--zoo DIR] [--steps 20,94]. Last line: one JSON object.
"""

from __future__ import annotations

import argparse
import json
import os

import pandas as pd
import torch

from weightspace.align import aligned_l2_fast, refine_nearest
from weightspace.audit.similarity import error_iou
from weightspace.baselines import AlignedInterpolation, NoiseAddition
from weightspace.generative import aligned
from weightspace.zoo.build import task_for_zoo
from weightspace.zoo.trainer import finetune_weights


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--zoo", default="runs/aligned/zoo")
    ap.add_argument("--steps", default="20,94")
    ap.add_argument("--samples", type=int, default=100)
    args = ap.parse_args()
    torch.set_num_threads(1)
    zoo = aligned.SETTING.build(args.zoo, progress=False)
    train, held = aligned.SETTING.training(zoo), aligned.SETTING.heldout(zoo)
    space, task = zoo.space, task_for_zoo(zoo)
    labels, train_pred = task.dataset.y_test, task.predictions(train)

    def nearest(w):
        upper = aligned_l2_fast(space, w, train)
        if w is train:
            upper.fill_diagonal_(float("inf"))
        return refine_nearest(space, w, train, upper).min(1).values

    spacing = float(nearest(train).median())

    def row(group, steps, w):
        pred = task.predictions(w)
        return {"group": group, "steps": steps, "accuracy": float((pred == labels).float().mean(1).median()),
                "max IoU": float(error_iou(pred, train_pred, labels).max(1).values.median()),
                "min-L2 / spacing": float(nearest(w).median()) / spacing}

    n = args.samples
    sigma_at_spacing = spacing / space.num_params**0.5
    groups = {"aligned Gaussian": aligned.AlignedGaussian(**aligned.SETTING.generator_config(zoo)).fit(train).sample(n, 0),
              "aligned midpoint": AlignedInterpolation(0.5, space).fit(train).sample(n, 2)}
    for f in (0.7, 1.0, 1.4):
        groups[f"noise σ={f * sigma_at_spacing:.3f}"] = NoiseAddition(f * sigma_at_spacing).fit(train).sample(n, 1)
    rows = [row("held-out runs", 0, held)] + [row(g, 0, w) for g, w in groups.items()]
    for steps in (int(s) for s in args.steps.split(",")):
        for g, w in groups.items():
            rows.append(row(g, steps, finetune_weights(task.arch, task.dataset, w, steps=steps, seed=7)))
    table = pd.DataFrame(rows)
    print(table.to_string(float_format=lambda x: f"{x:.4g}"))
    first = int(args.steps.split(",")[0])
    at = table[table["steps"] == first].set_index("group")
    noise = f"noise σ={sigma_at_spacing:.3f}"
    print(json.dumps({"steps": first, "load": os.getloadavg()[0],
                      "generated_accuracy": round(at.loc["aligned Gaussian", "accuracy"], 4),
                      "generated_max_iou": round(at.loc["aligned Gaussian", "max IoU"], 3),
                      "noise_at_spacing_accuracy": round(at.loc[noise, "accuracy"], 4),
                      "noise_at_spacing_max_iou": round(at.loc[noise, "max IoU"], 3),
                      "accuracy_ratio_vs_noise_finetuned": round(at.loc["aligned Gaussian", "accuracy"]
                                                                 / at.loc[noise, "accuracy"], 4),
                      "heldout_accuracy": round(rows[0]["accuracy"], 4), "heldout_max_iou": round(rows[0]["max IoU"], 3)}))


if __name__ == "__main__":
    main()
