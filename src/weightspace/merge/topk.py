"""The k largest magnitudes of a tensor, chosen among equal values as ``torch.sort`` chooses them.

TIES keeps the k largest-magnitude entries of each task vector. mergekit picks them with
``torch.argsort(|δ|.float(), descending=True)[:k]``, so where several entries equal the k-th largest
magnitude (always, in practice, with bfloat16 weights: they have 256 values per octave), which of them
are kept is decided by the order in which PyTorch's CPU sort — libstdc++'s ``std::sort``, an
introsort, on (value, index) pairs — leaves equal values. A full sort of a 65 M-entry embedding takes
~7 s and ~1 GB of scratch.

:func:`largest_magnitudes` runs the same introsort (median-of-three pivot moved to the front,
unguarded Hoare partition, depth limit 2·⌊log2 n⌋, insertion sort of the last ≤ 16 entries), compiled,
but like a quickselect only into the part that holds position k: about two passes over the tensor,
and its result is the sort's, entry for entry. Where the introsort would fall back to heapsort (depth
exhausted) or the values hold NaN, the sort itself runs.
"""

from __future__ import annotations

import math

import numba
import numpy as np
import torch
from torch import Tensor

_INSERTION = 16  # libstdc++'s _S_threshold: segments of at most this many entries are insertion-sorted
CHUNK = 1 << 22


def largest_magnitudes(x: Tensor, k: int, base: Tensor | None = None) -> Tensor:
    """Boolean mask (shape of ``x``) of the entries at positions ``< k`` of
    ``torch.sort((x - base).abs().reshape(-1).float(), descending=True)`` (``base`` None: of ``x``),
    the difference made chunk by chunk, never whole."""
    n = x.numel()
    if k >= n:
        return torch.ones(x.shape, dtype=torch.bool)
    if k <= 0:
        return torch.zeros(x.shape, dtype=torch.bool)
    keys, finite = _magnitudes(x, base)
    if finite:
        order = np.arange(n, dtype=np.int32 if n < 2**31 else np.int64)
        if _introselect(_comparable(keys), order, k):
            del keys  # before the mask is made: the peak is the keys and the order, not all three
            mask = torch.zeros(n, dtype=torch.bool)
            mask.numpy()[order[:k]] = True
            return mask.reshape(x.shape)
        keys, _ = _magnitudes(x, base)  # the kernel reordered them
    mask = torch.zeros(n, dtype=torch.bool)
    mask[torch.argsort(keys.float(), descending=True)[:k]] = True  # NaN or heapsort: the sort decides
    return mask.reshape(x.shape)


def _magnitudes(x: Tensor, base: Tensor | None) -> tuple[Tensor, bool]:
    """|x − base| as mergekit's sort keys (float64 rounded to float32 after the difference; half
    precision kept: its values compare as their float32 conversions do), and whether all are finite
    or ±inf (no NaN)."""
    flat, b = x.reshape(-1), None if base is None else base.reshape(-1)
    keys = torch.empty(flat.numel(), dtype=torch.float32 if x.dtype == torch.float64 else x.dtype)
    finite = True
    for i in range(0, flat.numel(), CHUNK):
        part = flat[i:i + CHUNK] if b is None else flat[i:i + CHUNK] - b[i:i + CHUNK]
        keys[i:i + CHUNK] = part.abs()
        finite = finite and not bool(torch.isnan(keys[i:i + CHUNK]).any())
    return keys, finite


def _comparable(keys: Tensor) -> np.ndarray:
    """The keys as an array that orders as their float32 values do: float16/bfloat16 magnitudes as
    their bits (int16: for non-negative numbers the bit patterns order as the values)."""
    return keys.view(torch.int16).numpy() if keys.dtype in (torch.float16, torch.bfloat16) else keys.numpy()


@numba.njit(cache=True, nogil=True)
def _introselect(keys, order, k):  # pragma: no cover - compiled
    """Reorder ``keys`` (and ``order`` with them) as libstdc++'s ``std::sort(..., greater)`` would,
    only as far as the first ``k`` positions need: afterwards ``order[:k]`` are the original positions
    the sort puts first. False where the sort would switch to heapsort (not emulated)."""
    first, last = 0, keys.size
    depth = 2 * int(math.log2(keys.size))
    while last - first > _INSERTION:
        if depth == 0:
            return False
        depth -= 1
        a, b, c = first + 1, first + (last - first) // 2, last - 1  # __move_median_to_first
        if keys[a] > keys[b]:
            m = b if keys[b] > keys[c] else (c if keys[a] > keys[c] else a)
        elif keys[a] > keys[c]:
            m = a
        else:
            m = c if keys[b] > keys[c] else b
        keys[first], keys[m] = keys[m], keys[first]
        order[first], order[m] = order[m], order[first]
        pivot = keys[first]
        lo, hi = first + 1, last  # __unguarded_partition
        while True:
            while keys[lo] > pivot:
                lo += 1
                if lo >= last:
                    return False
            hi -= 1
            while pivot > keys[hi]:
                hi -= 1
            if lo >= hi:
                break
            keys[lo], keys[hi] = keys[hi], keys[lo]
            order[lo], order[hi] = order[hi], order[lo]
            lo += 1
        if k == lo:
            return True
        if k < lo:
            last = lo
        else:
            first = lo
    for i in range(first + 1, last):  # insertion sort: stable, so equal keys keep their order
        key, pos = keys[i], order[i]
        j = i
        while j > first and key > keys[j - 1]:
            keys[j] = keys[j - 1]
            order[j] = order[j - 1]
            j -= 1
        keys[j], order[j] = key, pos
    return True
