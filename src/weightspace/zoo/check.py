"""Checking a zoo (:class:`~weightspace.zoo.store.Zoo`) against its index: every indexed file
present, readable, of its recorded checksum and of the zoo's layout; orphan files that interrupted
writes left behind, and their removal. :meth:`Zoo.verify`, :meth:`Zoo.inspect` and
:meth:`Zoo.clean` call these."""

from __future__ import annotations

from ..errors import CheckpointError, ZooError
from ..io import read_tensor_specs, sha256_file
from ..space import WeightSpace
from .layout import MODELS, STAGING


def verify(zoo) -> list[str]:
    """Problems with indexed files (missing, unreadable, checksum mismatch), then orphan files.

    Orphans, files in models/ with no row (a writer killed between rename and commit), are only
    informational: the index never points at them.
    """
    problems, orphans = inspect(zoo)
    return problems + orphans


def inspect(zoo) -> tuple[list[str], list[str]]:
    """``(problems, leftovers)``: indexed files that are outside the zoo, missing, unreadable, of
    another checksum or layout; then orphan files in models/ and ``.staging`` leftovers."""
    df = zoo.index()
    problems = []
    for model_id, file, expected in zip(df["model_id"], df["file"], df["sha256"]):
        try:
            path = zoo.path_of(file)
        except ZooError as e:
            problems.append(f"{model_id}: {e}")
            continue
        if not path.is_file():
            problems.append(f"{model_id}: {file} is missing")
            continue
        try:
            actual = sha256_file(path)
            tensors = read_tensor_specs(path)
        except (OSError, CheckpointError) as e:
            problems.append(f"{model_id}: {file} is unreadable ({e})")
            continue
        if actual != expected:
            problems.append(
                f"{model_id}: {file} checksum mismatch (index {expected[:12]}..., file {actual[:12]}...): "
                "the file changed after it was indexed"
            )
        mismatch = layout_mismatch(zoo.space, tensors)
        if mismatch:
            problems.append(f"{model_id}: {file} does not hold layout '{zoo.space.name}': {mismatch}")
    models = zoo.root / MODELS
    if not models.is_dir():
        problems.append(f"{MODELS}/ is not a directory")
        return problems, []
    indexed = set(df["file"])
    orphans = [
        f"orphan: {MODELS}/{p.name} is not in the index (a write interrupted before indexing); "
        "delete it or add the model again"
        for p in sorted(models.iterdir())
        if p.is_file() and not p.name.endswith(".tmp") and f"{MODELS}/{p.name}" not in indexed
    ]
    staging = zoo.root / STAGING
    if staging.is_dir():
        orphans += [f"leftover: {STAGING}/{p.name} (a write that never finished); Zoo.clean() removes it"
                    for p in sorted(staging.iterdir())]
    return problems, orphans


def layout_mismatch(space: WeightSpace, tensors: dict[str, tuple[tuple[int, ...], str]]) -> str | None:
    """How a file's tensors (name → (shape, dtype), as :func:`~weightspace.io.read_tensor_specs`
    gives them) differ from ``space``, or None."""
    for e in space.entries:
        if e.name not in tensors:
            return f"it lacks tensor {e.name!r}"
        shape, dtype = tensors[e.name]
        if shape != e.shape or dtype != str(e.dtype).removeprefix("torch."):
            return f"tensor {e.name!r} is {dtype} {list(shape)}, the layout says {e.dtype} {list(e.shape)}"
    return None


def clean(zoo) -> list[str]:
    """Remove what interrupted writes left behind (``.staging`` files, orphan files in models/);
    returns what was removed. Only files no index row points at are touched; run it when no
    writer is adding to the zoo (its staged files would go too)."""
    indexed = zoo.files()
    removed = []
    for d in (zoo.root / STAGING, zoo.root / MODELS):
        if not d.is_dir():
            continue
        for p in sorted(d.iterdir()):
            rel = f"{d.name}/{p.name}"
            if p.is_file() and rel not in indexed:
                p.unlink()
                removed.append(rel)
    return removed
