"""Novelty table, noise frontier and verdict on populations built to replicate, interpolate or be new.

The population: linear classifiers on a fixed Gaussian data set, each a teacher plus its own
deviation (so each makes its own errors), scored on the teacher's labels.
"""

import numpy as np
import pandas as pd
import pytest
import torch

from weightspace.audit import (
    ModelSet,
    beyond_frontier,
    frontier_from_table,
    noise_frontier,
    novelty_table,
    verdict,
)
from weightspace.errors import ConfigError
from weightspace.nets import CNN, MLP
from weightspace.symmetry import permute, random_permutation

E, D, C, N, M = 600, 12, 4, 60, 40
SIGMAS = (0.05, 0.1, 0.2, 0.4, 0.8)


class Toy:
    def __init__(self):
        g = torch.Generator().manual_seed(0)
        self.g = g
        self.x = torch.randn(E, D, generator=g)
        teacher = torch.randn(D * C, generator=g)
        self.labels = self.predict(teacher[None])[0]
        self.train = teacher + 0.6 * torch.randn(N, D * C, generator=g)

    def predict(self, w):
        return torch.einsum("ed,ndc->nec", self.x, w.reshape(-1, D, C)).argmax(-1)

    def set(self, name, w, **kw):
        return ModelSet(name, (self.predict(w) == self.labels).float().mean(1), weights=w,
                        predictions=self.predict(w), **kw)

    def noise(self, sigma, n=M):
        parents = self.train[torch.randint(0, N, (n,), generator=self.g)]
        return parents + sigma * torch.randn(n, D * C, generator=self.g)

    def pair_averages(self, n=M):
        i = torch.randint(0, N, (2, n), generator=self.g)
        return (self.train[i[0]] + self.train[i[1]]) / 2


@pytest.fixture(scope="module")
def audit():
    toy = Toy()
    train = toy.train
    gauss = train.mean(0) + train.std(0) * torch.randn(M, D * C, generator=toy.g)
    sets = [
        toy.set("training", train, is_training=True),
        toy.set("replicas", toy.noise(0.01)),
        toy.set("pair-averages", toy.pair_averages()),
        toy.set("average-of-2", toy.pair_averages()),
        toy.set("gaussian", gauss),
        *[toy.set(f"noise-{s}", toy.noise(s)) for s in SIGMAS],
    ]
    table = novelty_table(sets, toy.labels)
    frontier = frontier_from_table(table, {s: f"noise-{s}" for s in SIGMAS})
    return toy, table, frontier


# ---------------------------------------------------------------- table
def test_table_columns_and_self_exclusion(audit):
    toy, table, _ = audit
    assert {"group", "model", "is_training", "quality", "max_similarity", "nearest_training", "min_l2",
            "nearest_training_l2"} <= set(table.columns)
    train_rows = table[table.group == "training"]
    assert len(train_rows) == N and (table.group != "training").sum() == 9 * M
    # No training model is its own nearest neighbour.
    assert (train_rows.nearest_training != train_rows.model).all()
    assert (train_rows.nearest_training_l2 != train_rows.model).all()
    assert (train_rows.min_l2 > 0).all() and (train_rows.max_similarity < 1).all()
    # Copies of training models: exact matches unless told which training model each one is.
    idx = torch.tensor([3, 7, 11])
    copies = toy.set("copies", toy.train[idx])
    own = toy.set("own-copies", toy.train[idx], training_index=idx)
    training = {"quality": torch.zeros(N), "weights": toy.train, "predictions": toy.predict(toy.train),
                "is_training": True}
    t2 = novelty_table({"training": training,
                        "copies": copies, "own-copies": own}, toy.labels)
    c, o, t = (t2[t2.group == g].reset_index(drop=True) for g in ("copies", "own-copies", "training"))
    assert (c.min_l2 < 1e-5).all() and (c.max_similarity == 1).all()
    assert np.array_equal(c.nearest_training_l2, idx.numpy())
    assert np.allclose(o.min_l2, t.min_l2[idx.numpy()]) and np.allclose(o.max_similarity, t.max_similarity[idx.numpy()])


def test_table_needs_one_training_set(audit):
    toy, _, _ = audit
    with pytest.raises(ConfigError, match="exactly one training set"):
        novelty_table([toy.set("a", toy.train)], toy.labels)


@pytest.mark.parametrize("aligned", ["fast", "nearest", "exact"])
def test_aligned_distance_sees_through_permutations(aligned):
    arch = MLP(8, (6, 5), 3)
    space = arch.space
    train = arch.init(range(10))
    train = train + 0.3 * torch.randn(train.shape, generator=torch.Generator().manual_seed(1))
    permuted = permute(space, train[:4], random_permutation(space, n=4, generator=torch.Generator().manual_seed(2)))
    table = novelty_table([ModelSet("training", torch.ones(10), weights=train, is_training=True),
                           ModelSet("permuted", torch.ones(4), weights=permuted)], space=space, aligned=aligned)
    rows = table[table.group == "permuted"]
    assert (rows.aligned_min_l2 < 1e-4).all() and (rows.min_l2 > 1).all()
    train_rows = table[table.group == "training"]
    assert (train_rows.aligned_min_l2 > 0.1).all() and (train_rows.aligned_min_l2 <= train_rows.min_l2 + 1e-5).all()


def test_nearest_alignment_is_exact_on_the_fast_paths_candidates():
    arch = MLP(8, (6,), 3)
    train = arch.init(range(12)) + 0.3 * torch.randn(12, arch.space.num_params, generator=torch.Generator().manual_seed(3))
    sets = [ModelSet("training", torch.ones(12), weights=train, is_training=True),
            ModelSet("g", torch.ones(5), weights=arch.init(range(20, 25)))]
    exact = novelty_table(sets, space=arch.space, aligned="exact")
    fast = novelty_table(sets, space=arch.space, aligned="fast")
    everyone = novelty_table(sets, space=arch.space, aligned="nearest", candidates=12)
    few = novelty_table(sets, space=arch.space, aligned="nearest", candidates=3)
    assert np.allclose(everyone.aligned_min_l2, exact.aligned_min_l2)
    assert (few.aligned_min_l2 >= exact.aligned_min_l2 - 1e-6).all()
    assert (few.aligned_min_l2 <= fast.aligned_min_l2 + 1e-6).all()
    only = novelty_table([*sets, ModelSet("h", torch.ones(2), weights=arch.init(range(30, 32)))], space=arch.space,
                         aligned="nearest", aligned_groups=["g"])
    assert only[only.group == "h"].aligned_min_l2.isna().all() and only[only.group == "g"].aligned_min_l2.notna().all()


def test_models_sharing_their_layers_skip_matching_and_keep_exact_aligned_distances(monkeypatch):
    """P-diff's setting: all models share every layer but the last BatchNorm ones. Rows whose nearest
    plain distance is within the shared layers' margin take it as their aligned one, unmatched; the
    others are matched; every row equals the exact aligned distance."""
    from weightspace.audit import novelty

    arch = CNN(1, 8, channels=(6, 5, 4), fc_widths=())
    varying = torch.cat([torch.arange(*arch.space.slice(n).indices(arch.space.num_params))
                         for n in ("norms.1.weight", "norms.1.bias", "norms.2.weight", "norms.2.bias")])
    g = torch.Generator().manual_seed(5)

    def variants(n, scale):
        w = arch.init([0]).expand(n, -1).clone()
        w[:, varying] += scale * torch.randn(n, len(varying), generator=g)
        return w

    train, near = variants(8, 0.05), variants(5, 0.05)
    far = torch.cat([near[:2], variants(3, 60.0)])  # two rows within the margin, three far beyond it
    sets = [ModelSet("training", torch.ones(8), weights=train, is_training=True),
            ModelSet("near", torch.ones(5), weights=near), ModelSet("far", torch.ones(5), weights=far)]
    matched = []
    real = novelty.refine_nearest
    monkeypatch.setattr(novelty, "refine_nearest", lambda space, a, *args, **kw: matched.append(len(a)) or real(
        space, a, *args, **kw))
    table = novelty_table(sets, space=arch.space, aligned="nearest", candidates=8)
    exact = novelty_table(sets, space=arch.space, aligned="exact")
    assert matched == [3]  # the far rows alone
    assert np.allclose(table.aligned_min_l2, exact.aligned_min_l2, atol=1e-5)
    far_rows = table[table.group == "far"]
    assert (far_rows.aligned_min_l2.iloc[2:] < far_rows.min_l2.iloc[2:] - 1e-3).all()  # matching mattered there


# ---------------------------------------------------------------- frontier
def test_noise_frontier_medians_and_monotone_envelope():
    sims = [np.array([0.9, 0.95, 1.0]), np.array([0.6, 0.7, 0.8]), np.array([0.3, 0.4, 0.5])]
    quals = [np.array([0.9, 0.9, 0.9]), np.array([0.92, 0.93, 0.91]), np.array([0.5, 0.6, 0.7])]
    fr = noise_frontier([0.01, 0.1, 1.0], sims, quals)
    assert np.allclose(fr.similarity, [0.95, 0.7, 0.4]) and np.allclose(fr.quality, [0.9, 0.92, 0.6])
    # Running maximum over similarity: the σ=0.1 point (0.7, 0.92) lifts everything right of it.
    assert np.allclose(fr.quality_at([0.1, 0.4, 0.55, 0.7, 0.95, 1.0]), [0.6, 0.6, 0.76, 0.92, 0.92, 0.92])
    assert list(fr.to_frame().columns) == ["sigma", "max_similarity", "quality"]
    grid = np.linspace(0, 1, 101)
    assert np.all(np.diff(fr.quality_at(grid)) >= 0)


def test_beyond_frontier_fraction_interval_and_seed():
    fr = noise_frontier([0.1, 1.0], [np.full(20, 0.9), np.full(20, 0.3)], [np.full(20, 0.9), np.full(20, 0.5)])
    sim = np.linspace(0.3, 0.9, 40)
    above = beyond_frontier(sim, fr.quality_at(sim) + 0.05, fr)
    below = beyond_frontier(sim, fr.quality_at(sim) - 0.05, fr)
    assert above["fraction"] == 1 and above["ci_low"] == 1 and below["fraction"] == 0 and below["ci_high"] == 0
    q = fr.quality_at(sim) + np.where(np.arange(40) % 2 == 0, 0.05, -0.05)
    half = beyond_frontier(sim, q, fr, n_boot=500, seed=3)
    assert half["fraction"] == 0.5 and half["ci_low"] < 0.5 < half["ci_high"]
    assert half == beyond_frontier(sim, q, fr, n_boot=500, seed=3)


# ---------------------------------------------------------------- verdict
def _verdict(audit, group, table=None):
    _, t, frontier = audit
    return verdict(t if table is None else table, group, frontier=frontier,
                   interpolation=["average-of-2", "gaussian"])


def test_replicas_of_training_models_replicate(audit):
    v = _verdict(audit, "replicas")
    assert v["verdict"] == "replicates" and v["replicates"] and not v["matches_interpolation"]
    assert v["replica_measure"] == "min_l2" and v["distance_ratio"] < 0.05 < v["replica_threshold_ratio"]
    assert v["distance_ratio_ci"][0] <= v["distance_ratio"] <= v["distance_ratio_ci"][1]


def test_averages_of_training_pairs_interpolate(audit):
    v = _verdict(audit, "pair-averages")
    assert v["verdict"] == "interpolates" and v["matched_baselines"] == ["interpolation baselines"]
    # Closer in errors than training models are to each other, and about 0.6 of a spacing away in
    # weights, closer than almost every checkpoint is to its neighbour: the replica axis alone would
    # call a blend a copy, which is why the rule tests the interpolation region first.
    assert v["median_similarity"] > v["training_nn_similarity"] and 0.4 < v["distance_ratio"] < 0.8
    assert v["replicates"]
    for m, (lo, hi) in v["interpolation_region"].items():
        assert lo <= audit[1].loc[audit[1].group == "pair-averages", m].median() <= hi


def test_noise_itself_is_no_better_than_noise(audit):
    v = _verdict(audit, "noise-0.8")  # past the spacing (σ = 0.4 sits at 0.6 of it: a near-replica)
    assert v["verdict"] == "no better than noise" and not v["beats_noise"]
    assert v["fraction_ci"][0] < 0.5 and v["distance_ratio"] > 1


def _placed(audit, name, similarity, quality, min_l2):
    _, table, _ = audit
    rows = pd.DataFrame({"group": name, "model": np.arange(len(similarity)), "is_training": False,
                         "quality": quality, "max_similarity": similarity, "min_l2": min_l2})
    return pd.concat([table, rows], ignore_index=True)


def test_points_above_the_frontier_are_novel_and_good(audit):
    _, table, frontier = audit
    rng = np.random.default_rng(0)
    spacing = table[table.group == "training"].min_l2.median()
    sim = rng.uniform(0.45, 0.6, M)
    quality = frontier.quality_at(sim) + rng.uniform(0.1, 0.15, M)
    v = _verdict(audit, "novel", _placed(audit, "novel", sim, quality, rng.uniform(0.9, 1.1, M) * spacing))
    assert v["verdict"] == "novel and good", v
    assert v["beats_noise"] and v["fraction_beyond_frontier"] == 1 and v["fraction_ci"][0] > 0.5
    assert not v["replicates"] and not v["matches_interpolation"]


def test_novel_but_poor_models_are_not_good(audit):
    _, table, frontier = audit
    rng = np.random.default_rng(1)
    spacing = table[table.group == "training"].min_l2.median()
    sim = rng.uniform(0.05, 0.1, M)  # left of every noise level: the bar is the noisiest level's quality
    quality = frontier.quality[-1] + rng.uniform(0.01, 0.03, M)
    v = _verdict(audit, "poor", _placed(audit, "poor", sim, quality, rng.uniform(1.5, 2, M) * spacing))
    assert v["beats_noise"] and not v["quality_ok"]
    assert v["verdict"] == "no better than noise"


def test_empty_shapes_are_infinitely_far_counted_and_reported():
    g = torch.Generator().manual_seed(7)
    train = [torch.randn(20, 2, generator=g) for _ in range(6)]
    gen = [train[i % 6] + 0.01 * torch.randn(20, 2, generator=g) for i in range(11)] + [torch.zeros(0, 2)]
    noise = [t + 0.5 * torch.randn(20, 2, generator=g) for t in train[:4]]
    sets = [ModelSet("training", torch.ones(6), points=train, is_training=True),
            ModelSet("generated", torch.tensor([1.0] * 11 + [0.0]), points=gen),
            ModelSet("noise", torch.full((4,), 0.9), points=noise)]
    table = novelty_table(sets)
    rows = table[table.group == "generated"]
    assert rows.empty_shape.tolist() == [False] * 11 + [True] and np.isinf(rows.min_chamfer.iloc[11])
    table["chamfer_similarity"] = -table["min_chamfer"]
    frontier = frontier_from_table(table, {0.5: "noise"}, similarity="chamfer_similarity")
    v = verdict(table, "generated", frontier=frontier, similarity="chamfer_similarity")
    assert v["empty_shapes"] == 1 and "1 of 12 shapes are empty" in v["warnings"][0]
    assert v["replica_measure"] == "min_chamfer" and v["verdict"] == "replicates"


def test_two_sample_auc_tells_apart_what_differs_and_not_what_does_not():
    from weightspace.audit.two_sample import two_sample_auc

    rng = np.random.default_rng(0)
    same = two_sample_auc(rng.normal(size=(80, 3)), rng.normal(size=(40, 3)), seed=1)
    shifted = two_sample_auc(rng.normal(size=(80, 3)) + [1.5, 0, 0], rng.normal(size=(40, 3)), seed=1)
    assert same["ci_low"] < 0.5 < same["ci_high"] and same["auc"] < 0.65
    assert shifted["auc"] > 0.8 and shifted["ci_low"] > 0.6
    with pytest.raises(ConfigError, match="at least 2 models"):
        two_sample_auc(np.zeros((1, 3)), np.zeros((5, 3)))


def test_bootstrap_aucs_by_ranks_equal_sklearn_with_ties():
    from sklearn.metrics import roc_auc_score

    from weightspace.audit.two_sample import rank_auc

    rng = np.random.default_rng(0)
    pos, neg = np.round(rng.normal(0.5, 1, (20, 30)), 1), np.round(rng.normal(0, 1, (20, 40)), 1)  # many ties
    want = [roc_auc_score(np.r_[np.ones(30), np.zeros(40)], np.r_[p, n]) for p, n in zip(pos, neg)]
    np.testing.assert_allclose(rank_auc(pos, neg), want, atol=1e-12)
