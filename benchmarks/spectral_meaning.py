"""Do spectral metrics track test accuracy, and how much does α vary? ww mode against robust mode.

A zoo per depth (digits MLPs with 1, 2 and 3 hidden layers of 64, built with the batched trainer and
cached under runs/), with varied hyper-parameters; some runs are trained badly on purpose (2 epochs,
10% of the training set, learning rates down to 1e-3, init scales up to 2). For each mode
(``fit="ww"``: WeightWatcher's fit and conventions; ``fit="robust"``: the default) and each per-model
metric (α̂ = mean of α·log10 λmax over layers, log-norm = mean log10 ‖W‖²_F), Kendall τ with test
accuracy over the models that have the metric (robust α̂ leaves out layers whose status is
random-like, so a model whose layers are all random-like has none), pooled over depths and within each depth (Martin & Mahoney's Simpson's-paradox check:
shape metrics like α̂ can reverse when depths are mixed).

Bootstrap spread: for the 64×64 first-layer matrices of ``--boot-models`` models, ``--boot`` resamples
of W's rows (with replacement); the standard deviation of α over the resamples, per model, in both
modes (median over models reported). Lower is steadier.

Last line: one JSON object with the figures.
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_NUM_THREADS", "1")

import argparse
import json
import time
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from scipy.stats import kendalltau

from weightspace.analysis import SpectralAnalyzer
from weightspace.zoo.build import build_zoo

torch.set_num_threads(1)
warnings.filterwarnings("ignore")
DEPTHS = (1, 2, 3)
METRICS = ("alpha_hat", "log_norm")


def zoo_config(depth: int, runs: int) -> dict:
    return {
        "name": f"bench-spectral-meaning-d{depth}",
        "dataset": {"name": "digits", "seed": 0},
        "architecture": {"kind": "mlp", "widths": [64] * depth, "activation": "relu"},
        "population": {"runs": runs, "seed": depth, "hparams": {
            "lr": {"log_uniform": [0.001, 0.2]},
            "weight_decay": [0.0, 0.0001, 0.001],
            "init_scale": {"uniform": [0.5, 2.0]},
            "dropout": [0.0, 0.2],
            "train_fraction": [0.1, 0.3, 1.0],
            "epochs": [2, 5, 20]}},
        "training": {"batch_size": 64, "checkpoint_epochs": [], "chunk_size": 256},
    }


def tau(x, y) -> float:
    ok = np.isfinite(x) & np.isfinite(y)
    return float(kendalltau(x[ok], y[ok]).statistic) if ok.sum() > 2 else float("nan")


def bootstrap_spread(weights: list[torch.Tensor], n_boot: int, seed: int) -> dict:
    """Std of α over row-resamples of each matrix, per mode; all resamples of all matrices in one state dict."""
    g = torch.Generator().manual_seed(seed)
    sd = {}
    for i, w in enumerate(weights):
        for b in range(n_boot):
            sd[f"m{i}.b{b}.weight"] = w[torch.randint(0, w.shape[0], (w.shape[0],), generator=g)]
    out = {}
    for fit in ("ww", "robust"):
        d = SpectralAnalyzer(fit=fit, progress=False, n_boot=0).fit(sd).details_
        d = d.assign(matrix=d["name"].str.split(".").str[0])
        per = d.groupby("matrix")["alpha"].agg(["std", "mean", lambda a: np.mean(a > 6)])
        out[fit] = dict(median_std=float(per["std"].median()), mean_std=float(per["std"].mean()),
                        max_std=float(per["std"].max()), mean_alpha=float(per["mean"].mean()),
                        share_alpha_over_6=float(per.iloc[:, 2].mean()))
    return out


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--runs", type=int, default=128, help="runs per depth")
    p.add_argument("--root", default="runs")
    p.add_argument("--boot", type=int, default=50)
    p.add_argument("--boot-models", type=int, default=32)
    args = p.parse_args()
    start = time.perf_counter()
    summaries = {"ww": [], "robust": []}
    first_layers = []
    for depth in DEPTHS:
        zoo = build_zoo(zoo_config(depth, args.runs), out=Path(args.root) / f"bench-spectral-meaning-d{depth}",
                        progress=False)
        for fit in summaries:
            a = SpectralAnalyzer(fit=fit, progress=False).fit(zoo)
            s = a.summary_.assign(depth=depth)
            fitted = a.details_[a.details_["status"].isin(["ok", "random-like"])]
            # α̂ over every fitted layer, random-like ones included (what WeightWatcher's summary does)
            s["alpha_hat_all_layers"] = s["model"].map(fitted.groupby("model")["alpha_weighted"].mean())
            s["random_like_layers"] = a.details_.groupby("model")["status"].apply(
                lambda st: int((st == "random-like").sum())).reindex(s["model"]).to_numpy()
            summaries[fit].append(s)
        if depth == 1:
            weights, table = zoo.load()
            w0 = zoo.space.slice(zoo.space.names[0])
            shape = zoo.space.spec(zoo.space.names[0]).shape
            first_layers = [weights[i, w0].reshape(shape) for i in range(min(args.boot_models, len(table)))]
    built = time.perf_counter() - start
    res = {"models": 0, "tau": {}}
    robust_has_alpha = pd.concat(summaries["robust"], ignore_index=True)["alpha_hat"].notna().to_numpy()
    for fit, parts in summaries.items():
        s = pd.concat(parts, ignore_index=True)
        res["models"] = len(s)
        acc = s["test_acc"].to_numpy(float)
        x = s["alpha_hat"].to_numpy(float)
        # the same models on both sides: those where the robust α̂ exists
        res["tau"][f"{fit}_alpha_hat_on_robust_models"] = round(tau(x[robust_has_alpha], acc[robust_has_alpha]), 3)
        res["tau"][f"{fit}_alpha_hat_all_layers"] = round(tau(s["alpha_hat_all_layers"].to_numpy(float), acc), 3)
        for m in METRICS:
            x = s[m].to_numpy(float)
            res["tau"][f"{fit}_{m}"] = {
                "pooled": round(tau(x, acc), 3), "models_with_value": int(np.isfinite(x).sum()),
                **{f"depth{d}": round(tau(x[s["depth"] == d], acc[s["depth"] == d]), 3) for d in DEPTHS}}
        res[f"{fit}_models_without_alpha_hat"] = int(s["alpha_hat"].isna().sum())
        res[f"{fit}_random_like_layers"] = int(s["random_like_layers"].sum())
    res["test_acc"] = {"min": float(np.nanmin(acc)), "median": float(np.nanmedian(acc)), "max": float(np.nanmax(acc))}
    res["bootstrap_alpha_spread"] = bootstrap_spread(first_layers, args.boot, seed=0)
    b = res["bootstrap_alpha_spread"]
    res["spread_ratio_ww_over_robust"] = round(b["ww"]["median_std"] / b["robust"]["median_std"], 2)
    res["seconds_build_and_analyse"] = round(built, 1)
    res["seconds_total"] = round(time.perf_counter() - start, 1)
    res["load_avg_1min"] = os.getloadavg()[0]
    for k, v in res["tau"].items():
        print(f"{k:22s} {v}")
    print(json.dumps(res))


if __name__ == "__main__":
    main()
