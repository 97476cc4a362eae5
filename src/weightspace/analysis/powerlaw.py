"""Power-law fits of eigenvalue tails, many spectra at once.

``fit_ww`` reproduces WeightWatcher 0.7.7's default fit (``pl_package="ww"``): drop eigenvalues
≤ 1e-5; every eigenvalue but the largest is a candidate xmin; α = 1 + n / Σ ln(x/xmin) over the tail;
KS distance D = max |1 − (x/xmin)^(1−α) − k/n| (k = 0..n−1); the xmin with the smallest D wins
(first on ties); σ = (α − 1)/√n. Spectra with fewer than 20 eigenvalues use its small-sample variant:
α = 1 + (n − 1)/Σ ln(x/xmin) over tails of at least 8. (That variant computes an objective
D − 0.868/√n, but ``WWFit.__init__`` then re-selects the candidate by D alone, so D is what decides.)

WeightWatcher loops over candidates in Python (O(n²) interpreted work per layer). Here α of every
candidate comes from one suffix sum, and D is evaluated for all candidates of a batch of spectra in
one array expression; for long spectra (n > ``DENSE_LIMIT``) a lower bound of each candidate's D on a
fixed grid of 128 points ranks the candidates, and the exact D is computed only for those whose bound
is below the best exact D found so far — same answer, typically O(n·128) work instead of O(n²).

``fit_robust`` is the default fit of :mod:`weightspace.analysis.spectral`: the bias-corrected MLE,
tails of at least ``min_tail`` eigenvalues (a tail of 2–3 eigenvalues is what gives WeightWatcher its
spuriously huge α), an xmax-aware estimate (the MLE of a power law truncated at the largest
eigenvalue) and a bootstrap interval.
"""

from __future__ import annotations

import numpy as np

from .eigen import SERIAL, Workers

EVALS_THRESH = 1e-5  # WeightWatcher's EVALS_THRESH: eigenvalues at or below it are not fitted
SMALL_N = 20  # WeightWatcher's SMALL_N_CUTOFF
SMALL_N_MIN_TAIL = 8
DENSE_LIMIT = 256  # longest spectrum whose D matrix is built whole
_PRUNED_BLOCK = 32  # candidates whose exact D is computed per step of the pruned search
_GRID = 128
_BOUND_BLOCK = 64  # candidates per block of the lower bound
_BLOCK = 1 << 22  # elements per evaluated block
_SPLIT_BOOT = 1 << 18  # bootstrap draws above which the rows are spread over the workers


def _prepare(spectra: list[np.ndarray], rel_floor: float = 0.0) -> tuple[np.ndarray, np.ndarray]:
    """Sorted, left-padded ``[B, n]`` float64 array and the index of each row's first kept value.

    Kept: eigenvalues above 1e-5 and above ``rel_floor``·λmax.
    """
    if len({len(s) for s in spectra}) == 1 and len(spectra[0]):  # one layer: one array program
        X = np.sort(np.asarray(np.stack(spectra), dtype=np.float64), axis=1)
        floor = np.maximum(EVALS_THRESH, rel_floor * X[:, -1:])
        first = (X <= floor).sum(1)
        X[np.arange(X.shape[1])[None, :] < first[:, None]] = 1.0
        return X, first
    kept = [np.sort(np.asarray(s, dtype=np.float64)) for s in spectra]
    kept = [s[s > max(EVALS_THRESH, rel_floor * s[-1] if len(s) else 0.0)] for s in kept]
    n = max((len(s) for s in kept), default=0)
    X = np.ones((len(kept), max(n, 1)), dtype=np.float64)
    first = np.empty(len(kept), dtype=np.int64)
    for b, s in enumerate(kept):
        X[b, n - len(s):] = s
        first[b] = n - len(s)
    return X, first


def _suffix_sums(L: np.ndarray) -> np.ndarray:
    return np.flip(np.cumsum(np.flip(L, -1), -1), -1)


def _candidates(X: np.ndarray, first: np.ndarray, bias_corrected: bool):
    """α and validity of every candidate xmin (all columns but the last) of every row."""
    n = X.shape[1]
    L = np.log(X)
    S = _suffix_sums(L)[:, :-1]
    t = (n - np.arange(n - 1)).astype(np.float64)  # tail sizes
    s = S - t * L[:, :-1]
    with np.errstate(divide="ignore", invalid="ignore"):
        alpha = 1.0 + ((t - 1.0) if bias_corrected else t) / s
    valid = np.arange(n - 1)[None, :] >= first[:, None]
    return alpha, valid, t, s


def _ks(X: np.ndarray, alpha: np.ndarray, rows: np.ndarray, cols: np.ndarray) -> np.ndarray:
    """Exact KS distance of candidates (rows[k], cols[k]): max over the tail, as WeightWatcher writes it.

    Each block of candidates is evaluated from its smallest xmin index on (the columns before it
    are in no candidate's tail).
    """
    n = X.shape[1]
    out = np.empty(len(rows))
    per = max(1, _BLOCK // n)
    for a in range(0, len(rows), per):
        r, c = rows[a:a + per], cols[a:a + per]
        lo = int(c.min())
        j = np.arange(lo, n)
        xmin = X[r, c][:, None]
        al = alpha[r, c][:, None]
        tail = j[None, :] >= c[:, None]
        t = (n - c)[:, None].astype(np.float64)
        with np.errstate(over="ignore", invalid="ignore", divide="ignore"):
            # x/xmin ≥ 1 exactly in the tail (sorted rows); raised to 1 before it, where the power
            # would overflow (a slow path) and is masked anyway
            ratio = np.maximum(X[r, lo:] / xmin, 1.0)
            g = np.abs(1.0 - ratio ** (-al + 1.0) - (j[None, :] - c[:, None]) / t)
        out[a:a + per] = np.where(tail, g, -np.inf).max(1)
    return out


def _lower_bound(X: np.ndarray, alpha: np.ndarray, row: int, cols: np.ndarray) -> np.ndarray:
    """A lower bound of each candidate's D: the same maximum over a grid of tail points only.

    Written with exp/log instead of a power; the two differ by rounding, so the bound is lowered by
    1e-12 to stay below the exact D. Grid points below a candidate's xmin are not in its tail: their
    exponent is clamped to 0 (no overflow, whose slow path costs ~50 ns an element) and masked.
    """
    n = X.shape[1]
    grid = np.unique(np.linspace(0, n - 1, _GRID).round().astype(np.int64))
    lx = np.log(X[row, grid])[None, :]
    out = np.empty(len(cols))
    for a in range(0, len(cols), _BOUND_BLOCK):  # temporaries that stay in cache
        c = cols[a:a + _BOUND_BLOCK, None]
        with np.errstate(over="ignore", invalid="ignore", divide="ignore"):
            e = np.minimum((1.0 - alpha[row, c]) * (lx - np.log(X[row, c])), 0.0)
            g = np.abs(1.0 - np.exp(e) - (grid - c) / (n - c))
        out[a:a + _BOUND_BLOCK] = np.where(grid >= c, g, 0.0).max(1)
    return out - 1e-12


def _pruned_argmin(X: np.ndarray, alpha: np.ndarray, row: int, cols: np.ndarray) -> tuple[int, float]:
    """The candidate with the smallest exact D (first on ties), computing D only where it can win."""
    lb = _lower_bound(X, alpha, row, cols)
    order = np.argsort(lb, kind="stable")
    best_d, best_c = np.inf, -1
    per = _PRUNED_BLOCK
    for a in range(0, len(order), per):
        if lb[order[a]] > best_d:
            break
        block = cols[order[a:a + per]]
        d = _ks(X, alpha, np.full(len(block), row), block)
        for c, v in zip(block, d):
            if v < best_d or (v == best_d and c < best_c):
                best_d, best_c = v, int(c)
    return best_c, best_d


def _select(X, first, alpha, ok) -> tuple[np.ndarray, np.ndarray]:
    """Index of the winning candidate per row and its D; -1 where no candidate is valid."""
    B, n = X.shape
    choice = np.full(B, -1, dtype=np.int64)
    D = np.full(B, np.nan)
    if n < 2:
        return choice, D
    dense_rows = np.nonzero(n - first <= DENSE_LIMIT)[0]
    sparse_rows = np.nonzero(n - first > DENSE_LIMIT)[0]
    if len(dense_rows):
        r, c = np.nonzero(ok[dense_rows])
        r = dense_rows[r]
        J = np.full(ok.shape, np.inf)
        J[r, c] = _ks(X, alpha, r, c)
        Jd = J[dense_rows]
        has = np.isfinite(Jd).any(1)
        best = np.argmin(Jd, 1)  # first minimum, as numpy's argmin in WeightWatcher
        choice[dense_rows[has]] = best[has]
        D[dense_rows[has]] = Jd[has, best[has]]
    for b in sparse_rows:
        cols = np.nonzero(ok[b])[0]
        if len(cols):
            choice[b], D[b] = _pruned_argmin(X, alpha, b, cols)
    return choice, D


def fit_ww(spectra: list[np.ndarray]) -> dict[str, np.ndarray]:
    """WeightWatcher's default power-law fit of each spectrum: alpha, xmin, xmax, D, sigma, num_pl_spikes.

    A spectrum with fewer than two eigenvalues above 1e-5 cannot be fitted: NaN, ``fit_ok`` False.
    """
    B = len(spectra)
    res = {k: np.full(B, np.nan) for k in ("alpha", "xmin", "xmax", "D", "sigma", "num_pl_spikes")}
    res["fit_ok"] = np.zeros(B, dtype=bool)
    if B == 0:
        return res
    X, first = _prepare(spectra)
    n = X.shape[1]
    if n < 2:
        return res
    counts = n - first
    small = counts < SMALL_N
    for rows, small_n in ((np.nonzero(~small)[0], False), (np.nonzero(small)[0], True)):
        if len(rows) == 0:
            continue
        Xr, fr = X[rows], first[rows]
        alpha, valid, t, s = _candidates(Xr, fr, small_n)
        if not small_n:
            # WeightWatcher keeps D = 1 for α ≤ 1: such a candidate wins only if nothing else has D < 1.
            ok = valid & (alpha > 1)
        else:
            ok = valid & (t >= SMALL_N_MIN_TAIL) & (s > 1e-12) & (alpha > 1)
        choice, D = _select(Xr, fr, alpha, ok)
        # No valid candidate: WeightWatcher's argmin over all-ones D picks the first. Its small-N
        # fallback fits the whole spectrum (α = 0 reported when that tail is degenerate).
        fallback = (choice < 0) & (counts[rows] >= 2)
        choice[fallback], D[fallback] = fr[fallback], 1.0
        if small_n and fallback.any():
            k = np.nonzero(fallback)[0]
            degenerate = s[k, choice[k]] <= 1e-12
            alpha[k[degenerate], choice[k[degenerate]]] = 0.0
            live = k[~degenerate]
            D[live] = _ks(Xr, alpha, live, choice[live])
        k = np.nonzero(choice >= 0)[0]
        b, c = rows[k], choice[k]
        a = alpha[k, c]
        res["alpha"][b], res["xmin"][b], res["xmax"][b], res["D"][b] = a, X[b, c], X[b, -1], D[k]
        res["sigma"][b] = (a - 1.0) / np.sqrt(n - c)
        kept = np.arange(n)[None, :] >= first[b][:, None]
        res["num_pl_spikes"][b] = (kept & (X[b] >= X[b, c][:, None])).sum(1)  # every eigenvalue ≥ xmin
        res["fit_ok"][b] = True
    return res


def truncated_alpha(X: np.ndarray, start: np.ndarray, xmax: np.ndarray, iters: int = 40) -> np.ndarray:
    """MLE of α for a power law on [xmin, xmax], by bisection; row b's tail is ``X[b, start[b]:]``
    (rows sorted ascending, so xmin = ``X[b, start[b]]``; ``start`` −1: no tail, NaN).

    The log-likelihood derivative in α is monotone, so bisection on α ∈ (1, 50] converges; all tails
    are solved together.
    """
    B, n = X.shape
    out = np.full(B, np.nan)
    rows = np.nonzero(start >= 0)[0]
    if len(rows) == 0:
        return out
    c = start[rows]
    xmin = X[rows, c]
    tail = np.arange(n)[None, :] >= c[:, None]
    t = n - c
    with np.errstate(divide="ignore", invalid="ignore"):
        mean_log = np.where(tail, np.log(X[rows] / xmin[:, None]), 0.0).sum(1) / t
    mean_log[t < 2] = np.nan
    r = np.log(xmax[rows] / xmin)  # ln(xmax/xmin)
    B = len(rows)

    def score(a):  # d/dα of the mean log-likelihood: 1/(α−1) − r·u/(1−u) − mean ln(x/xmin), u=(xmax/xmin)^(1−α)
        u = np.exp(-(a - 1.0) * r)
        return 1.0 / (a - 1.0) - r * u / (1.0 - u) - mean_log

    lo = np.full(B, 1.0 + 1e-9)
    hi = np.full(B, 50.0)
    with np.errstate(over="ignore", invalid="ignore", divide="ignore"):
        for _ in range(iters):
            mid = 0.5 * (lo + hi)
            up = score(mid) > 0
            lo = np.where(up, mid, lo)
            hi = np.where(up, hi, mid)
    ok = np.isfinite(mean_log) & (r > 0)
    out[rows[ok]] = 0.5 * (lo + hi)[ok]
    return out


def _bootstrap_interval(X: np.ndarray, c: np.ndarray, n_boot: int, level: float, seed, row_seeds=None):
    """Percentile interval of the bias-corrected α over resamples of each row's tail ``X[b, c[b]:]``.

    All rows and resamples in one array: tails are padded to the longest and masked. With
    ``row_seeds``, row b's draws come from its own generator and do not depend on the other rows.
    """
    B, n = X.shape
    t = n - c
    T = int(t.max())
    # [B, T, n_boot]: tail position first, so that sums over the tail run position by position and
    # the zeros that pad a short tail add nothing (a row's interval does not depend on the others' T).
    # Worked in place, with indices into the flattened logs: each temporary or fancy-index of this
    # size costs as much as the arithmetic.
    u = np.empty((B, T, n_boot))
    if row_seeds is None:
        np.random.default_rng(seed).random(out=u)
    else:  # row b's draws are the first t[b]·n_boot of its own stream, whatever T is
        for b, s in enumerate(row_seeds):
            np.random.default_rng(s).random(out=u[b, :t[b]])
    pad = np.arange(T)[None, :, None] >= t[:, None, None]  # positions past a row's tail
    ragged = bool((t < T).any())
    if ragged:
        np.copyto(u, 0.0, where=pad)  # not drawn: no garbage in the cast below
    u *= t[:, None, None]
    idx = u.astype(np.int64)  # floor(u·t): a position in the tail
    del u
    if ragged:  # the row's last index: never below a drawn one, and its value is zeroed below
        np.copyto(idx, t[:, None, None] - 1, where=pad)
    idx += (c + n * np.arange(B))[:, None, None]  # ... as an index into the flattened [B, n] logs
    LX = np.log(X).ravel()  # logs of the n values, not of the B·T·n_boot draws
    L = LX.take(idx)
    lmin = LX.take(idx.min(1))[:, None, :]  # X is sorted: the smallest draw, smallest index
    del idx
    L -= lmin
    if ragged:
        np.copyto(L, 0.0, where=pad)
    s = L.sum(1)
    with np.errstate(divide="ignore"):
        ab = 1.0 + (t[:, None] - 1.0) / s
    ab[~np.isfinite(ab)] = np.nan
    q = [(1 - level) / 2, (1 + level) / 2]
    lo, hi = np.nanquantile(ab, q, axis=1) if np.isnan(ab).any() else np.quantile(ab, q, axis=1)
    return lo, hi


def fit_robust(
    spectra: list[np.ndarray], *, min_tail: int = 10, n_boot: int = 200, level: float = 0.9, seed: int = 0,
    rel_floor: float = 0.0, row_seeds: list | None = None, on: Workers = SERIAL,
) -> dict[str, np.ndarray]:
    """Bias-corrected power-law fit with a tail floor, an xmax-aware α and a bootstrap interval.

    xmin minimises the KS distance over candidates whose tail holds at least ``min_tail`` eigenvalues
    (all of them if fewer); α = 1 + (n − 1)/Σ ln(x/xmin). ``alpha_lo``/``alpha_hi``: percentile interval
    of α over ``n_boot`` bootstrap resamples of the tail at the chosen xmin (conditional on xmin; seeded).
    ``alpha_xmax``: the MLE of a power law truncated at the largest eigenvalue. ``row_seeds`` (one
    seed, or a list of ints, per spectrum): each spectrum's bootstrap from its own generator, so its
    interval does not depend on which other spectra are fitted with it — and the rows' bootstraps
    can be spread over the threads of ``on`` (same numbers).
    """
    B = len(spectra)
    res = {k: np.full(B, np.nan) for k in ("alpha", "xmin", "xmax", "D", "sigma", "num_pl_spikes",
                                           "alpha_lo", "alpha_hi", "alpha_xmax")}
    res["fit_ok"] = np.zeros(B, dtype=bool)
    if B == 0:
        return res
    X, first = _prepare(spectra, rel_floor)
    n = X.shape[1]
    if n < 3:
        return res
    alpha, valid, t, s = _candidates(X, first, True)
    floor = np.minimum(min_tail, n - first)[:, None]
    ok = valid & (t[None, :] >= floor) & (s > 1e-12) & (alpha > 1)
    choice, D = _select(X, first, alpha, ok)
    fitted = np.nonzero(choice >= 0)[0]
    c = choice[fitted]
    a = alpha[fitted, c]
    res["alpha"][fitted], res["xmin"][fitted], res["xmax"][fitted] = a, X[fitted, c], X[fitted, -1]
    res["D"][fitted] = D[fitted]
    res["sigma"][fitted] = (a - 1.0) / np.sqrt(n - c)
    res["num_pl_spikes"][fitted] = n - c
    res["fit_ok"][fitted] = True
    if n_boot and len(fitted):
        Xf = X[fitted]
        if row_seeds is None:
            lo, hi = _bootstrap_interval(Xf, c, n_boot, level, seed)
        else:  # rows are independent: in slices of similar tail length (less padding), over the workers
            seeds = [row_seeds[b] for b in fitted]
            pieces = max(on.n, 4) if len(fitted) * int((n - c).max()) * n_boot > _SPLIT_BOOT else 1
            order = np.argsort(-c, kind="stable")  # shortest tails first
            slices = np.array_split(order, min(pieces, len(fitted)))
            parts = on.map(lambda r: _bootstrap_interval(Xf[r], c[r], n_boot, level, seed, [seeds[i] for i in r]), slices)
            lo, hi = np.empty(len(fitted)), np.empty(len(fitted))
            for r, (a, b) in zip(slices, parts):
                lo[r], hi[r] = a, b
        res["alpha_lo"][fitted], res["alpha_hi"][fitted] = lo, hi
    res["alpha_xmax"] = truncated_alpha(X, choice, res["xmax"])
    return res
