"""The batched forward equals the plain nn.Module, model by model, in eval and training mode."""

import pytest
import torch
from torch.func import functional_call

from weightspace.errors import ConfigError
from weightspace.nets import CNN, MLP, OccupancyMLP, build_architecture

ARCHS = [
    (MLP(8, (6, 5), 3), (8,)),
    (CNN(2, 8, channels=(4, 3, 5), fc_widths=(6,)), (2, 8, 8)),
    (CNN(1, 9, channels=(4, 3), fc_widths=(), batchnorm=False, activation="leaky_relu"), (1, 9, 9)),
    # 7 × 7 inputs leave a 1 × 1 map for the last convolution (P-diff's): its BatchNorm folded into it
    (CNN(1, 7, channels=(4, 3, 9), fc_widths=(5,)), (1, 7, 7)),
    (CNN(1, 7, channels=(4, 3, 9), fc_widths=(), batchnorm=False, activation="gelu"), (1, 7, 7)),
    (OccupancyMLP(3, (8, 8), 1, n_frequencies=2), (3,)),
]


@pytest.mark.parametrize("arch,shape", ARCHS, ids=lambda a: getattr(a, "name", ""))
def test_batched_forward_matches_module(arch, shape):
    W = arch.init([0, 1, 2])
    W = W + 0.1 * torch.randn_like(W)
    module = arch.module().eval()
    shared = torch.randn(7, *shape)
    per_model = torch.randn(3, 7, *shape)
    out_shared = arch.logits(W, shared)
    out_each = arch.apply(arch.space.unflatten(W), per_model)[0]
    for i in range(3):
        sd = arch.space.unflatten(W[i])
        assert torch.allclose(functional_call(module, sd, (shared,)), out_shared[i], atol=1e-5)
        assert torch.allclose(functional_call(module, sd, (per_model[i],)), out_each[i], atol=1e-5)


@pytest.mark.parametrize("varying", [("norms.2.weight", "norms.2.bias"), ("convs.1.weight",), ("fcs.0.bias",), ()])
@pytest.mark.parametrize("batchnorm", [True, False])
def test_models_equal_up_to_a_layer_give_each_models_own_outputs(varying, batchnorm):
    """P-diff's models share every weight but a few late ones: the shared prefix is computed once,
    and every model still gets exactly its own function."""
    if not batchnorm and varying and varying[0].startswith("norms"):
        varying = ("convs.2.bias",)
    arch = CNN(2, 7, channels=(4, 3, 5), fc_widths=(6,), batchnorm=batchnorm)
    base = arch.init([0])[0]
    W = base.expand(3, -1).clone()
    for name in varying:
        sl = arch.space.slice(name)
        W[:, sl] += 0.3 * torch.randn(3, sl.stop - sl.start, generator=torch.Generator().manual_seed(1))
    module = arch.module().eval()
    x = torch.randn(7, 2, 7, 7, generator=torch.Generator().manual_seed(2))  # a 1 × 1 map for the last conv
    out = arch.logits(W, x)
    for i in range(3):
        assert torch.allclose(functional_call(module, arch.space.unflatten(W[i]), (x,)), out[i], atol=1e-5)
    assert torch.allclose(out[0], out[1], atol=1e-6) == (not varying)


def test_training_mode_batchnorm_matches_module_and_updates_statistics():
    arch = CNN(1, 8, channels=(4, 4), fc_widths=(5,))
    W = arch.init([0, 1])
    x = torch.randn(2, 6, 1, 8, 8)
    out, buffers = arch.apply(arch.space.unflatten(W), x, train=True)
    module = arch.module().train()
    for i in range(2):
        sd = {k: v.clone() for k, v in arch.space.unflatten(W[i]).items()}
        assert torch.allclose(functional_call(module, sd, (x[i],)), out[i], atol=1e-5)
        for name, value in buffers.items():
            assert torch.allclose(sd[name], value[i], atol=1e-6), name
    assert set(buffers) == {f"norms.{i}.running_{s}" for i in range(2) for s in ("mean", "var")}


def test_init_is_per_seed_and_follows_torch_bounds():
    arch = MLP(16, (8,), 4)
    a = arch.init([5, 6])
    b = arch.init([6])
    assert torch.equal(a[1], b[0])  # independent of batching
    w = arch.space.unflatten(a)["layers.0.weight"]
    assert w.abs().max() <= 1 / 16**0.5
    assert arch.init([5], init_scale=[2.0])[0].abs().max() > w.abs().max()
    bn = CNN(1, 8).space.unflatten(CNN(1, 8).init([0])[0])
    assert torch.equal(bn["norms.0.running_var"], torch.ones(8))


def test_dropout_is_per_model():
    arch = MLP(8, (64,), 3)
    W = arch.init([0, 0]).clone()
    x = torch.randn(32, 8)
    out, _ = arch.apply(arch.space.unflatten(W), x, train=True, dropout=torch.tensor([0.0, 0.5]),
                        generator=torch.Generator().manual_seed(0))
    assert torch.allclose(out[0], arch.logits(W[:1], x)[0], atol=1e-6)
    assert not torch.allclose(out[1], out[0])


def test_build_architecture_errors_name_the_key():
    assert build_architecture({"kind": "mlp", "in_features": 4, "widths": [3], "out_features": 2}).space.num_params == 23
    with pytest.raises(ConfigError, match="architecture.kind"):
        build_architecture({"kind": "resnet"})
    with pytest.raises(ConfigError, match="unknown keys.*'depth'"):
        build_architecture({"kind": "mlp", "in_features": 4, "widths": [3], "out_features": 2, "depth": 3})
    with pytest.raises(ConfigError, match="architecture.activation"):
        MLP(4, (3,), 2, activation="swish")


@pytest.mark.parametrize("arch", [MLP(8, (6, 5), 3, "relu"), MLP(8, (7,), 4, "tanh"), MLP(8, (7,), 4, "sigmoid"),
                                  MLP(8, (6, 6), 3, "leaky_relu"), OccupancyMLP(2, (6, 6), 1, n_frequencies=2)],
                         ids=lambda a: a.name)
def test_closed_form_gradients_equal_autograd(arch):
    from weightspace.nets import Architecture

    W = arch.init(range(4))
    x = torch.randn(4, 9, arch.in_features)
    y = torch.randint(0, 2 if arch.out_features == 1 else arch.out_features, (4, 9))
    loss, grad, _ = arch.loss_and_grad(W, x, y)
    ref_loss, ref_grad, _ = Architecture.loss_and_grad(arch, W, x, y)
    assert torch.allclose(loss, ref_loss, atol=1e-6)
    assert torch.allclose(grad, ref_grad, atol=1e-6)
    # Model i's gradient is that of its own loss only.
    _, alone, _ = arch.loss_and_grad(W[2:3], x[2:3], y[2:3])
    assert torch.allclose(alone[0], grad[2], atol=1e-6)


@pytest.mark.parametrize("activation", ["relu", "tanh"])
def test_closed_form_dropout_gradient_is_the_derivative_of_its_loss(activation):
    """Finite differences with the same seed (hence the same dropout mask) in float64."""
    arch = MLP(8, (16, 12), 3, activation)
    W = arch.init(range(2)).double()
    x, y = torch.randn(2, 5, 8, dtype=torch.float64), torch.randint(0, 3, (2, 5))
    p = torch.tensor([0.5, 0.2], dtype=torch.float64)

    def run(w):
        return arch.loss_and_grad(w, x, y, dropout=p, generator=torch.Generator().manual_seed(0))

    loss, grad, _ = run(W)
    d = torch.randn_like(W)
    eps = 1e-6
    numeric = (run(W + eps * d)[0] - run(W - eps * d)[0]) / (2 * eps)
    assert torch.allclose(numeric, (grad * d).sum(1), rtol=1e-5, atol=1e-8)
    no_dropout = arch.loss_and_grad(W, x, y)[1]
    assert not torch.allclose(grad, no_dropout)
