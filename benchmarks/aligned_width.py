"""The loss barrier between weight-matched runs of the ``aligned`` method's MLP, per hidden width.

Git Re-Basin (Ainsworth et al. 2023) and Entezari et al. (2022) find that the barrier between
permutation-aligned runs shrinks as the hidden layers widen. At width 10 the aligned midpoint of two
runs loses about 2 points against fresh runs, and every sampler in the aligned space lands at or below
it. This diagnostic measures, for each width, on ``--runs`` runs of the method's data setting (same
data, recipe and seeds as ``aligned.SETTING.build``, only the hidden width changed):

- fresh-run test accuracy (median over the held-out runs);
- the aligned midpoint (weight matching as ``AlignedInterpolation``, λ = 0.5, ``--pairs`` random pairs of training runs:
  the study's baseline) and the naive midpoint (no alignment): median test accuracy;
- the test-error and test-loss barriers along the aligned path (λ = 0, 0.1, …, 1; median over pairs);
- the midpoint of two runs in the generator's own space (every run aligned to the barycenter) and the
  barycenter itself: median test accuracy;
- seconds to train the runs (the held-out runs included).

The width for the full audit is chosen from this table alone, by a rule fixed before it was run: the
narrowest width whose aligned-midpoint accuracy is within 1 point of its fresh runs' (the accuracy
target's own tolerance: a generator between aligned runs then need not lose more than the target
allows); if no width meets it, the width with the smallest midpoint gap. The ratio against what users
use today: the chosen width's aligned-midpoint gap over width 10's (the setting the method has used).

Usage: python benchmarks/aligned_width.py [--widths 10,32,64,128] [--runs 200] [--pairs 100]
[--root runs/aligned-width]. Zoos are kept under ``--root`` and reused. Last line: one JSON object.
"""

from __future__ import annotations

import argparse
import json
import os
import time

import numpy as np
import pandas as pd
import torch

from weightspace.align import match_permutations
from weightspace.generative import aligned
from weightspace.symmetry import permute
from weightspace.zoo.build import task_for_zoo

LAMBDAS = torch.linspace(0, 1, 11)


def path_scores(task, a: torch.Tensor, b: torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
    """Test error and loss ``[pairs, λ]`` along the straight paths from each ``a`` to its ``b``."""
    lam = LAMBDAS[None, :, None]
    path = ((1 - lam) * a[:, None] + lam * b[:, None]).reshape(-1, a.shape[1])
    scores = task.evaluate(path, ("test",))
    shape = (len(a), len(LAMBDAS))
    return 1 - scores["test_acc"].to_numpy().reshape(shape), scores["test_loss"].to_numpy().reshape(shape)


def barriers(values: np.ndarray) -> np.ndarray:
    """Per row: max over λ of the curve above the straight line between its endpoints."""
    lam = LAMBDAS.numpy()[None]
    return (values - ((1 - lam) * values[:, :1] + lam * values[:, -1:])).max(1)


def width_row(width: int, runs: int, n_pairs: int, root: str, seed: int) -> dict:
    t = time.perf_counter()
    zoo = aligned.SETTING.build(f"{root}/w{width}-r{runs}", progress=False, runs=runs, width=width)
    build_s = time.perf_counter() - t
    task = task_for_zoo(zoo)
    train, held = aligned.SETTING.training(zoo), aligned.SETTING.heldout(zoo)
    pairs = torch.rand(n_pairs, len(train), generator=torch.Generator().manual_seed(seed)).argsort(1)[:, :2]
    a, b = train[pairs[:, 0]], train[pairs[:, 1]]
    t = time.perf_counter()
    b_aligned = permute(zoo.space, b, match_permutations(zoo.space, a, b))  # as AlignedInterpolation does
    match_s = time.perf_counter() - t
    err, loss = path_scores(task, a, b_aligned)
    naive = task.accuracy(0.5 * (a + b))
    t = time.perf_counter()
    bary, _ = aligned.barycenter_alignment(zoo.space, train.double())
    bary_s = time.perf_counter() - t
    bary = bary.float()
    bary_mid = task.accuracy(0.5 * (bary[pairs[:, 0]] + bary[pairs[:, 1]]))
    fresh = float(task.accuracy(held).median())
    mid = float(np.median(1 - err[:, len(LAMBDAS) // 2]))
    return {"width": width, "params": zoo.space.num_params, "runs": runs, "held-out runs": len(held),
            "fresh accuracy": fresh, "training-run accuracy": float(task.accuracy(train).median()),
            "aligned midpoint accuracy": mid, "midpoint gap (points)": 100 * (fresh - mid),
            "error barrier (points)": 100 * float(np.median(barriers(err))),
            "loss barrier": float(np.median(barriers(loss))),
            "naive midpoint accuracy": float(naive.median()),
            "barycenter-space midpoint accuracy": float(bary_mid.median()),
            "barycenter accuracy": float(task.accuracy(bary.mean(0, keepdim=True))[0]),
            "build s": build_s, "pair matching s": match_s, "barycenter alignment s": bary_s}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--widths", default="10,32,64,128")
    ap.add_argument("--runs", type=int, default=200)
    ap.add_argument("--pairs", type=int, default=100)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--root", default="runs/aligned-width")
    ap.add_argument("--out", default="runs/aligned-width.csv")
    args = ap.parse_args()
    torch.set_num_threads(1)
    rows = []
    for width in (int(w) for w in args.widths.split(",")):
        rows.append(width_row(width, args.runs, args.pairs, args.root, args.seed))
        print(pd.DataFrame(rows).to_string(float_format=lambda x: f"{x:.4g}"), flush=True)
    table = pd.DataFrame(rows)
    table.to_csv(args.out, index=False)
    within = table[table["midpoint gap (points)"] <= 1.0]
    chosen = (within.iloc[0] if len(within) else table.loc[table["midpoint gap (points)"].idxmin()])
    base = table[table["width"] == 10]
    print(json.dumps({
        "load": os.getloadavg()[0], "runs": args.runs, "pairs": args.pairs,
        "midpoint_gap_points": dict(zip(table["width"].astype(str), table["midpoint gap (points)"].round(2))),
        "error_barrier_points": dict(zip(table["width"].astype(str), table["error barrier (points)"].round(2))),
        "fresh_accuracy": dict(zip(table["width"].astype(str), table["fresh accuracy"].round(4))),
        "build_s": dict(zip(table["width"].astype(str), table["build s"].round(1))),
        "chosen_width": int(chosen["width"]), "chosen_rule": "narrowest with gap <= 1 point" if len(within) else
        "smallest gap",
        "gap_ratio_vs_width10": (round(float(chosen["midpoint gap (points)"] / base["midpoint gap (points)"].iloc[0]), 3)
                                 if len(base) else None),
        "csv": args.out}))


if __name__ == "__main__":
    main()
