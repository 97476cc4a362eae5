"""Do spectral metrics track test accuracy, and how much does α vary? ww mode against robust mode.

A zoo per depth (digits MLPs with 1, 2 and 3 hidden layers of 64, built with the batched trainer and
cached under runs/), with varied hyper-parameters; some runs are trained badly on purpose (2 epochs,
10% of the training set, learning rates down to 1e-3, init scales up to 2). For each mode
(``fit="ww"``: WeightWatcher's fit and conventions; ``fit="robust"``: the default) and each per-model
metric (α̂ = mean of α·log10 λmax over layers, mean α, log-norm = mean log10 ‖W‖²_F), Kendall τ with test
accuracy over the models that have the metric, pooled over depths and within each depth (Martin &
Mahoney's Simpson's-paradox check: shape metrics like α̂ can reverse when depths are mixed). α̂ is
the mean over all fitted layers (status ok or random-like); α̂_ok the mean over ok layers only (none
for a model whose layers are all random-like). Every τ is reported on all models and on the common
subset where α̂_ok exists; per depth and layer, τ of the layer's α and α·log10 λmax (where the
modes' model-level τ differ from).

Stability of the model-level α̂ (robust mode), the property that decides between α̂ and α̂_ok
independently of τ: for ``--sub-models`` models per depth, ``--subsamples`` copies of the model with
each weight matrix cut to a random 90% of its rows (without replacement: no duplicated rows, which
would add structure); per model the std of α̂ and of α̂_ok over the copies (median over models, on
the models where α̂_ok is defined in at least two copies), how often α̂ is the steadier of the two, and
the share of copies without α̂_ok.

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
METRICS = ("alpha_hat", "alpha_hat_ok", "alpha", "log_norm")


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


def subsample_stability(zoo, models: np.ndarray, copies: int, seed: int) -> pd.DataFrame:
    """Per model: std of α̂ and α̂_ok over ``copies`` 90%-row subsamples of every weight matrix (robust)."""
    g = torch.Generator().manual_seed(seed)
    weights, _ = zoo.load()
    sd = {}
    for i in models:
        for name, w in zoo.space.unflatten(weights[i]).items():
            if w.dim() != 2:
                continue
            tall = w if w.shape[0] >= w.shape[1] else w.T  # rows = the longer side, the spectrum's samples
            for c in range(copies):
                rows = tall[torch.randperm(tall.shape[0], generator=g)[: int(0.9 * tall.shape[0])]]
                sd[f"m{i}c{c}.{name}"] = rows
    d = SpectralAnalyzer(progress=False).fit(sd).details_
    d = d[d["status"].isin(["ok", "random-like"])].assign(copy=lambda x: x["name"].str.split(".").str[0])
    per = pd.DataFrame({"alpha_hat": d.groupby("copy")["alpha_weighted"].mean(),
                        "alpha_hat_ok": d[d["status"] == "ok"].groupby("copy")["alpha_weighted"].mean()})
    per["model"] = per.index.str.extract(r"m(\d+)c", expand=False).astype(int)
    return per.groupby("model").agg(std_all=("alpha_hat", "std"), std_ok=("alpha_hat_ok", "std"),
                                    ok_defined=("alpha_hat_ok", "count"))


def per_layer_tau(summaries: dict, layers: dict, common: np.ndarray) -> dict:
    """τ of each layer's α (all models, common subset) and α·log10 λmax (common subset) with test
    accuracy, per depth and layer position, both modes: where the modes' model-level τ differ from."""
    out = {}
    for fit in layers:
        s = pd.concat(summaries[fit], ignore_index=True)
        key = s["depth"].astype(str) + "/" + s["model"].astype(str)
        acc, in_common = dict(zip(key, s["test_acc"])), dict(zip(key, common))
        d = pd.concat(layers[fit], ignore_index=True)
        d = d.assign(key=d["depth"].astype(str) + "/" + d["model"].astype(str))
        d = d.assign(acc=d["key"].map(acc), common=d["key"].map(in_common).astype(bool))
        for (depth, name), g in d.groupby(["depth", "name"], sort=True):
            c = g[g["common"]]
            row = out.setdefault(f"d{depth}.{name}", {})
            row[f"{fit}_alpha_all_models"] = round(tau(g["alpha"].to_numpy(float), g["acc"].to_numpy(float)), 3)
            row[f"{fit}_alpha_common"] = round(tau(c["alpha"].to_numpy(float), c["acc"].to_numpy(float)), 3)
            row[f"{fit}_alpha_weighted_common"] = round(
                tau(c["alpha_weighted"].to_numpy(float), c["acc"].to_numpy(float)), 3)
    return out


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--runs", type=int, default=128, help="runs per depth")
    p.add_argument("--root", default="runs")
    p.add_argument("--boot", type=int, default=50)
    p.add_argument("--boot-models", type=int, default=32)
    p.add_argument("--sub-models", type=int, default=32, help="models per depth for the subsample stability")
    p.add_argument("--subsamples", type=int, default=30)
    args = p.parse_args()
    start = time.perf_counter()
    summaries = {"ww": [], "robust": []}
    layers = {"ww": [], "robust": []}  # fitted layers' rows, for the per-layer τ
    first_layers, stability = [], []
    for depth in DEPTHS:
        zoo = build_zoo(zoo_config(depth, args.runs), out=Path(args.root) / f"bench-spectral-meaning-d{depth}",
                        progress=False)
        for fit in summaries:
            a = SpectralAnalyzer(fit=fit, progress=False).fit(zoo)
            s = a.summary_.assign(depth=depth)
            s["random_like_layers"] = a.details_.groupby("model")["status"].apply(
                lambda st: int((st == "random-like").sum())).reindex(s["model"]).to_numpy()
            summaries[fit].append(s)
            layers[fit].append(a.details_[a.details_["status"].isin(["ok", "random-like"])].assign(depth=depth))
        pick = np.random.default_rng(depth).choice(args.runs, min(args.sub_models, args.runs), replace=False)
        stability.append(subsample_stability(zoo, pick, args.subsamples, seed=depth))
        if depth == 1:
            weights, table = zoo.load()
            w0 = zoo.space.slice(zoo.space.names[0])
            shape = zoo.space.spec(zoo.space.names[0]).shape
            first_layers = [weights[i, w0].reshape(shape) for i in range(min(args.boot_models, len(table)))]
    built = time.perf_counter() - start
    res = {"models": 0, "tau": {}}
    common = pd.concat(summaries["robust"], ignore_index=True)["alpha_hat_ok"].notna().to_numpy()
    for fit, parts in summaries.items():
        s = pd.concat(parts, ignore_index=True)
        res["models"] = len(s)
        acc = s["test_acc"].to_numpy(float)
        for m in METRICS:
            x = s[m].to_numpy(float)
            for subset, keep in (("all_models", np.ones(len(s), bool)), ("common_subset", common)):
                xs, accs, depth = x[keep], acc[keep], s["depth"].to_numpy()[keep]
                res["tau"][f"{fit}_{m}_{subset}"] = {
                    "pooled": round(tau(xs, accs), 3), "models_with_value": int(np.isfinite(xs).sum()),
                    **{f"depth{d}": round(tau(xs[depth == d], accs[depth == d]), 3) for d in DEPTHS}}
        res[f"{fit}_models_without_alpha_hat_ok"] = int(s["alpha_hat_ok"].isna().sum())
        res[f"{fit}_random_like_layers"] = int(s["random_like_layers"].sum())
    res["common_subset_models"] = int(common.sum())
    res["per_layer_tau"] = per_layer_tau(summaries, layers, common)
    st = pd.concat(stability, ignore_index=True)
    both = st[st["ok_defined"] >= 2]
    res["subsample_stability_robust"] = dict(
        models=len(st), copies=args.subsamples, models_with_alpha_hat_ok_in_2plus_copies=len(both),
        median_std_alpha_hat=round(float(both["std_all"].median()), 4),
        median_std_alpha_hat_ok=round(float(both["std_ok"].median()), 4),
        share_models_alpha_hat_steadier=round(float((both["std_all"] < both["std_ok"]).mean()), 3),
        share_copies_without_alpha_hat_ok=round(float(1 - st["ok_defined"].sum() / (len(st) * args.subsamples)), 3),
        models_alpha_hat_ok_sometimes_missing=int(((st["ok_defined"] > 0) & (st["ok_defined"] < args.subsamples)).sum()))
    res["test_acc"] = {"min": float(np.nanmin(acc)), "median": float(np.nanmedian(acc)), "max": float(np.nanmax(acc))}
    res["bootstrap_alpha_spread"] = bootstrap_spread(first_layers, args.boot, seed=0)
    b = res["bootstrap_alpha_spread"]
    res["spread_ratio_ww_over_robust"] = round(b["ww"]["median_std"] / b["robust"]["median_std"], 2)
    res["seconds_build_and_analyse"] = round(built, 1)
    res["seconds_total"] = round(time.perf_counter() - start, 1)
    res["load_avg_1min"] = os.getloadavg()[0]
    for k, v in res["tau"].items():
        print(f"{k:34s} {v}")
    print("subsample stability", res["subsample_stability_robust"])
    for k, v in res["per_layer_tau"].items():
        print(f"{k:22s} {v}")
    print(json.dumps(res))


if __name__ == "__main__":
    main()
