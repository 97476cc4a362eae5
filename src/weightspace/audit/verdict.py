"""The verdict on a group of models, on the paper's two axes, and pooled over seeds.

- **replica axis** (weights): is the group closer to the reference set than the reference models
  are to each other? The measure is the min distance to the reference (aligned L2 when the table
  has it, else plain L2, else Chamfer for shapes; error similarity when there are no weights). A
  model that generalised like a fresh training run sits at about the reference's own spacing, so
  the bar is a low quantile of that spacing, not a fixed ratio: the group's median, with its whole
  bootstrap interval (ratio to the spacing's median), must lie below the ``replica_quantile``
  quantile of the reference's nearest-neighbour distances (closer to its checkpoint than 90% of
  checkpoints are to theirs) and below ``replica_max_ratio`` of their median: "far below", as the
  paper says. Where the spacing barely varies (high dimensions, few runs) the quantile sits just
  under the median, and runs a few percent closer would pass it (measured: the tiny preset's two
  G.pt held-out runs at 0.963, interval [0.924, 0.985], against a quantile at 0.994). The same
  quantile reads error similarity.
- **beats-noise axis** (function): the fraction of the group's models above the noise-addition
  frontier (better quality than noise buys at the same or a lower similarity to the reference),
  with a bootstrap interval; the group beats noise when the interval's lower end exceeds
  ``beats_fraction`` and its median quality is at least ``min_relative_quality`` × the reference's.
- **interpolates**: the group's medians lie inside the region the interpolation baselines span
  (average of k checkpoints over a k sweep, per-parameter Gaussian): on every measure, between the
  lowest first quartile and the highest third quartile of those baselines.

The call, in this order: interpolates, replicates, novel and good, no better than noise.
Interpolation is tested first because the replica axis alone cannot tell a copy from a blend: in high
dimensions the average of two checkpoints sits at about 0.6 of the spacing from its parents, where
the paper's G.pt samples sit (aligned min-L2 2.25 against a spacing of 3.64). A group that is
distributed like the interpolation baselines is called an interpolation; one that is closer than
the spacing but unlike them (e.g. as good as its checkpoint where averages of checkpoints break) is
a replica.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping, Sequence

import numpy as np
import pandas as pd

from ..errors import ConfigError
from .novelty import NoiseFrontier, beyond_frontier, group_rows

VERDICTS = ("interpolates", "replicates", "no better than noise", "novel and good")  # the order they are tested
DISTANCES = ("aligned_min_l2", "min_l2", "min_chamfer")  # the replica axis's measure, first present wins
MIN_ERRORS = 100  # below this many test errors per model, error-IoU rests on a handful of examples


def _has(rows: pd.DataFrame, column: str | None) -> bool:
    return column is not None and column in rows and rows[column].notna().all()


def _median_ratio_interval(a: np.ndarray, b: np.ndarray, n_boot: int, confidence: float, seed: int):
    """Percentile bootstrap interval of ``median(a) / median(b)``, both resampled."""
    rng = np.random.default_rng(seed)
    with np.errstate(divide="ignore", invalid="ignore"):  # infinite distances (empty shapes) are allowed
        ma = np.median(a[rng.integers(0, len(a), (n_boot, len(a)))], 1)
        mb = np.median(b[rng.integers(0, len(b), (n_boot, len(b)))], 1)
        ratio = ma / mb
        alpha = (1 - confidence) / 2
        return tuple(float(x) for x in np.quantile(ratio, [alpha, 1 - alpha]))


def verdict(
    table: pd.DataFrame,
    group: str,
    *,
    training: str = "training",
    frontier: NoiseFrontier | None = None,
    interpolation: Sequence[str] = (),
    similarity: str = "max_similarity",
    distance: str | None = None,
    replica_quantile: float = 0.1,
    replica_max_ratio: float = 0.8,
    beats_fraction: float = 0.5,
    frontier_margin: float = 0.0,
    min_relative_quality: float = 0.9,
    min_errors: int = MIN_ERRORS,
    n_boot: int = 1000,
    confidence: float = 0.95,
    seed: int = 0,
) -> dict:
    """Classify ``group`` of a novelty table against the reference group ``training`` as
    "replicates", "interpolates", "novel and good" or "no better than noise" (module docstring),
    and return every number behind the call. ``distance``: the replica axis's column (default the
    first of ``DISTANCES`` the table has). ``warnings`` lists what weakens the call (few errors)."""
    if not 0 < replica_quantile < 0.5:
        raise ConfigError(f"replica_quantile: expected a value in (0, 0.5), got {replica_quantile}")
    rows, train = group_rows(table, group), group_rows(table, training)
    out: dict = {"group": group, "n_models": len(rows), "warnings": []}
    q = rows["quality"].to_numpy(float)
    out["median_quality"] = float(np.median(q))
    out["training_median_quality"] = float(np.median(train["quality"].to_numpy(float)))
    if _has(rows, "errors") and _has(train, "errors"):
        out["median_errors"] = float(rows["errors"].median())
        out["training_median_errors"] = float(train["errors"].median())
        if out["median_errors"] < min_errors:
            out["warnings"].append(f"median {out['median_errors']:.0f} test errors per model (< {min_errors}): "
                                   "error similarity rests on few examples")
    if "empty_shape" in rows:
        out["empty_shapes"] = int(rows["empty_shape"].sum())
        if out["empty_shapes"]:
            out["warnings"].append(f"{out['empty_shapes']} of {len(rows)} shapes are empty (no boundary): "
                                   "infinite distance, counted in the medians")
    has_sim = _has(rows, similarity) and _has(train, similarity)
    if has_sim:
        out["median_similarity"] = float(rows[similarity].median())
        out["training_nn_similarity"] = float(train[similarity].median())

    # replica axis
    if distance is None:
        distance = next((d for d in DISTANCES if _has(rows, d) and _has(train, d)), None)
    if _has(rows, distance) and _has(train, distance):
        d, dt = rows[distance].to_numpy(float), train[distance].to_numpy(float)
        spacing = float(np.median(dt))
        threshold = float(np.quantile(dt, replica_quantile))
        out.update(replica_measure=distance, median_min_distance=float(np.median(d)), training_spacing=spacing,
                   distance_ratio=float(np.median(d)) / max(spacing, 1e-300),
                   replica_quantile_ratio=threshold / max(spacing, 1e-300),
                   replica_threshold_ratio=min(threshold / max(spacing, 1e-300), replica_max_ratio),
                   distance_ratio_ci=_median_ratio_interval(d, dt, n_boot, confidence, seed))
        # the whole interval, not only the point: a group of fresh runs sits at ratio about 1, and
        # where the spacing barely varies (high dimensions) the quantile lies just below 1 too
        out["replicates"] = bool(out["distance_ratio_ci"][1] < out["replica_threshold_ratio"])
    elif has_sim:
        threshold = float(train[similarity].quantile(1 - replica_quantile))
        out.update(replica_measure=similarity, training_similarity_threshold=threshold)
        out["replicates"] = bool(out["median_similarity"] > threshold)
    else:
        raise ConfigError(f"table: needs a '{similarity}' column or one of {list(DISTANCES)} for groups "
                          f"'{group}' and '{training}'")

    # interpolation region
    region, inside = {}, []
    baselines = [group_rows(table, b) for b in interpolation]
    if baselines:
        for m in (similarity, "quality", distance):
            if _has(rows, m) and all(_has(b, m) for b in baselines):
                quartiles = np.array([np.quantile(b[m].to_numpy(float), [0.25, 0.75]) for b in baselines])
                lo, hi = float(quartiles[:, 0].min()), float(quartiles[:, 1].max())
                region[m] = (lo, hi)
                inside.append(lo <= float(rows[m].median()) <= hi)
    out["interpolation_region"] = region
    out["matches_interpolation"] = bool(inside) and all(inside)
    out["matched_baselines"] = list(interpolation) if out["matches_interpolation"] else []

    # beats-noise axis
    out["beats_noise"] = False
    if frontier is not None:
        if not _has(rows, similarity):
            raise ConfigError(f"frontier: the group needs a '{similarity}' column to compare with the noise frontier")
        bf = beyond_frontier(rows[similarity].to_numpy(float), q, frontier, margin=frontier_margin,
                             n_boot=n_boot, confidence=confidence, seed=seed)
        out["fraction_beyond_frontier"] = bf["fraction"]
        out["fraction_ci"] = (bf["ci_low"], bf["ci_high"])
        out["beats_noise"] = bool(bf["ci_low"] > beats_fraction)
    out["quality_ok"] = out["median_quality"] >= min_relative_quality * out["training_median_quality"]

    if out["matches_interpolation"]:
        out["verdict"] = "interpolates"
    elif out["replicates"]:
        out["verdict"] = "replicates"
    elif out["beats_noise"] and out["quality_ok"]:
        out["verdict"] = "novel and good"
    else:
        out["verdict"] = "no better than noise"
    out["thresholds"] = {
        "replica_quantile": replica_quantile, "replica_max_ratio": replica_max_ratio, "beats_fraction": beats_fraction, "frontier_margin": frontier_margin,
        "min_relative_quality": min_relative_quality, "min_errors": min_errors, "n_boot": n_boot,
        "confidence": confidence, "seed": seed,
    }
    return out


def rule_text(thresholds: Mapping | None = None) -> list[str]:
    """The verdict rule in words, with its thresholds, one sentence per line (for reports)."""
    t = {"replica_quantile": 0.1, "replica_max_ratio": 0.8, "beats_fraction": 0.5, "min_relative_quality": 0.9, "confidence": 0.95,
         "min_errors": MIN_ERRORS, **(thresholds or {})}
    q = t["replica_quantile"]
    return [
        ("Interpolates: on every measure (similarity, quality, distance) the group's median lies between the "
         "lowest first quartile and the highest third quartile of the interpolation baselines (average of k "
         "reference models for k = 2 to 16, per-parameter Gaussian)."),
        (f"Replicates: the group's median distance to its nearest reference model, with the upper end of its "
         f"{t['confidence']:.0%} bootstrap interval, is below the {q:.0%} quantile "
         "of the reference models' distances to their own nearest neighbours and below "
         f"{t['replica_max_ratio']:.2f} × their median (aligned L2 where the layout has "
         "neuron permutations; Chamfer distance for shapes). Models that generalise like fresh training runs "
         "sit at about that spacing (ratio about 1)."),
        (f"Novel and good: the lower end of the {t['confidence']:.0%} bootstrap interval of the fraction of models "
         f"above the noise-addition frontier exceeds {t['beats_fraction']:.2f}, and the median quality is at least "
         f"{t['min_relative_quality']:.2f} × the reference's."),
        "Otherwise: no better than noise. The tests run in this order.",
        f"A warning marks groups whose median model makes fewer than {t['min_errors']} test errors.",
    ]


def pooled_verdict(per_seed: Sequence[Mapping]) -> dict:
    """One verdict from the verdicts of several seeds (each a :func:`verdict` result): the most
    frequent call (ties go to the first in ``VERDICTS`` order, the order the rule tests them), marked unstable when the
    seeds disagree; the axes' numbers as medians over seeds, the frontier interval as the span of
    the seeds' intervals."""
    if not per_seed:
        raise ConfigError("per_seed: expected at least one seed's verdict")
    calls = [v["verdict"] for v in per_seed]
    counts = Counter(calls)
    top = max(counts.values())
    call = next(v for v in VERDICTS if counts.get(v) == top)
    out = {"verdict": call, "stable": len(counts) == 1, "seed_verdicts": calls,
           "seeds": [v.get("thresholds", {}).get("seed") for v in per_seed],
           "replicates": [bool(v["replicates"]) for v in per_seed],
           "beats_noise": [bool(v["beats_noise"]) for v in per_seed],
           "matches_interpolation": [bool(v["matches_interpolation"]) for v in per_seed]}
    for key in ("distance_ratio", "fraction_beyond_frontier", "median_quality", "training_median_quality",
                "median_similarity", "median_errors"):
        values = [v[key] for v in per_seed if key in v]
        if values:
            out[key] = float(np.median(values))
    cis = [v["fraction_ci"] for v in per_seed if "fraction_ci" in v]
    if cis:
        out["fraction_ci"] = (float(min(c[0] for c in cis)), float(max(c[1] for c in cis)))
    out["label"] = call if out["stable"] else f"{call} (unstable: {', '.join(calls)})"
    out["warnings"] = sorted({w for v in per_seed for w in v.get("warnings", [])})
    return out
