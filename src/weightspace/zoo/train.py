"""Batched population training: N models of one architecture trained in one program.

Every model keeps its own seed (init, data order, training subset) and its own hyper-parameters,
but all of them step together: the weights are one leaf ``Tensor[N, P]``, the forward is the
architecture's batched ``apply``, and the optimizers are a few tensor ops on ``[N, P]`` with
per-model learning rates and decays. An epoch is ``ceil(n_train / batch_size)`` steps for every
model; a model with ``train_fraction < 1`` draws its batches from its own fixed subset.

Checkpoints go to a :class:`~weightspace.zoo.store.Zoo` as they are made. Runs whose checkpoints
are all in the zoo are skipped, so a killed job resumes by running the same command again.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass, field

import torch
from torch import Tensor
from tqdm.auto import tqdm

from ..data import Dataset
from ..errors import ConfigError
from ..nets import Architecture
from ..task import Task
from .store import Zoo

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

    def __post_init__(self):
        if self.optimizer not in OPTIMIZERS:
            raise ConfigError(f"hparams.optimizer: expected one of {list(OPTIMIZERS)}, got {self.optimizer!r}")
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


def _generator(*parts: int) -> torch.Generator:
    h = hashlib.sha256(repr(parts).encode()).digest()
    return torch.Generator().manual_seed(int.from_bytes(h[:8], "little") & (2**63 - 1))


def batch_orders(runs: Sequence[Run], n_train: int, batch: int, steps: int) -> Iterator[Tensor]:
    """Each epoch's example indices, ``LongTensor[N, steps, batch]``, for as many epochs as asked.

    Model i draws from its own fixed subset (``train_fraction``) in an endless stream of shuffles
    seeded by its seed alone, so its batches do not depend on which models it is trained with.
    """
    streams = []
    for run in runs:
        g = _generator(run.seed, 0)
        subset = torch.randperm(n_train, generator=g)[: max(1, round(run.hparams.train_fraction * n_train))]
        streams.append((g, subset, [torch.empty(0, dtype=torch.long)]))
    need = steps * batch
    while True:
        out = torch.empty(len(runs), need, dtype=torch.long)
        for i, (g, subset, left) in enumerate(streams):
            parts, have = [left[0]], len(left[0])
            while have < need:
                parts.append(subset[torch.randperm(len(subset), generator=g)])
                have += len(subset)
            stream = torch.cat(parts)
            out[i], left[0] = stream[:need], stream[need:]
        yield out.view(len(runs), steps, batch)


class _Optimizer:
    """SGD with momentum, or Adam, on ``[N, P]`` with per-model rates; L2 decay coupled as in torch.optim."""

    def __init__(self, runs: Sequence[Run], weights: Tensor, mask: Tensor | None):
        hp = [r.hparams for r in runs]
        self.adam = hp[0].optimizer == "adam"
        self.lr0 = self._col(hp, "lr", weights)
        self.wd = self._col(hp, "weight_decay", weights)
        self.decay = bool((self.wd > 0).any())
        self.mom = self._col(hp, "momentum", weights)
        self.mask = None if mask is None else mask.to(weights.dtype)
        self.buf = torch.zeros_like(weights)
        self.v = torch.zeros_like(weights) if self.adam else None
        self.t = 0
        self.set_active(torch.ones(len(runs), dtype=torch.bool))

    @staticmethod
    def _col(hp, key, like):
        return torch.tensor([getattr(h, key) for h in hp], dtype=like.dtype, device=like.device)[:, None]

    def set_active(self, active: Tensor) -> None:
        """Models that finished their epochs stop moving (their rate becomes 0)."""
        self.lr = self.lr0 * active.to(self.lr0)[:, None]
        if self.mask is not None:
            self.lr = self.lr * self.mask

    def step(self, w: Tensor, grad: Tensor) -> None:
        self.t += 1
        g = torch.addcmul(grad, self.wd, w) if self.decay else grad
        if not self.adam:
            self.buf.mul_(self.mom).add_(g)
            w.addcmul_(self.lr, self.buf, value=-1.0)
            return
        b1, b2, eps = 0.9, 0.999, 1e-8
        self.buf.lerp_(g, 1 - b1)
        self.v.mul_(b2).addcmul_(g, g, value=1 - b2)
        denom = (self.v / (1 - b2**self.t)).sqrt_().add_(eps)
        w.addcmul_(self.lr / (1 - b1**self.t), self.buf / denom, value=-1.0)


def train_population(
    arch: Architecture,
    dataset: Dataset,
    runs: Sequence[Run],
    zoo: Zoo,
    config: TrainConfig = TrainConfig(),
    *,
    init: Tensor | None = None,
    progress: bool = True,
) -> int:
    """Train ``runs`` and write their checkpoints to ``zoo``; returns the number of checkpoints added.

    ``init`` (``Tensor[P]``), when given, is every run's starting point (a fine-tune, as P-diff's);
    otherwise each run starts from ``arch.init`` with its own seed and ``init_scale``.
    """
    x, y = dataset.split("train")
    steps_per_epoch = math.ceil(x.shape[0] / config.batch_size)
    mask = arch.space.mask(config.trainable) if config.trainable else None
    have = zoo.ids()
    todo = []
    for run in runs:
        sched = _schedule(run, steps_per_epoch, config)
        if any(f"{run.run_id}-{tag}" not in have for tag in sched.saves.values()):
            todo.append((run, sched))
    task = Task(dataset, arch)
    # One optimizer per chunk: group runs that share one, then by length so chunks finish together.
    todo.sort(key=lambda rs: (rs[0].hparams.optimizer, rs[1].last))
    chunks = [todo[i : i + config.chunk_size] for i in range(0, len(todo), config.chunk_size)]
    chunks = [c2 for c in chunks for c2 in _split_by(c, lambda rs: rs[0].hparams.optimizer)]
    total = sum(max(s.last for _, s in c) for c in chunks)
    added = 0
    with tqdm(total=total, desc=f"training {len(todo)} runs", unit="step", disable=not progress) as bar:
        for chunk in chunks:
            added += _train_chunk(arch, task, x, y, chunk, zoo, config, mask, init, steps_per_epoch, bar)
    return added


def _split_by(items, key):
    groups: dict = {}
    for it in items:
        groups.setdefault(key(it), []).append(it)
    return list(groups.values())


def _train_chunk(arch, task, x, y, chunk, zoo, cfg, mask, init, steps_per_epoch, bar) -> int:
    runs = [r for r, _ in chunk]
    scheds = [s for _, s in chunk]
    space = arch.space
    if init is None:
        w = arch.init([r.seed for r in runs], [r.hparams.init_scale for r in runs])
    else:
        w = init.to(space.dtype).expand(len(runs), -1).clone()
    opt = _Optimizer(runs, w, mask)
    dropout = torch.tensor([r.hparams.dropout for r in runs], dtype=w.dtype)
    dropout = dropout if bool((dropout > 0).any()) else None
    gen = _generator(*(r.seed for r in runs))
    lasts = torch.tensor([s.last for s in scheds])
    last = int(lasts.max())
    saves_at: dict[int, list[tuple[int, str]]] = {}
    for i, sched in enumerate(scheds):
        for step, tag in sched.saves.items():
            saves_at.setdefault(step, []).append((i, tag))
    finish_steps = {s.last for s in scheds}
    pending: list[tuple[str, Tensor, dict]] = []
    added = 0

    def save_due(step: int) -> None:
        nonlocal added
        for i, tag in saves_at.get(step, ()):
            run = runs[i]
            record = {"run_id": run.run_id, "seed": run.seed, "epoch": None if cfg.every_steps else int(tag[1:]),
                      "step": step, "hparams": asdict(run.hparams)}
            pending.append((f"{run.run_id}-{tag}", w[i].clone(), record))
        if len(pending) >= 256 or step == last:
            added += _flush(task, zoo, pending, cfg)

    save_due(0)
    active = lasts > 0
    step = 0
    orders = batch_orders(runs, x.shape[0], cfg.batch_size, steps_per_epoch)
    # Each step's batches are gathered into the same two buffers.
    xb = x.new_empty(len(runs), cfg.batch_size, *x.shape[1:])
    yb = y.new_empty(len(runs), cfg.batch_size)
    for _ in range(math.ceil(last / steps_per_epoch)):
        order = next(orders)
        for s in range(min(steps_per_epoch, last - step)):
            idx = order[:, s].reshape(-1)
            torch.index_select(x, 0, idx, out=xb.view(-1, *x.shape[1:]))
            torch.index_select(y, 0, idx, out=yb.view(-1))
            _, grad, new_buffers = arch.loss_and_grad(w, xb, yb, dropout=dropout, generator=gen)
            opt.step(w, grad)
            _write_buffers(space, w, new_buffers, active, mask)
            step += 1
            if step in finish_steps and step < last:
                active = lasts > step
                opt.set_active(active)
            save_due(step)
            bar.update(1)
    return added


def _write_buffers(space, w, new_buffers, active, mask) -> None:
    """Store BatchNorm running statistics of active models; frozen models and tensors keep theirs."""
    for name in new_buffers:
        sl = space.slice(name)
        if mask is not None and not bool(mask[sl].all()):
            continue
        new = new_buffers[name].reshape(w.shape[0], -1)
        w[:, sl] = torch.where(active[:, None], new, w[:, sl])


def _flush(task: Task, zoo: Zoo, pending: list, cfg: TrainConfig) -> int:
    """Evaluate pending checkpoints in one batched call and add them to the zoo."""
    if not pending:
        return 0
    if cfg.eval_splits:
        metrics = task.evaluate(torch.stack([p[1] for p in pending]), cfg.eval_splits).to_dict("records")
    else:
        metrics = [{}] * len(pending)
    items = [(mid, vec, {**rec, **metrics[i]}) for i, (mid, vec, rec) in enumerate(pending)]
    pending.clear()
    return zoo.add_many(items)
