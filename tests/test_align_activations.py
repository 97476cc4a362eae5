"""Activation matching and the canonical form: an aligned model computes the same function, a
permuted copy is matched back exactly, and the canonical form is one vector per permutation orbit."""

import pytest
import torch

from weightspace.align import (
    canonical_form,
    group_activations,
    group_modules,
    match_activations,
    match_permutations,
)
from weightspace.nets import CNN, MLP
from weightspace.symmetry import permute, random_permutation

ARCHS = {
    "mlp-2": MLP(12, (9, 7), 5),
    "cnn-bn": CNN(1, 8, channels=(6, 5, 4), fc_widths=(7,)),
    "cnn": CNN(1, 8, channels=(6, 5), fc_widths=(7,), batchnorm=False),
}


def _gen(seed=0):
    return torch.Generator().manual_seed(seed)


def _weights(arch, n, seed=0):
    w = arch.init(range(seed, seed + n))
    return w + 0.2 * torch.randn(w.shape, generator=_gen(seed + 100))


def _inputs(arch, b=64, seed=5):
    return torch.randn(b, *arch.input_shape, generator=_gen(seed))


def test_group_modules_name_the_layer_or_its_batchnorm():
    assert group_modules(ARCHS["mlp-2"].space) == {"layers.0": "layers.0", "layers.1": "layers.1"}
    assert group_modules(ARCHS["cnn-bn"].space)["convs.1"] == "norms.1"
    assert group_modules(ARCHS["cnn"].space)["convs.1"] == "convs.1"


@pytest.mark.parametrize("name", ARCHS)
def test_group_activations_follow_a_permutation(name):
    arch = ARCHS[name]
    w = _weights(arch, 2)
    x = _inputs(arch)
    p = random_permutation(arch.space, n=2, generator=_gen(3))
    a, b = group_activations(arch, w, x), group_activations(arch, permute(arch.space, w, p), x)
    for g in a:
        idx = p[g][:, :, None].expand_as(a[g])
        torch.testing.assert_close(b[g], a[g].gather(1, idx))


@pytest.mark.parametrize("name", ARCHS)
@pytest.mark.parametrize("method", ["weight", "activation"])
def test_aligned_model_computes_the_same_function(name, method):
    arch = ARCHS[name]
    wa, wb = _weights(arch, 3), _weights(arch, 3, seed=10)
    x = _inputs(arch)
    if method == "weight":
        perms = match_permutations(arch.space, wa, wb)
    else:
        perms = match_activations(arch, wa, wb, x)
    aligned = permute(arch.space, wb, perms)
    assert not torch.equal(aligned, wb)  # something moved
    torch.testing.assert_close(arch.logits(aligned, x), arch.logits(wb, x), atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("name", ARCHS)
def test_activation_matching_recovers_a_permuted_copy(name):
    arch = ARCHS[name]
    w = _weights(arch, 2)
    p = random_permutation(arch.space, n=2, generator=_gen(4))
    shuffled = permute(arch.space, w, p)
    perms = match_activations(arch, w, shuffled, _inputs(arch, 128))
    torch.testing.assert_close(permute(arch.space, shuffled, perms), w)


def test_activation_matching_raises_activation_correlation():
    arch = ARCHS["mlp-2"]
    wa, wb = _weights(arch, 1), _weights(arch, 1, seed=10)
    x = _inputs(arch, 128)
    perms = match_activations(arch, wa, wb, x)

    def corr(w):
        a, b = group_activations(arch, wa, x)["layers.0"][0], group_activations(arch, w, x)["layers.0"][0]
        return torch.corrcoef(torch.cat([a, b]))[:9, 9:].diagonal().sum()

    assert corr(permute(arch.space, wb, perms)) > corr(wb)


@pytest.mark.parametrize("name", ARCHS)
def test_canonical_form_is_one_vector_per_orbit(name):
    arch = ARCHS[name]
    w = _weights(arch, 3)
    p = random_permutation(arch.space, n=3, generator=_gen(7))
    shuffled = permute(arch.space, w, p)
    torch.testing.assert_close(canonical_form(arch.space, shuffled), canonical_form(arch.space, w), rtol=0, atol=0)
    x = _inputs(arch)
    torch.testing.assert_close(arch.logits(canonical_form(arch.space, w), x), arch.logits(w, x), atol=1e-5, rtol=1e-5)
    assert not torch.equal(canonical_form(arch.space, w[:1]), canonical_form(arch.space, w[1:2]))
