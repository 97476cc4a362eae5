"""Batched population training: same models as plain PyTorch, any batching, resumable, exact schedules."""

import pytest
import torch
import torch.nn.functional as F

from weightspace.data import load_digits
from weightspace.errors import ConfigError
from weightspace.nets import CNN, MLP
from weightspace.task import Task
from weightspace.zoo import Zoo
from weightspace.zoo.train import train_population
from weightspace.zoo.trainer import HParams, Run, TrainConfig, batch_orders, plan_chunks, train_chunk


@pytest.fixture(scope="module")
def digits():
    return load_digits(seed=0)


@pytest.fixture(scope="module")
def digits_images():
    return load_digits(seed=0, image=True)


def _zoo(tmp_path, arch, ds, name="zoo"):
    return Zoo.create(tmp_path / name, arch.space, architecture=arch.config, task=ds.describe())


def _final(zoo, run_id):
    w, df = zoo.load("run_id = ?", (run_id,))
    return w[df["step"].argmax()]


@pytest.mark.parametrize("optimizer", ["sgd", "adam"])
def test_batched_training_equals_a_plain_pytorch_loop(tmp_path, digits, optimizer):
    """One model trained in a population ends exactly where torch.optim takes the same model."""
    arch = MLP(64, (16,), 10)
    hp = HParams(lr=0.01 if optimizer == "adam" else 0.05, weight_decay=1e-3, optimizer=optimizer, epochs=2,
                 train_fraction=0.5)
    runs = [Run("a", 1, hp), Run("b", 2, HParams(lr=0.1, epochs=2)), Run("c", 3, hp)]
    zoo = _zoo(tmp_path, arch, digits)
    cfg = TrainConfig(batch_size=32)
    train_population(arch, digits, runs, zoo, cfg, progress=False)

    module = arch.module()
    module.load_state_dict(arch.space.unflatten(arch.init([3])[0]))
    opt_cls = torch.optim.Adam if optimizer == "adam" else torch.optim.SGD
    kwargs = {} if optimizer == "adam" else {"momentum": hp.momentum}
    opt = opt_cls(module.parameters(), lr=hp.lr, weight_decay=hp.weight_decay, **kwargs)
    x, y = digits.split("train")
    steps = -(-len(x) // cfg.batch_size)
    orders = batch_orders([runs[2]], len(x), cfg.batch_size, steps)
    for _ in range(hp.epochs):
        for idx in next(orders)[0]:
            opt.zero_grad()
            F.cross_entropy(module(x[idx]), y[idx]).backward()
            opt.step()
    ref = arch.space.flatten(module.state_dict())
    assert torch.allclose(_final(zoo, "c"), ref, atol=1e-5)


def test_a_model_does_not_depend_on_its_batch_mates(tmp_path, digits_images):
    arch = CNN(1, 8, channels=(4, 4), fc_widths=(8,))
    runs = [Run(f"r{i}", 10 + i, HParams(lr=0.05, epochs=1, init_scale=0.8 + 0.1 * i)) for i in range(3)]
    cfg = TrainConfig(batch_size=64)
    together = _zoo(tmp_path, arch, digits_images, "together")
    alone = _zoo(tmp_path, arch, digits_images, "alone")
    train_population(arch, digits_images, runs, together, cfg, progress=False)
    train_population(arch, digits_images, runs[1:2], alone, cfg, progress=False)
    assert torch.allclose(_final(together, "r1"), _final(alone, "r1"), atol=1e-5)
    assert not torch.allclose(_final(together, "r0"), _final(together, "r1"))


def test_population_learns_and_records_metrics(tmp_path, digits):
    arch = MLP(64, (32,), 10)
    runs = [Run(f"r{i}", i, HParams(lr=0.05, epochs=4, dropout=0.1 * (i % 2))) for i in range(6)]
    zoo = _zoo(tmp_path, arch, digits)
    added = train_population(arch, digits, runs, zoo, TrainConfig(checkpoint_epochs=(1,)), progress=False)
    assert added == 12 and len(zoo) == 12
    df = zoo.index()
    final = df[df["epoch"] == 4]
    assert final["test_acc"].min() > 0.85
    assert (final["test_acc"].values > df[df["epoch"] == 1]["test_acc"].mean() - 0.05).all()
    assert {"train_loss", "val_acc", "hp_lr", "hp_dropout"} <= set(df.columns)
    # Recorded metrics are the evaluation of the stored weights.
    from weightspace.task import Task

    w, df = zoo.load("epoch = 4")
    assert torch.allclose(Task(digits, arch).accuracy(w, "test"), torch.tensor(df["test_acc"].values).float())


def test_training_without_evaluation_records_no_metrics(tmp_path, digits):
    arch = MLP(64, (8,), 10)
    zoo = _zoo(tmp_path, arch, digits)
    runs = [Run(f"r{i}", i, HParams(lr=0.05, epochs=2)) for i in range(3)]
    assert train_population(arch, digits, runs, zoo, TrainConfig(eval_splits=()), progress=False) == 3
    df = zoo.index()
    assert len(df) == 3 and df["test_acc"].isna().all() and df["step"].gt(0).all()


def test_trajectory_mode_trains_only_the_named_tensors(tmp_path, digits_images):
    """P-diff's setting: a fine-tune of the last BatchNorm affine parameters, a checkpoint every step."""
    arch = CNN(1, 8, channels=(4, 4), fc_widths=(8,))
    base = arch.init([0])[0]
    zoo = _zoo(tmp_path, arch, digits_images)
    cfg = TrainConfig(every_steps=1, max_steps=12, trainable=("norms.1.weight", "norms.1.bias"))
    train_population(arch, digits_images, [Run("ft", 5, HParams(lr=0.05))], zoo, cfg, init=base, progress=False)
    w, df = zoo.load()
    assert list(df["step"]) == list(range(13))
    assert df["model_id"].is_unique
    moved = (w != base).any(0)
    assert torch.equal(moved, arch.space.mask(["norms.1.weight", "norms.1.bias"]))
    assert not torch.equal(w[-1], w[-2])


def test_each_model_has_its_own_training_subset():
    runs = [Run("a", 1, HParams(train_fraction=0.25)), Run("b", 2, HParams(train_fraction=1.0))]
    orders = batch_orders(runs, 100, 10, 10)
    first, second = next(orders), next(orders)
    assert first[0].unique().numel() == 25
    assert torch.equal(first[1].flatten().sort().values, torch.arange(100))  # a full pass per epoch
    assert not torch.equal(first, second)
    assert torch.equal(first[1], next(batch_orders(runs[1:], 100, 10, 10))[0])  # independent of batch mates


@pytest.mark.parametrize("batch, steps", [(10, 10), (7, 5), (30, 3)])
def test_drawing_several_epochs_at_once_gives_the_same_batches(batch, steps):
    runs = [Run("a", 1, HParams(train_fraction=0.25)), Run("b", 2, HParams(train_fraction=1.0))]
    endless = batch_orders(runs, 100, batch, steps)
    drawn = list(batch_orders(runs, 100, batch, steps, epochs=4))
    assert len(drawn) == 4
    for epoch in drawn:
        assert torch.equal(epoch, next(endless))


def test_rerun_skips_finished_runs(tmp_path, digits):
    arch = MLP(64, (8,), 10)
    runs = [Run(f"r{i}", i, HParams(epochs=1)) for i in range(3)]
    zoo = _zoo(tmp_path, arch, digits)
    assert train_population(arch, digits, runs, zoo, progress=False) == 3
    before = zoo.index()["sha256"].tolist()
    assert train_population(arch, digits, runs, zoo, progress=False) == 0
    assert zoo.index()["sha256"].tolist() == before


def test_a_run_can_have_its_own_activation(tmp_path, digits_images):
    """Runs naming an activation train as that architecture would alone, beside runs of another one."""
    arch = CNN(1, 8, channels=(4, 4), fc_widths=(8,), activation="relu")
    runs = [Run("relu", 5, HParams(lr=0.05, epochs=1)), Run("tanh", 6, HParams(lr=0.05, epochs=1, activation="tanh"))]
    cfg = TrainConfig(batch_size=64)
    mixed = _zoo(tmp_path, arch, digits_images, "mixed")
    train_population(arch, digits_images, runs, mixed, cfg, progress=False)
    tanh_arch = CNN(1, 8, channels=(4, 4), fc_widths=(8,), activation="tanh")
    alone = _zoo(tmp_path, tanh_arch, digits_images, "alone")
    train_population(tanh_arch, digits_images, [Run("tanh", 6, HParams(lr=0.05, epochs=1))], alone, cfg, progress=False)
    assert torch.allclose(_final(mixed, "tanh"), _final(alone, "tanh"), atol=1e-5)
    df = mixed.index()
    assert dict(zip(df["run_id"], df["hp_activation"])) == {"relu": "relu", "tanh": "tanh"}
    w, df_tanh = mixed.load("run_id = ?", ("tanh",))  # its metrics are those of a tanh net
    assert df_tanh["test_acc"].iloc[0] == pytest.approx(float(Task(digits_images, tanh_arch).accuracy(w)[0]))


def test_an_unknown_activation_is_refused():
    with pytest.raises(ConfigError, match="hparams.activation"):
        HParams(activation="swish")


def test_a_resumed_build_trains_the_chunks_of_an_uninterrupted_one(tmp_path, digits):
    """With dropout a model depends on its chunk mates; a run already finished when a build resumes
    still belongs to its chunk, so the others reach the weights of an uninterrupted build."""
    arch = MLP(64, (8,), 10)
    runs = [Run(f"r{i}", i, HParams(lr=0.05, epochs=1 + i, dropout=0.2)) for i in range(3)]
    cfg = TrainConfig(eval_splits=())
    whole = _zoo(tmp_path, arch, digits, "whole")
    train_population(arch, digits, runs, whole, cfg, progress=False)
    resumed = _zoo(tmp_path, arch, digits, "resumed")
    w, df = whole.load("run_id = ?", ("r0",))  # r0 finished before the "kill"
    resumed.add_many([(m, w[i], {"run_id": "r0", "seed": 0, "epoch": int(e), "step": int(s)})
                      for i, (m, e, s) in enumerate(zip(df["model_id"], df["epoch"], df["step"]))])
    assert train_population(arch, digits, runs, resumed, cfg, progress=False) == 2
    assert torch.equal(resumed.load()[0], whole.load()[0])
    alone = _zoo(tmp_path, arch, digits, "alone")  # without r0 in the chunk, r1 and r2 train differently
    train_population(arch, digits, runs[1:], alone, cfg, progress=False)
    assert not torch.equal(alone.load()[0], whole.load("run_id != 'r0'")[0])


def test_the_trainer_writes_to_any_sink_the_same_weights(tmp_path, digits):
    """A chunk trained into a list in memory holds exactly what the zoo holds: same ids, weights, metrics."""
    arch = MLP(64, (8,), 10)
    runs = [Run("a", 1, HParams(lr=0.1, epochs=2)), Run("b", 2, HParams(lr=0.05, epochs=2))]
    cfg = TrainConfig(batch_size=32, checkpoint_epochs=(1,))
    zoo = _zoo(tmp_path, arch, digits)
    train_population(arch, digits, runs, zoo, cfg, progress=False)
    x, y = digits.split("train")
    steps = -(-len(x) // cfg.batch_size)
    kept = []

    def sink(items):
        kept.extend(items)
        return len(items)

    class Bar:
        def update(self, n):
            pass

    added = sum(train_chunk(arch, Task(digits, arch), x, y, chunk, sink, cfg, None, None, steps, Bar())
                for chunk in plan_chunks(arch, runs, set(), steps, cfg))
    weights, rows = zoo.load()
    assert added == len(kept) == len(rows) == 4
    by_id = {mid: (w, rec) for mid, w, rec in kept}
    for w, (_, row) in zip(weights, rows.iterrows()):
        assert torch.equal(by_id[row["model_id"]][0], w)
        assert by_id[row["model_id"]][1]["test_acc"] == pytest.approx(row["test_acc"])
