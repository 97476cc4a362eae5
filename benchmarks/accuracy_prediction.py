"""Accuracy from weights alone on the shipped small-CNN zoo (``fashion-cnn-zoo``, 1,024 runs × 4 epochs).

Every checkpoint's test accuracy is predicted from its weights. Runs are split 80/20 (seeded); a
run's checkpoints all sit on one side. Five predictors, the same split:

- ``gbt-statistics``: LightGBM on Unterthiner et al.'s per-tensor statistics (percentiles 0/25/50/75/100,
  mean, std) — what users use today, the baseline;
- ``gbt``: the same trees on those statistics plus L1/L2 norms and Jin et al.'s weight correlation;
- ``gbt-spectral``: those features plus each layer's spectral metrics (power-law α, norms, stable rank);
- ``neuron-set``: the permutation-invariant network on the weights (plus the per-tensor statistics);
- ``probe``: each model run on 64 learned probe inputs (ProbeGen's deep linear generator), its outputs
  and the per-tensor statistics into an MLP; it reads the function, so it is invariant to anything
  that does not change it.

The diagnosis also scores the mean of the predictors' standardised predictions: if they failed on
different models, the mean would rank better than each.

Also measured: the τ that test-label noise allows (the recorded accuracy against the rest of the test
file, each checkpoint scored with its own activation). Timed: the batched featuriser against a
per-model numpy loop (percentiles, moments, norms, pairwise cosines per model, as scripts do today),
the loop on a subsample and extrapolated.
Three run splits by default; further seeds (``--seeds``) show how much τ moves with the split.

Usage: python benchmarks/accuracy_prediction.py [--zoo runs/fashion-cnn-zoo] [--seeds 0 1 2]
(builds the zoo first when the directory has none, about 5–15 minutes; then about 20 minutes on one
thread, 9 of them the probe predictor's fits).
Last line: one JSON object with the figures.
"""

from __future__ import annotations

import argparse
import json
import os
import time

import numpy as np
import pandas as pd
import torch

from weightspace.analysis.features import weight_features
from weightspace.analysis.predictors import GBTPredictor, evaluate_predictors, run_split, scores
from weightspace.zoo import Zoo
from weightspace.zoo.build import build_zoo, model_activations


def per_model_features(weights: np.ndarray, space) -> list[dict]:
    """The same features, one model at a time with numpy: how it is done today."""
    rows = []
    for w in weights:
        row = {}
        for e in space.entries:
            t = w[space.slice(e.name)].astype(np.float64)
            for p, v in zip((0, 25, 50, 75, 100), np.percentile(t, (0, 25, 50, 75, 100))):
                row[f"{e.name}.q{p}"] = v
            row[f"{e.name}.mean"], row[f"{e.name}.std"] = t.mean(), t.std()
            row[f"{e.name}.l1"], row[f"{e.name}.l2"] = np.abs(t).sum(), np.linalg.norm(t)
        for e in space.entries:
            if len(e.shape) >= 2 and e.shape[0] >= 2:
                r = w[space.slice(e.name)].astype(np.float64).reshape(e.shape[0], -1)
                u = r / np.linalg.norm(r, axis=1, keepdims=True)
                c = np.abs(u @ u.T)
                row[f"{e.name}.wcorr"] = (c.sum() - np.trace(c)) / (len(c) * (len(c) - 1))
        rows.append(row)
    return rows


def diagnose(weights, table, fitted, seed) -> pd.DataFrame:
    """Why τ is where it is: τ of each predictor, and of the validation accuracy (400 examples, the best
    a model's own data can do) on the held-out runs, all of them and only those above chance."""
    from scipy.stats import kendalltau

    test = run_split(table["run_id"].to_numpy(), 0.2, seed)
    y = table["test_acc"].to_numpy()[test]
    acts = model_activations(table)
    acts = None if acts is None else [a for a, held in zip(acts, test) if held]
    preds = {name: p.predict(weights[torch.from_numpy(test)], activations=acts) for name, p in fitted.items()}
    preds["mean of the predictors"] = sum((p - p.mean()) / p.std() for p in preds.values())
    preds["val_acc (oracle)"] = table["val_acc"].to_numpy()[test]
    trained = y > 0.2
    rows = [{"ranker": name, "tau_all": kendalltau(y, p).statistic, "tau_above_0.2": kendalltau(y[trained], p[trained]).statistic,
             "held_out": len(y), "above_0.2": int(trained.sum()), "at_chance_le_0.11": int((y <= 0.11).sum())}
            for name, p in preds.items()]
    act = table["hp_activation"].to_numpy()[test]
    for a in sorted(set(act)):  # does one activation's statistics mean another's accuracy?
        m = act == a
        rows.append({"ranker": f"gbt, {a} only", "tau_all": kendalltau(y[m], preds["gbt"][m]).statistic,
                     "tau_above_0.2": kendalltau(y[m & trained], preds["gbt"][m & trained]).statistic,
                     "held_out": int(m.sum()), "above_0.2": int((m & trained).sum()),
                     "at_chance_le_0.11": int((m & (y <= 0.11)).sum())})
    return pd.DataFrame(rows)


def noise_ceiling(zoo, weights, table) -> dict | None:
    """How well the recorded test accuracy (on the zoo's ``max_test`` examples) can be ranked at all:
    Kendall τ between it and the accuracy on the rest of the 10k test file, every checkpoint scored
    with the activation it trained with. None when the zoo already uses the whole test file."""
    from scipy.stats import kendalltau

    from weightspace.data import load_dataset
    from weightspace.nets import build_architecture
    from weightspace.task import Task
    from weightspace.zoo.trainer import with_activation

    info = zoo.info["task"]
    cap = info["options"].get("max_test")
    if not cap:
        return None
    full_data = load_dataset(info["name"], **{**info["options"], "max_test": None})
    rest = len(full_data.y_test) - cap
    finite = torch.isfinite(weights).all(1).numpy()
    full = np.full(len(table), np.nan)
    arch = build_architecture(zoo.info["architecture"])
    for act in table["hp_activation"].dropna().unique():  # one evaluation per activation
        rows = (table["hp_activation"] == act).to_numpy() & finite
        task = Task(full_data, with_activation(arch, act))
        full[rows] = task.accuracy(weights[torch.from_numpy(rows)], "test").double().numpy()
    recorded = table["test_acc"].to_numpy()
    other = (full * len(full_data.y_test) - recorded * cap) / rest
    last = (table["epoch"] == table["epoch"].max()).to_numpy()
    ok = np.isfinite(other)
    return {"examples": cap, "other_examples": rest,
            "tau_all": round(float(kendalltau(recorded[ok], other[ok]).statistic), 4),
            "tau_final_checkpoints": round(float(kendalltau(recorded[ok & last], other[ok & last]).statistic), 4)}


def learning_curve(weights, table, space, seed: int, fractions=(0.25, 0.5, 1.0)) -> pd.DataFrame:
    """τ of the GBT on the same held-out runs when trained on a fraction of the training runs."""
    runs = table["run_id"].to_numpy()
    test = run_split(runs, 0.2, seed)
    train_runs = np.random.default_rng(seed).permutation(np.unique(runs[~test]))
    y = table["test_acc"].to_numpy()
    rows = []
    for f in fractions:
        use = np.isin(runs, train_runs[: round(f * len(train_runs))])
        pred = GBTPredictor(space, seed=seed).fit(weights[torch.from_numpy(use)], y[use])
        rows.append({"train_fraction_of_runs": f, "train_models": int(use.sum()),
                     **scores(y[test], pred.predict(weights[torch.from_numpy(test)]))})
    return pd.DataFrame(rows)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--zoo", default="runs/fashion-cnn-zoo")
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--loop-models", type=int, default=300, help="models timed in the per-model loop")
    args = ap.parse_args()
    torch.set_num_threads(1)
    build_s = None
    if not os.path.exists(os.path.join(args.zoo, "zoo.json")) or len(Zoo.open(args.zoo)) < 4096:
        t = time.perf_counter()
        build_zoo("fashion-cnn-zoo", out=args.zoo, progress=False)
        build_s = time.perf_counter() - t
    zoo = Zoo.open(args.zoo)
    t = time.perf_counter()
    weights, table = zoo.load()
    load_s = time.perf_counter() - t
    finite = torch.isfinite(weights).all(1)
    print(f"zoo: {len(weights)} checkpoints, {table['run_id'].nunique()} runs, {zoo.space.num_params} parameters; "
          f"non-finite: {int((~finite).sum())}; test_acc mean {table['test_acc'].mean():.3f} "
          f"min {table['test_acc'].min():.3f} max {table['test_acc'].max():.3f}")

    w_ok = weights[finite]
    t = time.perf_counter()
    feats = weight_features(w_ok, zoo.space)
    batched_s = time.perf_counter() - t
    n_loop = min(args.loop_models, len(w_ok))
    t = time.perf_counter()
    loop = per_model_features(w_ok[:n_loop].numpy(), zoo.space)
    loop_s = (time.perf_counter() - t) * len(w_ok) / n_loop
    assert np.allclose(feats.iloc[:n_loop][list(loop[0])].to_numpy(), np.array([list(r.values()) for r in loop]),
                       rtol=1e-6, atol=1e-9)
    print(f"featurise {len(w_ok)} models ({feats.shape[1]} features): batched {batched_s:.2f} s, "
          f"per-model numpy loop {loop_s:.1f} s (extrapolated from {n_loop}) → {loop_s / batched_s:.0f}×")

    ceiling = noise_ceiling(zoo, weights, table)
    print(f"test-label noise ceiling (recorded test accuracy against the rest of the test file): {ceiling}")

    results, mean_tau, importance, diagnosis, curve = [], [], None, None, None
    for seed in args.seeds:
        res, fitted = evaluate_predictors(weights, table, zoo.space, seed=seed, architecture=zoo.info["architecture"])
        results.append(res)
        print(res.round(4).to_string(index=False))
        diag = diagnose(weights, table, fitted, seed)
        mean_tau.append(round(float(diag.set_index("ranker").loc["mean of the predictors", "tau_all"]), 4))
        if importance is None:
            importance, diagnosis = fitted["gbt"].importance(), diag
            print(diagnosis.round(4).to_string(index=False))
            curve = learning_curve(weights, table, zoo.space, seed)
            print(curve.round(4).to_string(index=False))
    allres = pd.concat(results)
    summary = allres.groupby("predictor")[["r2", "kendall_tau", "rmse", "fit_s"]].agg(["mean", "std"])
    print(summary.round(4).to_string())
    imp = importance.copy()
    imp["statistic"] = imp["feature"].str.rsplit(".", n=1).str[-1]
    imp["tensor"] = imp["feature"].str.rsplit(".", n=1).str[0]
    by_stat = imp.groupby("statistic")["share"].sum().sort_values(ascending=False)
    by_tensor = imp.groupby("tensor")["share"].sum().sort_values(ascending=False)
    print("top features (gbt, share of gain):\n" + imp.head(10)[["feature", "share"]].round(4).to_string(index=False))
    print("by statistic:\n" + by_stat.round(4).to_string())
    print("by tensor:\n" + by_tensor.round(4).to_string())
    mean = summary.xs("mean", axis=1, level=1)
    best = mean["kendall_tau"].idxmax()
    out = {
        "zoo": args.zoo, "checkpoints": len(weights), "runs": int(table["run_id"].nunique()),
        "non_finite": int((~finite).sum()), "seeds": args.seeds, "build_s": build_s, "load_s": round(load_s, 2),
        "featurise_batched_s": round(batched_s, 3), "featurise_loop_s": round(loop_s, 2),
        "featurise_speedup": round(loop_s / batched_s, 1),
        **{f"{name}_{m}": round(float(mean.loc[name, m]), 4) for name in mean.index
           for m in ("r2", "kendall_tau", "rmse", "fit_s")},
        **{f"{name}_tau_std": round(float(summary.loc[name, ("kendall_tau", "std")]), 4) for name in mean.index},
        "best": best, "best_tau": round(float(mean.loc[best, "kendall_tau"]), 4), "target_tau": 0.93,
        "mean_of_predictors_tau": mean_tau,
        "best_tau_over_baseline": round(float(mean.loc[best, "kendall_tau"] / mean.loc["gbt-statistics",
                                                                                         "kendall_tau"]), 4),
        "top_features": imp.head(5)["feature"].tolist(),
        "diagnosis_seed0": diagnosis.round(4).to_dict("records"), "test_noise_ceiling": ceiling,
        "gbt_learning_curve_seed0": curve.round(4).to_dict("records"),
        "gain_share_by_statistic": by_stat.round(4).to_dict(),
        "load": os.getloadavg()[0],
    }
    print(json.dumps(out))


if __name__ == "__main__":
    main()
