"""Permutation alignment (core): aligned L2 invariant to neuron order, exact for one hidden layer,
the fast path's bounds, and the permute convention of the matched permutations."""

import itertools

import pytest
import torch

from weightspace.align import (
    align_to,
    aligned_l2,
    aligned_l2_fast,
    aligned_l2_pairs,
    fast_path_agreement,
    l2_distances,
    match_permutations,
    symmetry_margin,
)
from weightspace.nets import CNN, MLP
from weightspace.symmetry import permute, random_permutation


def _gen(seed=0):
    return torch.Generator().manual_seed(seed)


# ---------------------------------------------------------------- permutation-aligned L2
def _late_bn_variants(scale, n=6):
    """P-diff's models: one CNN whose last two BatchNorm layers alone differ between models."""
    arch = CNN(1, 8, channels=(6, 5, 4), fc_widths=())
    w = arch.init([0]).expand(n, -1).clone()
    for name in ("norms.1.weight", "norms.1.bias", "norms.2.weight", "norms.2.bias"):
        sl = arch.space.slice(name)
        w[:, sl] += scale * torch.randn(n, sl.stop - sl.start, generator=_gen(3))
    return arch, w


def test_models_sharing_their_layers_have_a_margin_within_which_aligned_l2_is_plain():
    arch, w = _late_bn_variants(0.05)
    margin = symmetry_margin(arch.space, w)
    plain, aligned = l2_distances(w, w), aligned_l2(arch.space, w, w)
    assert 0 < margin < float("inf")
    assert bool((plain.square() <= margin).all())  # every pair within it ...
    assert torch.allclose(aligned, plain, atol=1e-5)  # ... is already aligned
    # spread wider than the margin, a permutation may pay off: the margin promises nothing there
    arch, w = _late_bn_variants(50.0)
    assert bool((l2_distances(w, w).square() > symmetry_margin(arch.space, w)).any())
    assert bool((aligned_l2(arch.space, w, w) < l2_distances(w, w) - 1e-3).any())


def test_models_sharing_nothing_or_interchangeable_neurons_have_no_margin():
    arch = ARCHS["cnn-bn"]
    assert symmetry_margin(arch.space, _weights(arch, 4)) == 0.0  # nothing shared
    w = arch.init([0]).expand(4, -1).clone()
    for name in ("convs.2.weight", "fcs.0.weight"):  # group convs.2: shared, but its neurons interchangeable
        w[:, arch.space.slice(name)] = 0.0
    differ = w.clone()
    differ[:, arch.space.slice("norms.2.bias")] += torch.randn(4, 4, generator=_gen(1))
    assert symmetry_margin(arch.space, differ) == 0.0
    # A group whose tensors the models all share cannot bring their differing coordinates closer:
    # interchangeable neurons there leave the margin of the group that reaches them.
    elsewhere = w.clone()
    elsewhere[:, arch.space.slice("norms.0.bias")] += torch.randn(4, 6, generator=_gen(1))
    margin = symmetry_margin(arch.space, elsewhere)
    assert margin > 0
    plain = l2_distances(elsewhere, elsewhere)
    exact = aligned_l2(arch.space, elsewhere, elsewhere)
    assert torch.allclose(exact[plain.square() <= margin], plain[plain.square() <= margin], atol=1e-5)


ARCHS = {
    "mlp-1": MLP(10, (5,), 4),
    "mlp-2": MLP(12, (9, 7), 5),
    "cnn-bn": CNN(1, 8, channels=(6, 5, 4), fc_widths=(7,)),
}


def _weights(arch, n, seed=0):
    w = arch.init(range(seed, seed + n))
    return w + 0.2 * torch.randn(w.shape, generator=_gen(seed + 100))


@pytest.mark.parametrize("name", ARCHS)
def test_aligned_l2_is_permutation_invariant_and_below_plain(name):
    arch = ARCHS[name]
    space = arch.space
    wa, wb = _weights(arch, 3), _weights(arch, 4, seed=10)
    perm_b = permute(space, wb, random_permutation(space, n=4, generator=_gen(5)))
    perm_a = permute(space, wa, random_permutation(space, n=3, generator=_gen(6)))
    d = aligned_l2(space, wa, wb, chunk_pairs=5)
    assert torch.allclose(aligned_l2(space, wa, perm_b), d, atol=1e-5)
    assert torch.allclose(aligned_l2(space, perm_a, wb), d, atol=1e-5)
    assert (d <= l2_distances(wa, wb) + 1e-5).all()
    assert torch.allclose(d, aligned_l2_pairs(space, wa[:, None].expand(-1, 4, -1).reshape(12, -1),
                                              wb.repeat(3, 1)).reshape(3, 4), atol=1e-6)
    # A model against a permuted copy of itself: distance 0, far from the plain distance.
    again = permute(space, wa, random_permutation(space, n=3, generator=_gen(7)))
    assert torch.allclose(aligned_l2_pairs(space, wa, again), torch.zeros(3), atol=1e-5)
    assert (l2_distances(wa, again).diagonal() > 1).all()


def test_one_hidden_layer_matches_brute_force_over_all_permutations():
    arch = ARCHS["mlp-1"]
    space = arch.space
    wa, wb = _weights(arch, 2), _weights(arch, 2, seed=20)
    got = aligned_l2_pairs(space, wa, wb)
    for k in range(2):
        perms = torch.tensor(list(itertools.permutations(range(5))))
        candidates = permute(space, wb[k].expand(len(perms), -1), {"layers.0": perms})
        best = (candidates - wa[k]).norm(dim=1).min()
        assert torch.isclose(got[k], best, atol=1e-5)


def test_match_permutations_returns_permutations_in_permute_convention():
    arch = ARCHS["mlp-2"]
    space = arch.space
    wa = _weights(arch, 2)
    true = random_permutation(space, n=2, generator=_gen(8))
    wb = permute(space, wa, true)
    perms = match_permutations(space, wa, wb)
    assert torch.allclose(permute(space, wb, perms), wa)
    for g in space.groups:
        assert torch.equal(perms[g.name].sort(1).values, torch.arange(g.size).expand(2, -1))


@pytest.mark.parametrize("name", ["mlp-1", "cnn-bn"])
def test_fast_path_bounds_and_agrees_on_clustered_models(name):
    arch = ARCHS[name]
    space = arch.space
    centers = _weights(arch, 4)
    # Three noisy, randomly permuted copies of each center: aligned distances have structure.
    noisy = centers.repeat_interleave(3, 0)
    noisy = noisy + 0.02 * torch.randn(noisy.shape, generator=_gen(9)) * noisy.abs().mean()
    pop = permute(space, noisy, random_permutation(space, n=12, generator=_gen(10)))
    fast = aligned_l2_fast(space, pop, pop)
    exact = aligned_l2(space, pop, pop)
    if name == "mlp-1":  # exact matching: the fast path composes two alignments, an upper bound
        assert (fast >= exact - 1e-4).all()
    same = torch.arange(12)[:, None] // 3 == torch.arange(12)[None, :] // 3
    assert fast[same].max() < fast[~same].min()  # copies of one center stay nearest each other
    report = fast_path_agreement(space, pop, pop, n_pairs=40, exclude_self=True)
    assert report["spearman"] > 0.5 and report["n_pairs"] == 40
    if name == "mlp-1":
        assert 0 <= report["mean_relative_error"] < 0.1
    assert report == fast_path_agreement(space, pop, pop, n_pairs=40, exclude_self=True)  # seeded
    ref = pop[0]
    assert torch.allclose(align_to(space, pop[:1], ref)[0], ref)
