"""Audit similarities and distances: hand-computed cases, brute-force loops, permutation alignment."""

import itertools

import numpy as np
import pytest
import torch

from weightspace.audit import (
    align_to,
    aligned_l2,
    aligned_l2_fast,
    aligned_l2_pairs,
    chamfer_distance,
    error_iou,
    fast_path_agreement,
    l2_distances,
    match_permutations,
    max_similarity_to_training,
    min_distance_to_training,
    nearest,
    prediction_agreement,
)
from weightspace.errors import ConfigError, LayoutError
from weightspace.nets import CNN, MLP
from weightspace.symmetry import permute, random_permutation


def _gen(seed=0):
    return torch.Generator().manual_seed(seed)


def _iou_loop(pred_a, pred_b, labels, empty=1.0):
    out = np.zeros((len(pred_a), len(pred_b)))
    for i, a in enumerate(pred_a):
        for j, b in enumerate(pred_b):
            ea, eb = set(np.flatnonzero(a != labels)), set(np.flatnonzero(b != labels))
            out[i, j] = len(ea & eb) / len(ea | eb) if ea | eb else empty
    return out


# ---------------------------------------------------------------- error IoU
def test_error_iou_hand_computed():
    labels = torch.tensor([0, 1, 2, 0, 1, 2])
    pred = torch.tensor(
        [
            [1, 1, 2, 1, 1, 2],  # wrong on {0, 3}
            [1, 0, 2, 1, 1, 2],  # wrong on {0, 1, 3}
            [0, 1, 0, 0, 2, 0],  # wrong on {2, 4, 5}
        ]
    )
    expected = torch.tensor(
        [
            [1.0, 2 / 3, 0.0],
            [2 / 3, 1.0, 0.0],
            [0.0, 0.0, 1.0],
        ]
    )
    assert torch.allclose(error_iou(pred, pred, labels), expected)
    assert torch.allclose(error_iou(pred[:1], pred[1:], labels), expected[:1, 1:])


def test_two_perfect_models_score_one_or_the_original_zero():
    labels = torch.tensor([3, 1, 2, 0])
    pred = torch.stack([labels, labels, torch.tensor([3, 1, 2, 1])])
    sim = error_iou(pred, pred, labels)
    assert sim[0, 1] == 1.0 and sim[0, 0] == 1.0  # identical (empty) error sets
    assert sim[0, 2] == 0.0 and sim[2, 0] == 0.0  # one perfect, one not: nothing shared
    original = error_iou(pred, pred, labels, empty_union=0.0)
    assert original[0, 1] == 0.0 and original[2, 2] == 1.0


@pytest.mark.parametrize("prune_below", [0.0, 1.1])
def test_error_iou_matches_set_loop(prune_below):
    g = _gen(1)
    labels = torch.randint(0, 5, (80,), generator=g)
    # Correlated errors on a few hard examples, so pruning has columns to drop.
    hard = torch.rand(80, generator=g) < 0.3
    def population(n):
        wrong = hard & (torch.rand(n, 80, generator=g) < 0.5)
        return torch.where(wrong, (labels + 1) % 5, labels)
    pa, pb = population(9), population(23)
    pb[3] = labels
    pa[0] = labels
    got = error_iou(pa, pb, labels, chunk_size=7, prune_below=prune_below)
    assert np.allclose(got.numpy(), _iou_loop(pa.numpy(), pb.numpy(), labels.numpy()), atol=1e-6)


def test_error_iou_rejects_bad_shapes():
    labels = torch.zeros(5, dtype=torch.long)
    with pytest.raises(LayoutError, match="pred_b"):
        error_iou(torch.zeros(2, 5, dtype=torch.long), torch.zeros(2, 4, dtype=torch.long), labels)
    with pytest.raises(LayoutError, match="integer class labels"):
        error_iou(torch.zeros(2, 5), torch.zeros(2, 5, dtype=torch.long), labels)


# ---------------------------------------------------------------- agreement
def test_prediction_agreement_matches_loop_symmetric_in_unit_interval():
    g = _gen(2)
    pred = torch.randint(0, 7, (12, 50), generator=g)
    pred[1] = pred[0]
    agree = prediction_agreement(pred, pred, chunk_size=5)
    brute = (pred[:, None, :] == pred[None, :, :]).float().mean(-1)
    assert torch.allclose(agree, brute)
    assert torch.equal(agree, agree.T)
    assert (agree >= 0).all() and (agree <= 1).all()
    assert torch.all(agree.diagonal() == 1) and agree[0, 1] == 1
    other = torch.randint(0, 3, (4, 50), generator=g)
    assert torch.allclose(prediction_agreement(pred, other), (pred[:, None] == other[None]).float().mean(-1))


# ---------------------------------------------------------------- distances
def test_l2_distances_equal_a_loop_and_stay_accurate_for_near_replicas():
    g = _gen(3)
    a, b = torch.randn(6, 40, generator=g), torch.randn(9, 40, generator=g)
    loop = torch.tensor([[float((x.double() - y.double()).norm()) for y in b] for x in a], dtype=torch.float64)
    assert torch.allclose(l2_distances(a, b, chunk_size=4).double(), loop, atol=1e-5)
    # Large weights, tiny differences: a float32 Gram product would cancel to noise.
    base = 50 + torch.randn(3, 2000, generator=g)
    near = base + 1e-3 * torch.randn(3, 2000, generator=g)
    exact = (near.double() - base.double()).norm(dim=1)
    assert torch.allclose(l2_distances(near, base).diagonal().double(), exact, rtol=1e-4)


def test_chamfer_known_value_padding_and_identity():
    x = [torch.tensor([[0.0, 0.0]])]
    y = [torch.tensor([[1.0, 0.0], [3.0, 0.0]])]
    # x→y: 1; y→x: (1 + 9) / 2 = 5
    assert torch.allclose(chamfer_distance(x, y), torch.tensor([[6.0]]))
    g = _gen(4)
    sets = [torch.randn(n, 3, generator=g) for n in (5, 8, 3)]
    others = [torch.randn(n, 3, generator=g) for n in (4, 6)]

    def one(p, q):
        d = torch.cdist(p, q) ** 2
        return d.min(1).values.mean() + d.min(0).values.mean()

    loop = torch.tensor([[one(p, q) for q in others] for p in sets])
    assert torch.allclose(chamfer_distance(sets, others, max_elements=7), loop, atol=1e-5)
    assert torch.allclose(chamfer_distance(sets, sets).diagonal(), torch.zeros(3), atol=1e-5)
    padded = torch.zeros(3, 8, 3)
    mask = torch.zeros(3, 8, dtype=torch.bool)
    for i, p in enumerate(sets):
        padded[i, : len(p)], mask[i, : len(p)] = p, True
    assert torch.allclose(chamfer_distance(padded, others, mask_a=mask), loop, atol=1e-5)


# ---------------------------------------------------------------- nearest neighbours
def test_self_exclusion_diagonal_and_indices():
    sim = torch.tensor([[1.0, 0.2, 0.7], [0.2, 1.0, 0.4], [0.7, 0.4, 1.0]])
    values, index = max_similarity_to_training(sim, exclude_self=True)
    assert torch.equal(values, torch.tensor([0.7, 0.4, 0.7])) and torch.equal(index, torch.tensor([2, 2, 0]))
    values, _ = max_similarity_to_training(sim)  # without exclusion every model finds itself
    assert torch.equal(values, torch.ones(3))
    # A subset of the training set: rows 0 and 1 are training models 2 and 0; row 2 is new.
    sub = sim[[2, 0, 1]]
    values, index = max_similarity_to_training(sub, exclude_self=torch.tensor([2, 0, -1]))
    assert torch.equal(values, torch.tensor([0.7, 0.7, 1.0])) and torch.equal(index, torch.tensor([0, 2, 1]))
    dist = 1 - sim
    values, index = min_distance_to_training(dist, exclude_self=True)
    assert torch.allclose(values, torch.tensor([0.3, 0.6, 0.3])) and torch.equal(index, torch.tensor([2, 2, 0]))
    _, top_index = nearest(sim, k=2, largest=True, exclude_self=True)
    assert torch.equal(top_index[0], torch.tensor([2, 1]))
    with pytest.raises(LayoutError, match="square"):
        max_similarity_to_training(sim[:2], exclude_self=True)
    with pytest.raises(ConfigError, match="k"):
        nearest(sim, k=4, largest=True)


# ---------------------------------------------------------------- permutation-aligned L2
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
