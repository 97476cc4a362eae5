"""Audit similarities and distances: hand-computed cases and brute-force loops."""

import numpy as np
import pytest
import torch

from weightspace.audit import (
    chamfer_distance,
    error_iou,
    l2_distances,
    max_similarity_to_training,
    min_distance_to_training,
    nearest,
    prediction_agreement,
)
from weightspace.errors import ConfigError, LayoutError
from weightspace.shapes import normalise_points


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


def test_l2_distances_leave_out_coordinates_every_model_shares():
    g = _gen(4)
    shared = 3 + torch.randn(1, 500, generator=g)  # P-diff: a frozen body, a few fine-tuned values
    a = torch.cat([shared.expand(5, -1), torch.randn(5, 8, generator=g)], 1)
    b = torch.cat([shared.expand(7, -1), torch.randn(7, 8, generator=g)], 1)
    loop = torch.tensor([[float((x.double() - y.double()).norm()) for y in b] for x in a], dtype=torch.float64)
    assert torch.allclose(l2_distances(a, b).double(), loop, atol=1e-6)
    b[2, 17] += 1.0  # one frozen value differs in one model: it counts again
    assert torch.allclose(l2_distances(a, b)[:, 2].double(),
                          torch.stack([(x.double() - b[2].double()).norm() for x in a]), atol=1e-6)
    assert bool((l2_distances(a[:1].expand(3, -1), a[:1]) == 0).all())


def test_chamfer_known_value_padding_and_identity():
    x = [torch.tensor([[0.0, 0.0]])]
    y = [torch.tensor([[1.0, 0.0], [3.0, 0.0]])]
    # x→y: 1; y→x: (1 + 9) / 2 = 5
    assert torch.allclose(chamfer_distance(x, y, normalize=False), torch.tensor([[6.0]]))
    g = _gen(4)
    sets = [torch.randn(n, 3, generator=g) for n in (5, 8, 3)]
    others = [torch.randn(n, 3, generator=g) for n in (4, 6)]

    def one(p, q):
        d = torch.cdist(p, q) ** 2
        return d.min(1).values.mean() + d.min(0).values.mean()

    loop = torch.tensor([[one(p, q) for q in others] for p in sets])
    assert torch.allclose(chamfer_distance(sets, others, max_elements=7, normalize=False), loop, atol=1e-5)
    assert torch.allclose(chamfer_distance(sets, sets).diagonal(), torch.zeros(3), atol=1e-5)
    padded = torch.zeros(3, 8, 3)
    mask = torch.zeros(3, 8, dtype=torch.bool)
    for i, p in enumerate(sets):
        padded[i, : len(p)], mask[i, : len(p)] = p, True
    assert torch.allclose(chamfer_distance(padded, others, mask_a=mask, normalize=False), loop, atol=1e-5)


def test_chamfer_normalises_clouds_and_gives_empty_shapes_infinite_distance():
    g = _gen(5)
    shape = torch.randn(30, 2, generator=g)
    moved = 3.0 * shape + torch.tensor([5.0, -2.0])  # the same shape, shifted and scaled
    other = torch.randn(30, 2, generator=g)
    d = chamfer_distance([shape, torch.zeros(0, 2)], [moved, other, torch.zeros(0, 2)])
    assert float(d[0, 0]) < 1e-5 and float(d[0, 1]) > 0.1  # position and size do not count
    assert chamfer_distance([shape], [moved], normalize=False)[0, 0] > 10
    assert torch.isinf(d[1]).all() and torch.isinf(d[:, 2]).all()  # empty: infinitely far, no crash
    one = normalise_points([moved])[0]
    assert torch.allclose(one.mean(0), torch.zeros(2), atol=1e-5) and float(one.std(correction=0)) == pytest.approx(1)


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
