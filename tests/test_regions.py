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
    final_checkpoints,
    group_separation,
    head_mask,
    region_table,
    resolve_regions_config,
    rows_of,
)
from weightspace.data import load_digits
from weightspace.errors import ConfigError
from weightspace.nets import build_architecture
from weightspace.zoo import Zoo


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


def test_group_separation_is_exact_on_a_line():
    # Pairs of points at 0,1 / 10,11 / 100,101: each pair's spread is 1; a's nearest is b at mean
    # distance (10 + 11 + 9 + 10) / 4 = 10, c's nearest is b at 90.
    x = torch.tensor([[0.0], [1.0], [10.0], [11.0], [100.0], [101.0]])
    sep = group_separation(x, ["a", "a", "b", "b", "c", "c"]).set_index("group")
    assert sep["within"].tolist() == pytest.approx([1.0, 1.0, 1.0])
    assert sep["nearest"].tolist() == ["b", "a", "b"]
    assert sep["between"].tolist() == pytest.approx([10.0, 10.0, 90.0])
    assert sep["ratio"].tolist() == pytest.approx([10.0, 10.0, 90.0]) and sep["members"].tolist() == [2, 2, 2]


def test_group_separation_near_one_when_labels_share_a_cloud():
    x, _ = _blobs(1.0, centres=1, per=200)
    halves = np.repeat(["a", "b"], 100)
    assert group_separation(x, halves)["ratio"].between(0.9, 1.1).all()
    blobs, blob_labels = _blobs(0.1)
    assert (group_separation(blobs, blob_labels)["ratio"] > 20).all()


def test_nested_tasks_on_one_data_set_are_rejected():
    nested = {**TINY, "tasks": TINY["tasks"] + [{"name": "low-pair", "family": "binary", "classes": [[0], [1]]}]}
    with pytest.raises(ConfigError, match="'low-pair' is 'low' restricted"):
        resolve_regions_config(nested)
    regrouped = {**TINY, "tasks": TINY["tasks"] + [{"name": "low-3", "family": "binary", "classes": [[0, 1], [2]]}]}
    assert len(resolve_regions_config(regrouped)["tasks"]) == 6  # a different grouping is another task
    other_data = {"name": "low-pair", "family": "binary", "classes": [[0], [1]],
                  "dataset": {"name": "digits", "seed": 1}}
    assert len(resolve_regions_config({**TINY, "tasks": TINY["tasks"] + [other_data]})["tasks"]) == 6


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


def test_pca_embedding_of_points_on_a_plane_keeps_their_distances():
    g = torch.Generator().manual_seed(0)
    plane = torch.linalg.qr(torch.randn(20, 2, generator=g, dtype=torch.float64))[0]  # 2 orthonormal directions
    x = torch.randn(30, 2, generator=g, dtype=torch.float64) @ plane.T + 5.0  # 30 points on a plane in 20-D
    xy = torch.from_numpy(embed(x, "pca"))
    assert xy.shape == (30, 2)

    def distances(p):
        return (p[:, None] - p[None]).norm(dim=-1)

    torch.testing.assert_close(distances(xy), distances(x))


def test_tsne_embedding_keeps_clusters_apart_and_repeats():
    x, labels = _blobs(0.1)
    xy = embed(x, "tsne")
    assert cluster_metrics(torch.from_numpy(xy), labels)["ari"] == 1.0
    assert np.array_equal(xy, embed(x, "tsne"))
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
    assert sorted(res.separation_["group"]) == ["high", "low", "parity", "small"]
    assert res.metrics_.set_index("by").loc["task", "groups"] == 4  # the held-out task is not a region
    assert set(res.interior_["task"]) == {"low", "high", "parity", "small"}
    assert (res.interior_["member_acc_mean"] > 0.5).all()
    assert list(res.starts_["task"]) == ["mid"] and res.starts_["seeds"].iloc[0] == 3
    starts = res.starts_.iloc[0]
    assert starts["centroid_wins"] + starts["ties"] <= 3 and np.isnan(starts["base_acc_before"])  # no step 0 saved
    curve = res.start_curve_
    assert len(curve) == 6 and set(curve["start"]) == {"base", "centroid"}  # 2 starts x 3 seeds, final only
    final = curve.groupby("start")["test_acc"].mean()
    assert final["centroid"] - final["base"] == pytest.approx(starts["centroid_minus_base"])
    with pytest.raises(ConfigError, match="--by 'colour'"):
        KnowledgeRegions(by="colour").fit(zoo)


def test_regions_config_errors_name_the_key():
    with pytest.raises(ConfigError, match="held_out: 'nope'"):
        build_regions({**TINY, "held_out": ["nope"]}, "unused")
    with pytest.raises(ConfigError, match="no other task"):
        build_regions({**TINY, "held_out": ["parity", "small"]}, "unused")


def test_head_mask_is_the_output_layer():
    space = build_architecture({"kind": "mlp", "in_features": 64, "widths": [16, 8], "out_features": 10}).space
    mask = head_mask(space)
    expected = torch.zeros(space.num_params, dtype=torch.bool)
    for name in ("layers.2.weight", "layers.2.bias"):
        expected[space.slice(name)] = True
    assert torch.equal(mask, expected) and int(mask.sum()) == 8 * 10 + 10


@pytest.mark.parametrize("head", ["base", "centroid"])
def test_centroid_start_takes_its_output_layer_from_the_config(tmp_path, head):
    """Step 0 of a held-out centroid run: the family members' mean body, and the base's output layer
    (``centroid_head: base``) or the members' mean one (``centroid``)."""
    cfg = {**TINY, "finetune": {**TINY["finetune"], "centroid_head": head,
                                "training": {"batch_size": 32, "max_steps": 4, "every_steps": 2}}}
    zoo = build_regions(cfg, tmp_path / "regions", progress=False)
    w, table = region_table(zoo)
    base_w, base_df = Zoo.open(tmp_path / "regions" / "base").load()
    base = base_w[int(np.argmax(base_df["step"].to_numpy()))]
    members = final_checkpoints(table)
    members = members[(members["family"] == "digits5") & (members["role"] == "region")]
    mean = rows_of(w, members).mean(0)
    starts = table[(table["start"] == "centroid") & (table["step"] == 0)]
    assert len(starts) == 3
    head_of = head_mask(zoo.space)
    for row in rows_of(w, starts):
        torch.testing.assert_close(row[~head_of], mean[~head_of])
        torch.testing.assert_close(row[head_of], (base if head == "base" else mean)[head_of])
    assert not torch.allclose(base[head_of], mean[head_of])  # the two options differ here


def test_an_unknown_centroid_head_is_refused():
    with pytest.raises(ConfigError, match="finetune.centroid_head"):
        resolve_regions_config({**TINY, "finetune": {**TINY["finetune"], "centroid_head": "mean"}})
