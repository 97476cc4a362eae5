"""The four generators of weights at the study's settings: time to build the data, to fit, to
sample, and the quality of generated models against their training checkpoints.

A generator that outputs broken models would make the audit meaningless, so the figure to watch is
``quality_ratio`` (generated mean / training mean; the target is ≥ 0.9) next to the wall times
(target: each method end to end in ≤ 10 minutes on 2 cores). The reference point users have today
is the training set itself: the ratio is against the checkpoints the generator learned from.
Hyper-Representations also reports its other KDE sampling (independent per latent dimension, the
generator's default) from the same fit: on a zoo of independently initialised models it mixes
unaligned models and lands at chance, which is why the study audits the sampling as published.

Usage: python benchmarks/generators.py [METHOD ...] [--out DIR]. Last line: one JSON object.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import torch

import weightspace.study  # noqa: F401  (registers the methods)
from weightspace.generative.hyperrep import kde_sample
from weightspace.generator import make_generator, seeded
from weightspace.registry import BUILTIN_METHODS, setting


def _stats(q: torch.Tensor) -> dict:
    q = q.double()
    return {"mean": round(float(q.mean()), 4), "min": round(float(q.min()), 4), "max": round(float(q.max()), 4)}


def run(name: str, out: Path) -> dict:
    s = setting(name)  # each method as the study runs it (the default data preset's generator options)
    t0 = time.perf_counter()
    zoo = s.build(out / name, progress=False)
    train = s.training(zoo)
    t1 = time.perf_counter()
    config = {**s.generator_config(zoo), **s.generator_options("default")}
    gen = make_generator(s.generator_name, **config).fit(train, progress=False, **s.fit_context(zoo))
    t2 = time.perf_counter()
    n = s.n_samples(zoo)
    samples = gen.sample(n, seed=0)
    t3 = time.perf_counter()
    q_train, q_gen = s.quality(zoo, train), s.quality(zoo, samples)
    # Quality may be negative for shapes (a negated distance): compare on the scale of the spread.
    ratio = float(q_gen.mean() / q_train.mean()) if float(q_train.mean()) > 0 else float(q_train.mean() / q_gen.mean())
    extra = {}
    if name == "hyperrep":  # the other KDE sampling, from the same fitted autoencoder
        latents = kde_sample(gen.stats["anchors"], n, gen.bandwidth, seeded(0), shared_seed=not gen.shared_seed)
        q_other = s.quality(zoo, gen.decode(latents))
        key = "independent" if gen.shared_seed else "shared_seed"
        extra = {f"quality_generated_{key}": _stats(q_other),
                 f"quality_ratio_{key}": round(float(q_other.mean() / q_train.mean()), 4)}
    return {
        "generator_config": config, **extra,
        "training_checkpoints": len(train), "samples": n,
        "seconds_data": round(t1 - t0, 1), "seconds_fit": round(t2 - t1, 1), "seconds_sample": round(t3 - t2, 1),
        "seconds_total": round(t3 - t0, 1),
        "quality_training": _stats(q_train), "quality_generated": _stats(q_gen), "quality_ratio": round(ratio, 4),
    }


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("methods", nargs="*", default=list(BUILTIN_METHODS))
    p.add_argument("--out", help="keep the zoos here (default: a temporary directory)")
    p.add_argument("--threads", type=int, default=2)
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(args.out or tmp)
        results = {}
        for name in args.methods:
            results[name] = run(name, out)
            print(name, json.dumps(results[name]), flush=True)
    print(json.dumps({"threads": args.threads, "methods": results}))


if __name__ == "__main__":
    main()
