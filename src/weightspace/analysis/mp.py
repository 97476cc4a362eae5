"""Marchenko–Pastur fits of eigenvalue spectra and the distance between two spectral densities.

``mp_fit`` follows WeightWatcher's objective (eigenvalues rescaled to mean 1; a linear-kernel KDE of
bandwidth 0.1 on 1,000 points; squared residual to the MP density, with its rejection of σ whose bulk
edge misses the KDE's peak; σ searched over 0.05–2 × the σ that puts the bulk edge at λmax, step 0.01×)
but computes the KDE once and scores the whole σ grid in one array expression, where WeightWatcher
refits a scikit-learn KDE for each of its 195 σ and polishes the best with Nelder–Mead (not done here,
so σ agrees with WeightWatcher's to the grid step). The bulk edge gets WeightWatcher's Tracy–Widom
margin; ``num_spikes`` counts eigenvalues beyond it.
"""

from __future__ import annotations

import numpy as np

_BW = 0.1
_GRID = 1000
_KDE_FLOOR = 0.01
_BAD = 1000.0


def _linear_kde(samples: np.ndarray, x: np.ndarray) -> np.ndarray:
    """Density of a linear (triangular) kernel of bandwidth 0.1, as scikit-learn's KernelDensity.

    ``samples`` [B, n], ``x`` [B, G] (each row its own grid): ``[B, G]``. The kernel sum at x over
    the samples within one bandwidth is a count minus a sum of distances, read from prefix sums of
    the sorted samples on each side of x: O((n + G) log n) per row instead of O(n·G).
    """
    B, n = samples.shape
    out = np.empty(x.shape)
    for b in range(B):
        s = np.sort(samples[b])
        P = np.concatenate([[0.0], np.cumsum(s)])
        xb = x[b]
        lo, mid, hi = (np.searchsorted(s, v, side) for v, side in ((xb - _BW, "right"), (xb, "right"), (xb + _BW, "left")))
        left, right = mid - lo, hi - mid  # samples in (x - bw, x] and (x, x + bw)
        out[b] = left - (left * xb - (P[mid] - P[lo])) / _BW + right - ((P[hi] - P[mid]) - right * xb) / _BW
    return out / (n * _BW)


def bulk_edge_tw(bulk_max: np.ndarray, Q: float, M: int) -> np.ndarray:
    """WeightWatcher's bulk edge plus Tracy–Widom margin (in units where the mean eigenvalue is 1)."""
    tw = np.power(bulk_max, 2.0 / 3.0) * M ** (-2.0 / 3.0) / np.sqrt(Q)
    return bulk_max + np.sqrt(tw)


def mp_fit(evals: np.ndarray, Q: float, M: int) -> dict[str, np.ndarray]:
    """σ of the MP density that best fits each row of ``evals`` ([B, n] eigenvalues of WᵀW, all of them).

    All rows (the same layer of every model of a zoo) are scored in one array program; returns arrays
    of length B: sigma_mp, bulk_max, bulk_min, num_spikes, mp_softrank, W_scale.
    """
    ev = np.atleast_2d(np.asarray(evals, dtype=np.float64))
    B, n = ev.shape
    keys = ("sigma_mp", "bulk_max", "bulk_min", "num_spikes", "mp_softrank", "W_scale")
    out = {k: np.full(B, np.nan) for k in keys}
    total = ev.sum(1)
    rows = np.nonzero(np.isfinite(total) & (total > 0))[0] if n >= 2 else np.array([], dtype=int)
    if len(rows) == 0:
        return out
    scale2 = n / total[rows]  # WeightWatcher's Wscale², so that the mean eigenvalue is 1
    x = ev[rows] * scale2[:, None]
    lam_max = x.max(1)
    s_top = np.sqrt(lam_max / (1.0 + 1.0 / np.sqrt(Q)) ** 2)
    # scipy.optimize.brute's grid for slice(0.05 s, 2 s, 0.01 s): np.arange, per row
    steps = np.ceil((2.0 * s_top - 0.05 * s_top) / (0.01 * s_top)).astype(int)
    k = np.arange(steps.max())
    sigmas = 0.05 * s_top[:, None] + k[None, :] * (0.01 * s_top[:, None])  # [b, K]
    in_grid = k[None, :] < steps[:, None]
    to_fit = np.sqrt(x) if Q == 1 else x
    xde = np.linspace(0.0, 1.0, _GRID)[None, :] * (to_fit.max(1) + 0.5)[:, None]  # [b, G]
    yde = _linear_kde(to_fit, xde)
    good = yde > _KDE_FLOOR  # WeightWatcher drops near-empty grid points from the residual
    peak = np.take_along_axis(xde, np.argmax(np.where(good, yde, -np.inf), 1)[:, None], 1)  # [b, 1]
    xg_max = np.where(good, xde, -np.inf).max(1, keepdims=True)
    cost = np.empty(sigmas.shape)
    chunk = max(1, (1 << 22) // (sigmas.shape[1] * _GRID))
    with np.errstate(divide="ignore", invalid="ignore"):
        for a in range(0, len(rows), chunk):
            sl = slice(a, a + chunk)
            s = sigmas[sl][:, :, None]  # [c, K, 1]
            xg, yg, g = xde[sl][:, None, :], yde[sl][:, None, :], good[sl][:, None, :]
            if Q == 1:
                ymp = np.nan_to_num(np.sqrt(4.0 - xg**2) / (np.pi * s * s))
                cost[sl] = np.where(g, (ymp - yg) ** 2, 0.0).sum(-1)
            else:
                hi = (s * (1 + np.sqrt(1 / Q))) ** 2
                lo = (s * (1 - np.sqrt(1 / Q))) ** 2
                ymp = np.nan_to_num(np.sqrt((hi - xg) * (xg - lo)) / (2 * np.pi * s * s * xg * (1 / Q)))
                c = np.where(g, (ymp - yg) ** 2, 0.0).sum(-1)
                pk, top = peak[sl][:, :, None], xg_max[sl][:, :, None]
                reject = ((hi < pk) | (hi > top) | (lo > pk))[:, :, 0]
                cost[sl] = np.where(reject, _BAD**2 * good[sl].sum(1, keepdims=True), c)
    cost[~in_grid] = np.inf
    sigma = np.take_along_axis(sigmas, np.argmin(cost, 1)[:, None], 1)[:, 0]
    bulk_max = (sigma * (1 + 1 / np.sqrt(Q))) ** 2
    bulk_min = (sigma * (1 - 1 / np.sqrt(Q))) ** 2
    edge = bulk_edge_tw(bulk_max, Q, M)
    out["sigma_mp"][rows] = sigma
    out["bulk_max"][rows] = bulk_max / scale2
    out["bulk_min"][rows] = bulk_min / scale2
    out["num_spikes"][rows] = (x > edge[:, None]).sum(1)
    out["mp_softrank"][rows] = bulk_max / lam_max
    out["W_scale"][rows] = np.sqrt(scale2)
    return out


def random_like(evals: np.ndarray, Q: float, M: int) -> np.ndarray:
    """True where a spectrum is explained by the MP bulk of an i.i.d. matrix of the same variance.

    ``evals``: ``[B, n]`` eigenvalues of ``n`` = M (×slices) per row. The variance is read from the
    Frobenius norm (mean eigenvalue 1 after rescaling, as in :func:`mp_fit`), so no fit is needed: a row
    whose largest eigenvalue stays within the MP edge (1 + 1/√Q)² plus the Tracy–Widom margin has no
    eigenvalue a random matrix would not produce, and its power-law α describes noise.
    """
    evals = np.atleast_2d(np.asarray(evals, dtype=np.float64))
    mean = evals.mean(1)
    with np.errstate(divide="ignore", invalid="ignore"):
        top = evals.max(1) / mean
    edge = bulk_edge_tw(np.float64((1 + 1 / np.sqrt(Q)) ** 2), Q, M)
    return top <= edge


def rand_distance(evals: np.ndarray, rand_evals: np.ndarray, bins: int = 100, rel_floor: float = 1e-6) -> np.ndarray:
    """Jensen–Shannon distance (base 2, in [0, 1]) between the densities of two spectra, row by row.

    ``evals`` [B, n] and ``rand_evals`` [B, m] (1-D arrays are one row). Each pair is histogrammed on
    the same ``bins`` bins of log10 λ spanning the eigenvalues of both above ``rel_floor``·(own λmax), so
    the number compares the *shapes of the densities*: 0 for identical densities, 1 for disjoint
    supports. WeightWatcher's ``rand_distance`` instead feeds the two sorted eigenvalue vectors to a JS
    divergence as if they were probability vectors, which depends on the order and count of
    eigenvalues rather than on their density. The floor (1e-6·λmax) makes the number the same
    whether the eigenvalues came from float32 or float64 arithmetic: float32 Gram eigenvalues below it
    are rounding noise, which on a log axis would decide where the bins lie (on MiniLM, float32 against
    float64: up to 0.026 apart with a 1e-12 floor, 0.0075 with this one).
    """
    a = np.atleast_2d(np.asarray(evals, dtype=np.float64))
    b = np.atleast_2d(np.asarray(rand_evals, dtype=np.float64))
    with np.errstate(divide="ignore", invalid="ignore"):  # each spectrum's floor from its own λmax
        la = np.where(a > a.max(1, keepdims=True) * rel_floor, np.log10(a), np.nan)
        lb = np.where(b > b.max(1, keepdims=True) * rel_floor, np.log10(b), np.nan)
    lo = np.fmin(np.nanmin(la, 1, initial=np.inf), np.nanmin(lb, 1, initial=np.inf))[:, None]
    hi = np.fmax(np.nanmax(la, 1, initial=-np.inf), np.nanmax(lb, 1, initial=-np.inf))[:, None]
    width = np.where(hi > lo, hi - lo, 1.0)

    def density(l):
        ok = np.isfinite(l)
        idx = np.clip(np.nan_to_num((l - lo) / width * bins).astype(np.int64), 0, bins - 1)
        counts = np.zeros((l.shape[0], bins))
        np.add.at(counts, (np.nonzero(ok)[0], idx[ok]), 1.0)
        return counts / np.maximum(ok.sum(1, keepdims=True), 1)

    with np.errstate(invalid="ignore"):
        p, q = density(la), density(lb)
    p[~np.isfinite(la).any(1)] = np.nan  # no positive eigenvalue: undefined
    q[~np.isfinite(lb).any(1)] = np.nan
    m = 0.5 * (p + q)
    with np.errstate(divide="ignore", invalid="ignore"):
        kl = lambda u: np.where(u > 0, u * np.log2(u / m), 0.0).sum(1)  # noqa: E731
        js = 0.5 * kl(p) + 0.5 * kl(q)
    out = np.sqrt(np.clip(js, 0.0, None))
    out[np.isnan(p).any(1) | np.isnan(q).any(1)] = np.nan
    return out if np.ndim(evals) > 1 else float(out[0])
