"""The paper's ablation table: does any change to a generator buy novelty without losing quality?

Each variant refits the generator with a few settings changed (size, training length, dropout,
augmentation, half of the training checkpoints) and measures its samples the way the audit does:
quality, max error-IoU similarity and min L2 to the FULL training set, and that distance relative
to the training checkpoints' own nearest-neighbour spacing. A variant that escapes memorisation
moves its samples out to the spacing (ratio near 1, few replicas) while keeping the quality.
"""

from __future__ import annotations

import math
import time
from collections.abc import Mapping
from dataclasses import dataclass

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import torch
from matplotlib.figure import Figure
from tqdm.auto import tqdm

from ..audit.similarity import (
    error_iou,
    l2_distances,
    max_similarity_to_training,
    min_distance_to_training,
)
from ..errors import ConfigError

REPLICA_FRACTION = 0.25  # a sample closer than this × the training spacing to a checkpoint is a replica
TRAIN_FRACTION = "_train_fraction"  # special override: fit on a random subset of the training checkpoints
# fit-context entries with one value per training checkpoint (subset with them) and entries that do not
# depend on which checkpoints are used (passed unchanged)
ROW_CONTEXT = ("accuracies",)
GLOBAL_CONTEXT = ("mask", "space")


@dataclass(frozen=True)
class Relative:
    """An override relative to the base configuration (``value × times + plus``), so "width ×2"
    doubles whatever width the base uses. Integers stay integers (at least 1); tuples scale
    element-wise (P-diff's autoencoder channels)."""

    times: float = 1.0
    plus: float = 0.0

    def resolve(self, value):
        if isinstance(value, (tuple, list)):
            return [self.resolve(v) for v in value]
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"relative override: expected a number or a list of numbers, got {value!r}")
        out = value * self.times + self.plus
        return max(1, round(out)) if isinstance(value, int) else float(out)


# The paper's ablations (generator size, training length, dropout, augmentation) plus a data one.
ABLATIONS: dict[str, dict[str, dict]] = {
    "hyperrep": {
        "default": {},
        "width ×2": {"d_model": Relative(2), "ff": Relative(2)},
        "width ÷2": {"d_model": Relative(0.5), "ff": Relative(0.5)},
        "depth +1 layer": {"layers": Relative(plus=1)},
        "training ×0.5": {"steps": Relative(0.5)},
        "training ×2": {"steps": Relative(2)},
        "dropout 0.1": {"dropout": 0.1},
        "no noise augmentation": {"noise": 0.0, "erase": 0.0},
        "no permutation augmentation": {"permutations": 0},
        "50% of training checkpoints": {TRAIN_FRACTION: 0.5},
    },
    "pdiff": {
        "default": {},
        "autoencoder width ×2": {"ae_channels": Relative(2)},
        "autoencoder width ÷2": {"ae_channels": Relative(0.5)},
        "DDPM training ×0.5": {"ddpm_steps": Relative(0.5)},
        "DDPM training ×2": {"ddpm_steps": Relative(2)},
        "no latent noise": {"latent_noise": 0.0},
        "50% of training checkpoints": {TRAIN_FRACTION: 0.5},
    },
    # G.pt learns from pairs of a run's checkpoints, so no subset-of-checkpoints row.
    "gpt": {
        "default": {},
        "width ×2": {"d_model": Relative(2)},
        "depth +1 layer": {"n_layers": Relative(plus=1)},
        "training ×0.5": {"train_steps": Relative(0.5)},
        "no permutation augmentation": {"permutations": 0},
        "a permutation per pair (original)": {"permutations": -1},
        "no fresh inits (original)": {"fresh_init_prob": 0.0},
    },
}


def resolve_variant(base: Mapping, overrides: Mapping) -> tuple[dict, float]:
    """(generator config, fraction of training checkpoints) of one variant over ``base``."""
    config, fraction = dict(base), 1.0
    for key, value in overrides.items():
        if key == TRAIN_FRACTION:
            fraction = float(value)
            if not 0 < fraction <= 1:
                raise ConfigError(f"{TRAIN_FRACTION}: expected a fraction in (0, 1], got {value!r}")
        elif key.startswith("_"):
            raise ConfigError(f"override {key!r}: the only special key is {TRAIN_FRACTION!r}")
        elif key not in base:
            raise ConfigError(f"override {key!r}: not a generator setting; expected one of {sorted(base)}")
        else:
            config[key] = value.resolve(base[key]) if isinstance(value, Relative) else value
    return config, fraction


def _describe(base: Mapping, config: Mapping, fraction: float) -> str:
    changed = [f"{k}={config[k]}" for k in config if config[k] != base[k]]
    if fraction < 1:
        changed.append(f"checkpoints={fraction:g}")
    return ", ".join(changed) or "—"


def _subset(n: int, fraction: float, seed: int) -> torch.Tensor:
    """A seeded random subset of ``ceil(fraction × n)`` rows, in their original order."""
    k = max(1, math.ceil(fraction * n - 1e-9))
    return torch.randperm(n, generator=torch.Generator().manual_seed(seed))[:k].sort().values


def _subset_context(context: Mapping, rows: torch.Tensor, n: int) -> dict:
    out = {}
    for key, value in context.items():
        if key in ROW_CONTEXT:
            if len(value) != n:
                raise ConfigError(f"fit context {key!r}: expected one value per training checkpoint ({n}), "
                                  f"got {len(value)}")
            out[key] = value[rows.to(value.device)]
        elif key in GLOBAL_CONTEXT:
            out[key] = value
        else:
            raise ConfigError(f"{TRAIN_FRACTION}: cannot subset the fit context {key!r} (known: per-checkpoint "
                              f"{ROW_CONTEXT}, global {GLOBAL_CONTEXT})")
    return out


def run_ablation(zoo, method: str, variants: Mapping[str, Mapping] | None = None, *,
                 base_config: Mapping | None = None, n_samples: int = 100, seed: int = 0,
                 progress: bool = True) -> pd.DataFrame:
    """Fit ``method``'s generator once per variant on ``zoo`` and measure ``n_samples`` samples.

    ``variants`` (default ``ABLATIONS[method]``) maps a name to overrides of the generator's
    configuration (values or :class:`Relative`; ``{"_train_fraction": f}`` fits on a seeded random
    ``f`` of the checkpoints); ``base_config`` overrides the generator's defaults for every variant.
    Novelty is always measured against the full training set. One row per variant; the training
    set's own reference values are in ``table.attrs["training"]``.
    """
    from ..audit.groups import ZooEvaluator
    from ..generator import make_generator
    from ..registry import setting

    s = setting(method)
    if variants is None:
        if method not in ABLATIONS:
            raise ConfigError(f"method: no built-in ablations for {method!r}; expected one of {sorted(ABLATIONS)} "
                              "or explicit variants")
        variants = ABLATIONS[method]
    if not variants:
        raise ConfigError("variants: expected at least one variant")
    if int(n_samples) < 1:
        raise ConfigError(f"n_samples: expected a positive integer, got {n_samples!r}")
    try:
        base = {**make_generator(method).config(), **dict(base_config or {})}
        make_generator(method, **base)
    except ConfigError as e:
        raise ConfigError(f"base_config: {e}") from None
    resolved = {}
    for name, overrides in variants.items():
        try:
            resolved[name] = resolve_variant(base, overrides)
        except ConfigError as e:
            raise ConfigError(f"variant {name!r}: {e}") from None

    train = s.training(zoo)
    context = s.fit_context(zoo)
    evaluator = ZooEvaluator(zoo)
    train_set = evaluator.model_set("training", train, is_training=True)
    classifier = train_set.predictions is not None
    spacing_all = min_distance_to_training(l2_distances(train, train), exclude_self=True)[0].double()
    spacing = float(spacing_all.median())
    reference = {"checkpoints": len(train), "spacing": spacing,
                 "quality_median": float(train_set.quality.median()),
                 "quality_mean": float(train_set.quality.float().mean())}
    if classifier:
        sim = error_iou(train_set.predictions, train_set.predictions, evaluator.labels)
        reference["max_similarity_median"] = float(max_similarity_to_training(sim, exclude_self=True)[0].median())

    rows = []
    for name in tqdm(resolved, desc=f"ablation: {method}", disable=not progress):
        config, fraction = resolved[name]
        if fraction < 1:
            idx = _subset(len(train), fraction, seed)
            weights, ctx = train[idx.to(train.device)], _subset_context(context, idx, len(train))
        else:
            weights, ctx = train, dict(context)
        try:
            generator = make_generator(method, **config)
        except ConfigError as e:
            raise ConfigError(f"variant {name!r}: {e}") from None
        start = time.perf_counter()
        generator.fit(weights, progress=progress, **ctx)
        fit_seconds = time.perf_counter() - start
        samples = generator.sample(int(n_samples), seed=seed)
        gen_set = evaluator.model_set(name, samples)
        min_l2 = min_distance_to_training(l2_distances(samples, train))[0].double()
        row = {"variant": name, "overrides": _describe(base, config, fraction), "train_checkpoints": len(weights),
               "fit_seconds": fit_seconds, "quality_median": float(gen_set.quality.median()),
               "quality_mean": float(gen_set.quality.float().mean()), "max_similarity_median": np.nan,
               "min_l2_median": float(min_l2.median()), "min_l2_vs_spacing": float(min_l2.median()) / spacing,
               "replica_fraction": float((min_l2 < REPLICA_FRACTION * spacing).double().mean())}
        if classifier:
            sim = error_iou(gen_set.predictions, train_set.predictions, evaluator.labels)
            row["max_similarity_median"] = float(max_similarity_to_training(sim)[0].median())
        rows.append(row)
    table = pd.DataFrame(rows)
    table.attrs["training"] = reference
    table.attrs["method"] = method
    table.attrs["base_config"] = base
    return table


def ablation_figure(table: pd.DataFrame) -> Figure:
    """Quality against novelty, one labelled point per variant: left, min L2 to training in units of
    the training spacing (1 = as far as checkpoints are from each other); right, max error
    similarity to training. A variant that helps sits up and right (left) of the default."""
    ref = table.attrs.get("training", {})
    has_sim = table["max_similarity_median"].notna().any()
    panels = [("min_l2_vs_spacing", "median min L2 to training / training spacing")]
    if has_sim:
        panels.append(("max_similarity_median", "median max error-IoU similarity to training"))
    fig, axes = plt.subplots(1, len(panels), figsize=(6.0 * len(panels), 4.6), squeeze=False)
    cmap = plt.get_cmap("tab10")
    for ax, (col, label) in zip(axes[0], panels, strict=True):
        for i, (_, r) in enumerate(table.iterrows()):  # numbered points, names in the legend: they cluster
            ax.scatter(r[col], r["quality_median"], s=60 if r["variant"] == "default" else 36, color=cmap(i % 10),
                       marker="*" if r["variant"] == "default" else "o", zorder=3, label=f"{i}: {r['variant']}")
            ax.annotate(str(i), (r[col], r["quality_median"]), fontsize=7, xytext=(4, 3), textcoords="offset points")
        if "quality_median" in ref:
            ax.axhline(ref["quality_median"], color="0.45", ls="--", lw=1, label="training median quality")
        if col == "min_l2_vs_spacing":
            ax.axvline(1.0, color="0.45", ls=":", lw=1, label="training spacing")
            ax.axvline(REPLICA_FRACTION, color="C3", ls=":", lw=1, label=f"replica threshold ({REPLICA_FRACTION:g})")
        elif "max_similarity_median" in ref:
            ax.axvline(ref["max_similarity_median"], color="0.45", ls=":", lw=1,
                       label="training: similarity to nearest other")
        ax.set_xlabel(label)
        ax.set_ylabel("median quality of samples")
        ax.grid(alpha=0.3)
    handles = {}
    for ax in axes[0]:
        handles.update(zip(*reversed(ax.get_legend_handles_labels()), strict=True))  # label → handle, deduplicated
    axes[0][-1].legend(handles.values(), handles.keys(), fontsize=7, loc="center left", bbox_to_anchor=(1.02, 0.5))
    fig.suptitle(f"ablations: {table.attrs.get('method', '')}".rstrip(": "))
    return fig
