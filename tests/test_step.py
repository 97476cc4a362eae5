"""The trainer's gradient steps: the packed MLP step computes exactly what the flat step computes."""

import pytest
import torch

from weightspace.data import load_digits
from weightspace.nets import CNN, MLP, OccupancyMLP
from weightspace.zoo import Zoo
from weightspace.zoo.step import FlatStep, PackedMLPStep, make_step
from weightspace.zoo.train import train_population
from weightspace.zoo.trainer import HParams, Run, TrainConfig


@pytest.fixture(scope="module")
def digits():
    return load_digits(seed=0)


def _steps(arch, digits, n, batch, dropout=None):
    x, y = digits.split("train")
    return [kind(arch, x, y, n, batch, dropout, torch.Generator().manual_seed(3)) for kind in (FlatStep, PackedMLPStep)]


@pytest.mark.parametrize("arch", [MLP(64, (12, 9), 10, act) for act in ("relu", "tanh", "sigmoid", "leaky_relu")]
                         + [MLP(64, (), 10)], ids=lambda a: a.name)
@pytest.mark.parametrize("with_dropout", [False, True])
def test_packed_gradient_equals_the_flat_gradient(digits, arch, with_dropout):
    n, batch = 5, 16
    dropout = torch.tensor([0.0, 0.1, 0.2, 0.3, 0.5]) if with_dropout else None
    flat, packed = _steps(arch, digits, n, batch, dropout)
    w = arch.init(range(n))
    idx = torch.randint(0, len(digits.x_train), (n * batch,), generator=torch.Generator().manual_seed(0))
    for _ in range(2):  # a second call reuses the packed step's buffers
        g_flat, buffers = flat(flat.pack(w), idx)
        g_packed, _ = packed(packed.pack(w), idx)
        assert buffers == {}
        assert torch.allclose(packed.unpack(g_packed), flat.unpack(g_flat), atol=1e-6)
    assert g_flat.abs().sum() > 0


def test_pack_and_unpack_are_exact_inverses_and_do_not_alias(digits):
    arch = MLP(64, (7, 5), 10)
    _, packed = _steps(arch, digits, 3, 4)
    w = torch.randn(3, arch.space.num_params)
    state = packed.pack(w)
    assert not torch.equal(state, w.reshape(-1))  # a different order...
    assert torch.equal(packed.unpack(state), w)  # ...of the same entries
    state.zero_()
    assert w.abs().sum() > 0


def test_the_packed_step_is_used_where_it_applies(digits):
    x, y = digits.split("train")
    chosen = {arch.name: type(make_step(arch, x, y, 2, 8)) for arch in
              (MLP(64, (8,), 10), MLP(64, (8,), 10, "gelu"), CNN(1, 8, channels=(4,), fc_widths=()),
               OccupancyMLP(2, (8,), 1))}
    assert list(chosen.values()) == [PackedMLPStep, FlatStep, FlatStep, FlatStep]


def test_models_that_finish_early_stop_where_they_would_alone(tmp_path, digits):
    """Runs of different lengths share a chunk; the short one is saved exactly as if trained by itself."""
    arch = MLP(64, (16,), 10)
    runs = [Run("short", 1, HParams(lr=0.05, epochs=1, weight_decay=1e-3)), Run("long", 2, HParams(lr=0.05, epochs=3))]

    def final(subset, name):
        zoo = Zoo.create(tmp_path / name, arch.space, architecture=arch.config, task=digits.describe())
        train_population(arch, digits, subset, zoo, TrainConfig(eval_splits=()), progress=False)
        w, df = zoo.load("run_id = 'short'")
        return w[df["step"].argmax()]

    assert torch.allclose(final(runs, "both"), final(runs[:1], "alone"), atol=1e-6)


def test_only_the_trainable_tensors_of_an_mlp_move(tmp_path, digits):
    arch = MLP(64, (16,), 10)
    base = arch.init([0])[0]
    zoo = Zoo.create(tmp_path / "zoo", arch.space, architecture=arch.config, task=digits.describe())
    cfg = TrainConfig(every_steps=5, max_steps=10, trainable=("layers.1.bias",), eval_splits=())
    train_population(arch, digits, [Run("ft", 5, HParams(lr=0.1))], zoo, cfg, init=base, progress=False)
    w, _ = zoo.load()
    assert torch.equal((w != base).any(0), arch.space.mask(["layers.1.bias"]))
