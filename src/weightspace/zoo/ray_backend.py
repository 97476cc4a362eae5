"""Zoo training on Ray: each chunk of the population is one Ray task writing to the shared zoo.

The chunks are the local trainer's own (:func:`~weightspace.zoo.trainer.plan_chunks`) and a task runs
the local trainer's chunk loop, so the weights are bitwise those of the local backend: a model's
weights can depend on its chunk mates (dropout masks come from one generator per chunk), so a
shard is never anything but a whole chunk. Every worker opens the zoo by its path and writes its
checkpoint files through the same atomic store (``Zoo.stage_many``), so the zoo directory must be
on a file system every worker sees; one Ray actor on the driver's node indexes them
(``Zoo.commit_staged``), so the SQLite index is only ever opened on that one host, as SQLite's WAL
requires (it does not work across the hosts of a network file system).

A worker that dies mid-chunk (killed, out of memory, its node lost) leaves the checkpoints it
committed; Ray runs the task again, the chunk is retrained from its start to the same weights, and
the store ignores the ids already indexed — so the zoo ends complete, each model once. The files
the dead worker was staging are removed when the build ends (``Zoo.drop_stale_staged``).
"""

from __future__ import annotations

from ..data import Dataset
from ..errors import ConfigError
from ..nets import build_architecture
from ..parallel import RayBackend, driver_actor, map_blocks, ray_session
from ..task import Task
from .store import Zoo
from .trainer import TrainConfig, run_architecture, train_chunk


def train_chunks_on_ray(arch, dataset: Dataset, chunks: list, zoo: Zoo, config: TrainConfig, *, init,
                        steps_per_epoch: int, total: int, progress: bool, backend: RayBackend,
                        extra: dict | None = None) -> int:
    """Train ``chunks`` (from ``plan_chunks``) as Ray tasks into ``zoo``; returns the checkpoints added."""
    if not isinstance(zoo, Zoo):
        raise ConfigError(f"the Ray backend writes to a zoo directory, got a {type(zoo).__name__}")
    root = str(zoo.root.resolve())
    with ray_session(backend) as ray:
        writer = driver_actor(ray, _IndexWriter, root)
        added = map_blocks(_train_shard, chunks, arch.config, dataset, root, writer, config, init,
                           steps_per_epoch, extra, backend=backend, total=total, progress=progress,
                           desc=f"training {sum(map(len, chunks))} runs in {len(chunks)} shards")
    return sum(added)


class _IndexWriter:
    """The zoo index's only writer during a Ray build (an actor on the driver's node)."""

    def __init__(self, root: str):
        self.zoo = Zoo.open(root)

    def commit(self, staged) -> int:
        return self.zoo.commit_staged(staged)


class _StagingZoo:
    """A worker's view of the zoo: it writes checkpoint files, the index writer indexes them.

    Training goes on while a commit is in flight (waiting on it would also let Ray start another
    task on this task's CPU); :meth:`added` waits for all of them. A commit already sent completes
    even if this worker dies.
    """

    def __init__(self, zoo: Zoo, writer):
        self.zoo, self.writer, self.commits = zoo, writer, []

    def add_many(self, items) -> int:
        self.commits.append(self.writer.commit.remote(self.zoo.stage_many(items, skip_indexed=False)))
        return 0  # counted by added()

    def added(self) -> int:
        import ray

        return sum(ray.get(self.commits))


def _train_shard(chunk, arch_config, dataset, root, writer, config, init, steps_per_epoch, extra, *, tick) -> int:
    """One chunk on a worker: the local trainer's loop, writing to the zoo at ``root``."""
    arch = run_architecture(build_architecture(arch_config), chunk[0][0].hparams)
    x, y = dataset.split("train")
    mask = arch.space.mask(config.trainable) if config.trainable else None
    staging = _StagingZoo(Zoo.open(root), writer)
    train_chunk(arch, Task(dataset, arch), x, y, chunk, staging.add_many, config, mask, init, steps_per_epoch, tick,
                extra)
    return staging.added()
