"""Eigenvalues of WᵀW for many stacks of matrices, spread over a pool of threads.

The decompositions of different matrices are independent, and BLAS, torch and LAPACK (called so that
it releases the GIL: :func:`symmetric_eigenvalues`) let other threads run meanwhile, so ``threads``
workers run ``threads`` decompositions at once. Each one runs single-threaded (BLAS
limited to one thread, torch to one intra-op thread, for the duration of the call; the caller's
settings are given back), so every matrix goes through the same arithmetic whatever the number of
workers: the eigenvalues are bit for bit those of a one-thread run.
"""

from __future__ import annotations

import contextlib
import ctypes
import threading
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import scipy.linalg
import torch
from threadpoolctl import ThreadpoolController
from torch import Tensor

LOOP_FROM = 256  # matrices with at least this many columns are decomposed one by one
_SPLIT_WORK = 1 << 22  # a batch of small matrices is split over the workers above this many c³ flops

_controller = None
_controller_lock = threading.Lock()


@contextlib.contextmanager
def single_threaded():
    """BLAS (every OpenBLAS/MKL that threadpoolctl finds) and torch at one thread; restored on exit."""
    global _controller
    with _controller_lock:  # finding the loaded BLAS libraries takes ~5-10 ms: once per process
        if _controller is None:
            _controller = ThreadpoolController()
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        with _controller.limit(limits=1, user_api="blas"):
            yield
    finally:
        torch.set_num_threads(previous)


def matrix_eigenvalues(mats: Tensor | np.ndarray, method: str = "gram", dtype=np.float64) -> np.ndarray:
    """Eigenvalues of WᵀW for a batch ``[K, r, c]`` (r ≥ c): ``[K, c]`` float64, unsorted, in this thread.

    ``gram`` forms WᵀW in ``dtype`` (a single tall matrix goes through BLAS's symmetric rank-k update)
    and takes LAPACK's symmetric eigenvalues; ``svd`` squares singular values (slower, and more
    accurate for eigenvalues below ~eps·λmax, which only ``matrix_rank`` looks at).
    """
    x = mats.numpy() if isinstance(mats, Tensor) else mats
    x = x.astype(dtype, copy=False)
    if method == "svd":
        return (np.linalg.svd(x, compute_uv=False) ** 2).astype(np.float64)
    K, _, c = x.shape
    if c < LOOP_FROM:  # many small matrices: one batched product and one batched eigensolver call
        t = torch.from_numpy(np.ascontiguousarray(x))  # torch's batched LAPACK: 1.2-1.5x numpy's or a loop here
        return np.clip(torch.linalg.eigvalsh(t.mT @ t).numpy(), 0.0, None).astype(np.float64)
    # Large ones one at a time: WᵀW of a 2-D array is BLAS's symmetric rank-k update (half a product),
    # and SciPy's OpenBLAS divide-and-conquer solver is ~1.5x faster than numpy's eigvalsh here.
    out = np.empty((K, c))
    for k in range(K):
        out[k] = symmetric_eigenvalues(x[k].T @ x[k])
    return np.clip(out, 0.0, None)


def symmetric_eigenvalues(a: np.ndarray) -> np.ndarray:
    """Eigenvalues of a symmetric matrix from its lower triangle: ``scipy.linalg.eigh(a, driver="evd",
    eigvals_only=True)``, bit for bit, and without holding the GIL.

    SciPy's LAPACK wrapper holds the GIL through the call, so threads decomposing matrices would take
    turns. Where SciPy bundles OpenBLAS, its LAPACKE ``?syevd`` (the same routine of the same library)
    is called through ctypes, which lets the GIL go; elsewhere SciPy's wrapper is used.
    """
    fn = _lapacke_syevd().get(a.dtype)
    if fn is None:
        return scipy.linalg.eigh(a, eigvals_only=True, driver="evd", overwrite_a=True, check_finite=False)
    f = np.asfortranarray(a)  # as SciPy hands it to LAPACK: column-major, lower triangle
    if f is a:
        f = f.copy()  # LAPACK overwrites it
    n = f.shape[0]
    w = np.empty(n, dtype=f.dtype)
    info = fn(_COL_MAJOR, b"N", b"L", n, f.ctypes.data, n, w.ctypes.data)
    if info != 0:  # not converged (NaN entries are filtered out before): SciPy's error message
        return scipy.linalg.eigh(a, eigvals_only=True, driver="evd", check_finite=False)
    return w


_COL_MAJOR = 102
_lapacke = None


def _lapacke_syevd() -> dict:
    """``{dtype: LAPACKE_?syevd}`` from SciPy's bundled OpenBLAS, or ``{}`` when it has none."""
    global _lapacke
    with _controller_lock:
        if _lapacke is None:
            _lapacke = {}
            libs = Path(scipy.__file__).parent.parent / "scipy.libs"
            for info in ThreadpoolController().info():
                if info.get("internal_api") != "openblas" or Path(info["filepath"]).parent != libs:
                    continue
                try:
                    lib = ctypes.CDLL(info["filepath"])
                    for dtype, name in ((np.float32, "scipy_LAPACKE_ssyevd"), (np.float64, "scipy_LAPACKE_dsyevd")):
                        fn = getattr(lib, name)
                        fn.restype = ctypes.c_int
                        fn.argtypes = [ctypes.c_int, ctypes.c_char, ctypes.c_char, ctypes.c_int, ctypes.c_void_p,
                                       ctypes.c_int, ctypes.c_void_p]
                        _lapacke[np.dtype(dtype)] = fn
                except (OSError, AttributeError):  # another build of SciPy: keep its wrapper
                    _lapacke = {}
                break
    return _lapacke


@dataclass(frozen=True)
class Workers:
    """``n`` threads to spread independent work over: a pool, or none (n = 1: in the caller's thread)."""

    n: int
    pool: ThreadPoolExecutor | None = None

    def map(self, fn: Callable, items) -> list:
        return [fn(i) for i in items] if self.pool is None else list(self.pool.map(fn, items))


SERIAL = Workers(1)


@contextlib.contextmanager
def workers(threads: int):
    """:class:`Workers` for ``threads`` threads, with BLAS and torch single-threaded meanwhile."""
    with single_threaded():
        if threads <= 1:
            yield SERIAL
        else:
            with ThreadPoolExecutor(threads) as pool:
                yield Workers(threads, pool)


def _rows(part, a: int, b: int):
    """Matrices a..b of a part: a ``[K, r, c]`` array, or one made on demand (``rows(a, b)``, ``count``)."""
    return part.rows(a, b) if hasattr(part, "rows") else part[a:b]


def _count(part) -> int:
    return part.count if hasattr(part, "rows") else part.shape[0]


def eigenvalues_as_ready(
    groups: Sequence[Sequence], method: str = "gram", dtype=np.float64, on: Workers = SERIAL,
) -> Iterator[tuple[int, np.ndarray]]:
    """Per group (parts ``[K_i, r, c]`` of one shape), ``(g, eigenvalues [ΣK_i, c])``, parts in order,
    yielded as each group is finished, so that the caller can work on it while the pool goes on.

    The work is cut into tasks: one per large matrix, a batch of small ones in as many slices as the
    pool has workers when it is big enough. On a pool they run longest first; without one, in order.
    A part can be made on demand (``part.rows(a, b)``, ``part.count``), then in the task that decomposes it.
    """
    tasks: list[tuple[float, int, int, Callable[[], np.ndarray]]] = []  # (cost, group, row, work)
    sizes = []
    for g, parts in enumerate(groups):
        r, c = parts[0].shape[-2:]
        K = sum(_count(p) for p in parts)
        sizes.append((K, c))
        if c < LOOP_FROM or method == "svd":
            x = np.concatenate([np.asarray(_rows(p, 0, _count(p))) for p in parts]) if len(parts) > 1 else _rows(parts[0], 0, K)
            pieces = on.n if K * c**3 > _SPLIT_WORK else 1
            for rows in np.array_split(np.arange(K), min(pieces, K)):
                sl = slice(int(rows[0]), int(rows[-1]) + 1)
                tasks.append((len(rows) * (r * c * c + c**3), g, sl.start,
                              lambda x=x, sl=sl: matrix_eigenvalues(x[sl], method, dtype)))
            continue
        start = 0
        for p in parts:
            for k in range(_count(p)):
                tasks.append((r * c * c + c**3, g, start + k,
                              lambda p=p, k=k: matrix_eigenvalues(_rows(p, k, k + 1), method, dtype)))
            start += _count(p)
    out = [np.empty((K, c)) for K, c in sizes]
    left = [0] * len(groups)
    for _, g, _, _ in tasks:
        left[g] += 1

    def finish(task, ev):
        _, g, row, _ = task
        out[g][row:row + len(ev)] = ev
        left[g] -= 1
        return left[g] == 0

    if on.pool is None:
        for task in tasks:
            if finish(task, task[3]()):
                yield task[1], out[task[1]]
        return
    tasks.sort(key=lambda t: -t[0])  # longest first: the last task to start is a short one
    futures = {on.pool.submit(task[3]): task for task in tasks}
    try:
        for future in as_completed(futures):
            task = futures[future]
            if finish(task, future.result()):
                yield task[1], out[task[1]]
    finally:  # the caller stopped early (an error): drop what has not started
        for future in futures:
            future.cancel()
