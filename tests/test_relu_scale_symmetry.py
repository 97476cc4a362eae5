"""Positive neuron scaling is a symmetry of ReLU / LeakyReLU nets: same function, different vector,
refused where BatchNorm would normalise the scale away."""

import math

import pytest
import torch
from torch.func import functional_call

from weightspace.errors import LayoutError
from weightspace.nets import CNN, MLP
from weightspace.symmetry import scale_neurons

ARCHS = {
    "mlp-relu": (MLP(12, (16, 8), 5), (12,)),
    "cnn-leaky": (CNN(3, 12, channels=(8, 6, 4), fc_widths=(20,), activation="leaky_relu", batchnorm=False),
                  (3, 12, 12)),
}


def _factors(space, n=None, seed=0):
    """Log-uniform in [1/4, 4]: far from 1, so a broken rule shows."""
    g = torch.Generator().manual_seed(seed)
    lead = () if n is None else (n,)
    return {grp.name: torch.exp(torch.empty(*lead, grp.size).uniform_(-math.log(4), math.log(4), generator=g))
            for grp in space.groups}


@pytest.mark.parametrize("name", ARCHS)
def test_scaled_population_computes_the_same_function(name):
    arch, shape = ARCHS[name]
    W = arch.init(range(4))
    x = torch.randn(16, *shape)
    factors = _factors(arch.space, n=4)
    Ws = scale_neurons(arch.space, W, factors)
    assert (Ws - W).abs().max() > 0.1  # the vector moved ...
    torch.testing.assert_close(arch.logits(Ws, x), arch.logits(W, x), atol=1e-5, rtol=1e-5)  # ... the function did not
    # the inverse factors undo it, and the input is untouched
    back = scale_neurons(arch.space, Ws, {k: 1 / v for k, v in factors.items()})
    torch.testing.assert_close(back, W, atol=1e-6, rtol=1e-5)
    assert torch.equal(W, arch.init(range(4)))


@pytest.mark.parametrize("name", ARCHS)
def test_single_model_matches_plain_module(name):
    arch, shape = ARCHS[name]
    w = arch.init([3])[0]
    ws = scale_neurons(arch.space, w, _factors(arch.space, seed=1))
    assert ws.shape == w.shape and not torch.allclose(ws, w)
    x = torch.randn(8, *shape)
    module = arch.module().eval()
    out = functional_call(module, arch.space.unflatten(w), (x,))
    out_s = functional_call(module, arch.space.unflatten(ws), (x,))
    torch.testing.assert_close(out_s, out, atol=1e-5, rtol=1e-5)


def test_rule_on_one_mlp_neuron():
    """Neuron 2 of the first hidden layer: its row and bias times c, the next layer's column 2 over c."""
    arch = MLP(3, (4,), 2)
    w = arch.init([0])[0]
    c = torch.ones(4)
    c[2] = 3.0
    sd, sd_s = arch.space.unflatten(w), arch.space.unflatten(scale_neurons(arch.space, w, {"layers.0": c}))
    torch.testing.assert_close(sd_s["layers.0.weight"][2], 3 * sd["layers.0.weight"][2])
    torch.testing.assert_close(sd_s["layers.0.bias"][2], 3 * sd["layers.0.bias"][2])
    torch.testing.assert_close(sd_s["layers.1.weight"][:, 2], sd["layers.1.weight"][:, 2] / 3)
    for key in ("layers.0.weight", "layers.1.weight"):
        other = [i for i in range(4) if i != 2]
        sl = (other, slice(None)) if key == "layers.0.weight" else (slice(None), other)
        assert torch.equal(sd_s[key][sl], sd[key][sl])
    assert torch.equal(sd_s["layers.1.bias"], sd["layers.1.bias"])


def test_batchnorm_group_is_refused_and_others_are_not():
    arch = CNN(1, 8, channels=(4, 3), fc_widths=(5,))  # BatchNorm after each conv
    w = arch.init([0])[0]
    with pytest.raises(LayoutError, match="convs.0"):
        scale_neurons(arch.space, w, {"convs.0": torch.full((4,), 2.0)})
    # the FC group has no BatchNorm: scaling it keeps the function
    ws = scale_neurons(arch.space, w, {"fcs.0": torch.full((5,), 2.0)})
    x = torch.randn(6, 1, 8, 8)
    torch.testing.assert_close(arch.logits(ws[None], x), arch.logits(w[None], x), atol=1e-5, rtol=1e-5)


def test_bad_factors_name_the_problem():
    arch = MLP(3, (4,), 2)
    w = arch.init([0, 1])
    with pytest.raises(LayoutError, match="positive"):
        scale_neurons(arch.space, w, {"layers.0": -torch.ones(4)})
    with pytest.raises(LayoutError, match=r"factors\['layers.0'\]"):
        scale_neurons(arch.space, w, {"layers.0": torch.ones(3)})
    with pytest.raises(LayoutError, match="no permutation group"):
        scale_neurons(arch.space, w, {"layers.7": torch.ones(4)})
