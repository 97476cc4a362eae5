"""Ablation of weightspace's own generator (``aligned``): which of the paper's three causes of
memorisation each change addresses, measured with the study's audit.

Rows: the number of training runs (cause 1: too few checkpoints), alignment on/off (cause 3: the
symmetries), the generator's size (rank of the Gaussian; cause 2: a generator too big for its data)
and its fit length (barycenter iterations: the only iterative part; the Gaussian itself has no
training loop that could run on into memorisation). Every row is audited against its own training
runs with the study's baselines (noise σ sweep, average of k, per-parameter Gaussian, aligned
interpolation λ sweep) and set beside the held-out fresh runs measured against the same runs.

The hidden width is a property of the data, not of the generator: ``--width`` (with ``--zoo``) audits
a zoo of that width, and every row records it (``width`` column). It addresses cause 3, the
symmetries: weight matching removes the permutation symmetry only where the aligned runs share one
linearly connected basin; at width 10 it leaves a 2.9-point error barrier between aligned runs, at
width 32 0.2 (``benchmarks/aligned_width.py``). It works against cause 2: the same runs then carry
3.2 times the parameters (25,450 against 7,960), so the generator has more to fit per run.

Columns: fraction beyond every baseline frontier (bootstrap interval), median max error-IoU and
median test accuracy (generated and held-out), aligned min-L2 over the training runs' own aligned
spacing, fit and sample seconds. The ratio against what users use today: the generated median
accuracy over the aligned midpoint's (interpolation between two aligned runs, Git Re-Basin).

Usage: python benchmarks/aligned_ablation.py [--zoo DIR] [--width W] [--samples N] [--runs 64,128,256,512]
[--build-runs 2048] (a zoo of more runs: the variants run at the largest count of --runs)
[--seeds 3] [--variants flow] (only the variants whose name contains "flow", beside the base row).
Last line: one JSON object.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

import pandas as pd
import torch

import weightspace.study  # noqa: F401  (registers the methods' zoos with the audit)
from weightspace.audit.groups import TRAINING, ZooEvaluator, audit_groups, baseline_sets
from weightspace.generative import aligned
from weightspace.generative.base import make_generator
from weightspace.study.frontiers import (
    ALIGNED_PREFIX,
    aligned_interpolation_sets,
    beyond_every_table,
)

HELDOUT = "held-out runs"
BASE = {"rank": 16, "residual": "isotropic"}
# (name, cause addressed, generator config) at the full number of runs
VARIANTS = [
    ("base: rank 16 + isotropic residual", "—", BASE),
    ("alignment off", "symmetry", {**BASE, "align": False}),
    ("rank 4", "generator size", {**BASE, "rank": 4}),
    ("rank 64", "generator size", {**BASE, "rank": 64}),
    ("full rank (N - 1)", "generator size", {**BASE, "rank": None}),
    ("rank 16, no residual", "generator size", {**BASE, "residual": "none"}),
    ("rank 16, per-coordinate residual", "generator size", {**BASE, "residual": "diagonal"}),
    ("scale normalised too", "symmetry", {**BASE, "normalise_scale": True}),
    ("aligned to one run (0 barycenter iterations)", "fit length", {**BASE, "iterations": 0}),
    ("1 barycenter iteration", "fit length", {**BASE, "iterations": 1}),
    ("temperature 0.9", "— (sampling)", {**BASE, "temperature": 0.9}),
    # a nonlinear generator in the same aligned space (generative/aligned_flow.py): rectified flow
    # over the top principal directions, trained for a length chosen on held-back runs' novelty
    ("flow, 64 directions + isotropic residual, early-stopped", "generator size",
     {"generator": "aligned-flow", "dims": 64}),
    ("flow, 16 directions + isotropic residual, early-stopped", "generator size",
     {"generator": "aligned-flow", "dims": 16}),
    ("flow, 64 directions, 3000 steps (no early stopping)", "training length",
     {"generator": "aligned-flow", "dims": 64, "early_stopping": False}),
    ("flow, 16 directions, 3000 steps (no early stopping)", "training length",
     {"generator": "aligned-flow", "dims": 16, "early_stopping": False}),
    ("flow, 64 directions, 6000 steps (no early stopping)", "training length",
     {"generator": "aligned-flow", "dims": 64, "early_stopping": False, "max_steps": 6000}),
    ("flow, 128 directions, 6000 steps (no early stopping)", "generator size",
     {"generator": "aligned-flow", "dims": 128, "early_stopping": False, "max_steps": 6000}),
    ("flow, 64 directions, 6000 steps, 50 Euler steps", "— (sampling)",
     {"generator": "aligned-flow", "dims": 64, "early_stopping": False, "max_steps": 6000, "sample_steps": 50}),
]


def audit_rows(zoo, train: torch.Tensor, heldout, variants, n: int, seed: int, runs: int) -> list[dict]:
    width = zoo.info["architecture"]["widths"][0]
    evaluator = ZooEvaluator(zoo)
    reference = evaluator.model_set(TRAINING, train, is_training=True)
    groups, timings = [], {}
    for name, _, config in variants:
        t = time.perf_counter()
        config = dict(config)
        gen = make_generator(config.pop("generator", "aligned"), **aligned.generator_config(zoo),
                             **{"seed": seed, **config}).fit(train)
        t_fit = time.perf_counter() - t
        t = time.perf_counter()
        w = gen.sample(n, seed)
        timings[name] = (t_fit, time.perf_counter() - t)
        groups.append(evaluator.model_set(name, w))
    interpolation, noise = baseline_sets(evaluator, train, n, seed=seed, generated=groups[0].weights)
    lam = aligned_interpolation_sets(evaluator, train, zoo.space, n, seed=seed)
    audit = audit_groups("ablation", reference, [*groups, heldout, *lam], noise, interpolation,
                         labels=evaluator.labels, space=zoo.space, seed=seed)
    beyond = beyond_every_table(audit, [g.name for g in groups] + [HELDOUT],
                                {float(m.name.rsplit("=", 1)[1]): m.name for m in lam}, seed=seed).set_index("group")
    v_h, midpoint = audit.verdicts[HELDOUT], audit.verdicts[f"{ALIGNED_PREFIX}0.5"]
    rows = []
    for name, cause, _ in variants:
        v, b = audit.verdicts[name], beyond.loc[name]
        rows.append({"variant": name, "cause": cause, "width": width, "runs": runs, "seed": seed,
                     "beyond every frontier": b["beyond every frontier"], "CI low": b["CI low"], "CI high": b["CI high"],
                     "beyond noise": b["beyond noise"], "beyond aligned interpolation": b["beyond aligned interpolation"],
                     "max IoU": v["median_similarity"], "max IoU held-out": v_h["median_similarity"],
                     "accuracy": v["median_quality"], "accuracy held-out": v_h["median_quality"],
                     "accuracy aligned midpoint": midpoint["median_quality"],
                     "min-L2 / spacing": v["distance_ratio"], "held-out min-L2 / spacing": v_h["distance_ratio"],
                     "held-out beyond every frontier": beyond.loc[HELDOUT, "beyond every frontier"],
                     "verdict": v["verdict"], "fit s": timings[name][0], "sample s": timings[name][1]})
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--zoo", default="runs/aligned/zoo")
    ap.add_argument("--build-runs", type=int, help="training runs the zoo was built with (default: the preset's 512)")
    ap.add_argument("--width", type=int, help="hidden width the zoo was built with (default: the preset's)")
    ap.add_argument("--samples", type=int, default=100)
    ap.add_argument("--runs", default="64,128,256,512")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--seeds", type=int, default=1, help="fit/sample/audit seeds --seed, --seed + 1, …")
    ap.add_argument("--variants", help="only the variants whose name contains this text (the base row always runs)")
    ap.add_argument("--out", default="runs/aligned-ablation.csv")
    args = ap.parse_args()
    torch.set_num_threads(1)
    t0 = time.perf_counter()
    zoo = aligned.build_data(args.zoo, progress=False, runs=args.build_runs, width=args.width)
    t_build = time.perf_counter() - t0
    train_all = aligned.training_weights(zoo)
    evaluator = ZooEvaluator(zoo)
    heldout = evaluator.model_set(HELDOUT, aligned.heldout_weights(zoo))
    counts = [int(c) for c in args.runs.split(",")]
    rows = []
    chosen = [v for v in VARIANTS[1:] if args.variants is None or args.variants in v[0]]
    for seed in range(args.seed, args.seed + args.seeds):
        for count in counts:
            variants = VARIANTS[:1] + chosen if count == max(counts) else VARIANTS[:1]
            rows += audit_rows(zoo, train_all[:count], heldout, variants, args.samples, seed, count)
            print(pd.DataFrame(rows).tail(len(variants)).to_string(float_format=lambda x: f"{x:.3g}"), flush=True)
    table = pd.DataFrame(rows)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    table.to_csv(args.out, index=False)
    base = table[(table["variant"] == VARIANTS[0][0]) & (table["runs"] == max(counts))
                 & (table["seed"] == args.seed)].iloc[0]
    print(json.dumps({
        "build_s (zoo reused if present)": round(t_build, 1), "load": os.getloadavg()[0],
        "width": int(base["width"]),
        "base_beyond_every": round(float(base["beyond every frontier"]), 3),
        "base_ci": [round(float(base["CI low"]), 3), round(float(base["CI high"]), 3)],
        "base_accuracy": round(float(base["accuracy"]), 4), "heldout_accuracy": round(float(base["accuracy held-out"]), 4),
        "base_max_iou": round(float(base["max IoU"]), 3), "heldout_max_iou": round(float(base["max IoU held-out"]), 3),
        "base_l2_ratio": round(float(base["min-L2 / spacing"]), 3),
        "accuracy_ratio_vs_aligned_midpoint": round(float(base["accuracy"] / base["accuracy aligned midpoint"]), 4),
        "rows": len(table), "csv": args.out}))


if __name__ == "__main__":
    main()
