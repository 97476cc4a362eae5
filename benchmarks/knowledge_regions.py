"""Knowledge regions on the shipped ``regions-fashion`` config (Gueta et al. 2023, CPU-sized).

One CNN trained on Fashion-MNIST (14×14) is fine-tuned on 9 derived tasks in 3 families (3-way
Fashion subsets, binary Fashion groupings, digit subsets), 5 seeds each; one more task per family
is held out and fine-tuned, same seeds and budget, from the base (what users do today) and from the
centroid of its family's fine-tunes. Reported: k-means ARI (and its spread over k-means seeds),
silhouette and intra/inter distance ratio by task (target ARI ≥ 0.95) and by family; per task, the
gap to the nearest other task over the seed-to-seed spread; accuracy of 32 convex combinations of
each task's fine-tunes against the fine-tunes; centroid-start against base-start accuracy per
held-out task: before fine-tuning, at the first checkpoint, at the end (mean, and per seed).

Usage: python benchmarks/knowledge_regions.py [--out runs/regions] [--seed 0] [--kmeans-seeds 0 1 2 3 4]
Last line: one JSON object with the figures.
"""

from __future__ import annotations

import argparse
import json
import os
import time

import pandas as pd
import torch

from weightspace.analysis.region_figures import save_region_figures
from weightspace.analysis.regions import (
    KnowledgeRegions,
    build_regions,
    cluster_metrics,
    region_checkpoints,
    region_table,
    rows_of,
)


def first_checkpoint(curve: pd.DataFrame) -> dict:
    """Mean test accuracy per held-out task and start at the first checkpoint after step 0."""
    early = curve[curve["step"] == curve.loc[curve["step"] > 0, "step"].min()]
    acc = early.groupby(["task", "start"])["test_acc"].mean().round(4)
    return {"step": int(early["step"].iloc[0]),
            **{t: acc[t].to_dict() for t in acc.index.get_level_values(0).unique()}}


def ari_over_kmeans_seeds(zoo, seeds) -> dict[str, list[float]]:
    """ARI by task and by family of the final fine-tunes, as KnowledgeRegions measures it, per k-means seed:
    does the clustering's answer depend on its initialisation?"""
    w, table = region_table(zoo)
    final = region_checkpoints(table)
    x = rows_of(w, final)
    return {by: [round(cluster_metrics(x, final[by].to_numpy(), s)["ari"], 4) for s in seeds]
            for by in ("task", "family")}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default="runs/regions")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--kmeans-seeds", type=int, nargs="+", default=[0, 1, 2, 3, 4],
                    help="k-means seeds the ARI is also reported over (10 restarts each)")
    args = ap.parse_args()
    torch.set_num_threads(1)
    t = time.perf_counter()
    zoo = build_regions("regions-fashion", args.out, progress=False)
    build_s = time.perf_counter() - t
    t = time.perf_counter()
    res = KnowledgeRegions(by="task", seed=args.seed).fit(zoo)
    analyse_s = time.perf_counter() - t
    save_region_figures(res, os.path.join(args.out, "regions-by-task"))
    with pd.option_context("display.width", 160, "display.max_columns", 20):
        for name in ("metrics_", "separation_", "interior_", "starts_"):
            print(f"{name}\n{getattr(res, name).round(4).to_string(index=False)}")
        curve = res.start_curve_.pivot_table(index=["task", "step"], columns="start", values="test_acc",
                                             aggfunc=["mean", "min", "max"])
        print(f"held-out test accuracy by step (over seeds)\n{curve.round(4).to_string()}")
        c = res.start_curve_
        final = c.loc[c.groupby(["task", "start", "seed"])["step"].idxmax()]
        print("held-out final test accuracy per seed\n"
              + final.pivot_table(index=["task", "seed"], columns="start", values="test_acc").round(4).to_string())
    m = res.metrics_.set_index("by")
    ari_seeds = ari_over_kmeans_seeds(zoo, args.kmeans_seeds)
    print(f"ARI over k-means seeds {args.kmeans_seeds}: {ari_seeds}")
    inter, starts, sep = res.interior_, res.starts_, res.separation_
    out = {
        "models": int(m.loc["task", "models"]), "tasks": int(m.loc["task", "groups"]),
        "families": int(m.loc["family", "groups"]),
        "ari_task": round(float(m.loc["task", "ari"]), 4), "ari_family": round(float(m.loc["family", "ari"]), 4),
        "target_ari_task": 0.95,
        "ari_task_by_kmeans_seed": ari_seeds["task"], "ari_family_by_kmeans_seed": ari_seeds["family"],
        "silhouette_task": round(float(m.loc["task", "silhouette"]), 4),
        "silhouette_family": round(float(m.loc["family", "silhouette"]), 4),
        "intra_inter_task": round(float(m.loc["task", "intra_inter_ratio"]), 4),
        "intra_inter_family": round(float(m.loc["family", "intra_inter_ratio"]), 4),
        "member_acc_mean": round(float(inter["member_acc_mean"].mean()), 4),
        "interior_acc_mean": round(float(inter["interior_acc_mean"].mean()), 4),
        "interior_minus_member_per_task": dict(zip(inter["task"], (inter["interior_acc_mean"]
                                                                   - inter["member_acc_mean"]).round(4))),
        "separation_min_ratio": round(float(sep["ratio"].min()), 4),
        "separation_min_task": str(sep.loc[sep["ratio"].idxmin(), "group"]),
        "interior_at_least_member_min": round(float(inter["interior_at_least_member_min"].mean()), 4),
        "centroid_start_acc": dict(zip(starts["task"], starts["centroid_start_acc"].round(4))),
        "base_start_acc": dict(zip(starts["task"], starts["base_start_acc"].round(4))),
        "centroid_wins": int((starts["centroid_minus_base"] > 0).sum()), "held_out_tasks": len(starts),
        "centroid_wins_seeds": dict(zip(starts["task"], starts["centroid_wins"].astype(int))),
        "ties_seeds": dict(zip(starts["task"], starts["ties"].astype(int))),
        "base_acc_before": dict(zip(starts["task"], starts["base_acc_before"].round(4))),
        "centroid_acc_before": dict(zip(starts["task"], starts["centroid_acc_before"].round(4))),
        "first_checkpoint_acc": first_checkpoint(res.start_curve_),
        "centroid_minus_base_mean": round(float(starts["centroid_minus_base"].mean()), 4),
        "centroid_over_base_ratio": round(float((starts["centroid_start_acc"] / starts["base_start_acc"]).mean()), 4),
        "build_s": round(build_s, 1), "analyse_s": round(analyse_s, 1), "seed": args.seed,
        "load": os.getloadavg()[0],
    }
    print(json.dumps(out))


if __name__ == "__main__":
    main()
