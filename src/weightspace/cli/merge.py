"""``weightspace merge|soup|align|barrier``: combine checkpoints into one model."""

from __future__ import annotations

import argparse
import sys

import pandas as pd

from .common import add_output_file


def _merge(args) -> None:
    from ..merge.from_config import merge_from_config

    result = merge_from_config(args.config, args.out, out_shard_size=args.out_shard_size, threads=args.threads,
                               progress=not args.quiet)
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
    from ..merge.run import soup_zoo

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


def _align(args) -> None:
    from ..merge.run import align_models

    path, d = align_models(args.a, args.b, args.out, method=args.method, zoo=args.zoo)
    print(f"L2 to A: {d['l2_before']:.4f} before, {d['l2_after']:.4f} after {args.method} matching → {path}")


def _barrier(args) -> None:
    from ..merge.run import barrier_curves, barrier_table

    curves = barrier_curves(args.a, args.b, align=args.align, repair=args.repair, zoo=args.zoo, points=args.points)
    with pd.option_context("display.width", 160, "display.float_format", "{:.4f}".format):
        print(curves.pivot(index="lam", columns="variant", values="loss").to_string())
        print()
        print(barrier_table(curves).to_string(index=False))
    if args.figure:
        from ..merge.figures import plot_interpolation

        plot_interpolation(curves, title=f"{args.a}  →  {args.b}").savefig(args.figure, dpi=120)
        print(f"figure → {args.figure}")


def register(sub) -> None:
    merge = sub.add_parser("merge", help="merge models as a mergekit YAML config says (out of core)")
    merge.add_argument("config", help="mergekit YAML: merge_method, base_model, models or slices (files, HF folders, "
                       "ZOO::ID), parameters, dtype, out_dtype, tokenizer_source, chat_template")
    add_output_file(merge, "merge", positional=True, help="output .safetensors file, or a folder (a Hugging Face "
                    "folder: shards, index, config.json, tokenizer, merge.yaml)")
    merge.add_argument("--out-shard-size", type=_size, default=5_000_000_000, metavar="SIZE",
                       help="bytes per output shard, e.g. 2B, 500M (default 5B, as mergekit)")
    merge.add_argument("--threads", type=int, help="tensors merged at once (default: torch's thread count)")
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
    soup.add_argument("--quiet", action="store_true", help="no progress bar")
    soup.set_defaults(func=_soup)

    align = sub.add_parser("align", help="reorder B's neurons to match A (weight or activation matching)")
    align.add_argument("a", help="reference model: a checkpoint file or ZOO_DIR::MODEL_ID")
    align.add_argument("b", help="model to permute")
    add_output_file(align, "align", required=True, help="output .safetensors file or folder")
    align.add_argument("--method", choices=("weight", "activation"), default="weight")
    align.add_argument("--zoo", help="a zoo of the models' architecture (and data, for activation matching)")
    align.set_defaults(func=_align)

    bar = sub.add_parser("barrier", help="loss/error along the linear path between two models, and its barrier")
    bar.add_argument("a")
    bar.add_argument("b")
    bar.add_argument("--align", choices=("weight", "activation", "none"), default="weight",
                     help="also align B to A first (default: weight matching)")
    bar.add_argument("--repair", action="store_true", help="also REPAIR the interpolated models")
    bar.add_argument("--points", type=int, default=11, help="λ grid size (default 11)")
    bar.add_argument("--zoo", help="zoo giving the data set and architecture (default: A's zoo)")
    bar.add_argument("--figure", help="write the curves' figure here (.png/.svg)")
    bar.set_defaults(func=_barrier)
