"""Eigenvalues of WᵀW for many stacks of matrices, spread over a pool of threads.

The decompositions of different matrices are independent, and LAPACK, BLAS and torch release the GIL,
so ``threads`` workers run ``threads`` decompositions at once. Each one runs single-threaded (BLAS
limited to one thread, torch to one intra-op thread, for the duration of the call; the caller's
settings are given back), so every matrix goes through the same arithmetic whatever the number of
workers: the eigenvalues are bit for bit those of a one-thread run.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import scipy.linalg
import torch
from torch import Tensor

LOOP_FROM = 256  # matrices with at least this many columns are decomposed one by one
_SPLIT_WORK = 1 << 22  # a batch of small matrices is split over the workers above this many c³ flops

_controller = None
_controller_lock = threading.Lock()


@contextlib.contextmanager
def single_threaded():
    """BLAS (every OpenBLAS/MKL that threadpoolctl finds) and torch at one thread; restored on exit."""
    global _controller
    from threadpoolctl import ThreadpoolController

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
    # and SciPy's divide-and-conquer solver is ~1.5x faster than numpy's eigvalsh here.
    out = np.empty((K, c))
    for k in range(K):
        gram = x[k].T @ x[k]
        out[k] = scipy.linalg.eigh(gram, eigvals_only=True, driver="evd", overwrite_a=True, check_finite=False)
    return np.clip(out, 0.0, None)


def group_eigenvalues(
    groups: Sequence[Sequence[Tensor | np.ndarray]], method: str = "gram", dtype=np.float64, threads: int = 1,
    done: Callable[[int], None] | None = None,
) -> list[np.ndarray]:
    """Per group (arrays ``[K_i, r, c]`` of one shape), the eigenvalues ``[ΣK_i, c]`` of its parts in order.

    The work is cut into tasks (one per large matrix, a batch of small ones in as many slices as
    ``threads`` when it is big enough), run longest first on ``threads`` workers. ``done(g)`` is called
    when group g is finished (for a progress bar).
    """
    tasks: list[tuple[float, int, int, Callable[[], np.ndarray]]] = []  # (cost, group, row, work)
    sizes = []
    for g, parts in enumerate(groups):
        r, c = parts[0].shape[-2:]
        K = sum(p.shape[0] for p in parts)
        sizes.append((K, c))
        if c < LOOP_FROM or method == "svd":
            x = parts[0] if len(parts) == 1 else np.concatenate([np.asarray(p) for p in parts])
            pieces = threads if threads > 1 and K * c**3 > _SPLIT_WORK else 1
            for rows in np.array_split(np.arange(K), min(pieces, K)):
                sl = slice(int(rows[0]), int(rows[-1]) + 1)
                tasks.append((len(rows) * (r * c * c + c**3), g, sl.start,
                              lambda x=x, sl=sl: matrix_eigenvalues(x[sl], method, dtype)))
            continue
        start = 0
        for p in parts:
            for k in range(p.shape[0]):
                tasks.append((r * c * c + c**3, g, start + k, lambda p=p, k=k: matrix_eigenvalues(p[k:k + 1], method, dtype)))
            start += p.shape[0]
    out = [np.empty((K, c)) for K, c in sizes]
    left = [0] * len(groups)
    for _, g, _, _ in tasks:
        left[g] += 1

    def finish(task, ev):
        _, g, row, _ = task
        out[g][row:row + len(ev)] = ev
        left[g] -= 1
        if left[g] == 0 and done is not None:
            done(g)

    tasks.sort(key=lambda t: -t[0])  # longest first: the last task to start is a short one
    with single_threaded():
        if threads <= 1 or len(tasks) <= 1:
            for task in tasks:
                finish(task, task[3]())
        else:
            with ThreadPoolExecutor(min(threads, len(tasks))) as pool:
                futures = [(task, pool.submit(task[3])) for task in tasks]
                for task, future in futures:
                    finish(task, future.result())
    return out
