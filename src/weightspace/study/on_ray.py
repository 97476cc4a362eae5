"""The study's methods as Ray tasks (``weightspace study --backend ray``).

Each method is one task, run as the local worker pool runs it (one torch thread, stage lines
instead of bars), so ``results.json`` holds the local numbers; the lines are printed on the
driver as they come. The output folder must be at the same path on every node: a method writes
its data, generators and ``results.json`` there itself.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

from ..parallel import RayBackend, map_blocks
from .presets import longest_first


def method_parts_on_ray(part: Callable, names: Sequence[str], out: Path, preset: dict, seed: int, seeds: int,
                        progress: bool, backend: RayBackend) -> list[dict]:
    """``part(name, out, preset, seed, progress, stage_lines, seeds)`` for each method as a Ray task,
    the costliest submitted first; the parts in ``names`` order."""
    first = longest_first(names)
    parts = map_blocks(part, first, Path(out).resolve(), preset, seed, False, progress, seeds, backend=backend,
                       progress=progress, desc="study", relay_prints=True)
    by_name = dict(zip(first, parts))
    return [by_name[m] for m in names]
