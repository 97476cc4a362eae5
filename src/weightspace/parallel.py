"""Blocks of work run here or on Ray: one helper (``map_blocks``) that every scale-out uses.

The local backend (``backend=None``) runs the blocks one after another in this process; a
:class:`RayBackend` runs each block as one Ray task, on a local Ray started for the call or on the
cluster at ``address``. Large inputs shared by every block (a data set, the models of one side of a
pairwise matrix) go to Ray's object store once. A task whose worker dies (killed, out of memory) is
run again by Ray, up to ``max_retries`` times, so a block function must be safe to run twice (the
zoo store's writes are: a second write of a model id is ignored).

Ray is an optional dependency (``pip install 'weightspace[ray]'``): it is imported only when a
Ray backend is used.
"""

from __future__ import annotations

import socket
from collections.abc import Callable, Sequence
from contextlib import contextmanager, redirect_stdout
from dataclasses import dataclass

import torch
from torch import Tensor
from tqdm.auto import tqdm

from .errors import BackendError, ConfigError, WeightspaceError
from .ray_progress import Counter, LineRelay, Lines, Ticker

INSTALL_HINT = "pip install 'weightspace[ray]'"
BACKENDS = ("local", "ray")
PROBE_TIMEOUT_S = 5.0


@dataclass(frozen=True)
class RayBackend:
    """Where and how blocks run on Ray.

    ``address``: a running cluster (``host:port`` of its head, ``ray://host:port`` for Ray Client,
    or ``auto``); ``None`` starts a local Ray for the call, with ``num_cpus`` CPUs (default: all)
    and an object store of ``object_store_memory`` bytes (default: Ray's, 30% of memory; cap it on
    small machines). If Ray is already initialised in this process, that session is used as it is.
    Each task takes ``cpus_per_task`` CPUs and runs torch with that many threads.
    """

    address: str | None = None
    num_cpus: int | None = None
    object_store_memory: int | None = None
    cpus_per_task: int = 1
    max_retries: int = 3

    def __post_init__(self):
        if not isinstance(self.cpus_per_task, int) or self.cpus_per_task < 1:
            raise ConfigError(f"cpus_per_task: expected a positive integer, got {self.cpus_per_task!r}")
        if not isinstance(self.max_retries, int) or self.max_retries < 0:
            raise ConfigError(f"max_retries: expected a non-negative integer, got {self.max_retries!r}")


def resolve_backend(backend: str | RayBackend | None, address: str | None = None) -> RayBackend | None:
    """``"local"``/``None`` → ``None`` (run here); ``"ray"`` → ``RayBackend(address)``; a RayBackend as is."""
    if isinstance(backend, RayBackend):
        if address is not None:
            raise ConfigError("address: give it inside the RayBackend, not beside it")
        return check_ray(backend)
    if backend in (None, "local"):
        if address is not None:
            raise ConfigError(f"--address {address}: only used with --backend ray")
        return None
    if backend == "ray":
        return check_ray(RayBackend(address=address))
    raise ConfigError(f"backend: expected one of {list(BACKENDS)} or a RayBackend, got {backend!r}")


def import_ray():
    """The ``ray`` module, or a one-line error saying how to install it."""
    try:
        import ray
    except ImportError:
        raise BackendError(f"the Ray backend needs Ray, which is not installed here: {INSTALL_HINT}") from None
    return ray


def check_ray(backend: RayBackend) -> RayBackend:
    """Fail now, before any work, if Ray is not installed or ``backend.address`` is unreachable."""
    import_ray()
    if backend.address and backend.address != "auto":
        _probe(backend.address)
    return backend


def _probe(address: str) -> None:
    """Fail fast on an address nothing listens on: ``ray.init`` would retry it for minutes."""
    hostport = address.removeprefix("ray://")
    host, sep, port = hostport.rpartition(":")
    if not sep or not port.isdigit():
        raise BackendError(f"--address {address}: expected host:port (or ray://host:port, or auto)")
    try:
        socket.create_connection((host.strip("[]"), int(port)), timeout=PROBE_TIMEOUT_S).close()
    except OSError as e:
        raise BackendError(
            f"--address {address}: no Ray cluster reachable there ({e.strerror or e}); start one with "
            "`ray start --head` on that machine, or leave --address out to run a local Ray"
        ) from None


@contextmanager
def ray_session(backend: RayBackend):
    """The ``ray`` module, connected as ``backend`` says; shut down afterwards if this call started it."""
    ray = import_ray()
    if ray.is_initialized():
        yield ray
        return
    if backend.address and backend.address != "auto":
        _probe(backend.address)
    kwargs = {"include_dashboard": False, "logging_level": "warning"}
    if backend.address is None:
        kwargs.update(num_cpus=backend.num_cpus, object_store_memory=backend.object_store_memory)
    try:
        ray.init(address=backend.address, **kwargs)
    except ConnectionError as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise BackendError(f"--address {backend.address}: cannot connect to a Ray cluster ({first})") from None
    try:
        yield ray
    finally:
        ray.shutdown()


def driver_actor(ray, cls, *args):
    """An actor of ``cls`` on the driver's node, taking no CPU: the driver's helpers (progress,
    relayed lines, the zoo's index writer) go down with the driver only, never with a worker node
    (Ray would place an actor that takes no CPU on any node)."""
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    here = NodeAffinitySchedulingStrategy(ray.get_runtime_context().get_node_id(), soft=False)
    return ray.remote(num_cpus=0)(cls).options(scheduling_strategy=here).remote(*args)


def _run_block(fn, key, block, counter, lines, threads, *shared):
    """One Ray task: ``fn(block, *shared)`` with ``threads`` torch threads (and a ticker when counted,
    its printed lines sent to ``lines`` when relayed)."""
    torch.set_num_threads(threads)
    if lines is not None:
        relay = LineRelay(lines)
        try:
            with redirect_stdout(relay):
                return _run_block(fn, key, block, counter, None, threads, *shared)
        finally:
            relay.close()
    if counter is None:
        return fn(block, *shared)
    ticker = Ticker(counter, key)
    try:
        return fn(block, *shared, tick=ticker)
    finally:
        ticker.flush()


def map_blocks(
    fn: Callable,
    blocks: Sequence,
    *shared,
    backend: RayBackend | None = None,
    total: int | None = None,
    progress: bool = False,
    desc: str = "blocks",
    relay_prints: bool = False,
) -> list:
    """``[fn(block, *shared) for block in blocks]``, here or as one Ray task per block.

    ``fn`` must be a module-level function (Ray ships it by reference; on a cluster weightspace
    must be installed on every node). With ``total``, ``fn`` also gets ``tick``, an object with
    tqdm's ``update(n)``, and the progress bar counts those units across all workers; otherwise
    it counts finished blocks. Results come back in the order of ``blocks``. With
    ``relay_prints``, the lines ``fn`` prints on Ray's workers are printed here as they come, as
    they are (Ray would show them prefixed by the worker's name).
    """
    blocks = list(blocks)
    if backend is None:
        with tqdm(total=total if total is not None else len(blocks), desc=desc, disable=not progress) as bar:
            out = []
            for block in blocks:
                out.append(fn(block, *shared, tick=bar) if total is not None else fn(block, *shared))
                if total is None:
                    bar.update(1)
            return out
    with ray_session(backend) as ray:
        return _map_on_ray(ray, fn, blocks, shared, backend, total, progress, desc, relay_prints)


def _map_on_ray(ray, fn, blocks, shared, backend, total, progress, desc, relay_prints) -> list:
    refs = [ray.put(s) for s in shared]
    counter = driver_actor(ray, Counter) if total is not None else None
    lines = driver_actor(ray, Lines) if relay_prints else None
    task = ray.remote(_run_block).options(num_cpus=backend.cpus_per_task, max_retries=backend.max_retries)
    pending = {task.remote(fn, i, b, counter, lines, backend.cpus_per_task, *refs): i
               for i, b in enumerate(blocks)}
    out: list = [None] * len(blocks)
    try:
        with tqdm(total=total if total is not None else len(blocks), desc=f"{desc} (ray)",
                  disable=not progress) as bar:
            while pending:
                done, _ = ray.wait(list(pending), num_returns=1, timeout=0.5)
                for ref in done:
                    i = pending.pop(ref)
                    out[i] = _get(ray, ref, i, backend)
                    if total is None:
                        bar.update(1)
                if total is not None:  # every block done is every unit done, whatever the counter has heard
                    bar.n = total if not pending else min(total, ray.get(counter.total.remote()))
                    bar.refresh()
                if lines is not None:  # a finished block's lines are all in (LineRelay.close)
                    for line in ray.get(lines.take.remote()):
                        tqdm.write(line)
    finally:
        for ref in pending:  # after an error or an interrupt: nothing left running in a session we keep
            ray.cancel(ref, force=True)
    return out


def _get(ray, ref, i: int, backend: RayBackend):
    """A task's result; its own weightspace error re-raised as such, a lost worker as one line."""
    try:
        return ray.get(ref)
    except ray.exceptions.RayTaskError as e:
        if isinstance(e.cause, WeightspaceError):
            raise e.cause from None
        raise
    except (ray.exceptions.WorkerCrashedError, ray.exceptions.NodeDiedError, ray.exceptions.OutOfMemoryError) as e:
        raise BackendError(
            f"block {i}: its Ray worker died ({type(e).__name__}) and its {backend.max_retries} retries are used "
            "up; finished work is kept, run again to resume"
        ) from None


# ---------------------------------------------------------------- blocks of rows and of pairs
def row_blocks(n: int, block_size: int, what: str = "block_size") -> list[tuple[int, int]]:
    """``[(start, end), ...]`` covering ``range(n)`` in blocks of ``block_size`` (named ``what`` in errors)."""
    if not isinstance(block_size, int) or block_size < 1:
        raise ConfigError(f"{what}: expected a positive integer, got {block_size!r}")
    return [(s, min(s + block_size, n)) for s in range(0, n, block_size)]


def _rows_of(span, fn, data, kwargs):
    s, e = span
    return fn(data[s:e], **kwargs)


def map_rows(fn: Callable, data: Tensor, *, block_size: int, backend: RayBackend | None = None,
             progress: bool = False, desc: str = "rows", **kwargs) -> list:
    """``fn(data[s:e], **kwargs)`` for consecutive blocks of rows; results in order (concatenate them)."""
    return map_blocks(_rows_of, row_blocks(len(data), block_size), fn, data, kwargs, backend=backend,
                      progress=progress, desc=desc)


def _columns_of(span, fn, a, b, kwargs):
    s, e = span
    return fn(a, b[s:e], **kwargs)


def pairwise_blocks(fn: Callable, a, b, *, block_size: int, backend: RayBackend | None = None,
                    progress: bool = False, desc: str = "pairs", **kwargs) -> Tensor:
    """An ``[A, B]`` matrix ``fn(a, b, **kwargs)`` computed as column blocks ``fn(a, b[s:e])`` and joined.

    ``a`` goes to every block (once to Ray's object store); ``b`` is anything sliceable by rows.
    """
    parts = map_blocks(_columns_of, row_blocks(len(b), block_size), fn, a, b, kwargs, backend=backend,
                       progress=progress, desc=desc)
    return torch.cat(parts, 1) if parts else fn(a, b[:0], **kwargs)
