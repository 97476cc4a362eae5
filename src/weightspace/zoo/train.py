"""A population trained into a zoo, here or on Ray (:mod:`~weightspace.zoo.ray_backend`).

Checkpoints go to the :class:`~weightspace.zoo.store.Zoo` as they are made. Chunks whose checkpoints
are all in the zoo are skipped, so a killed job resumes by running the same command again, to the
same weights as an uninterrupted one (the chunks do not depend on what is already done).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

from torch import Tensor

from ..data import Dataset
from ..nets import Architecture
from ..parallel import RayBackend
from .store import Zoo
from .trainer import Run, TrainConfig, plan_chunks, train_chunks


def train_population(
    arch: Architecture,
    dataset: Dataset,
    runs: Sequence[Run],
    zoo: Zoo,
    config: TrainConfig = TrainConfig(),
    *,
    init: Tensor | None = None,
    progress: bool = True,
    extra: dict | None = None,
    backend: RayBackend | None = None,
) -> int:
    """Train ``runs`` and write their checkpoints to ``zoo``; returns the number of checkpoints added.

    ``init`` (``Tensor[P]``), when given, is every run's starting point (a fine-tune, as P-diff's);
    otherwise each run starts from ``arch.init`` with its own seed and ``init_scale``. ``extra``
    is added to every checkpoint's record. ``backend``: ``None`` trains the chunks one after another
    here; a :class:`~weightspace.parallel.RayBackend` trains each chunk as one Ray task (see
    :mod:`~weightspace.zoo.ray_backend`), to the same weights.
    """
    x, y = dataset.split("train")
    steps_per_epoch = math.ceil(x.shape[0] / config.batch_size)
    chunks = plan_chunks(arch, runs, zoo.ids(), steps_per_epoch, config)
    total = sum(max(s.last for _, s in c) for c in chunks)
    if backend is not None:
        from .ray_backend import train_chunks_on_ray

        added = train_chunks_on_ray(arch, dataset, chunks, zoo, config, init=init, steps_per_epoch=steps_per_epoch,
                                    total=total, progress=progress, backend=backend, extra=extra)
    else:
        added = train_chunks(arch, dataset, chunks, zoo.add_many, config, init=init, progress=progress, extra=extra)
    zoo.drop_stale_staged()  # what writers that died (a killed run, a lost node) were staging
    return added
