"""Running a merge plan out of core: each job reads its inputs from the models' memory-mapped shards,
merges them, hands the result to the writer and lets it all go before its memory is counted again.

Jobs run on ``threads`` worker threads (PyTorch's kernels and the compiled top-k selection release
the GIL), each with one intra-op thread, and start only while the estimated memory of the jobs in
flight stays within ``memory_budget`` bytes (a job larger than the budget runs alone). Methods that
draw random numbers run their jobs one after another in mergekit's order (by tensor name), from one
generator seeded with the config's ``seed``, so that a seeded merge draws what mergekit draws.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import threading
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager

import torch
from torch import Tensor
from tqdm.auto import tqdm

from ..errors import LayoutError
from .api import merge_tensor, resolve_parameters
from .plan import Job, MergePlan

DEFAULT_BUDGET = 1 << 30


def job_bytes(job: Job, sparsified: bool) -> int:
    """What a job holds at its peak, roughly: its inputs and output in the compute dtype, and the
    top-k selection's scratch (magnitudes and a 4-byte index per entry) where it sparsifies."""
    n = job.spec.numel
    itemsize = job.compute.itemsize if job.compute is not None else job.spec.dtype.itemsize
    inputs = len(job.inputs) + (job.base is not None)
    return n * itemsize * (inputs + 3) + (n * (itemsize + 4) if sparsified else 0)


def run_plan(plan: MergePlan, sources: Mapping[str, object], write: Callable[[str, Tensor], None], *, seed: int = 0,
             threads: int = 1, memory_budget: int = DEFAULT_BUDGET, progress: bool = True) -> None:
    """Merge every job of ``plan`` and pass each result to ``write(name, tensor)`` (called from the
    worker threads)."""
    method = plan.method
    jobs = sorted(plan.jobs, key=lambda j: j.label)  # mergekit's order
    generator = torch.Generator().manual_seed(seed) if method.random else None
    sparsified = "density" in method.parameters or "select_topk" in method.parameters
    bar = tqdm(total=len(jobs), desc="merge", unit="tensor", disable=not progress)

    def run(job: Job) -> None:
        write(job.out, merge_job(plan, job, sources, generator))
        _trim_heap()
        bar.update(1)

    try:
        if method.random or threads <= 1:
            for job in jobs:
                run(job)
            return
        budget, failed = _Budget(memory_budget), threading.Event()

        def done(future, cost):
            budget.release(cost)
            if future.exception() is not None:
                failed.set()

        with _one_intra_op_thread(), ThreadPoolExecutor(threads) as pool:
            futures = []
            for job in jobs:
                cost = job_bytes(job, sparsified)
                budget.acquire(cost)
                if failed.is_set():
                    break
                futures.append(pool.submit(run, job))
                futures[-1].add_done_callback(lambda f, c=cost: done(f, c))
            for future in futures:
                future.result()  # the first failure, in job order
    finally:
        bar.close()


def merge_job(plan: MergePlan, job: Job, sources: Mapping[str, object], generator: torch.Generator | None) -> Tensor:
    """The output tensor of one job."""
    tensors = [sources[ref].read([name])[name] for ref, name in job.inputs]
    if job.compute is None:  # integer buffers: copied when every model agrees on them
        if not all(torch.equal(t, tensors[0]) for t in tensors[1:]):
            raise LayoutError(f"tensor '{job.out}' is not floating point and differs between models; there is no "
                              "way to merge it")
        return tensors[0]
    stacked = torch.empty((len(tensors), *job.spec.shape), dtype=job.compute)
    for i in range(len(tensors)):
        stacked[i].copy_(tensors[i])
        tensors[i] = None  # its pages go back as soon as it is copied
    base = None
    if job.base is not None:
        ref, name = job.base
        base = sources[ref].read([name])[name].to(job.compute)
    params = resolve_parameters(plan.method, job.parameters, len(job.inputs))
    return merge_tensor(plan.method, stacked, base, params, generator).to(job.spec.dtype)


class _Budget:
    """Bytes of jobs in flight; ``acquire`` waits until ``cost`` fits (or nothing else runs)."""

    def __init__(self, limit: int):
        self.limit, self.used = limit, 0
        self.cond = threading.Condition()

    def acquire(self, cost: int) -> None:
        with self.cond:
            self.cond.wait_for(lambda: self.used == 0 or self.used + cost <= self.limit)
            self.used += cost

    def release(self, cost: int) -> None:
        with self.cond:
            self.used -= cost
            self.cond.notify_all()


def _load_malloc_trim():
    try:
        return ctypes.CDLL(ctypes.util.find_library("c") or None).malloc_trim
    except (OSError, AttributeError):  # not glibc
        return None


_MALLOC_TRIM = _load_malloc_trim()


def _trim_heap() -> None:
    """Hand the heap memory a job freed back to the system: glibc keeps freed blocks under 32 MB (a
    job's chunk temporaries) for reuse, ~100-200 MB that would otherwise add to the next job's peak."""
    if _MALLOC_TRIM is not None:
        _MALLOC_TRIM(0)


@contextmanager
def _one_intra_op_thread():
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(previous)
