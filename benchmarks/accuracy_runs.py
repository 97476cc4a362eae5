"""Does accuracy-from-weights need more runs? τ on the same held-out runs with 2.25× the training runs.

The shipped zoo (``fashion-cnn-zoo``, 1,024 runs) is split by run as in ``accuracy_prediction.py``;
each predictor is fitted on its 819 training runs, then on those plus 1,024 more runs of the same
config (population seed 1: other draws of the same hyper-parameter distribution, built here), and
scored on the same 205 held-out runs. Runs with non-finite weights are dropped from the added zoo.
The gain per doubling of the training runs says how far more runs would carry τ.

Usage: python benchmarks/accuracy_runs.py [--zoo runs/fashion-cnn-zoo] [--more runs/fashion-cnn-zoo-seed1]
[--seeds 0 1] [--predictors gbt probe]  (builds what is missing: about 5 minutes per 1,024 runs).
Last line: one JSON object with the figures.
"""

from __future__ import annotations

import argparse
import json
import os
import time

import numpy as np
import torch

from weightspace.analysis.predictors import make_predictor, run_split, scores
from weightspace.zoo import Zoo
from weightspace.zoo.build import build_zoo, model_activations
from weightspace.zoo.config import read_config


def open_or_build(path: str, config: dict) -> Zoo:
    if not os.path.exists(os.path.join(path, "zoo.json")) or len(Zoo.open(path)) < 4 * config["population"]["runs"]:
        build_zoo(config, out=path, progress=False)
    return Zoo.open(path)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--zoo", default="runs/fashion-cnn-zoo")
    ap.add_argument("--more", default="runs/fashion-cnn-zoo-seed1")
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    ap.add_argument("--predictors", nargs="+", default=["gbt", "probe"])
    args = ap.parse_args()
    torch.set_num_threads(1)
    config = read_config("fashion-cnn-zoo")
    more_config = {**config, "population": {**config["population"], "seed": 1, "run_prefix": "b"}}
    start = time.perf_counter()
    shipped, more = open_or_build(args.zoo, config), open_or_build(args.more, more_config)
    build_s = time.perf_counter() - start
    w, t = shipped.load()
    w_more, t_more = more.load()
    finite = torch.isfinite(w_more).all(1)
    w_more, t_more = w_more[finite], t_more[finite.numpy()].reset_index(drop=True)
    y, y_more = t["test_acc"].to_numpy(), t_more["test_acc"].to_numpy()
    acts, acts_more = model_activations(t), model_activations(t_more)
    rows, added_runs = [], int(t_more["run_id"].nunique())
    for seed in args.seeds:
        test = run_split(t["run_id"].to_numpy(), 0.2, seed)
        train, held = torch.from_numpy(~test), torch.from_numpy(test)
        train_acts = [a for a, h in zip(acts, test) if not h]
        held_acts = [a for a, h in zip(acts, test) if h]
        train_runs = int(t["run_id"][~test].nunique())
        for name in args.predictors:
            for added in (False, True):
                weights = torch.cat([w[train], w_more]) if added else w[train]
                target = np.concatenate([y[~test], y_more]) if added else y[~test]
                pred = make_predictor(name, shipped.space, seed, shipped.info["architecture"])
                s = time.perf_counter()
                pred.fit(weights, target, activations=train_acts + (acts_more if added else []))
                fit_s = time.perf_counter() - s
                rows.append({"seed": seed, "predictor": name, "added": added,
                             "train_runs": train_runs + (added_runs if added else 0),
                             **scores(y[test], pred.predict(w[held], activations=held_acts)), "fit_s": fit_s})
                print(json.dumps({k: round(v, 4) if isinstance(v, float) else v for k, v in rows[-1].items()}),
                      flush=True)
    out = {"zoo": args.zoo, "more": args.more, "added_runs": added_runs,
           "added_non_finite_checkpoints": int((~finite).sum()), "build_s": round(build_s, 1), "seeds": args.seeds}
    for name in args.predictors:
        base = [r["kendall_tau"] for r in rows if r["predictor"] == name and not r["added"]]
        plus = [r["kendall_tau"] for r in rows if r["predictor"] == name and r["added"]]
        ratio = (train_runs + added_runs) / train_runs
        out[f"{name}_tau"] = round(float(np.mean(base)), 4)
        out[f"{name}_tau_more_runs"] = round(float(np.mean(plus)), 4)
        out[f"{name}_tau_gain_per_doubling"] = round(float((np.mean(plus) - np.mean(base)) / np.log2(ratio)), 4)
    out["load"] = os.getloadavg()[0]
    print(json.dumps(out))


if __name__ == "__main__":
    main()
