"""A function over a zoo's models, block by block, here or on Ray: the zoo-level scale-out helper.

For analyses that look at every checkpoint of a large zoo (spectra, features, evaluations): the
driver reads the index, and each block of models is loaded from its files where it runs (a Ray
worker opens the zoo by its path, so the zoo must be on a file system the workers see; it never
opens the SQLite index) and only ``fn``'s result comes back.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from ..parallel import RayBackend, map_blocks, row_blocks
from .store import Zoo


def map_zoo(
    fn: Callable,
    zoo: Zoo,
    *,
    where: str | None = None,
    params: Sequence = (),
    block_size: int = 256,
    backend: RayBackend | None = None,
    progress: bool = False,
    **kwargs,
) -> list:
    """``[fn(weights, rows, **kwargs), ...]`` for blocks of ``block_size`` models matching ``where``.

    ``weights`` is the block's ``Tensor[n, P]`` and ``rows`` its index rows (``Zoo.load``), in the
    zoo's order; results come in block order (``pd.concat`` them when they are DataFrames). ``fn``
    must be a module-level function; with a :class:`~weightspace.parallel.RayBackend` each block
    is one Ray task.
    """
    rows = zoo.index(where, params)
    blocks = [rows.iloc[s:e].reset_index(drop=True) for s, e in row_blocks(len(rows), block_size)]
    return map_blocks(_zoo_block, blocks, str(zoo.root.resolve()), fn, kwargs, backend=backend, progress=progress,
                      desc=f"{getattr(fn, '__name__', 'fn')} over {len(rows)} models")


def _zoo_block(rows, root: str, fn: Callable, kwargs: dict):
    return fn(Zoo.open(root).load_rows(rows), rows, **kwargs)
