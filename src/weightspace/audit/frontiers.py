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

from ..errors import ConfigError
from .novelty import NoiseFrontier, frontier_from_table, group_rows


def baseline_frontiers(table: pd.DataFrame, similarity: str, sweeps: Mapping[str, Mapping[float, str]]
                       ) -> dict[str, NoiseFrontier]:
    """One frontier per baseline sweep (``{name: {sweep value: group}}``, e.g. noise over σ, average
    of k over k, aligned interpolation over λ; a single group is a one-point frontier: its median
    quality at every similarity)."""
    return {name: frontier_from_table(table, dict(groups), similarity=similarity)
            for name, groups in sweeps.items() if groups}


def highest_frontier(frontiers, similarity: np.ndarray, points=None) -> np.ndarray:
    """The highest frontier's quality at each similarity (``points``: resampled medians per frontier)."""
    bars = []
    for i, f in enumerate(frontiers):
        if points is not None:
            f = NoiseFrontier(f.sigmas, points[i][0], points[i][1], ())
        bars.append(f.quality_at(similarity))
    return np.max(bars, 0)


def resampled_points(frontiers, n_boot: int, rng: np.random.Generator) -> list[tuple[np.ndarray, np.ndarray]]:
    """Per frontier, ``n_boot`` resampled medians of every sweep point: ``([n_boot, S], [n_boot, S])``."""
    def medians(values: np.ndarray) -> np.ndarray:
        return np.median(values[rng.integers(0, len(values), (n_boot, len(values)))], 1)

    return [(np.stack([medians(x) for x, _ in f.samples], 1), np.stack([medians(y) for _, y in f.samples], 1))
            for f in frontiers]


def boot_fractions(similarity: np.ndarray, quality: np.ndarray, frontiers, idx: np.ndarray,
                   points: list[tuple[np.ndarray, np.ndarray]]) -> np.ndarray:
    """Per bootstrap draw ``b``: the fraction of the models ``idx[b]`` beyond every frontier, each
    frontier at its draw ``b`` of :func:`resampled_points`."""
    return np.array([np.mean(quality[i] > highest_frontier(frontiers, similarity[i],
                                                           [(sim[b], qual[b]) for sim, qual in points]))
                     for b, i in enumerate(idx)])


def beyond_every_frontier(similarity, quality, frontiers: Mapping[str, NoiseFrontier], *, n_boot: int = 1000,
                          confidence: float = 0.95, seed: int = 0) -> dict:
    """Fraction of models whose quality beats every frontier at their similarity, with a percentile
    bootstrap interval; also the fraction beyond each frontier alone (``per_frontier``)."""
    if not frontiers:
        raise ConfigError("frontiers: expected at least one baseline frontier")
    s, q = np.asarray(similarity, dtype=float).ravel(), np.asarray(quality, dtype=float).ravel()
    fs = list(frontiers.values())
    fraction = float(np.mean(q > highest_frontier(fs, s)))
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, len(s), (n_boot, len(s)))
    points = resampled_points(fs, n_boot, rng)
    boot = boot_fractions(s, q, fs, idx, points)
    alpha = (1 - confidence) / 2
    low, high = np.quantile(boot, [alpha, 1 - alpha])
    return {"fraction": fraction, "ci_low": float(low), "ci_high": float(high), "n": len(s), "n_boot": n_boot,
            "seed": seed, "per_frontier": {k: float(np.mean(q > f.quality_at(s))) for k, f in frontiers.items()}}


def beyond_every_table(table: pd.DataFrame, similarity: str, sweeps: Mapping[str, Mapping[float, str]], groups, *,
                       seed: int = 0, n_boot: int = 1000) -> pd.DataFrame:
    """One row per group: the fraction beyond every baseline frontier with its interval, beyond each
    one alone, and the group's median similarity and quality."""
    frontiers = baseline_frontiers(table, similarity, sweeps)
    rows = []
    for g in groups:
        r = group_rows(table, g)
        res = beyond_every_frontier(r[similarity], r["quality"], frontiers, n_boot=n_boot, seed=seed)
        rows.append({"group": g, "beyond every frontier": res["fraction"], "CI low": res["ci_low"],
                     "CI high": res["ci_high"],
                     **{f"beyond {k}": v for k, v in res["per_frontier"].items()},
                     "median similarity": float(r[similarity].median()),
                     "median quality": float(r["quality"].median())})
    return pd.DataFrame(rows)
