"""Ablation of weightspace's own generator (``aligned``), one change at a time, in two data settings:
the aligned method's own (hundreds of runs of G.pt's MLP, one final checkpoint each) and G.pt's
(``--setting gpt``: the 32 training runs G.pt is fitted on, with its 16 held-out runs). Every row is
audited by the study's audit (baselines, controls, held-out runs) and by the test against fresh
runs (``weightspace.audit.fresh_runs``): can its samples be told from the held-out runs?

Rows: the number of training runs (cause 1 of memorisation: too few checkpoints; aligned setting),
alignment on/off, the ReLU scale canonical form and a mixture over clusters of runs, each aligned
to its own barycenter (cause 3: the symmetries, and basins they leave), the generator's size
(rank of the Gaussian, residual, a flow; cause 2), its fit length (barycenter iterations; the
flow's steps), and in G.pt's setting the last checkpoints of each run as more data from the same
runs. The hidden width is a property of the data (``--width`` with ``--zoo``: a zoo of that
width; ``benchmarks/aligned_width.py`` measures the barrier per width).

Columns: the verdict, the fraction beyond every baseline frontier and its ratio to the held-out
runs' (interval), median accuracy and max error-IoU minus the held-out runs', coverage over theirs,
two-sample AUC (interval), the test's outcome read against its control (which criteria fail,
which are inconclusive because the control fails them too), fit and sample seconds. The last row
per seed is that control: one half of the held-out runs against the other. The ratio against what users use today: the base row's median accuracy over the aligned
midpoint's (interpolation between two aligned runs, Git Re-Basin).

Usage: python benchmarks/aligned_ablation.py [--setting aligned|gpt] [--zoo DIR] [--data-seed S]
[--width W] [--samples N] [--runs 64,128,256,512] [--seed 0] [--seeds 3] [--variants TEXT]
[--out CSV]. Last line: one JSON object.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

import pandas as pd
import torch

import weightspace.study  # noqa: F401  (registers the methods)
from weightspace.audit.controls import HELDOUT
from weightspace.audit.groups import ALIGNED_PREFIX, TRAINING, ZooEvaluator, audit_with_controls
from weightspace.errors import ConfigError
from weightspace.generator import make_generator
from weightspace.registry import setting

BASE = {"rank": 16, "residual": "isotropic"}
LAST = 5  # checkpoints per run in G.pt's setting's "last checkpoints" row
# (name, cause addressed, generator config; "generator" picks another registered generator,
# "data": "last" fits on the last LAST checkpoints of every training run instead of the final one)
VARIANTS = [
    ("base: rank 16 + isotropic residual", "—", BASE),
    ("alignment off", "symmetry", {**BASE, "align": False}),
    ("scale normalised too (ReLU scale canonical form)", "symmetry", {**BASE, "normalise_scale": True}),
    ("rank 4", "generator size", {**BASE, "rank": 4}),
    ("rank 64", "generator size", {**BASE, "rank": 64}),
    ("full rank (N - 1)", "generator size", {**BASE, "rank": None}),
    ("rank 16, no residual", "generator size", {**BASE, "residual": "none"}),
    ("rank 16, per-coordinate residual", "generator size", {**BASE, "residual": "diagonal"}),
    ("aligned to one run (0 barycenter iterations)", "fit length", {**BASE, "iterations": 0}),
    ("temperature 0.9", "— (sampling)", {**BASE, "temperature": 0.9}),
    ("flow, 16 directions + isotropic residual, early-stopped on held-back novelty", "generator size",
     {"generator": "aligned-flow", "dims": 16}),
    ("flow, 64 directions + isotropic residual, early-stopped on held-back novelty", "generator size",
     {"generator": "aligned-flow", "dims": 64}),
    ("mixture of 2 aligned Gaussians (k-means clusters of aligned runs)", "symmetry (basins)",
     {**BASE, "generator": "aligned-mixture", "components": 2}),
    ("mixture of 4 aligned Gaussians", "symmetry (basins)", {**BASE, "generator": "aligned-mixture", "components": 4}),
    (f"last {LAST} checkpoints of every run", "number of checkpoints", {**BASE, "data": "last"}),
]


def last_checkpoints(s, zoo, k: int) -> torch.Tensor:
    """The last ``k`` checkpoints of every training run (G.pt's setting keeps every run's trajectory)."""
    ctx = s.fit_context(zoo)
    df = pd.DataFrame({"run": ctx["run_ids"], "step": ctx["steps"].numpy()})
    keep = df.groupby("run")["step"].rank(ascending=False, method="first") <= k
    return ctx["checkpoints"][torch.tensor(keep.to_numpy())]


def audit_rows(s, zoo, train: torch.Tensor, heldout, variants, n: int, seed: int, runs: int) -> list[dict]:
    evaluator = ZooEvaluator(zoo)
    reference = evaluator.model_set(TRAINING, train, is_training=True)
    groups, timings, unfitted = [], {}, {}
    for name, _, config in variants:
        config = dict(config)
        data = last_checkpoints(s, zoo, LAST) if config.pop("data", None) == "last" else train
        t = time.perf_counter()
        try:
            gen = make_generator(config.pop("generator", "aligned"), architecture=dict(zoo.info["architecture"]),
                                 **{"seed": seed, **config}).fit(data, progress=False)
        except ConfigError as e:  # e.g. a mixture component with one run: recorded, not audited
            unfitted[name] = str(e)
            continue
        t_fit = time.perf_counter() - t
        t = time.perf_counter()
        w = gen.sample(n, seed)
        timings[name] = (t_fit, time.perf_counter() - t)
        groups.append(evaluator.model_set(name, w))
    audit = audit_with_controls("ablation", evaluator, reference, groups, n, space=zoo.space, seed=seed,
                                generated=groups[0].weights, heldout=heldout)
    midpoint = audit.verdicts[f"{ALIGNED_PREFIX}0.5"]
    width = zoo.info["architecture"]["widths"][0]
    rows = []
    tests = [(name, cause, audit.verdicts[name]["fresh_runs"], audit.verdicts[name]["verdict"])
             for name, cause, _ in variants if name not in unfitted]
    if audit.fresh_control is not None:
        tests.append(("control: held-out runs, half against half", "—", audit.fresh_control, "—"))
    for name, cause, f, call in tests:
        rows.append({"setting": s.name, "variant": name, "cause": cause, "width": width, "runs": runs, "seed": seed,
                     "verdict": call, "beyond every": f["beyond_every"], "beyond every (held-out)": f["beyond_every_fresh"],
                     "ratio": f["beyond_ratio"], "ratio CI low": f["beyond_ratio_ci"][0],
                     "ratio CI high": f["beyond_ratio_ci"][1], "accuracy": f["quality"],
                     "accuracy - held-out": f["quality_difference"], "max IoU - held-out": f.get("similarity_excess"),
                     "coverage / held-out": f.get("coverage_ratio"), "AUC": f.get("auc"),
                     "AUC CI high": f.get("auc_ci", (None, None))[1],
                     "outcome": f.get("outcome", "pass" if f["passes"] else "fail"),
                     "failed": ", ".join(f.get("failed", [k for k, ok in f["checks"].items() if not ok])),
                     "inconclusive": ", ".join(f.get("inconclusive", [])),
                     "accuracy aligned midpoint": midpoint["median_quality"],
                     "fit s": timings.get(name, (None, None))[0], "sample s": timings.get(name, (None, None))[1]})
    rows += [{"setting": s.name, "variant": name, "width": width, "runs": runs, "seed": seed,
              "verdict": f"not fitted: {reason}"} for name, reason in unfitted.items()]
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--setting", choices=("aligned", "gpt"), default="aligned")
    ap.add_argument("--zoo", help="the setting's zoo (default: runs/<setting>/zoo, built if missing)")
    ap.add_argument("--data-seed", type=int, default=0, help="the seed the zoo is built with")
    ap.add_argument("--width", type=int, help="aligned setting: hidden width the zoo is built with")
    ap.add_argument("--samples", type=int, default=100)
    ap.add_argument("--runs", help="aligned setting: training-run counts (default: all the zoo's runs)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--seeds", type=int, default=1, help="fit/sample/audit seeds --seed, --seed + 1, …")
    ap.add_argument("--variants", help="only the variants whose name contains this text (the base row always runs)")
    ap.add_argument("--out", help="CSV (default: runs/aligned-ablation-<setting>.csv)")
    args = ap.parse_args()
    torch.set_num_threads(1)
    s = setting(args.setting)
    t0 = time.perf_counter()
    built = {"width": args.width} if args.width else {}
    zoo = s.build(args.zoo or f"runs/{args.setting}/zoo", progress=False, seed=args.data_seed, **built)
    t_build = time.perf_counter() - t0
    train_all = s.training(zoo)
    evaluator = ZooEvaluator(zoo)
    heldout = evaluator.model_set(HELDOUT, s.heldout(zoo))
    counts = [int(c) for c in args.runs.split(",")] if args.runs else [len(train_all)]
    chosen = [v for v in VARIANTS[1:] if args.variants is None or args.variants in v[0]]
    if args.setting != "gpt":  # only G.pt's zoo keeps every run's trajectory
        chosen = [v for v in chosen if v[2].get("data") != "last"]
    rows = []
    for seed in range(args.seed, args.seed + args.seeds):
        for count in counts:
            variants = VARIANTS[:1] + chosen if count == max(counts) else VARIANTS[:1]
            rows += audit_rows(s, zoo, train_all[:count], heldout, variants, args.samples, seed, count)
            print(pd.DataFrame(rows).tail(len(variants) + 1).drop(columns=["setting", "cause", "width"]).to_string(
                float_format=lambda x: f"{x:.3g}"), flush=True)
    table = pd.DataFrame(rows)
    out = Path(args.out or f"runs/aligned-ablation-{args.setting}.csv")
    out.parent.mkdir(parents=True, exist_ok=True)
    table.to_csv(out, index=False)
    base = table[(table["variant"] == VARIANTS[0][0]) & (table["runs"] == max(counts))]
    best = table[table["variant"] != "control: held-out runs, half against half"].groupby("variant")["ratio"].median()
    print(json.dumps({
        "setting": args.setting, "build_s (zoo reused if present)": round(t_build, 1), "load": os.getloadavg()[0],
        "width": int(base["width"].iloc[0]), "seeds": sorted(table["seed"].unique().tolist()),
        "base_ratio_median": round(float(base["ratio"].median()), 3),
        "base_accuracy_minus_heldout_median": round(float(base["accuracy - held-out"].median()), 4),
        "base_auc_median": round(float(base["AUC"].median()), 3),
        "base_outcomes": base["outcome"].tolist(),
        "best_variant_by_ratio": best.idxmax(), "best_ratio_median": round(float(best.max()), 3),
        "accuracy_ratio_vs_aligned_midpoint": round(float((base["accuracy"] / base["accuracy aligned midpoint"]).median()), 4),
        "rows": len(table), "csv": str(out)}))


if __name__ == "__main__":
    main()
