"""Novelty against quality: one tidy row per model and the noise-addition frontier (the verdict on
them is in :mod:`weightspace.audit.verdict`).

The study's question for a group of generated models: are they replicas of training checkpoints,
interpolations of them (as good as averaging checkpoints or sampling each parameter from the
training population), or new and good (better quality than adding noise to a checkpoint buys at
the same distance from the training set)?
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
import torch
from torch import Tensor

from ..align import align_to, aligned_l2, refine_nearest, symmetry_margin
from ..errors import ConfigError, LayoutError
from ..parallel import RayBackend
from ..space import WeightSpace
from .similarity import (
    chamfer_distance,
    error_iou,
    l2_distances,
    mask_self,
    max_similarity_to_training,
    min_distance_to_training,
)


# ---------------------------------------------------------------- the per-model table
@dataclass(frozen=True)
class ModelSet:
    """One group of models to audit (training checkpoints, generated samples, a baseline).

    ``quality``: ``[n]`` (test accuracy, or a shape score; higher is better). Optional views of the
    same n models: ``weights`` ``[n, P]``, ``predictions`` ``LongTensor[n, examples]`` (test-set
    labels), ``points`` (point sets for Chamfer distance). ``is_training`` marks the set everything
    is compared with; ``training_index`` ``LongTensor[n]`` gives, for a subset of the training set,
    each model's own training index (-1: none) so it is not compared with itself.
    """

    name: str
    quality: Tensor
    weights: Tensor | None = None
    predictions: Tensor | None = None
    points: Sequence[Tensor] | Tensor | None = None
    is_training: bool = False
    training_index: Tensor | None = None

    def __post_init__(self) -> None:
        q = torch.as_tensor(self.quality)
        object.__setattr__(self, "quality", q)
        if q.dim() != 1:
            raise LayoutError(f"ModelSet '{self.name}': quality must be a 1-D tensor [n], got {tuple(q.shape)}")
        for attr in ("weights", "predictions", "points", "training_index"):
            v = getattr(self, attr)
            if v is not None and len(v) != len(q):
                raise LayoutError(
                    f"ModelSet '{self.name}': {attr} has {len(v)} models, quality has {len(q)}; they must agree"
                )

    def __len__(self) -> int:
        return len(self.quality)

    def self_exclusion(self) -> bool | Tensor:
        """The ``exclude_self`` argument for comparing this set with the training set."""
        if self.is_training:
            return True
        return False if self.training_index is None else self.training_index


def _as_sets(groups: Sequence[ModelSet] | Mapping[str, Mapping | ModelSet]) -> list[ModelSet]:
    if isinstance(groups, Mapping):
        sets = [g if isinstance(g, ModelSet) else ModelSet(name=name, **g) for name, g in groups.items()]
    else:
        sets = list(groups)
    training = [s for s in sets if s.is_training]
    if len(training) != 1:
        raise ConfigError(
            f"groups: expected exactly one training set (is_training=True), got {[s.name for s in training]}"
        )
    names = [s.name for s in sets]
    if len(set(names)) != len(names):
        raise ConfigError(f"groups: names must be unique, got {names}")
    return sets


def novelty_table(
    groups: Sequence[ModelSet] | Mapping[str, Mapping | ModelSet],
    labels: Tensor | None = None,
    *,
    space: WeightSpace | None = None,
    aligned: str | None = None,
    reference: Tensor | None = None,
    candidates: int = 8,
    aligned_groups: Sequence[str] | None = None,
    empty_union: float = 1.0,
    progress: bool = False,
    backend: RayBackend | None = None,
) -> pd.DataFrame:
    """One row per model of every group: how good it is and how close to the training set.

    ``groups``: ``ModelSet``s (or ``{name: dict of ModelSet fields}``), exactly one with
    ``is_training=True``. Columns: ``group``, ``model`` (index in its group), ``is_training``,
    ``quality``; with predictions and ``labels``: ``errors`` (test errors), ``max_similarity`` (error
    IoU) and ``nearest_training``; with weights: ``min_l2`` and ``nearest_training_l2``; with
    ``aligned="fast"`` (everything aligned once to ``reference``, default the first training model),
    ``"nearest"`` (the fast path, then exact per-pair matching with each model's ``candidates``
    nearest by it) or ``"exact"`` (every pair) and a ``space``: ``aligned_min_l2`` and
    ``nearest_training_aligned`` (for the training set and ``aligned_groups`` only when given, NaN for
    the others); with points: ``min_chamfer`` (clouds
    normalised to zero mean and unit std; ``inf`` for an empty shape), ``nearest_training_chamfer``
    and ``empty_shape``. The training set's rows never compare a model with itself.
    Subsample rows afterwards (``df.groupby("group").sample(100, random_state=0)``), not before, so
    every model is measured against the whole training set. With a
    :class:`~weightspace.parallel.RayBackend`, error IoU, exact aligned L2 and Chamfer distances run in
    blocks as Ray tasks.
    """
    sets = _as_sets(groups)
    train = next(s for s in sets if s.is_training)
    if aligned not in (None, "fast", "nearest", "exact"):
        raise ConfigError(f"aligned: expected None, 'fast', 'nearest' or 'exact', got {aligned!r}")
    if aligned and (space is None or train.weights is None):
        raise ConfigError("aligned: needs space= and weights in the training set")
    if train.predictions is not None and labels is None:
        raise ConfigError("labels: the training set has predictions; pass the test labels to compare them")

    def wanted(s: ModelSet) -> bool:
        return aligned_groups is None or s is train or s.name in aligned_groups

    # a model whose nearest plain distance is within the margin of the layers all models share
    # (P-diff's) has that distance as its aligned one: no matching needed
    margin = symmetry_margin(space, torch.cat([s.weights for s in sets if wanted(s) and s.weights is not None])) \
        if aligned else 0.0
    train_aligned = ref = None

    frames = []
    for s in sets:
        own = s.self_exclusion()
        cols: dict[str, object] = {
            "group": s.name,
            "model": np.arange(len(s)),
            "is_training": s.is_training,
            "quality": s.quality.detach().cpu().double().numpy(),
        }
        if s.predictions is not None and train.predictions is not None:
            cols["errors"] = _np((s.predictions != labels.to(s.predictions.device)).sum(1))
            sim = error_iou(s.predictions, train.predictions, labels, empty_union=empty_union, backend=backend)
            value, index = max_similarity_to_training(sim, own)
            cols["max_similarity"], cols["nearest_training"] = _np(value), _np(index)
        if s.weights is not None and train.weights is not None:
            plain = l2_distances(s.weights, train.weights)
            value, index = min_distance_to_training(plain, own)
            cols["min_l2"], cols["nearest_training_l2"] = _np(value), _np(index)
            if aligned and wanted(s):
                # rows whose nearest plain distance lies within the margin need no matching
                rows = value.double().square() > margin
                if own is not False:  # rows that exclude their own training model: all or none
                    rows = rows.any().expand_as(rows)
                best, best_index = value.clone(), index.clone()
                if bool(rows.any()):
                    if aligned == "exact":
                        dist = aligned_l2(space, s.weights[rows], train.weights, progress=progress, backend=backend)
                    else:  # as aligned_l2_fast, reusing the training set's alignment
                        if train_aligned is None:
                            ref = train.weights[0] if reference is None else reference
                            train_aligned = align_to(space, train.weights, ref)
                        a = train_aligned if s is train else align_to(space, s.weights[rows], ref)
                        dist = torch.minimum(l2_distances(a, train_aligned), plain[rows])
                        if aligned == "nearest":
                            dist = refine_nearest(space, s.weights[rows], train.weights,
                                                  mask_self(dist, own, float("inf")), candidates=candidates)
                    nearest_value, nearest_index = min_distance_to_training(dist, own)
                    best[rows], best_index[rows] = nearest_value.to(best.dtype), nearest_index.to(best_index.dtype)
                cols["aligned_min_l2"], cols["nearest_training_aligned"] = _np(best), _np(best_index)
        if s.points is not None and train.points is not None:
            value, index = min_distance_to_training(chamfer_distance(s.points, train.points, backend=backend), own)
            cols["min_chamfer"], cols["nearest_training_chamfer"] = _np(value), _np(index)
            cols["empty_shape"] = [len(p) == 0 for p in s.points]
        frames.append(pd.DataFrame(cols))
    return pd.concat(frames, ignore_index=True)


def _np(t: Tensor) -> np.ndarray:
    return t.detach().cpu().numpy()


# ---------------------------------------------------------------- the noise frontier
@dataclass(frozen=True)
class NoiseFrontier:
    """The novelty–quality curve that adding noise to training checkpoints traces, one point per σ.

    ``similarity`` and ``quality`` are the per-σ medians; ``samples`` keeps each σ's raw
    (similarity, quality) arrays for bootstrapping. Similarity means "higher is closer to the
    training set" (pass ``-distance`` to use a distance).
    """

    sigmas: np.ndarray
    similarity: np.ndarray
    quality: np.ndarray
    samples: tuple[tuple[np.ndarray, np.ndarray], ...] = field(repr=False)

    def to_frame(self, similarity: str = "max_similarity") -> pd.DataFrame:
        """One row per σ (``sigma``, ``similarity``, ``quality``), e.g. for plotting."""
        return pd.DataFrame({"sigma": self.sigmas, similarity: self.similarity, "quality": self.quality})

    def quality_at(self, similarity) -> np.ndarray:
        """The best quality noise reaches at this similarity or lower (more novel): the running
        maximum of quality over the σ points sorted by similarity, interpolated linearly. Beyond the
        points' range it stays at the end values: below the most novel σ the bar is that σ's
        quality, a conservative (high) bar since noise only gets worse further out."""
        return _envelope(self.similarity, self.quality, np.asarray(similarity, dtype=float))


def _envelope(sim: np.ndarray, quality: np.ndarray, at: np.ndarray) -> np.ndarray:
    finite = np.isfinite(sim)  # a σ whose median shape is empty (-inf similarity) draws no point
    if not finite.any():
        return np.full(np.shape(at), np.inf)
    sim, quality = sim[finite], quality[finite]
    order = np.argsort(sim, kind="stable")
    return np.interp(at, sim[order], np.maximum.accumulate(quality[order]))


def noise_frontier(sigmas, similarities, qualities) -> NoiseFrontier:
    """Frontier from a σ sweep of noise addition: ``similarities[i]`` and ``qualities[i]`` hold the
    values of the models made with ``sigmas[i]`` (arrays of any length, or a ``[S, n]`` array)."""
    sig = np.asarray(sigmas, dtype=float)
    if len(similarities) != len(sig) or len(qualities) != len(sig):
        raise LayoutError(
            f"noise_frontier: expected one similarity and one quality array per sigma ({len(sig)}), "
            f"got {len(similarities)} and {len(qualities)}"
        )
    samples = []
    for i, (s, q) in enumerate(zip(similarities, qualities)):
        s, q = np.asarray(s, dtype=float).ravel(), np.asarray(q, dtype=float).ravel()
        if len(s) != len(q) or len(s) == 0:
            raise LayoutError(f"noise_frontier: sigma {sig[i]} has {len(s)} similarities and {len(q)} qualities")
        samples.append((s, q))
    return NoiseFrontier(
        sigmas=sig,
        similarity=np.array([np.median(s) for s, _ in samples]),
        quality=np.array([np.median(q) for _, q in samples]),
        samples=tuple(samples),
    )


def frontier_from_table(
    table: pd.DataFrame, sigma_groups: Mapping[float, str], *, similarity: str = "max_similarity"
) -> NoiseFrontier:
    """``noise_frontier`` from the rows of a novelty table: ``{sigma: group name}``."""
    rows = [group_rows(table, g) for g in sigma_groups.values()]
    return noise_frontier(list(sigma_groups), [r[similarity].to_numpy() for r in rows],
                          [r["quality"].to_numpy() for r in rows])


def beyond_frontier(
    similarity,
    quality,
    frontier: NoiseFrontier,
    *,
    margin: float = 0.0,
    n_boot: int = 1000,
    confidence: float = 0.95,
    seed: int = 0,
) -> dict:
    """Fraction of a group's models above-left of the noise frontier: ``quality > quality_at(similarity)
    + margin`` (better than noise at the same or a lower similarity), with a percentile bootstrap
    interval. Each of the ``n_boot`` resamples (seeded) redraws the group's models and, within each σ,
    the noise models behind the frontier, so both sources of sampling error are in the interval."""
    s, q = np.asarray(similarity, dtype=float).ravel(), np.asarray(quality, dtype=float).ravel()
    if len(s) != len(q) or len(s) == 0:
        raise LayoutError(f"beyond_frontier: expected equal, non-empty similarity and quality, got {len(s)}, {len(q)}")
    if not 0 < confidence < 1:
        raise ConfigError(f"confidence: expected a value in (0, 1), got {confidence}")
    fraction = float(np.mean(q > frontier.quality_at(s) + margin))
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, len(s), (n_boot, len(s)))
    f_sim = np.stack([np.median(fs[rng.integers(0, len(fs), (n_boot, len(fs)))], 1) for fs, _ in frontier.samples], 1)
    f_q = np.stack([np.median(fq[rng.integers(0, len(fq), (n_boot, len(fq)))], 1) for _, fq in frontier.samples], 1)
    boot = np.array([np.mean(q[i] > _envelope(fs, fq, s[i]) + margin) for i, fs, fq in zip(idx, f_sim, f_q)])
    alpha = (1 - confidence) / 2
    low, high = np.quantile(boot, [alpha, 1 - alpha]) if n_boot else (np.nan, np.nan)
    return {"fraction": fraction, "ci_low": float(low), "ci_high": float(high), "n": len(s),
            "n_boot": n_boot, "confidence": confidence, "seed": seed}


# ---------------------------------------------------------------- helpers
def group_rows(table: pd.DataFrame, name: str) -> pd.DataFrame:
    rows = table[table["group"] == name]
    if rows.empty:
        raise ConfigError(f"group '{name}' is not in the table; groups: {sorted(table['group'].unique())}")
    return rows
