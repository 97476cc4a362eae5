"""Every baseline as a frontier, and the fraction of a group beyond all of them at once.

The audit's verdict measures a group against the noise frontier. A generator that claims to make
new, good models must also beat the other ways of making models without learning: the average of k
checkpoints over its k sweep, the per-parameter Gaussian and interpolation between two *aligned*
checkpoints over a λ sweep. Each sweep is a frontier of the same shape as the noise frontier (best
quality at a similarity or lower); a model is beyond every frontier when its quality beats the
highest of them at its similarity. The bootstrap resamples the group's models and, within each
sweep point, that baseline's models, as the audit's own interval does.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import pandas as pd
from torch import Tensor

from ..audit.novelty import ModelSet, NoiseFrontier, frontier_from_table, group_rows
from ..audit.run import AVERAGE_KS, Audit
from ..baselines import AlignedInterpolation
from ..errors import ConfigError
from ..space import WeightSpace

ALIGNED_LAMBDAS = (0.1, 0.2, 0.3, 0.4, 0.5)
ALIGNED_PREFIX = "aligned interpolation λ="


def aligned_interpolation_sets(evaluator, train: Tensor, space: WeightSpace, n: int, *, seed: int = 0,
                               lambdas=ALIGNED_LAMBDAS) -> list[ModelSet]:
    """``n`` aligned interpolations between random pairs of ``train`` per λ, evaluated."""
    gen = AlignedInterpolation(space=space)
    out = []
    for i, lam in enumerate(lambdas):
        gen.lam = float(lam)
        out.append(evaluator.model_set(f"{ALIGNED_PREFIX}{lam:g}", gen.fit(train).sample(n, seed + 200 + i)))
    return out


def baseline_frontiers(audit: Audit, aligned: Mapping[float, str] | None = None) -> dict[str, NoiseFrontier]:
    """One frontier per baseline family present in the audit's table: noise (σ sweep), average of k
    (k sweep), per-parameter Gaussian (one point: its median quality at every similarity) and, with
    ``aligned`` ({λ: group}), aligned interpolation."""
    table, sim = audit.table, audit.similarity
    groups = set(table["group"])
    out = {"noise": audit.frontier} if audit.frontier is not None else {}
    ks = {k: f"average of {k}" for k in AVERAGE_KS if f"average of {k}" in groups}
    if ks:
        out["average of k"] = frontier_from_table(table, ks, similarity=sim)
    if "per-parameter Gaussian" in groups:
        out["per-parameter Gaussian"] = frontier_from_table(table, {0.0: "per-parameter Gaussian"}, similarity=sim)
    if aligned:
        out["aligned interpolation"] = frontier_from_table(table, dict(aligned), similarity=sim)
    return out


def _highest(frontiers, similarity: np.ndarray, points=None) -> np.ndarray:
    """The highest frontier's quality at each similarity (``points``: resampled medians per frontier)."""
    bars = []
    for i, f in enumerate(frontiers):
        if points is not None:
            f = NoiseFrontier(f.sigmas, points[i][0], points[i][1], ())
        bars.append(f.quality_at(similarity))
    return np.max(bars, 0)


def beyond_every_frontier(similarity, quality, frontiers: Mapping[str, NoiseFrontier], *, n_boot: int = 1000,
                          confidence: float = 0.95, seed: int = 0) -> dict:
    """Fraction of models whose quality beats every frontier at their similarity, with a percentile
    bootstrap interval; also the fraction beyond each frontier alone (``per_frontier``)."""
    if not frontiers:
        raise ConfigError("frontiers: expected at least one baseline frontier")
    s, q = np.asarray(similarity, dtype=float).ravel(), np.asarray(quality, dtype=float).ravel()
    fs = list(frontiers.values())
    fraction = float(np.mean(q > _highest(fs, s)))
    rng = np.random.default_rng(seed)
    boot = np.empty(n_boot)
    for b in range(n_boot):
        i = rng.integers(0, len(s), len(s))
        points = [(np.array([np.median(x[rng.integers(0, len(x), len(x))]) for x, _ in f.samples]),
                   np.array([np.median(y[rng.integers(0, len(y), len(y))]) for _, y in f.samples])) for f in fs]
        boot[b] = np.mean(q[i] > _highest(fs, s[i], points))
    alpha = (1 - confidence) / 2
    low, high = np.quantile(boot, [alpha, 1 - alpha])
    return {"fraction": fraction, "ci_low": float(low), "ci_high": float(high), "n": len(s), "n_boot": n_boot,
            "seed": seed, "per_frontier": {k: float(np.mean(q > f.quality_at(s))) for k, f in frontiers.items()}}


def beyond_every_table(audit: Audit, groups, aligned: Mapping[float, str] | None = None, *, seed: int = 0,
                       n_boot: int = 1000) -> pd.DataFrame:
    """One row per group: the fraction beyond every baseline frontier with its interval, beyond each
    one alone, and the group's median similarity and quality."""
    frontiers = baseline_frontiers(audit, aligned)
    rows = []
    for g in groups:
        r = group_rows(audit.table, g)
        res = beyond_every_frontier(r[audit.similarity], r["quality"], frontiers, n_boot=n_boot, seed=seed)
        rows.append({"group": g, "beyond every frontier": res["fraction"], "CI low": res["ci_low"],
                     "CI high": res["ci_high"],
                     **{f"beyond {k}": v for k, v in res["per_frontier"].items()},
                     "median similarity": float(r[audit.similarity].median()),
                     "median quality": float(r["quality"].median())})
    return pd.DataFrame(rows)
