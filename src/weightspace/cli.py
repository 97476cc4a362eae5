"""The ``weightspace`` command: parse, call the library, print. Errors become one line, not a traceback."""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import pandas as pd

from .errors import WeightspaceError


def zoo_summary(zoo) -> str:
    """A readable description of a zoo: layout, data, and metrics per checkpoint epoch/step."""
    df = zoo.index()
    task = zoo.info.get("task", {})
    lines = [
        f"zoo        {zoo.root}",
        f"layout     {zoo.space.name}: {zoo.space.num_params} parameters in {len(zoo.space.entries)} tensors, "
        f"{len(zoo.space.groups)} permutation groups",
        f"data       {task.get('name')} {task.get('sizes', '')}",
        f"models     {len(df)} checkpoints from {df['run_id'].nunique() if len(df) else 0} runs",
    ]
    metric_cols = [c for c in ("train_acc", "val_acc", "test_acc", "test_loss") if c in df and df[c].notna().any()]
    if len(df) and metric_cols:
        key = next((k for k in ("epoch", "step") if df[k].notna().any()), None)
        by = df.groupby(key) if key else df.assign(all="all").groupby("all")
        table = by[metric_cols].agg(["mean", "min", "max"]).round(3)
        table.insert(0, ("models", "n"), by.size())
        with pd.option_context("display.width", 160, "display.max_columns", 20):
            lines += ["", f"metrics by {key or 'zoo'}:", table.to_string()]
        hp = [c for c in df.columns if c.startswith("hp_") and df[c].nunique() > 1]
        if hp:
            lines += ["", "varied hyper-parameters: " + ", ".join(
                f"{c[3:]} ({df[c].nunique()} values)" for c in hp)]
    return "\n".join(lines)


def _zoo_train(args) -> None:
    from .zoo.build import build_zoo

    start = time.perf_counter()
    zoo = build_zoo(args.config, out=args.out, progress=not args.quiet)
    print(zoo_summary(zoo))
    print(f"\ndone in {time.perf_counter() - start:.1f} s")


def _zoo_info(args) -> None:
    from .zoo import Zoo

    zoo = Zoo.open(args.dir, verify=args.verify)
    print(zoo_summary(zoo))


def _zoo_export(args) -> None:
    from .zoo import Zoo

    out = Zoo.open(args.dir).export(args.out, where=args.where)
    print(f"exported to {out}")


def _parse_sets(items: list[str]) -> dict:
    """``key=value`` options; values are read as YAML scalars (numbers, booleans, lists)."""
    import yaml

    from .errors import ConfigError

    out = {}
    for item in items or ():
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise ConfigError(f"--set {item!r}: expected key=value")
        out[key] = yaml.safe_load(value)
    return out


def _generate_data(args) -> None:
    from .generative.methods import method_module

    zoo = method_module(args.method).build_data(args.out, preset=args.preset, progress=not args.quiet)
    print(zoo_summary(zoo))


def _generate_fit(args) -> None:
    import json

    from .generative import methods
    from .generative.base import make_generator
    from .zoo import Zoo

    zoo = Zoo.open(args.zoo)
    weights = methods.training_weights(zoo)
    gen = make_generator(args.method, **_parse_sets(args.set))
    start = time.perf_counter()
    gen.fit(weights, progress=not args.quiet, **methods.fit_context(zoo, args.method, weights))
    out = gen.save(args.out)
    (out / "fit.json").write_text(json.dumps({"zoo": str(Path(args.zoo).resolve()), "generator": args.method,
                                              "config": gen.config(), "training_models": len(weights),
                                              "seconds": round(time.perf_counter() - start, 2)}, indent=2))
    print(f"fitted {args.method} on {len(weights)} checkpoints of {zoo.root} → {out}")


def _generate_sample(args) -> None:
    from .generative.sampling import write_samples

    zoo = write_samples(args.dir, args.n, args.out, seed=args.seed, progress=not args.quiet)
    print(zoo_summary(zoo))


def _study(args) -> None:
    """The main job: the memorization study of the four generators, end to end."""
    from .generative.methods import METHODS
    from .study import run_study, verdict_lines

    start = time.perf_counter()
    if args.ablation:
        from .study import run_ablation_study

        path = run_ablation_study(args.out, method=args.ablation, preset=args.preset, seed=args.seed,
                                  progress=not args.quiet)
        print(f"report: {path}  ({time.perf_counter() - start:.0f} s)")
        return
    chosen = args.methods.split(",") if args.methods else METHODS
    path = run_study(args.out, preset=args.preset, methods_=chosen, seed=args.seed, workers=args.workers,
                     progress=not args.quiet)
    print("\n".join(verdict_lines(args.out)))
    print(f"\nreport: {path}  ({time.perf_counter() - start:.0f} s)")


def _audit(args) -> None:
    from .audit.external import audit_generated

    path = audit_generated(args.train, args.generated, args.out, task=args.task, seed=args.seed)
    from .study import verdict_lines

    print("\n".join(verdict_lines(args.out)))
    print(f"\nreport: {path}")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="weightspace", description="Trained neural-network weights as data.")
    sub = p.add_subparsers(dest="command", required=True)

    study = sub.add_parser("study", help="the main job: do the four generators of weights memorise? (no downloads)")
    study.add_argument("--preset", default="quick", help="quick (default), paper, or tiny (a smoke run)")
    study.add_argument("--out", default="runs/study", help="output directory (default runs/study)")
    study.add_argument("--methods", help="comma-separated subset of pdiff,hyperrep,gpt,hyperdiffusion")
    study.add_argument("--seed", type=int, default=0)
    study.add_argument("--workers", type=int, help="methods run at once, one process each (default: one per core)")
    study.add_argument("--ablation", metavar="METHOD", nargs="?", const="hyperrep",
                       help="instead: the ablation table of one method: hyperrep (default), pdiff or gpt")
    study.add_argument("--quiet", action="store_true")
    study.set_defaults(func=_study)

    audit = sub.add_parser("audit", help="audit your own generated checkpoints against a training zoo")
    audit.add_argument("--train", required=True, help="the training zoo")
    audit.add_argument("--generated", required=True,
                       help="a zoo, a folder of checkpoints, or a .npy of test predictions [models, examples]")
    audit.add_argument("--task", help="score on another data set with the same inputs (default: the zoo's)")
    audit.add_argument("--out", default="runs/audit")
    audit.add_argument("--seed", type=int, default=0)
    audit.set_defaults(func=_audit)

    zoo = sub.add_parser("zoo", help="build and inspect zoos of trained models").add_subparsers(
        dest="zoo_command", required=True)
    train = zoo.add_parser("train", help="train the zoo a YAML config describes (resumes if interrupted)")
    train.add_argument("config", help="YAML config file, or the name of a shipped example (digits-mlp, ...)")
    train.add_argument("--out", help="zoo directory (default: the config's 'out', else runs/NAME)")
    train.add_argument("--quiet", action="store_true", help="no progress bar")
    train.set_defaults(func=_zoo_train)
    info = zoo.add_parser("info", help="describe a zoo")
    info.add_argument("dir")
    info.add_argument("--verify", action="store_true", help="check every file against its checksum")
    info.set_defaults(func=_zoo_info)
    export = zoo.add_parser("export", help="write weights.safetensors [N,P] + models.csv")
    export.add_argument("dir")
    export.add_argument("out")
    export.add_argument("--where", help="SQL filter over index columns, e.g. \"epoch = 20\"")
    export.set_defaults(func=_zoo_export)

    gen = sub.add_parser("generate", help="generative models of weights and their baselines").add_subparsers(
        dest="generate_command", required=True)
    data = gen.add_parser("data", help="build a method's training checkpoints as a zoo")
    data.add_argument("method", choices=("pdiff", "hyperrep", "gpt", "hyperdiffusion"))
    data.add_argument("--out", required=True)
    data.add_argument("--preset", default="default", help="default, or tiny for a seconds-long smoke run")
    data.add_argument("--quiet", action="store_true")
    data.set_defaults(func=_generate_data)
    fit = gen.add_parser("fit", help="fit a generator (a method or a baseline) on a zoo")
    fit.add_argument("method", help="pdiff, hyperrep, gpt, hyperdiffusion, noise, average or gaussian")
    fit.add_argument("--zoo", required=True)
    fit.add_argument("--out", required=True)
    fit.add_argument("--set", action="append", metavar="KEY=VALUE", help="generator option, e.g. --set sigma=0.02")
    fit.add_argument("--quiet", action="store_true")
    fit.set_defaults(func=_generate_fit)
    sample = gen.add_parser("sample", help="draw models from a fitted generator into a new zoo")
    sample.add_argument("dir", help="a directory written by 'generate fit'")
    sample.add_argument("-n", type=int, default=200)
    sample.add_argument("--seed", type=int, default=0)
    sample.add_argument("--out", required=True)
    sample.add_argument("--quiet", action="store_true")
    sample.set_defaults(func=_generate_sample)
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        args.func(args)
    except WeightspaceError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted: finished checkpoints are kept; run the same command to resume", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
