"""A permuted network computes the same function: every built-in architecture, BatchNorm included."""

import pytest
import torch
from torch.func import functional_call

from weightspace.nets import CNN, MLP, OccupancyMLP
from weightspace.symmetry import permute, random_permutation

ARCHS = {
    "mlp": (MLP(64, (32, 16), 10, "tanh"), (64,)),
    "cnn-bn": (CNN(1, 8, channels=(6, 5, 4), fc_widths=(7,)), (1, 8, 8)),
    "cnn-leaky": (CNN(3, 12, channels=(8, 6, 4), fc_widths=(20,), activation="leaky_relu", batchnorm=False),
                  (3, 12, 12)),
    "occupancy": (OccupancyMLP(2, (16, 16, 16), 1, n_frequencies=3), (2,)),
}


def _population(arch, n=4):
    # Perturb everything, BatchNorm statistics included, so no coordinate is trivially symmetric.
    w = arch.init(range(n))
    return w + 0.3 * torch.randn_like(w)


@pytest.mark.parametrize("name", ARCHS)
def test_permuted_population_computes_the_same_function(name):
    arch, shape = ARCHS[name]
    W = _population(arch)
    x = torch.randn(16, *shape)
    perms = random_permutation(arch.space, n=W.shape[0], generator=torch.Generator().manual_seed(1))
    Wp = permute(arch.space, W, perms)
    assert not torch.allclose(W, Wp)
    assert torch.allclose(arch.logits(W, x), arch.logits(Wp, x), atol=1e-5)
    # The permutation moves coordinates only: sorted values are unchanged.
    assert torch.equal(W.sort(-1).values, Wp.sort(-1).values)


@pytest.mark.parametrize("name", ARCHS)
def test_single_permutation_matches_plain_module(name):
    arch, shape = ARCHS[name]
    w = _population(arch, 1)[0]
    perm = random_permutation(arch.space, generator=torch.Generator().manual_seed(2))
    wp = permute(arch.space, w, perm)
    module = arch.module().eval()
    x = torch.randn(10, *shape)
    a = functional_call(module, arch.space.unflatten(w), (x,))
    b = functional_call(module, arch.space.unflatten(wp), (x,))
    assert torch.allclose(a, b, atol=1e-5)


def test_permutation_composes_and_inverts():
    arch, _ = ARCHS["cnn-bn"]
    w = _population(arch, 1)[0]
    perm = random_permutation(arch.space, generator=torch.Generator().manual_seed(3))
    inverse = {k: torch.argsort(p) for k, p in perm.items()}
    assert torch.equal(permute(arch.space, permute(arch.space, w, perm), inverse), w)


def test_breaking_a_group_changes_the_function():
    """Guards the test above: permuting one axis alone (not the whole group) must change outputs."""
    arch, shape = ARCHS["mlp"]
    w = _population(arch, 1)
    x = torch.randn(8, *shape)
    sl = arch.space.slice("layers.0.bias")
    broken = w.clone()
    broken[0, sl] = broken[0, sl].flip(0)
    assert not torch.allclose(arch.logits(w, x), arch.logits(broken, x), atol=1e-3)
