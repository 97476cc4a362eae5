"""Batched population training: N models of one architecture trained in one program.

Every model keeps its own seed (init, data order, training subset) and its own hyper-parameters,
but all of them step together: the weights are one flat state (``Tensor[N·P]``, in the layout of
the architecture's :mod:`~weightspace.zoo.step`), one call computes every model's gradient on its
own batch, and the optimizers are a few elementwise ops with per-model learning rates and decays.
An epoch is ``ceil(n_train / batch_size)`` steps for every model; a model with
``train_fraction < 1`` draws its batches from its own fixed subset. A model shorter than its chunk
is saved at its own last step; the steps after that are never saved.

The trainer knows no storage: a chunk hands its checkpoints to a :data:`CheckpointSink`, a function
(a :class:`~weightspace.zoo.store.Zoo`'s ``add_many``, a Ray worker's staging of one, a list in memory).
:func:`weightspace.zoo.train.train_population` trains a population into a zoo, here or on Ray.
"""

from __future__ import annotations

import dataclasses
import hashlib
import math
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass, field

import torch
from torch import Tensor
from tqdm.auto import tqdm

from ..data import Dataset
from ..errors import ConfigError
from ..nets import ACTIVATIONS, Architecture
from ..task import Task
from .step import make_step

OPTIMIZERS = ("sgd", "adam")


@dataclass(frozen=True)
class HParams:
    lr: float = 0.05
    weight_decay: float = 0.0
    init_scale: float = 1.0
    dropout: float = 0.0
    optimizer: str = "sgd"
    momentum: float = 0.9
    train_fraction: float = 1.0
    epochs: int = 20
    activation: str | None = None  # None: the architecture's own; else this run's (same layout)

    def __post_init__(self):
        if self.optimizer not in OPTIMIZERS:
            raise ConfigError(f"hparams.optimizer: expected one of {list(OPTIMIZERS)}, got {self.optimizer!r}")
        if self.activation is not None and self.activation not in ACTIVATIONS:
            raise ConfigError(f"hparams.activation: expected one of {sorted(ACTIVATIONS)}, got {self.activation!r}")
        for key, lo, hi in (("dropout", 0.0, 0.999), ("train_fraction", 1e-6, 1.0), ("momentum", 0.0, 0.999)):
            v = getattr(self, key)
            if not lo <= v <= hi:
                raise ConfigError(f"hparams.{key}: expected a number in [{lo}, {hi}], got {v!r}")
        if self.lr <= 0 or self.weight_decay < 0 or self.init_scale <= 0 or int(self.epochs) < 1:
            raise ConfigError(
                f"hparams: need lr > 0, weight_decay ≥ 0, init_scale > 0, epochs ≥ 1; got {asdict(self)}"
            )


@dataclass(frozen=True)
class Run:
    run_id: str
    seed: int
    hparams: HParams


@dataclass(frozen=True)
class TrainConfig:
    batch_size: int = 64
    checkpoint_epochs: tuple[int, ...] = ()  # the final epoch is always saved
    every_steps: int | None = None  # trajectory mode: step 0 and every k steps
    max_steps: int | None = None  # stop after this many steps (short fine-tunes)
    trainable: tuple[str, ...] | None = None  # glob patterns of tensors to train; others stay fixed
    chunk_size: int = 256  # models trained at once
    eval_splits: tuple[str, ...] = ("train", "val", "test")


@dataclass
class _Schedule:
    """When each run saves: (step → tag) pairs, and its last step."""

    saves: dict[int, str] = field(default_factory=dict)
    last: int = 0


def _schedule(run: Run, steps_per_epoch: int, cfg: TrainConfig) -> _Schedule:
    total = run.hparams.epochs * steps_per_epoch
    if cfg.max_steps is not None:
        total = min(total, cfg.max_steps)
    s = _Schedule(last=total)
    if cfg.every_steps:
        for step in range(0, total + 1, cfg.every_steps):
            s.saves[step] = f"s{step:06d}"
        s.saves[total] = f"s{total:06d}"
    else:
        for e in (*cfg.checkpoint_epochs, run.hparams.epochs):
            step = min(e * steps_per_epoch, total)
            if e <= run.hparams.epochs:
                s.saves[step] = f"e{e:04d}"
    return s


def seeded_generator(*parts: int) -> torch.Generator:
    """A generator seeded by a hash of ``parts`` (a run's seed and a purpose, a chunk's seeds)."""
    h = hashlib.sha256(repr(parts).encode()).digest()
    return torch.Generator().manual_seed(int.from_bytes(h[:8], "little") & (2**63 - 1))


_DRAW_ELEMENTS = 1 << 19  # batch indices drawn at once (4 MB): several epochs of a small dataset


def batch_orders(runs: Sequence[Run], n_train: int, batch: int, steps: int, epochs: int | None = None
                 ) -> Iterator[Tensor]:
    """Each epoch's example indices, ``LongTensor[N, steps, batch]``: ``epochs`` of them, or endless.

    Model i draws from its own fixed subset (``train_fraction``) in an endless stream of shuffles
    seeded by its seed alone, so its batches do not depend on which models it is trained with.
    Several epochs are drawn at once when ``epochs`` says how many are wanted.
    """
    gens, sizes = [], []
    subsets = torch.zeros(len(runs), n_train, dtype=torch.long)  # row i: model i's subset, padded
    for i, run in enumerate(runs):
        g = seeded_generator(run.seed, 0)
        m = max(1, round(run.hparams.train_fraction * n_train))
        subsets[i, :m] = torch.randperm(n_train, generator=g)[:m]
        gens.append(g)
        sizes.append(m)
    # Per model, a stream of positions into its subset (one shuffle after another); the positions
    # of all models become example indices in one gather.
    left = [torch.empty(0, dtype=torch.long)] * len(runs)
    need = steps * batch
    per_draw = max(1, _DRAW_ELEMENTS // (len(runs) * need))
    remaining = epochs
    while remaining is None or remaining > 0:
        n_epochs = 1 if remaining is None else min(per_draw, remaining)
        pos = torch.empty(len(runs), n_epochs * need, dtype=torch.long)
        for i, (g, m) in enumerate(zip(gens, sizes)):
            left[i] = _fill_with_shuffles(pos[i], left[i], m, g)
        drawn = subsets.gather(1, pos).view(len(runs), n_epochs, steps, batch)
        yield from drawn.unbind(1)
        if remaining is not None:
            remaining -= n_epochs


def _fill_with_shuffles(row: Tensor, left: Tensor, m: int, g: torch.Generator) -> Tensor:
    """Fill ``row`` with ``left``, then shuffles of ``range(m)`` drawn in place; returns what is left over."""
    have = min(len(left), len(row))
    row[:have] = left[:have]
    rest = left[have:]
    while have < len(row):
        if have + m <= len(row):
            torch.randperm(m, generator=g, out=row[have : have + m])
            have += m
        else:
            shuffle = torch.randperm(m, generator=g)
            row[have:] = shuffle[: len(row) - have]
            rest, have = shuffle[len(row) - have :], len(row)
    return rest


class _Optimizer:
    """SGD with momentum, or Adam, on a packed state with per-model rates; L2 decay coupled as in
    torch.optim. Every rate is a full packed vector, so the state's layout does not matter."""

    def __init__(self, runs: Sequence[Run], pack, state: Tensor, mask: Tensor | None):
        """``pack`` maps ``[N, P]`` to the state's layout."""
        self.shape, self.pack = (len(runs), state.numel() // len(runs)), pack
        self.adam = runs[0].hparams.optimizer == "adam"
        self.lr, self.wd, self.mom = (
            self._packed(torch.tensor([getattr(r.hparams, key) for r in runs])[:, None], state)
            for key in ("lr", "weight_decay", "momentum")
        )
        self.decay = bool((self.wd > 0).any())
        self.buf = torch.zeros_like(state)
        self.v = torch.zeros_like(state) if self.adam else None
        self.scratch = torch.empty_like(state) if self.adam else None
        if mask is not None:  # frozen tensors: rate 0
            self.lr = self.lr * self._packed(mask[None, :], state)
        self.t = 0

    def _packed(self, values: Tensor, like: Tensor) -> Tensor:
        """Per-model ``[N, 1]`` or per-parameter ``[1, P]`` values, broadcast to ``[N, P]`` and packed."""
        return self.pack(values.to(like.dtype).expand(self.shape)).to(like.device)

    def step(self, w: Tensor, grad: Tensor) -> None:
        """Update ``w`` in place; ``grad`` is the trainer's own buffer and may be overwritten."""
        self.t += 1
        g = grad.addcmul_(self.wd, w) if self.decay else grad
        if not self.adam:
            torch.addcmul(g, self.buf, self.mom, out=self.buf)  # buf ← momentum · buf + g
            w.addcmul_(self.lr, self.buf, value=-1.0)
            return
        b1, b2, eps = 0.9, 0.999, 1e-8
        self.buf.lerp_(g, 1 - b1)
        self.v.mul_(b2).addcmul_(g, g, value=1 - b2)
        denom = torch.div(self.v, 1 - b2**self.t, out=self.scratch).sqrt_().add_(eps)
        w.addcmul_(self.lr, torch.div(self.buf, denom, out=self.scratch), value=-1.0 / (1 - b1**self.t))


def run_architecture(arch: Architecture, hparams: HParams) -> Architecture:
    """The architecture a run trains: ``arch`` with the run's own activation when it names one.

    The activation has no weights, so every run of a zoo shares one layout; the zoo's index
    records each run's activation (``hp_activation``).
    """
    return with_activation(arch, hparams.activation)


def with_activation(arch: Architecture, activation: str | None) -> Architecture:
    """``arch`` computing with ``activation`` (None or its own: ``arch`` itself)."""
    if activation is None or activation == getattr(arch, "activation", None):
        return arch
    if activation not in ACTIVATIONS:
        raise ConfigError(f"activation: expected one of {sorted(ACTIVATIONS)}, got {activation!r}")
    return dataclasses.replace(arch, activation=activation)


def plan_chunks(arch: Architecture, runs: Sequence[Run], have: set[str], steps_per_epoch: int, config: TrainConfig
                ) -> list[list[tuple[Run, _Schedule]]]:
    """The chunks of runs trained together that still have a checkpoint missing from ``have``.

    A model's weights can depend on its chunk (dropout masks come from one generator seeded by the
    chunk's seeds), so the chunks are cut from all runs, whatever is already done: a resumed or
    retried build, and every backend, train the same chunks. A chunk with a missing checkpoint is
    trained whole; the zoo ignores the ids it already has.
    """
    def shared(rs):  # one optimizer and one activation per chunk
        return rs[0].hparams.optimizer, run_architecture(arch, rs[0].hparams).activation

    planned = [(run, _schedule(run, steps_per_epoch, config)) for run in runs]
    # Group runs that share an optimizer and an activation, then by length so chunks finish together.
    planned.sort(key=lambda rs: (*shared(rs), rs[1].last))
    chunks = [planned[i : i + config.chunk_size] for i in range(0, len(planned), config.chunk_size)]
    chunks = [c2 for c in chunks for c2 in _split_by(c, shared)]
    return [c for c in chunks
            if any(f"{run.run_id}-{tag}" not in have for run, sched in c for tag in sched.saves.values())]


def _split_by(items, key):
    groups: dict = {}
    for it in items:
        groups.setdefault(key(it), []).append(it)
    return list(groups.values())


# Where a chunk's checkpoints go: called with ``[(model_id, weights [P], record), ...]``, returns how
# many it added. ``Zoo.add_many`` is one (ids already there are skipped); ``list.extend``-like
# functions keep them in memory.
CheckpointSink = Callable[[list[tuple[str, Tensor, dict]]], int]


def train_chunk(arch, task, x, y, chunk, sink: CheckpointSink, cfg, mask, init, steps_per_epoch, bar,
                extra=None) -> int:
    """Train one chunk from :func:`plan_chunks` as one batched program, its checkpoints evaluated in
    batches and handed to ``sink`` as they are made; ``bar.update(1)`` per step. Returns the
    checkpoints ``sink`` added."""
    runs = [r for r, _ in chunk]
    scheds = [s for _, s in chunk]
    space = arch.space
    if init is None:
        w = arch.init([r.seed for r in runs], [r.hparams.init_scale for r in runs])
    else:
        w = init.to(space.dtype).expand(len(runs), -1).clone()
    dropout = torch.tensor([r.hparams.dropout for r in runs], dtype=w.dtype)
    dropout = dropout if bool((dropout > 0).any()) else None
    gen = seeded_generator(*(r.seed for r in runs))
    step_fn = make_step(arch, x, y, len(runs), cfg.batch_size, dropout, gen)
    state = step_fn.pack(w)
    opt = _Optimizer(runs, step_fn.pack, state, mask)
    last = max(s.last for s in scheds)
    saves_at: dict[int, list[tuple[int, str]]] = {}
    for i, sched in enumerate(scheds):
        for step, tag in sched.saves.items():
            saves_at.setdefault(step, []).append((i, tag))
    pending: list[tuple[str, Tensor, dict]] = []
    added = 0

    def save_due(step: int) -> None:
        nonlocal added
        due = saves_at.get(step, ())
        weights = step_fn.unpack(state) if due else None
        for i, tag in due:
            run = runs[i]
            record = {"run_id": run.run_id, "seed": run.seed, "epoch": None if cfg.every_steps else int(tag[1:]),
                      "step": step, "hparams": {**asdict(run.hparams), "activation": arch.activation},
                      **(extra or {})}
            pending.append((f"{run.run_id}-{tag}", weights[i].clone(), record))
        if len(pending) >= 256 or step == last:
            added += _flush(task, sink, pending, cfg)

    save_due(0)
    step = 0
    for order in batch_orders(runs, x.shape[0], cfg.batch_size, steps_per_epoch, math.ceil(last / steps_per_epoch)):
        order = order.transpose(0, 1).contiguous()  # [steps, N, batch]
        for s in range(min(steps_per_epoch, last - step)):
            grad, new_buffers = step_fn(state, order[s].view(-1))
            opt.step(state, grad)
            if new_buffers:  # BatchNorm statistics: only the flat step has them, and its unpack is a view
                _write_buffers(space, step_fn.unpack(state), new_buffers, mask)
            step += 1
            save_due(step)
            bar.update(1)
    return added


def train_chunks(arch, dataset: Dataset, chunks, sink: CheckpointSink, config: TrainConfig, *,
                 init: Tensor | None = None, progress: bool = True, extra: dict | None = None) -> int:
    """Train ``chunks`` (from :func:`plan_chunks`) one after another here, every checkpoint handed to
    ``sink``; returns how many it added. ``init`` and ``extra``: see
    :func:`weightspace.zoo.train.train_population`."""
    x, y = dataset.split("train")
    steps_per_epoch = math.ceil(x.shape[0] / config.batch_size)
    mask = arch.space.mask(config.trainable) if config.trainable else None
    added = 0
    total = sum(max(s.last for _, s in c) for c in chunks)
    with tqdm(total=total, desc=f"training {sum(map(len, chunks))} runs", unit="step", disable=not progress) as bar:
        for chunk in chunks:
            chunk_arch = run_architecture(arch, chunk[0][0].hparams)
            added += train_chunk(chunk_arch, Task(dataset, chunk_arch), x, y, chunk, sink, config, mask, init,
                                 steps_per_epoch, bar, extra)
    return added


def _write_buffers(space, w, new_buffers, mask) -> None:
    """Store BatchNorm running statistics; frozen tensors keep theirs."""
    for name in new_buffers:
        sl = space.slice(name)
        if mask is not None and not bool(mask[sl].all()):
            continue
        w[:, sl] = new_buffers[name].reshape(w.shape[0], -1)


def _flush(task: Task, sink: CheckpointSink, pending: list, cfg: TrainConfig) -> int:
    """Evaluate pending checkpoints in one batched call and hand them to ``sink``."""
    if not pending:
        return 0
    if cfg.eval_splits:
        metrics = task.evaluate(torch.stack([p[1] for p in pending]), cfg.eval_splits).to_dict("records")
    else:
        metrics = [{}] * len(pending)
    items = [(mid, vec, {**rec, **metrics[i]}) for i, (mid, vec, rec) in enumerate(pending)]
    pending.clear()
    return sink(items)


def finetune_weights(arch: Architecture, dataset: Dataset, weights: Tensor, *, steps: int, lr: float = 0.05,
                     momentum: float = 0.9, batch_size: int = 64, seed: int = 0) -> Tensor:
    """``steps`` of SGD with momentum for every model of ``weights [N, P]`` at once, each on its own
    random batches of the training split (seeded): new ``[N, P]`` weights, nothing written anywhere.
    For short fine-tunes of given models (generated ones, or a baseline's, so both get the same);
    BatchNorm statistics are not updated."""
    if int(steps) < 0:
        raise ConfigError(f"steps: expected a non-negative integer, got {steps!r}")
    x, y = dataset.split("train")
    g = torch.Generator().manual_seed(int(seed))
    w, velocity = weights.detach().clone(), torch.zeros_like(weights)
    for _ in range(int(steps)):
        idx = torch.randint(0, x.shape[0], (w.shape[0], batch_size), generator=g)
        _, grad, _ = arch.loss_and_grad(w, x[idx], y[idx])
        velocity = momentum * velocity + grad
        w = w - lr * velocity
    return w
