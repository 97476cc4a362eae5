"""Error-IoU and accuracy of averages of barycenter-aligned runs: what pulls the ``aligned``
generator's error-IoU above fresh runs' on a wide hidden layer.

Groups, each against the zoo's training runs (median over models of the max error-IoU to any training
run, median test accuracy): the held-out runs (the novelty ceiling), the training runs against the
others, the mean of k random barycenter-aligned runs (k = 2, 4, 16; 100 means each), the barycenter
itself, and 200 draws of ``AlignedGaussian`` (rank 16, seed 0). Where aligned runs are linearly
connected, averaging them acts like an ensemble: accuracy and error-IoU both rise with k. The ratio
against what users use today: the Gaussian's max error-IoU over the held-out runs'.

Usage: python benchmarks/aligned_consensus.py [--width 32] [--zoo runs/aligned-w32] (built if
absent, the method's default runs). Last line: one JSON object.
"""

from __future__ import annotations

import argparse
import json
import os

import torch

from weightspace.audit.similarity import error_iou
from weightspace.generative import aligned
from weightspace.zoo.build import task_for_zoo

KS = (2, 4, 16)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--width", type=int, default=32)
    ap.add_argument("--zoo", help="default: runs/aligned-w<width>")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    torch.set_num_threads(1)
    zoo = aligned.SETTING.build(args.zoo or f"runs/aligned-w{args.width}", progress=False, width=args.width)
    task = task_for_zoo(zoo)
    train, held = aligned.SETTING.training(zoo), aligned.SETTING.heldout(zoo)
    labels, train_pred = task.dataset.y_test, task.predictions(train)

    def stats(w: torch.Tensor, is_training: bool = False) -> dict:
        pred = task.predictions(w)
        iou = error_iou(pred, train_pred, labels)
        if is_training:
            iou.fill_diagonal_(-1.0)  # a run against the other runs, not itself
        return {"max IoU": round(float(iou.max(1).values.median()), 4),
                "accuracy": round(float((pred == labels).float().mean(1).median()), 4)}

    bary, _ = aligned.barycenter_alignment(zoo.space, train.double())
    bary = bary.float()
    g = torch.Generator().manual_seed(args.seed)
    out = {"held-out runs": stats(held), "training runs (against the others)": stats(train, True)}
    for k in KS:
        pick = torch.rand(100, len(bary), generator=g).argsort(1)[:, :k]
        out[f"mean of {k} aligned runs"] = stats(bary[pick].mean(1))
    out["barycenter"] = stats(bary.mean(0, keepdim=True))
    gen = aligned.AlignedGaussian(**aligned.SETTING.generator_config(zoo), seed=args.seed).fit(train, progress=False)
    out["Gaussian rank 16"] = stats(gen.sample(200, args.seed))
    for name, row in out.items():
        print(f"{name:40s} max IoU {row['max IoU']:.4f}  accuracy {row['accuracy']:.4f}", flush=True)
    print(json.dumps({"width": zoo.info["architecture"]["widths"][0], "runs": len(train), "load": os.getloadavg()[0],
                      "groups": out, "gaussian_iou_ratio_vs_heldout":
                      round(out["Gaussian rank 16"]["max IoU"] / out["held-out runs"]["max IoU"], 4)}))


if __name__ == "__main__":
    main()
