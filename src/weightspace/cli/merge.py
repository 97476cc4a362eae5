"""``weightspace merge|soup|align|barrier``: combine checkpoints into one model."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import pandas as pd

from ..errors import OutputError
from .common import add_key_option, add_output, add_output_file, add_threads, cores


def _merge(args) -> None:
    from ..merge.from_config import merge_from_config

    result = merge_from_config(args.config, args.out, out_shard_size=args.out_shard_size, threads=args.threads,
                               progress=not args.quiet, key=args.key)
    for note in result.notes:
        print(f"note: {note}", file=sys.stderr)
    where = result.weights[0] if len(result.weights) == 1 else f"{args.out} ({len(result.weights) - 1} shards + index)"
    extras = f", {len(result.extras)} config/tokenizer files" if result.extras else ""
    print(f"merged → {where} (resolved config: {result.config}{extras})")


def _size(text: str) -> int:
    """A byte count: an integer with an optional K, M or B (thousand, million, billion) suffix."""
    scale = {"K": 10**3, "M": 10**6, "B": 10**9}.get(text[-1:].upper(), 1)
    digits = text[:-1] if scale > 1 else text
    if not digits.isdigit() or int(digits) == 0:
        raise argparse.ArgumentTypeError(f"expected a size like 5B, 500M or 1000000, got {text!r}")
    return int(digits) * scale


def _soup(args) -> None:
    from ..merge.models import soup_zoo

    kind = "greedy" if args.greedy else "learned" if args.learned else "uniform"
    path, table, summary = soup_zoo(args.zoo, args.out, kind=kind, strict=args.strict, where=args.where,
                                    progress=not args.quiet)
    if kind == "greedy":
        with pd.option_context("display.width", 160):
            print(table.to_string(index=False))
        print(f"\ningredients taken: {summary['ingredients']} of {len(table)}")
    print(f"{kind} soup: val acc {summary['soup_val_acc']:.4f}, test acc {summary['soup_test_acc']:.4f}; "
          f"best single (by val): val {summary['best_single_val_acc']:.4f}, test {summary['best_single_test_acc']:.4f}")
    print(f"→ {path}")
    for line in _soup_warnings(kind, summary, args.where):
        print(f"warning: {line}", file=sys.stderr)


CHANCE_MARGIN = 0.05  # a soup's test accuracy this close to 1/classes is at chance


def _soup_warnings(kind: str, summary: dict, where: str | None) -> list[str]:
    """What a soup's numbers say is probably wrong: a soup at chance (its models do not share one
    basin), and a selection that mixes checkpoints from several points of training."""
    lines = []
    chance = summary["chance_acc"]
    if summary["soup_test_acc"] <= chance + CHANCE_MARGIN < summary["best_single_test_acc"]:
        lines.append(f"the {kind} soup is at chance (test acc {summary['soup_test_acc']:.3f}; chance {chance:.3f}): "
                     "its models do not share one basin; align them to one model first (weightspace align) or take "
                     "a greedy soup (--greedy)")
    key = next((k for k in ("epoch", "step") if k in summary), None)
    if where is None and key and len(summary[key]) > 1:
        values = summary[key]
        shown = ", ".join(map(str, values[:8])) + (" ..." if len(values) > 8 else "")
        lines.append(f"the soup mixes checkpoints from {len(values)} {key}s ({shown}); choose one with --where "
                     f"\"{key} = {values[-1]}\"")
    return lines


def _align(args) -> None:
    from ..merge.models import align_models

    path, d = align_models(args.a, args.b, args.out, method=args.method, zoo=args.zoo, key=args.key)
    print(f"L2 to A: {d['l2_before']:.4f} before, {d['l2_after']:.4f} after {args.method} matching → {path}")


def _barrier(args) -> None:
    from ..merge.models import barrier_curves, barrier_table

    out = Path(args.out) if args.out else None  # claimed for this command by weightspace.cli.main
    figure = Path(args.figure) if args.figure else out / "curves.png" if out else None
    csv = out / "curves.csv" if out else figure.with_suffix(".csv") if figure else None
    if out is None and csv is not None and csv.exists() and not args.force:
        raise OutputError(f"--figure {figure}: {csv} exists (the curves are written beside the figure); choose "
                          "another name, or pass --force to replace it")
    curves = barrier_curves(args.a, args.b, align=args.align, repair=args.repair, zoo=args.zoo, points=args.points,
                            key=args.key)
    table = barrier_table(curves)
    with pd.option_context("display.width", 160, "display.float_format", "{:.4f}".format):
        print("test loss along the straight path from A (λ = 0) to B (λ = 1), one column per variant:")
        print(curves.pivot(index="lam", columns="variant", values="loss").rename_axis("λ").to_string())
        print("\nbarriers (the largest rise above the straight line between the end points; error as a fraction "
              "of the test examples):")
        print(table.to_string(index=False))
    if csv is not None:
        curves[["variant", "lam", "loss", "acc", "error"]].to_csv(csv, index=False)
        print(f"\ncurves (loss, acc, error at every λ) → {csv}")
    if out is not None:
        table.to_csv(out / "barriers.csv", index=False)
        print(f"barriers → {out / 'barriers.csv'}")
    if figure is not None:
        from ..merge.figures import plot_interpolation

        plot_interpolation(curves, title=f"{args.a}  →  {args.b}").savefig(figure, dpi=120)
        print(f"figure → {figure}")


def register(sub) -> None:
    merge = sub.add_parser("merge", help="merge models as a mergekit YAML config says (out of core)")
    merge.add_argument("config", help="mergekit YAML: merge_method, base_model, models or slices (files, HF folders, "
                       "ZOO::ID), parameters, dtype, out_dtype, tokenizer_source, chat_template")
    add_output_file(merge, "merge", positional=True, help="output .safetensors file, or a folder (a Hugging Face "
                    "folder: shards, index, config.json, tokenizer, merge.yaml)")
    merge.add_argument("--out-shard-size", type=_size, default=5_000_000_000, metavar="SIZE",
                       help="bytes per output shard, e.g. 2B, 500M (default 5B, as mergekit)")
    add_key_option(merge, "each training checkpoint among the models")
    add_threads(merge, default=cores(), help="tensors merged at once, and CPU threads (default: one per core)")
    merge.add_argument("--quiet", action="store_true", help="no progress bar")
    merge.set_defaults(func=_merge)

    soup = sub.add_parser("soup", help="a model soup of a zoo's models (uniform by default)")
    soup.add_argument("zoo")
    kind = soup.add_mutually_exclusive_group()
    kind.add_argument("--greedy", action="store_true", help="greedy soup on the validation split")
    kind.add_argument("--learned", action="store_true", help="per-tensor mixing weights trained on the validation split")
    soup.add_argument("--strict", action="store_true", help="greedy: take a model only if the soup strictly improves")
    soup.add_argument("--where", help="SQL filter over index columns, e.g. \"epoch = 20\"")
    add_output_file(soup, "soup", default="soup.safetensors", help="output file or folder (default soup.safetensors)")
    add_threads(soup)
    soup.add_argument("--quiet", action="store_true", help="no progress bar")
    soup.set_defaults(func=_soup)

    align = sub.add_parser("align", help="reorder B's neurons to match A (weight or activation matching)")
    align.add_argument("a", help="reference model: a checkpoint file or ZOO_DIR::MODEL_ID")
    align.add_argument("b", help="model to permute")
    add_output_file(align, "align", required=True, help="output .safetensors file or folder")
    align.add_argument("--method", choices=("weight", "activation"), default="weight")
    align.add_argument("--zoo", help="a zoo of the models' architecture (and data, for activation matching)")
    add_key_option(align, "A and B, where they are training checkpoints")
    add_threads(align)
    align.set_defaults(func=_align)

    bar = sub.add_parser("barrier", help="loss/error along the linear path between two models, and its barrier")
    bar.add_argument("a")
    bar.add_argument("b")
    bar.add_argument("--align", choices=("weight", "activation", "none"), default="weight",
                     help="also align B to A first (default: weight matching)")
    bar.add_argument("--repair", action="store_true", help="also REPAIR the interpolated models")
    bar.add_argument("--points", type=int, default=11, help="λ grid size (default 11)")
    bar.add_argument("--zoo", help="zoo giving the data set and architecture (default: A's zoo)")
    bar.add_argument("--figure", help="write the curves' figure here (.png/.svg), and the curves beside it (.csv)")
    add_output(bar, "barrier", help="write curves.csv, barriers.csv and curves.png here")
    add_key_option(bar, "A and B, where they are training checkpoints")
    add_threads(bar)
    bar.set_defaults(func=_barrier)
