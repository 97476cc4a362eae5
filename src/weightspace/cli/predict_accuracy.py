"""``weightspace predict-accuracy``: fit and evaluate accuracy predictors on a zoo, or score
checkpoints with a saved one."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd

from ..errors import ConfigError, LayoutError
from .common import add_key_option, add_threads


def _predict_accuracy(args) -> None:
    if args.model:
        _score_checkpoints(args)
        return
    if len(args.paths) != 1:
        raise ConfigError("predict-accuracy: give one zoo directory (or --model P and checkpoint files)")
    from ..analysis.predictors import evaluate_predictors
    from ..zoo import Zoo

    zoo = Zoo.open(args.paths[0])
    weights, table = zoo.load(args.where)
    result, fitted = evaluate_predictors(weights, table, zoo.space, names=args.predictors.split(",") if args.predictors
                                         else None, target=args.target, test_fraction=args.test_fraction,
                                         seed=args.seed, architecture=zoo.info.get("architecture"),
                                         progress=not args.quiet)
    with pd.option_context("display.width", 160, "display.max_columns", 20):
        print(result.round(4).to_string(index=False))
    if "gbt" in fitted:
        print("\nfeatures that matter most (gbt, share of split gain):")
        print(fitted["gbt"].importance().head(10).round(4).to_string(index=False))
    if args.save:
        best = result.sort_values("kendall_tau", ascending=False).iloc[0]["predictor"]
        out = fitted[best].save(args.save)
        (Path(out) / "evaluation.json").write_text(json.dumps(
            {"zoo": str(Path(args.paths[0]).resolve()), "where": args.where,
             "results": result.to_dict("records")}, indent=2))
        print(f"\nsaved {best} (best held-out Kendall τ) → {out}")


def _score_checkpoints(args) -> None:
    import torch

    from ..analysis.predictors import load_predictor
    from ..io import is_training_checkpoint_file, load_weights
    from ..zoo import Zoo
    from ..zoo.build import model_activations

    if not args.paths:
        raise ConfigError("predict-accuracy --model: give the zoos, folders of checkpoints or checkpoint files to "
                          "score")
    sources = [m for path in args.paths for m in _models_at(Path(path))]  # every path checked before any is read
    if args.key is not None and not any(is_training_checkpoint_file(f) for f in sources if isinstance(f, Path)):
        raise ConfigError(f"--key {args.key!r}: none of the paths is a training checkpoint file (.pt, .pth, .bin, "
                          ".ckpt), nor a folder holding one; --key picks an entry inside those")
    pred = load_predictor(args.model)
    names, rows, activations = [], [], []
    for source in sources:
        if isinstance(source, Zoo):
            w, df = source.load()
            names += [f"{source.root}::{m}" for m in df["model_id"]]
            rows.append(w)
            recorded = model_activations(df) or [None] * len(df)
            activations += [a or args.activation for a in recorded]
            continue
        sd, _ = load_weights(source, args.key if is_training_checkpoint_file(source) else None)
        try:
            rows.append(pred.space.flatten(sd)[None])
        except LayoutError as e:
            raise LayoutError(f"{source}: {e}") from None
        names.append(str(source))
        activations.append(args.activation)
    predicted = pred.predict(torch.cat(rows), activations=activations)
    print(pd.DataFrame({"checkpoint": names, "predicted": predicted.round(4)}).to_string(index=False))


def _models_at(path: Path) -> list:
    """What ``predict-accuracy --model`` scores at ``path``, as ``audit --generated`` reads it: a zoo, each
    checkpoint file in a folder (a Hugging Face folder's model.safetensors, say), or one checkpoint file."""
    from ..io import SUPPORTED_SUFFIXES, checkpoint_files
    from ..zoo import Zoo

    if (path / "zoo.json").exists():
        return [Zoo.open(path)]
    if path.is_dir():
        files = checkpoint_files(path)
        if not files:
            raise ConfigError(f"{path}: no zoo.json and no checkpoint files ({', '.join(SUPPORTED_SUFFIXES)})")
        return files
    return [path]


def register(sub) -> None:
    p = sub.add_parser("predict-accuracy", help="predict test accuracy from weights alone",
                       description="ZOO: fit and evaluate predictors on held-out runs. --model P PATH...: score "
                       "the models of zoos, folders of checkpoint files and checkpoint files with a saved predictor.")
    p.add_argument("paths", nargs="*", metavar="ZOO | FOLDER | CHECKPOINT")
    p.add_argument("--model", help="a saved predictor directory: score the models at the given paths")
    p.add_argument("--save", help="save the predictor with the best held-out Kendall τ here")
    p.add_argument("--predictors", help="comma list of gbt-statistics, gbt, gbt-spectral, neuron-set, probe (default: all)")
    p.add_argument("--activation", help="with --model: the activation the checkpoint files compute with, for "
                   "predictors that run them (default: the architecture's own; a zoo's models use their records)")
    add_key_option(p, "each training checkpoint scored with --model")
    p.add_argument("--target", default="test_acc", help="index column to predict (default test_acc)")
    p.add_argument("--where", help="SQL filter over the zoo index, e.g. \"epoch >= 2\"")
    p.add_argument("--test-fraction", type=float, default=0.2, help="fraction of runs held out (default 0.2)")
    p.add_argument("--seed", type=int, default=0)
    add_threads(p)
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=_predict_accuracy)
