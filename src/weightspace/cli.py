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
    if len(df):
        key = "epoch" if df["epoch"].notna().any() else "step"
        metric_cols = [c for c in ("train_acc", "val_acc", "test_acc", "test_loss") if c in df and df[c].notna().any()]
        table = df.groupby(key)[metric_cols].agg(["mean", "min", "max"]).round(3)
        table.insert(0, ("models", "n"), df.groupby(key).size())
        with pd.option_context("display.width", 160, "display.max_columns", 20):
            lines += ["", f"metrics by {key}:", table.to_string()]
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


def _demo(args) -> None:
    """The main job on the embedded default: a zoo of 256 MLPs on scikit-learn's digits."""
    args.config, args.quiet = "digits-mlp", False
    args.out = args.out or str(Path("runs") / "digits-mlp")
    _zoo_train(args)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="weightspace", description="Trained neural-network weights as data.")
    sub = p.add_subparsers(dest="command", required=True)

    demo = sub.add_parser("demo", help="run the main job on the embedded default (no downloads)")
    demo.add_argument("--out", help="output directory (default runs/digits-mlp)")
    demo.set_defaults(func=_demo)

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
