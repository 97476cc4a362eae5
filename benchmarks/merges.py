"""TIES and DARE-TIES over 64 and 1,024 models of one zoo: weightspace's batched merge against
mergekit 0.1.5's in-memory API (``merge_state_dicts``), in the same run, on the same inputs.

The zoo: fine-tunes of one pretrained digits MLP (64→32→10, 2,410 parameters) with varied learning
rates and seeds, one epoch each (how task vectors arise). Both merge the N fine-tunes onto the
pretrained base with density 0.5 and equal weights; DARE's random drops are seeded the same way
(weightspace: a generator seeded with ``seed``; mergekit: the global generator), so outputs must
agree. Times: best of 3 after a warm-up, one torch thread.

Last line: one JSON object with the figures.
"""

from __future__ import annotations

import json
import time
from functools import partial

import torch
from _training import load, train
from mergekit.merge_methods.api import merge_state_dicts as mergekit_merge

from weightspace.data import load_digits
from weightspace.merge import merge_weights
from weightspace.nets import MLP
from weightspace.zoo.trainer import HParams

SIZES = (64, 1024)
METHODS = {"ties": {"density": 0.5, "weight": 1.0}, "dare_ties": {"density": 0.5, "weight": 1.0}}
SEED = 7


def best_of(fn, repeats=3):
    fn()
    best, out = float("inf"), None
    for _ in range(repeats):
        t = time.perf_counter()
        out = fn()
        best = min(best, time.perf_counter() - t)
    return best, out


def mergekit_seeded(models, method, parameters):
    torch.manual_seed(SEED)  # mergekit draws DARE's drops from the global generator
    return mergekit_merge(models, method, parameters=parameters, base=0)


def main():
    torch.set_num_threads(1)
    ds = load_digits(seed=0)
    arch = MLP(64, (32,), 10)
    space = arch.space
    pre, _ = train(arch, ds, [HParams(lr=0.05, epochs=5)], [0])
    n = max(SIZES)
    lrs = torch.logspace(-3, -1, n).tolist()
    fine, _ = train(arch, ds, [HParams(lr=lr, epochs=1) for lr in lrs], list(range(1, n + 1)), init=pre[0])
    base_sd = space.unflatten(pre[0])
    results = {}
    for size in SIZES:
        w = fine[:size]
        sds = space.unstack(w)
        for method, params in METHODS.items():
            per_model = {k: [v] * size for k, v in params.items()}
            t_ours, ours = best_of(partial(merge_weights, space, w, method, base=pre[0], parameters=params, seed=SEED))
            t_theirs, theirs = best_of(partial(mergekit_seeded, [base_sd, *sds], method, per_model))
            diff = float((ours - space.flatten(theirs)).abs().max())
            results[f"{method}_{size}"] = {"seconds_weightspace": round(t_ours, 5),
                                           "seconds_mergekit": round(t_theirs, 5),
                                           "speedup": round(t_theirs / t_ours, 2), "max_abs_diff": diff}
            print(f"{method:10s} N={size:5d}: weightspace {t_ours * 1e3:8.2f} ms, mergekit {t_theirs * 1e3:8.2f} ms, "
                  f"×{t_theirs / t_ours:.1f}, max |diff| {diff:.2e}")
    print(json.dumps({"benchmark": "merges", "params": space.num_params, "threads": 1, "load": load(),
                      **results}))


if __name__ == "__main__":
    main()
