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
    """Density of a linear (triangular) kernel of bandwidth 0.1 at ``x``, as scikit-learn's KernelDensity."""
    out = np.zeros(len(x))
    step = max(1, (1 << 22) // max(len(x), 1))
    for a in range(0, len(samples), step):
        d = np.abs(x[:, None] - samples[None, a:a + step]) / _BW
        out += np.clip(1.0 - d, 0.0, None).sum(1)
    return out / (len(samples) * _BW)


def bulk_edge_tw(bulk_max: np.ndarray, Q: float, M: int) -> np.ndarray:
    """WeightWatcher's bulk edge plus Tracy–Widom margin (in units where the mean eigenvalue is 1)."""
    tw = np.power(bulk_max, 2.0 / 3.0) * M ** (-2.0 / 3.0) / np.sqrt(Q)
    return bulk_max + np.sqrt(tw)


def mp_fit(evals: np.ndarray, Q: float, M: int) -> dict[str, float]:
    """σ of the MP density that best fits ``evals`` (eigenvalues of WᵀW, all of them), and what follows."""
    evals = np.asarray(evals, dtype=np.float64)
    nan = dict(sigma_mp=np.nan, bulk_max=np.nan, bulk_min=np.nan, num_spikes=np.nan, mp_softrank=np.nan, W_scale=np.nan)
    total = evals.sum()
    if len(evals) < 2 or not np.isfinite(total) or total <= 0:
        return nan
    scale2 = len(evals) / total  # WeightWatcher's Wscale², so that the mean eigenvalue is 1
    x = evals * scale2
    lam_max = x.max()
    s_top = np.sqrt(lam_max / (1.0 + 1.0 / np.sqrt(Q)) ** 2)
    sigmas = np.arange(0.05 * s_top, 2.0 * s_top, 0.01 * s_top)  # scipy.optimize.brute's grid for this slice
    to_fit = np.sqrt(x) if Q == 1 else x
    xde = np.linspace(0.0, to_fit.max() + 0.5, _GRID)
    yde = _linear_kde(to_fit, xde)
    good = yde > _KDE_FLOOR
    xg, yg = xde[good], yde[good]
    s = sigmas[:, None]
    with np.errstate(divide="ignore", invalid="ignore"):
        if Q == 1:
            ymp = np.nan_to_num(np.sqrt(4.0 - xg[None, :] ** 2) / (np.pi * s * s))
            cost = ((ymp - yg) ** 2).sum(1)
        else:
            b = (s * (1 + np.sqrt(1 / Q))) ** 2
            a = (s * (1 - np.sqrt(1 / Q))) ** 2
            ymp = np.nan_to_num(np.sqrt((b - xg) * (xg - a)) / (2 * np.pi * s * s * xg * (1 / Q)))
            cost = ((ymp - yg) ** 2).sum(1)
            peak = xg[np.argmax(yg)]
            reject = ((b < peak) | (b > xg.max()) | (a > peak))[:, 0]
            cost = np.where(reject, _BAD**2 * len(xg), cost)
    sigma = float(sigmas[int(np.argmin(cost))])
    bulk_max = (sigma * (1 + 1 / np.sqrt(Q))) ** 2
    bulk_min = (sigma * (1 - 1 / np.sqrt(Q))) ** 2
    edge = bulk_edge_tw(bulk_max, Q, M)
    return dict(
        sigma_mp=sigma,
        bulk_max=bulk_max / scale2,
        bulk_min=bulk_min / scale2,
        num_spikes=float(np.sum(x > edge)),
        mp_softrank=bulk_max / lam_max,
        W_scale=float(np.sqrt(scale2)),
    )


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


def rand_distance(evals: np.ndarray, rand_evals: np.ndarray, bins: int = 100) -> float:
    """Jensen–Shannon distance (base 2, in [0, 1]) between the densities of two spectra.

    Both spectra are histogrammed on the same ``bins`` bins of log10 λ spanning the positive
    eigenvalues of both (λ > λmax·1e-12), so the number compares the *shapes of the densities*: 0 for
    identical densities, 1 for disjoint supports. WeightWatcher's ``rand_distance`` instead feeds the two
    sorted eigenvalue vectors to a JS divergence as if they were probability vectors, which depends on
    the order and count of eigenvalues rather than on their density.
    """
    a = np.asarray(evals, dtype=np.float64)
    b = np.asarray(rand_evals, dtype=np.float64)
    top = max(a.max(initial=0.0), b.max(initial=0.0))
    if not np.isfinite(top) or top <= 0:
        return np.nan
    a, b = a[a > top * 1e-12], b[b > top * 1e-12]
    if len(a) == 0 or len(b) == 0:
        return np.nan
    la, lb = np.log10(a), np.log10(b)
    lo, hi = min(la.min(), lb.min()), max(la.max(), lb.max())
    edges = np.linspace(lo, hi if hi > lo else lo + 1.0, bins + 1)
    p = np.histogram(la, edges)[0] / len(la)
    q = np.histogram(lb, edges)[0] / len(lb)
    m = 0.5 * (p + q)

    def kl(u):
        nz = u > 0
        return np.sum(u[nz] * np.log2(u[nz] / m[nz]))

    return float(np.sqrt(max(0.5 * kl(p) + 0.5 * kl(q), 0.0)))
