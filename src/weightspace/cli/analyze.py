"""``weightspace analyze PATH``: spectral diagnostics of a checkpoint, an HF folder or a zoo."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pandas as pd

from .common import add_backend_options, add_key_option, add_output, add_threads, backend_from, cores

TABLE_COLUMNS = ["name", "status", "N", "M", "num_evals", "alpha", "alpha_lo", "alpha_hi", "xmin", "D",
                 "log_norm", "log_spectral_norm", "stable_rank", "num_spikes", "mp_softrank", "rand_distance"]
SUMMARY_COLUMNS = ["model", "layers", "layers_ok", "alpha", "alpha_hat", "alpha_hat_ok", "log_norm", "log_alpha_norm",
                   "log_spectral_norm", "stable_rank", "mp_softrank", "epoch", "test_acc"]


def _analyze(args) -> None:
    from ..analysis import SpectralAnalyzer

    backend = backend_from(args)  # an unreachable --address fails here, before any work
    start = time.perf_counter()
    analyzer = SpectralAnalyzer(fit=args.fit, mp_fit=args.mp_fit, randomize=args.randomize, conv=args.conv,
                                seed=args.seed, threads=args.threads, progress=not args.quiet)
    analyzer.fit(args.path, where=args.where, backend=backend, key=args.key)
    seconds = time.perf_counter() - start
    details, summary = analyzer.details_, analyzer.summary_
    with pd.option_context("display.width", 200, "display.max_columns", 30, "display.max_rows", 400,
                           "display.float_format", "{:.4g}".format):
        if len(summary) == 1:
            shown = details[~details["status"].str.startswith("skipped")] if len(details) else details
            print(shown[[c for c in TABLE_COLUMNS if c in shown]].to_string(index=False))
            if len(shown) < len(details):
                reasons = details.loc[~details.index.isin(shown.index), "status"].value_counts()
                print("not analysed: " + ", ".join(f"{n} × {r.removeprefix('skipped: ')}" for r, n in reasons.items()))
        else:  # a zoo: the per-layer table averaged over its models
            fitted = details[details["status"].isin(["ok", "random-like"])]
            per_layer = fitted.groupby("name", sort=False).agg(
                models=("model", "size"), ok=("status", lambda s: int((s == "ok").sum())),
                alpha=("alpha", "mean"), alpha_std=("alpha", "std"), log_norm=("log_norm", "mean"),
                stable_rank=("stable_rank", "mean"))
            print(f"per layer, over {len(summary)} models:\n{per_layer.to_string()}")
        print("\nsummary:")
        print(summary[[c for c in SUMMARY_COLUMNS if c in summary]].head(20).to_string(index=False))
        if len(summary) > 20:
            where = f"in {Path(args.out) / 'summary.csv'}" if args.out else "with --out DIR, in DIR/summary.csv"
            print(f"... {len(summary)} models (all {where})")
    print(f"\n{len(details)} rows, {int((details['status'] == 'ok').sum()) if len(details) else 0} layers ok, "
          f"fit={args.fit}, {seconds:.2f} s")
    if args.out:
        out = Path(args.out)  # claimed for this command by weightspace.cli.main
        details.to_csv(out / "details.csv", index=False)
        summary.to_csv(out / "summary.csv", index=False)
        config = dict(path=str(Path(args.path).resolve()), where=args.where, key=args.key, **analyzer.params_)
        (out / "config.json").write_text(json.dumps(config, indent=2))
        figures = []
        if args.figures:
            from ..analysis.spectral_figures import save_spectral_figures

            figures = save_spectral_figures(analyzer, out / "figures")
        print(f"wrote {out}/details.csv, summary.csv, config.json" + (f" and {len(figures)} figures" if figures else ""))


def register(sub) -> None:
    p = sub.add_parser("analyze", help="spectral diagnostics (ESD, power-law α, MP fit) of weight matrices")
    p.add_argument("path", help="a checkpoint file, a Hugging Face model folder, or a zoo directory")
    add_output(p, "analyze", help="write details.csv, summary.csv and config.json here (figures/ with --figures)")
    p.add_argument("--fit", choices=("robust", "ww"), default="robust",
                   help="robust (default: bias-corrected, tail floor, bootstrap interval, FARMS) or ww "
                        "(WeightWatcher 0.7.7's default fit and conventions)")
    p.add_argument("--mp-fit", action="store_true", help="fit the Marchenko-Pastur bulk")
    p.add_argument("--randomize", action="store_true", help="compare with the spectrum of W with shuffled entries")
    p.add_argument("--conv", choices=("pool", "slices", "flatten"), default="pool",
                   help="conv weights: one matrix per kernel position, spectra pooled (default) or each "
                        "its own row (slices), or one out x in*k*k matrix (flatten)")
    p.add_argument("--where", help="zoo only: SQL filter over index columns, e.g. \"epoch = 20\"")
    add_key_option(p)
    p.add_argument("--seed", type=int, default=0, help="seed of the bootstrap and of the shuffles")
    add_threads(p, default=cores(), help="matrices decomposed at once, one thread each, as the study's workers "
                f"(default: one per core, here {cores()}); the numbers do not depend on it")
    add_backend_options(p)
    p.add_argument("--figures", action="store_true", help="also draw the figures (ESD per layer, α by layer, ...) "
                   "into --out/figures: a few seconds more on a small model")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=_analyze)
