"""Features of weights alone, for a whole population in one call (Unterthiner et al. 2020; Jin et al. 2020).

Per tensor: the 0/25/50/75/100 percentiles, mean, standard deviation, L1 and L2 norms. Per weight
matrix or convolution (two or more axes): Jin et al.'s *weight correlation*, the mean |cosine|
between the weight vectors of two different output neurons. Every statistic is computed for all
``N`` models at once from the stacked ``Tensor[N, P]``.

Optional, ``spectral=True``: per weight matrix or convolution, the power-law exponent α of the tail of
its eigenvalue spectrum and WeightWatcher's norm metrics (:func:`spectral_features`). Further feature
families plug in through ``extra``: callables ``(weights, space) -> DataFrame`` with one row per
model, joined column-wise.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import pandas as pd
import torch
from torch import Tensor

from ..errors import LayoutError
from ..space import WeightSpace

PERCENTILES = (0, 25, 50, 75, 100)
STATISTICS = tuple(f"q{p}" for p in PERCENTILES) + ("mean", "std")  # Unterthiner et al.'s set
NORMS = ("l1", "l2")
SPECTRAL = ("alpha", "alpha_weighted", "log_norm", "log_spectral_norm", "stable_rank", "entropy")

FeatureFn = Callable[[Tensor, WeightSpace], pd.DataFrame]


def tensor_statistics(weights: Tensor, space: WeightSpace, *, norms: bool = True) -> pd.DataFrame:
    """``{tensor}.q0 … q100, mean, std[, l1, l2]`` of every tensor of every model: ``N`` rows."""
    weights = _check(weights, space)
    q = torch.tensor([p / 100 for p in PERCENTILES], dtype=torch.float64)
    cols = {}
    for name, t in space.unflatten(weights, cast=False).items():
        t = t.reshape(len(weights), -1).double()
        quantiles = torch.quantile(t, q, dim=1)  # [5, N]
        for p, row in zip(PERCENTILES, quantiles):
            cols[f"{name}.q{p}"] = row
        cols[f"{name}.mean"] = t.mean(1)
        cols[f"{name}.std"] = t.std(1, correction=0)
        if norms:
            cols[f"{name}.l1"] = t.abs().sum(1)
            cols[f"{name}.l2"] = t.norm(dim=1)
    return pd.DataFrame({k: v.numpy() for k, v in cols.items()})


def weight_correlation(weights: Tensor, space: WeightSpace) -> pd.DataFrame:
    """``{tensor}.wcorr``: mean |cosine| between different output neurons, per weight tensor with ≥ 2 axes."""
    weights = _check(weights, space)
    cols = {}
    for name, t in space.unflatten(weights, cast=False).items():
        if t.dim() < 3 or t.shape[1] < 2:  # [N, out, ...]: needs two neurons
            continue
        rows = t.reshape(t.shape[0], t.shape[1], -1).double()
        norm = rows.norm(dim=2, keepdim=True)
        unit = rows / torch.where(norm > 0, norm, 1.0)  # an all-zero neuron has cosine 0 with the others
        cos = torch.bmm(unit, unit.transpose(1, 2)).abs()
        n = cos.shape[1]
        off_diagonal = cos.sum((1, 2)) - cos.diagonal(dim1=1, dim2=2).sum(1)
        cols[f"{name}.wcorr"] = (off_diagonal / (n * (n - 1))).numpy()
    return pd.DataFrame(cols)


def spectral_features(weights: Tensor, space: WeightSpace) -> pd.DataFrame:
    """``{tensor}.alpha, alpha_weighted, log_norm, log_spectral_norm, stable_rank, entropy`` of every
    weight matrix and convolution (:class:`~weightspace.analysis.spectral.SpectralAnalyzer`'s robust
    fit, its defaults); NaN where a layer's spectrum could not be fitted (too few eigenvalues, say)."""
    from .spectral import SpectralAnalyzer

    details = SpectralAnalyzer(progress=False).fit((_check(weights, space), space)).details_
    details = details[details["kind"] != "skipped"]
    wide = details.pivot(index="model", columns="name", values=list(SPECTRAL))
    wide = wide.reindex([str(i) for i in range(len(weights))])  # the analyser names models 0..N-1
    wide.columns = [f"{name}.{metric}" for metric, name in wide.columns]
    return wide[sorted(wide.columns)].reset_index(drop=True).astype(float)


def weight_features(
    weights: Tensor,
    space: WeightSpace,
    *,
    norms: bool = True,
    correlation: bool = True,
    spectral: bool = False,
    extra: Sequence[FeatureFn] = (),
) -> pd.DataFrame:
    """All features of ``weights: Tensor[N, P]``, one row per model, one column per feature."""
    parts = [tensor_statistics(weights, space, norms=norms)]
    if correlation:
        parts.append(weight_correlation(weights, space))
    for fn in ([spectral_features] if spectral else []) + list(extra):
        part = fn(weights, space)
        if len(part) != len(parts[0]):
            raise LayoutError(f"feature function {getattr(fn, '__name__', fn)!r} returned {len(part)} rows "
                              f"for {len(parts[0])} models")
        parts.append(part.reset_index(drop=True))
    return pd.concat(parts, axis=1)


def _check(weights: Tensor, space: WeightSpace) -> Tensor:
    if weights.dim() != 2 or weights.shape[1] != space.num_params:
        raise LayoutError(f"expected weights Tensor[N, {space.num_params}] for layout '{space.name}', "
                          f"got shape {tuple(weights.shape)}")
    return weights
