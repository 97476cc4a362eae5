"""Can a classifier tell a group's models from fresh training runs? A two-sample test on the audit's
per-model features.

A generator whose samples are new models of the training distribution makes models that a classifier
cannot tell from held-out runs on what the audit measures of each model: its similarity to the
nearest reference model, its quality and its distance to the nearest reference model (over the
reference's spacing). The test fits a logistic regression on those standardised features to tell the
group from the held-out runs, scores every model out of fold (stratified k-fold), and reports the
area under the ROC curve of those scores (0.5: indistinguishable) with a bootstrap interval over the
models.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from scipy.stats import rankdata
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import roc_auc_score
from sklearn.model_selection import StratifiedKFold
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from ..errors import ConfigError

FEATURES = ("max_similarity", "chamfer_similarity", "quality", "aligned_min_l2", "min_l2", "min_chamfer")


def features(table: pd.DataFrame, group: str) -> pd.DataFrame:
    """The group's per-model features the test reads: similarity, quality and the nearest distance
    (the first of aligned L2, L2, Chamfer the table has), the columns every group of the table has."""
    rows = table[table["group"] == group]
    distance = next((d for d in ("aligned_min_l2", "min_l2", "min_chamfer") if d in rows and rows[d].notna().all()),
                    None)
    cols = [c for c in ("max_similarity", "chamfer_similarity", "quality") if c in rows and rows[c].notna().all()]
    return rows[[*cols, *([distance] if distance else [])]]


def two_sample_auc(a: np.ndarray, b: np.ndarray, *, folds: int = 5, n_boot: int = 1000, confidence: float = 0.95,
                   seed: int = 0) -> dict:
    """Out-of-fold AUC of a logistic regression telling the rows of ``a`` ``[n_a, d]`` from those of
    ``b`` ``[n_b, d]``, with a percentile bootstrap interval over the models' scores."""
    a, b = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    if a.ndim != 2 or b.ndim != 2 or a.shape[1] != b.shape[1] or a.shape[1] == 0:
        raise ConfigError(f"two_sample_auc: expected two [n, d] feature arrays with one d, got {a.shape} and {b.shape}")
    k = min(int(folds), len(a), len(b))
    if k < 2:
        raise ConfigError(f"two_sample_auc: needs at least 2 models per group, got {len(a)} and {len(b)}")
    x = np.concatenate([a, b])
    x = np.where(np.isfinite(x), x, np.nan)
    x = np.where(np.isnan(x), np.nanmin(np.where(np.isnan(x), np.inf, x), 0) - 1.0, x)  # -inf shapes: the worst
    y = np.r_[np.ones(len(a)), np.zeros(len(b))]
    scores = np.empty(len(y))
    for train, test in StratifiedKFold(k, shuffle=True, random_state=seed).split(x, y):
        model = make_pipeline(StandardScaler(), LogisticRegression(max_iter=1000)).fit(x[train], y[train])
        scores[test] = model.predict_proba(x[test])[:, 1]
    auc = float(roc_auc_score(y, scores))
    rng = np.random.default_rng(seed)
    ia, ib = np.flatnonzero(y == 1), np.flatnonzero(y == 0)
    boot = rank_auc(scores[rng.choice(ia, (n_boot, len(ia)))], scores[rng.choice(ib, (n_boot, len(ib)))])
    alpha = (1 - confidence) / 2
    low, high = np.quantile(boot, [alpha, 1 - alpha])
    return {"auc": auc, "ci_low": float(low), "ci_high": float(high), "n": len(a), "n_reference": len(b),
            "folds": k, "features": a.shape[1], "seed": seed}


def rank_auc(pos: np.ndarray, neg: np.ndarray) -> np.ndarray:
    """ROC AUC of each row: ``pos [B, n1]`` scores of positives against ``neg [B, n0]`` (Mann–Whitney U
    over ranks, ties averaged), as ``roc_auc_score`` gives it, for B resamples at once."""
    ranks = rankdata(np.concatenate([pos, neg], axis=1), axis=1)
    n1, n0 = pos.shape[1], neg.shape[1]
    return (ranks[:, :n1].sum(1) - n1 * (n1 + 1) / 2) / (n1 * n0)


def group_auc(table: pd.DataFrame, group: str, against: str, *, seed: int = 0) -> dict:
    """:func:`two_sample_auc` of ``group`` against ``against`` (held-out runs) on the features both have."""
    fa, fb = features(table, group), features(table, against)
    common = [c for c in fa.columns if c in fb.columns]
    return {**two_sample_auc(fa[common].to_numpy(), fb[common].to_numpy(), seed=seed), "columns": common}
