"""Knowledge regions: metrics with a known answer, derived tasks, and a tiny end-to-end build."""

import numpy as np
import pytest
import torch

from weightspace.analysis.regions import (
    KnowledgeRegions,
    build_regions,
    cluster_metrics,
    convex_combinations,
    derived_dataset,
    embed,
    region_table,
)
from weightspace.data import load_digits
from weightspace.errors import ConfigError


def _blobs(spread: float, centres=4, per=6, dim=20, seed=0):
    g = torch.Generator().manual_seed(seed)
    c = torch.randn(centres, dim, generator=g) * 10
    x = c.repeat_interleave(per, 0) + spread * torch.randn(centres * per, dim, generator=g)
    return x, np.repeat([f"c{i}" for i in range(centres)], per)


def test_cluster_metrics_on_separated_and_on_mixed_clusters():
    x, labels = _blobs(0.1)
    tight = cluster_metrics(x, labels)
    assert tight["ari"] == 1.0 and tight["silhouette"] > 0.95 and tight["intra_inter_ratio"] < 0.05
    shuffled = np.random.default_rng(0).permutation(labels)  # labels unrelated to the geometry
    mixed = cluster_metrics(x, shuffled)
    assert mixed["ari"] < 0.3 and mixed["silhouette"] < 0 and mixed["intra_inter_ratio"] > 0.8
    with pytest.raises(ConfigError, match="labels"):
        cluster_metrics(x, ["a"] * len(x))


def test_intra_inter_ratio_is_exact_on_a_square():
    # Two labels on the corners of a unit square: intra pairs are the vertical edges (1), inter pairs
    # 2 horizontal edges (1) and 2 diagonals (√2) per ordered side.
    x = torch.tensor([[0.0, 0.0], [0.0, 1.0], [1.0, 0.0], [1.0, 1.0]])
    m = cluster_metrics(x, ["a", "a", "b", "b"])
    assert m["intra_inter_ratio"] == pytest.approx(1 / ((1 + 2**0.5) / 2))


def test_convex_combinations_stay_in_the_hull():
    members = torch.eye(3)
    pts = convex_combinations(members, 50, seed=1)
    assert torch.allclose(pts.sum(1), torch.ones(50)) and (pts >= 0).all()
    assert torch.equal(pts, convex_combinations(members, 50, seed=1))


def test_derived_dataset_relabels_and_drops():
    ds = load_digits(seed=0)
    t = derived_dataset(ds, [[0, 2], [5]], "even-vs-five")
    _, y = ds.split("train")
    assert len(t.y_train) == int(((y == 0) | (y == 2) | (y == 5)).sum())
    assert set(t.y_train.tolist()) == {0, 5}  # each group keeps its first original label
    assert (t.y_train == 5).sum() == (y == 5).sum() and (t.y_train == 0).sum() == ((y == 0) | (y == 2)).sum()
    with pytest.raises(ConfigError, match="disjoint"):
        derived_dataset(ds, [[0, 1], [1]], "bad")


def test_embeddings_have_two_columns():
    x, _ = _blobs(1.0)
    for method in ("pca", "tsne"):
        assert embed(x, method).shape == (len(x), 2)
    with pytest.raises(ConfigError, match="embedding"):
        embed(x, "mds")


@pytest.mark.slow  # umap-learn compiles with numba on first use (about a minute here)
def test_umap_embedding_keeps_clusters_apart():
    x, labels = _blobs(0.1)
    xy = torch.from_numpy(embed(x, "umap")).double()
    assert xy.shape == (len(x), 2)
    assert cluster_metrics(xy, labels)["ari"] == 1.0


TINY = {
    "base": {"dataset": {"name": "digits", "seed": 0},
             "architecture": {"kind": "mlp", "widths": [16]},
             "population": {"runs": 1, "seed": 0, "hparams": {"lr": 0.1, "epochs": 3}},
             "training": {"batch_size": 32}},
    "finetune": {"seeds": 3, "hparams": {"lr": 0.05, "epochs": 2}, "training": {"batch_size": 32}},
    "tasks": [{"name": "low", "family": "digits5", "classes": [[0], [1], [2], [3], [4]]},
              {"name": "high", "family": "digits5", "classes": [[5], [6], [7], [8], [9]]},
              {"name": "mid", "family": "digits5", "classes": [[2], [4], [6], [8], [9]]},
              {"name": "parity", "family": "binary", "classes": [[0, 2, 4, 6, 8], [1, 3, 5, 7, 9]]},
              {"name": "small", "family": "binary", "classes": [[0, 1, 2], [7, 8, 9]]}],
    "held_out": ["mid"],
}


def test_regions_build_and_analysis_end_to_end(tmp_path):
    zoo = build_regions(TINY, tmp_path / "regions", progress=False)
    _, table = region_table(zoo)
    assert set(table["task"]) == {"low", "high", "mid", "parity", "small"}
    assert set(table.loc[table["task"] == "mid", "start"]) == {"base", "centroid"}
    again = build_regions(TINY, tmp_path / "regions", progress=False)  # resumes: nothing new
    assert len(again) == len(zoo)
    res = KnowledgeRegions(by="task", embeddings=("pca",), interior_samples=8).fit(zoo)
    assert list(res.metrics_["by"]) == ["task", "family"]
    assert res.metrics_.set_index("by").loc["task", "groups"] == 4  # the held-out task is not a region
    assert set(res.interior_["task"]) == {"low", "high", "parity", "small"}
    assert (res.interior_["member_acc_mean"] > 0.5).all()
    assert list(res.starts_["task"]) == ["mid"] and res.starts_["seeds"].iloc[0] == 3
    with pytest.raises(ConfigError, match="--by 'colour'"):
        KnowledgeRegions(by="colour").fit(zoo)


def test_regions_config_errors_name_the_key():
    with pytest.raises(ConfigError, match="held_out: 'nope'"):
        build_regions({**TINY, "held_out": ["nope"]}, "unused")
    with pytest.raises(ConfigError, match="no other task"):
        build_regions({**TINY, "held_out": ["parity", "small"]}, "unused")
