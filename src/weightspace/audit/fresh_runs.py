"""Can a group of models be told from fresh training runs? The test a generator that claims to make
new models must pass, measured against held-out runs (trained like the reference runs, never shown
to the generator) on the same audit, with targets fixed here before any generator is measured:

- the fraction beyond every baseline frontier (noise σ sweep, average of k, per-parameter Gaussian,
  aligned interpolation) at least ``beyond_ratio`` × the held-out runs' own, and the lower end of
  the ratio's bootstrap interval at least ``beyond_ratio_low`` (fresh runs themselves do not clear
  an absolute bar: they sit near the interpolation frontier where runs are not linearly connected);
- median quality within ``quality_points`` of theirs (accuracy: 0.01 is one point);
- median similarity to the reference (max error-IoU) at most ``similarity_excess`` above theirs;
- coverage (distinct nearest reference models per 100 models) at least ``coverage_ratio`` × theirs;
- a classifier on per-model audit features tells the group from them with AUC at most ``auc``, the
  upper end of its interval at most ``auc_high``.

The test is trusted only where its own control passes: one half of the held-out runs against the
other (:func:`split_half_control`). A criterion that control fails (too few held-out runs to show
that fresh runs are like fresh runs) cannot fail a group either: :func:`judged` calls the group
"inconclusive" on it, and the group passes only when every criterion and the control pass.

The bootstrap of the beyond-every ratio resamples both groups' models and, once per draw, every
baseline's models, so the two fractions are measured against the same resampled frontiers.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import pandas as pd

from .frontiers import baseline_frontiers, boot_fractions, highest_frontier, resampled_points
from .novelty import group_rows
from .two_sample import group_auc

TARGETS = {"beyond_ratio": 0.9, "beyond_ratio_low": 0.8, "quality_points": 0.01, "similarity_excess": 0.005,
           "coverage_ratio": 0.9, "auc": 0.6, "auc_high": 0.65}


def beyond_every_ratio(table: pd.DataFrame, similarity: str, sweeps: Mapping[str, Mapping[float, str]], group: str,
                       against: str, *, n_boot: int = 1000, confidence: float = 0.95, seed: int = 0) -> dict:
    """The fraction of ``group`` beyond every baseline frontier over ``against``'s, with a percentile
    bootstrap interval of the ratio (a draw where ``against`` has none beyond counts as infinite)."""
    fs = list(baseline_frontiers(table, similarity, sweeps).values())
    a, b = group_rows(table, group), group_rows(table, against)
    sa, qa = a[similarity].to_numpy(float), a["quality"].to_numpy(float)
    sb, qb = b[similarity].to_numpy(float), b["quality"].to_numpy(float)
    fa, fb = float(np.mean(qa > highest_frontier(fs, sa))), float(np.mean(qb > highest_frontier(fs, sb)))
    rng = np.random.default_rng(seed)
    ia, ib = rng.integers(0, len(sa), (n_boot, len(sa))), rng.integers(0, len(sb), (n_boot, len(sb)))
    points = resampled_points(fs, n_boot, rng)  # the same redrawn frontiers for both groups
    num, den = boot_fractions(sa, qa, fs, ia, points), boot_fractions(sb, qb, fs, ib, points)
    with np.errstate(divide="ignore", invalid="ignore"):
        ratios = np.where(den > 0, num / den, np.where(num > 0, np.inf, np.nan))
    alpha = (1 - confidence) / 2
    finite = ratios[~np.isnan(ratios)]
    # no interpolation between draws: an infinite ratio stays an end value, not a NaN
    low, high = np.quantile(finite, [alpha, 1 - alpha], method="inverted_cdf") if len(finite) else (np.nan, np.nan)
    ratio = fa / fb if fb > 0 else float("nan")
    return {"fraction": fa, "fraction_fresh": fb, "ratio": ratio, "ci_low": float(low), "ci_high": float(high)}


def against_fresh_runs(table: pd.DataFrame, similarity: str, sweeps: Mapping[str, Mapping[float, str]],
                       verdicts: Mapping[str, Mapping], group: str, fresh: str, *, seed: int = 0,
                       targets: Mapping[str, float] | None = None) -> dict:
    """Every number of the test for ``group`` against the held-out runs ``fresh`` (module docstring),
    each criterion's pass, and ``passes`` (all of them)."""
    t = {**TARGETS, **(targets or {})}
    v, h = verdicts[group], verdicts[fresh]
    ratio = beyond_every_ratio(table, similarity, sweeps, group, fresh, seed=seed)
    out = {"beyond_every": ratio["fraction"], "beyond_every_fresh": ratio["fraction_fresh"],
           "beyond_ratio": ratio["ratio"], "beyond_ratio_ci": (ratio["ci_low"], ratio["ci_high"]),
           "quality": v["median_quality"], "quality_fresh": h["median_quality"],
           "quality_difference": v["median_quality"] - h["median_quality"]}
    if "median_similarity" in v and "median_similarity" in h:
        out["similarity_excess"] = v["median_similarity"] - h["median_similarity"]
    if "coverage" in v and h.get("coverage"):
        out["coverage"], out["coverage_fresh"] = v["coverage"], h["coverage"]
        out["coverage_ratio"] = v["coverage"] / h["coverage"]
    if "two_sample" in v:
        out["auc"], out["auc_ci"] = v["two_sample"]["auc"], (v["two_sample"]["ci_low"], v["two_sample"]["ci_high"])
    checks = {
        "beyond every frontier": out["beyond_ratio"] >= t["beyond_ratio"] and ratio["ci_low"] >= t["beyond_ratio_low"],
        "quality": abs(out["quality_difference"]) <= t["quality_points"],
        "similarity": out.get("similarity_excess", np.nan) <= t["similarity_excess"],
        "coverage": out.get("coverage_ratio", np.nan) >= t["coverage_ratio"],
        "two-sample AUC": out.get("auc", np.nan) <= t["auc"] and out.get("auc_ci", (np.nan,) * 2)[1] <= t["auc_high"],
    }
    out["checks"] = {k: bool(ok) for k, ok in checks.items()}
    out["passes"] = all(out["checks"].values())
    out["targets"] = t
    return out


PASS, FAIL, INCONCLUSIVE = "pass", "fail", "inconclusive"


def judged(result: Mapping, control: Mapping | None) -> dict:
    """``result`` with its outcome read against the test's control: ``outcome`` "fail" where a
    criterion fails that the control passes, "pass" where every criterion and the control pass,
    else "inconclusive"; ``failed`` and ``inconclusive`` list the criteria."""
    out = dict(result)
    ok_control = dict(control["checks"]) if control is not None else {k: False for k in result["checks"]}
    out["failed"] = [k for k, ok in result["checks"].items() if not ok and ok_control.get(k, False)]
    out["inconclusive"] = [k for k, ok in result["checks"].items() if not ok_control.get(k, False)]
    if out["failed"]:
        out["outcome"] = FAIL
    elif result["passes"] and not out["inconclusive"]:
        out["outcome"] = PASS
    else:
        out["outcome"] = INCONCLUSIVE
    return out


HALF, OTHER_HALF = "held-out runs, one half", "held-out runs, other half"


def split_half_control(table: pd.DataFrame, similarity: str, sweeps: Mapping[str, Mapping[float, str]], fresh: str,
                       classify, *, seed: int = 0) -> dict | None:
    """The test's own positive control: one half of the held-out runs against the other half (fresh
    runs against fresh runs must pass). ``classify(table, group)``: the audit's verdict for a group of
    ``table``. None with fewer than 4 held-out runs."""
    rows = table["group"] == fresh
    if rows.sum() < 4:
        return None
    halves = table.copy()
    models = halves.loc[rows, "model"].to_numpy()
    halves.loc[rows, "group"] = np.where(models % 2 == 0, HALF, OTHER_HALF)
    verdicts = {g: dict(classify(halves, g)) for g in (HALF, OTHER_HALF)}
    verdicts[HALF]["two_sample"] = group_auc(halves, HALF, OTHER_HALF, seed=seed)
    return against_fresh_runs(halves, similarity, sweeps, verdicts, HALF, OTHER_HALF, seed=seed)
