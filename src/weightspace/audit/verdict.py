"""The verdict on a group of models, on the paper's two axes, checked against controls, pooled over seeds.

A group is measured on three axes, each against the reference set (the models the paper compares
with):

- **interpolation**: the group's medians lie, on every measure (similarity, quality, distance), inside
  the interquartile box of one family of interpolation baselines: averages of k reference models
  over a k sweep with the per-parameter Gaussian (the paper's), or aligned midpoints of two
  reference models (Git Re-Basin matching, then the average).
- **replica**: the group's median distance to its nearest reference model, with the upper end of its
  bootstrap interval, lies below the replica bar: the ``replica_quantile`` quantile of the null
  distances, at most ``replica_max_ratio`` × their median. The null is what a new model's distance
  looks like: held-out runs' distances to the reference where the setting has them, else the
  reference models' distances to each other (a fresh run and a reference model are exchangeable).
  The distance is aligned L2 where the layout has neuron permutations, plain L2 otherwise, Chamfer
  for shapes; error similarity when only predictions exist. Ratios are to the reference's median
  nearest-neighbour spacing (the paper's unit).
- **noise**: the fraction of the group's models above the noise-addition frontier (better quality
  than noise buys at the same or a lower similarity), with a bootstrap interval; the group beats
  noise when the interval's lower end exceeds ``beats_fraction``. **Quality** is good when the
  group's median is at least the reference's median minus ``quality_tolerance`` robust standard
  deviations of the reference's qualities (IQR / 1.349): a difference, so it reads negative qualities
  (minus Chamfer) the same way, in units of the reference's own spread.

The call, in this order: interpolates, replicates, then novel and good (beats noise and good) or no
better than noise. Interpolation comes first because the replica axis alone cannot tell a copy from
a blend (an aligned midpoint sits at about 0.6 of the spacing). A rule earns trust only where it
gets known answers right: :func:`check_axes` runs it on control groups whose answer is fixed in
advance (copies, midpoints, strong noise, held-out runs) and records, per axis, the controls it
gets wrong; :func:`verdict` with ``axes=`` (or :func:`with_axes`) then says "inconclusive" wherever
a call would read an axis on the side where a control of another answer reads the same (a group
inside the interpolation region where the strong-noise control lies too), with the measured reason.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping, Sequence

import numpy as np
import pandas as pd

from ..errors import ConfigError
from .novelty import NoiseFrontier, beyond_frontier, group_rows

INTERPOLATES, REPLICATES, NO_BETTER, NOVEL = "interpolates", "replicates", "no better than noise", "novel and good"
INCONCLUSIVE, NO_MAJORITY = "inconclusive", "no majority"
VERDICTS = (INTERPOLATES, REPLICATES, NO_BETTER, NOVEL)  # the order they are tested
DISTANCES = ("aligned_min_l2", "min_l2", "min_chamfer")  # the replica axis's measure, first present wins
NEAREST = {"aligned_min_l2": "nearest_training_aligned", "min_l2": "nearest_training_l2",
           "min_chamfer": "nearest_training_chamfer", "max_similarity": "nearest_training"}
COVERAGE_MODELS = 100
MIN_ERRORS = 100  # below this many test errors per model, error-IoU rests on a handful of examples
AXES = ("interpolation", "replica", "noise")
PASSES, FAILS, UNCHECKED = "passes", "fails", "unchecked"


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


def _bar_interval(null: np.ndarray, spacing: float, q: float, cap: float, n_boot: int, confidence: float,
                  seed: int) -> tuple[float, float]:
    """Bootstrap interval of the replica bar (the null's ``q`` quantile, at most ``cap`` × its median)."""
    rng = np.random.default_rng(seed + 1)
    boot = null[rng.integers(0, len(null), (n_boot, len(null)))]
    with np.errstate(divide="ignore", invalid="ignore"):
        bars = np.minimum(np.quantile(boot, q, axis=1), cap * np.median(boot, 1)) / spacing
    alpha = (1 - confidence) / 2
    return tuple(float(x) for x in np.quantile(bars, [alpha, 1 - alpha]))


def robust_sd(values: np.ndarray) -> float:
    """IQR / 1.349: the standard deviation of a normal sample with this interquartile range."""
    finite = values[np.isfinite(values)]
    if len(finite) < 2:
        return 0.0
    q1, q3 = np.quantile(finite, [0.25, 0.75])
    return float((q3 - q1) / 1.349)


def coverage(nearest: np.ndarray) -> float:
    """Distinct nearest reference models per 100 models (of the first ``COVERAGE_MODELS``): a generator
    that copies a few checkpoints covers few of them, fresh runs many."""
    first = np.asarray(nearest)[:COVERAGE_MODELS]
    return 100.0 * len(np.unique(first)) / max(len(first), 1)


def _families(interpolation: Sequence[str] | Mapping[str, Sequence[str]]) -> dict[str, list[str]]:
    if isinstance(interpolation, Mapping):
        return {k: list(v) for k, v in interpolation.items() if len(v)}
    return {"interpolation baselines": list(interpolation)} if len(interpolation) else {}


def verdict(
    table: pd.DataFrame,
    group: str,
    *,
    training: str = "training",
    frontier: NoiseFrontier | None = None,
    interpolation: Sequence[str] | Mapping[str, Sequence[str]] = (),
    similarity: str = "max_similarity",
    distance: str | None = None,
    null: str | None = None,
    axes: Mapping[str, Mapping] | None = None,
    replica_quantile: float = 0.1,
    replica_max_ratio: float = 0.8,
    beats_fraction: float = 0.5,
    frontier_margin: float = 0.0,
    quality_tolerance: float = 1.0,
    min_errors: int = MIN_ERRORS,
    n_boot: int = 1000,
    confidence: float = 0.95,
    seed: int = 0,
) -> dict:
    """Classify ``group`` of a novelty table against the reference group ``training`` and return
    every number behind the call (module docstring). ``interpolation``: baseline groups, as one
    family (a list) or ``{family: [groups]}``; ``null``: the group whose distances to the reference
    are the replica axis's null (default: the reference's own spacing); ``distance``: the replica
    axis's column (default the first of ``DISTANCES`` the table has); ``axes``: each axis's check on
    the setting's controls (:func:`check_axes`), so that a call resting on an axis that failed them
    says "inconclusive". ``warnings`` lists what weakens the call (few errors, empty shapes)."""
    if not 0 < replica_quantile < 0.5:
        raise ConfigError(f"replica_quantile: expected a value in (0, 0.5), got {replica_quantile}")
    if not quality_tolerance >= 0:
        raise ConfigError(f"quality_tolerance: expected a number >= 0, got {quality_tolerance}")
    rows, train = group_rows(table, group), group_rows(table, training)
    out: dict = {"group": group, "n_models": len(rows), "warnings": []}
    q = rows["quality"].to_numpy(float)
    q_ref = train["quality"].to_numpy(float)
    out["median_quality"] = float(np.median(q))
    out["training_median_quality"] = float(np.median(q_ref))
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
    null_rows = group_rows(table, null) if null is not None else train
    unmeasured = distance is None and next((d for d in DISTANCES if _has(train, d)), None)
    out["replica_measured"] = not unmeasured
    if unmeasured:  # the reference has weights, this group only predictions: no distance to it
        out.update(replica_measure="not measured", replicates=False)
    elif _has(rows, distance) and _has(train, distance) and _has(null_rows, distance):
        d, dt, d0 = (r[distance].to_numpy(float) for r in (rows, train, null_rows))
        spacing = max(float(np.median(dt)), 1e-300)
        quantile = float(np.quantile(d0, replica_quantile)) / spacing
        bar = min(quantile, replica_max_ratio * float(np.median(d0)) / spacing)
        out.update(replica_measure=distance, median_min_distance=float(np.median(d)), training_spacing=spacing,
                   distance_ratio=float(np.median(d)) / spacing, replica_quantile_ratio=quantile,
                   replica_threshold_ratio=bar,
                   replica_null=null or training,
                   replica_threshold_ci=_bar_interval(d0, spacing, replica_quantile, replica_max_ratio, n_boot,
                                                      confidence, seed),
                   distance_ratio_ci=_median_ratio_interval(d, dt, n_boot, confidence, seed))
        # the whole interval, not only the point: a group of fresh runs sits at ratio about 1, and
        # where the spacing barely varies (high dimensions) the quantile lies just below 1 too
        out["replicates"] = bool(out["distance_ratio_ci"][1] < bar)
    elif has_sim:
        threshold = float(group_rows(table, null or training)[similarity].quantile(1 - replica_quantile))
        out.update(replica_measure=similarity, training_similarity_threshold=threshold)
        out["replicates"] = bool(out["median_similarity"] > threshold)
    else:
        raise ConfigError(f"table: needs a '{similarity}' column or one of {list(DISTANCES)} for groups "
                          f"'{group}' and '{training}'")

    nearest = NEAREST.get(out["replica_measure"], "nearest_training")  # predictions only: by error IoU
    if _has(rows, nearest):
        out["coverage"] = coverage(rows[nearest].to_numpy())

    # interpolation: inside one family's box on every measure
    regions, matched = {}, []
    for family, names in _families(interpolation).items():
        baselines = [group_rows(table, b) for b in names]
        region, inside = {}, []
        for m in (similarity, "quality", distance):
            if _has(rows, m) and all(_has(b, m) for b in baselines):
                quartiles = np.array([np.quantile(b[m].to_numpy(float), [0.25, 0.75]) for b in baselines])
                lo, hi = float(quartiles[:, 0].min()), float(quartiles[:, 1].max())
                region[m] = (lo, hi)
                inside.append(lo <= float(rows[m].median()) <= hi)
        regions[family] = region
        if inside and all(inside):
            matched.append(family)
    out["interpolation_regions"] = regions
    out["interpolation_region"] = next(iter(regions.values()), {})
    out["matches_interpolation"] = bool(matched)
    out["matched_baselines"] = matched

    # noise axis and quality
    out["beats_noise"] = False
    if frontier is not None:
        if not _has(rows, similarity):
            raise ConfigError(f"frontier: the group needs a '{similarity}' column to compare with the noise frontier")
        bf = beyond_frontier(rows[similarity].to_numpy(float), q, frontier, margin=frontier_margin,
                             n_boot=n_boot, confidence=confidence, seed=seed)
        out["fraction_beyond_frontier"] = bf["fraction"]
        out["fraction_ci"] = (bf["ci_low"], bf["ci_high"])
        out["beats_noise"] = bool(bf["ci_low"] > beats_fraction)
    spread = robust_sd(q_ref)
    out["quality_floor"] = out["training_median_quality"] - quality_tolerance * spread
    out["quality_ok"] = bool(out["median_quality"] >= out["quality_floor"])

    out["verdict"], out["reason"] = _call(out, axes)
    out["thresholds"] = {
        "replica_quantile": replica_quantile, "replica_max_ratio": replica_max_ratio, "beats_fraction": beats_fraction,
        "frontier_margin": frontier_margin, "quality_tolerance": quality_tolerance, "quality_spread": spread,
        "min_errors": min_errors, "n_boot": n_boot, "confidence": confidence, "seed": seed,
    }
    return out


def _call(v: Mapping, axes: Mapping[str, Mapping] | None) -> tuple[str, str]:
    """The call in the rule's order. Where a control of the opposite answer gets the same answer on
    the axis the call reads (a strong-noise control inside the interpolation region, a copy not
    flagged as a replica, held-out runs that do not beat noise), the call is inconclusive."""
    axes = axes or {}
    flags = (("interpolation", v["matches_interpolation"], INTERPOLATES), ("replica", v["replicates"], REPLICATES),
             ("noise", v["beats_noise"] and v["quality_ok"], NOVEL))
    for axis, flag, call in flags:
        a = axes.get(axis, {})
        confused = a.get("false_positives") if flag else a.get("false_negatives")
        if axis == "interpolation" and flag:  # only controls inside the same family's box confuse the call
            confused = [g for g in confused or () if set(a["families"].get(g, ())) & set(v["matched_baselines"])]
        if confused:
            said = "like" if flag else "unlike"
            return INCONCLUSIVE, (f"{axis} axis: this group is {said} '{call}', and so are controls whose answer "
                                  f"differs: {'; '.join(a['details'][g] for g in confused)}")
        if axis == "noise" and flag and not v.get("replica_measured", True):
            return INCONCLUSIVE, ("replica axis not measured (test predictions only, no weights): the group beats "
                                  "noise and is good, but a copy of a reference model would too")
        if flag or axis == "noise":
            return call if flag else NO_BETTER, ""
    raise AssertionError("unreachable")  # the noise axis always returns


def with_axes(v: Mapping, axes: Mapping[str, Mapping]) -> dict:
    """``v`` (a :func:`verdict` result) with its call redone under the axes' checks on the controls."""
    out = dict(v)
    out["verdict"], out["reason"] = _call(v, axes)
    return out


# ---------------------------------------------------------------- controls
def check_axes(verdicts: Mapping[str, Mapping], expected: Mapping[str, str]) -> dict[str, dict]:
    """Does each axis separate the controls whose answer is known (``expected``: control group →
    verdict; ``verdicts``: their :func:`verdict` results)? Per axis: ``status`` ("passes", "fails",
    or "unchecked" when no control answers yes, or none no, on it), ``false_positives`` (controls
    flagged that should not be), ``false_negatives`` (controls not flagged that should be), their
    measured ``details`` and a ``reason``. Only the controls an axis decides are read: the
    interpolation test decides every control; the replica test those the interpolation test
    passes on; the noise test only held-out runs (new and good) and strong noise."""
    checks = {
        "interpolation": (lambda v: v["matches_interpolation"], lambda e: e == INTERPOLATES, lambda e: True),
        "replica": (lambda v: v["replicates"], lambda e: e == REPLICATES, lambda e: e in (NO_BETTER, NOVEL)),
        "noise": (lambda v: v["beats_noise"] and v["quality_ok"], lambda e: e == NOVEL, lambda e: e == NO_BETTER),
    }
    out = {}
    for axis, (flag, positive, counted) in checks.items():
        pos = [g for g, e in expected.items() if positive(e) and g in verdicts]
        neg = [g for g, e in expected.items() if not positive(e) and counted(e) and g in verdicts]
        fn = [g for g in pos if not flag(verdicts[g])]
        fp = [g for g in neg if flag(verdicts[g])]
        details = {g: _why(axis, g, verdicts[g], expected[g]) for g in [*fn, *fp]}
        if fn or fp:
            status, reason = FAILS, "; ".join(details.values())
        elif not pos or not neg:
            status = UNCHECKED
            reason = f"no control whose answer is {'yes' if not pos else 'no'} on this axis in this setting"
        else:
            status, reason = PASSES, f"separates {', '.join(pos)} from {', '.join(neg)}"
        out[axis] = {"status": status, "reason": reason, "false_positives": fp, "false_negatives": fn,
                     "details": details}
        if axis == "interpolation":
            out[axis]["families"] = {g: list(verdicts[g]["matched_baselines"]) for g in fp}
    return out


def _why(axis: str, group: str, v: Mapping, expected: str) -> str:
    if axis == "replica":
        ci = v.get("distance_ratio_ci", (np.nan, np.nan))
        return (f"{group} (expected {expected}) at {v.get('distance_ratio', float('nan')):.3g} × the spacing "
                f"[{ci[0]:.3g}, {ci[1]:.3g}] against the bar {v.get('replica_threshold_ratio', float('nan')):.3g}")
    if axis == "interpolation":
        said = "inside" if v["matches_interpolation"] else "outside"
        where = f" ({', '.join(v['matched_baselines'])})" if v["matched_baselines"] else ""
        return f"{group} (expected {expected}) lies {said} the interpolation region{where}"
    ci = v.get("fraction_ci", (np.nan, np.nan))
    return (f"{group} (expected {expected}): {v.get('fraction_beyond_frontier', float('nan')):.2f} beyond the noise "
            f"frontier [{ci[0]:.2f}, {ci[1]:.2f}], median quality {v['median_quality']:.4g} against the floor "
            f"{v['quality_floor']:.4g}")


def control_rows(verdicts: Mapping[str, Mapping], expected: Mapping[str, str]) -> list[dict]:
    """One row per control: expected, got (the call with the axes' checks applied), pass, reason."""
    rows = []
    for g, e in expected.items():
        if g not in verdicts:
            continue
        v = verdicts[g]
        got = v["verdict"]
        rows.append({"control": g, "expected": e, "got": got,
                     "result": "pass" if got == e else ("inconclusive" if got == INCONCLUSIVE else "FAIL"),
                     "reason": v.get("reason", "")})
    return rows


def rule_text(thresholds: Mapping | None = None) -> list[str]:
    """The verdict rule in words, with its thresholds, one sentence per line (for reports)."""
    t = {"replica_quantile": 0.1, "replica_max_ratio": 0.8, "beats_fraction": 0.5, "quality_tolerance": 1.0,
         "confidence": 0.95, "min_errors": MIN_ERRORS, **(thresholds or {})}
    q = t["replica_quantile"]
    return [
        ("Interpolates: on every measure (similarity, quality, distance) the group's median lies inside the "
         "interquartile box of one family of interpolation baselines: averages of k reference models for k = 2 to "
         "16 with the per-parameter Gaussian, or aligned midpoints of two reference models."),
        (f"Replicates: the group's median distance to its nearest reference model, with the upper end of its "
         f"{t['confidence']:.0%} bootstrap interval, is below the {q:.0%} quantile of the null distances and below "
         f"{t['replica_max_ratio']:.2f} × their median. The null: held-out runs' distances to the reference where "
         "the setting has them, else the reference models' distances to their own nearest neighbours (aligned L2 "
         "where the layout has neuron permutations; Chamfer distance for shapes)."),
        (f"Novel and good: the lower end of the {t['confidence']:.0%} bootstrap interval of the fraction of models "
         f"above the noise-addition frontier exceeds {t['beats_fraction']:.2f}, and the median quality is at least "
         f"the reference's median minus {t['quality_tolerance']:g} robust standard deviation(s) of the reference's "
         "qualities (IQR / 1.349)."),
        "Otherwise: no better than noise. The tests run in this order.",
        ("Controls: every setting and seed also audits groups whose answer is fixed in code before any generator "
         "runs (exact copies and copies with noise at 1% of the spacing: replicates; aligned midpoints and averages "
         "of 4: interpolates; noise where the median quality has fallen half-way to chance: no better than noise; "
         "held-out runs: novel and good). An axis that gets one of them wrong is inconclusive in that setting, and "
         "so is every call that rests on it."),
        f"A warning marks groups whose median model makes fewer than {t['min_errors']} test errors.",
    ]


def pooled_verdict(per_seed: Sequence[Mapping]) -> dict:
    """One verdict from the verdicts of several seeds (each a :func:`verdict` result): the call that
    more than half of the seeds make; with none, "no majority (a / b / c)", which agrees with no
    paper call. ``stable``: every seed agrees. The axes' numbers are medians over seeds; the frontier
    interval is the range spanned by the seeds' intervals (``fraction_ci_range``)."""
    if not per_seed:
        raise ConfigError("per_seed: expected at least one seed's verdict")
    calls = [v["verdict"] for v in per_seed]
    top, count = Counter(calls).most_common(1)[0]
    majority = 2 * count > len(calls)
    out = {"verdict": top if majority else NO_MAJORITY, "stable": len(set(calls)) == 1, "seed_verdicts": calls,
           "agreeing_seeds": count if majority else 0,
           "seeds": [v.get("thresholds", {}).get("seed") for v in per_seed],
           "replicates": [bool(v["replicates"]) for v in per_seed],
           "beats_noise": [bool(v["beats_noise"]) for v in per_seed],
           "matches_interpolation": [bool(v["matches_interpolation"]) for v in per_seed],
           "quality_ok": [bool(v.get("quality_ok", False)) for v in per_seed]}
    for key in ("distance_ratio", "replica_threshold_ratio", "fraction_beyond_frontier", "median_quality",
                "training_median_quality", "quality_floor", "median_similarity", "median_errors", "coverage"):
        values = [v[key] for v in per_seed if key in v]
        if values:
            out[key] = float(np.median(values))
    aucs = [v["two_sample"]["auc"] for v in per_seed if "two_sample" in v]
    if aucs:
        out["two_sample_auc"] = float(np.median(aucs))
    cis = [v["fraction_ci"] for v in per_seed if "fraction_ci" in v]
    if cis:
        out["fraction_ci_range"] = (float(min(c[0] for c in cis)), float(max(c[1] for c in cis)))
    if majority:
        out["label"] = top if out["stable"] else f"{top} ({count}/{len(calls)} seeds)"
    else:
        out["label"] = f"{NO_MAJORITY} ({' / '.join(calls)})"
    out["reasons"] = sorted({v["reason"] for v in per_seed if v.get("reason")})
    out["warnings"] = sorted({w for v in per_seed for w in v.get("warnings", [])})
    return out
