"""2-D shapes: marching squares finds true outlines, Chamfer and IoU have their defining values,
silhouette splits are fixed by the seed."""

import math
from pathlib import Path

import pytest
import torch

from weightspace.data import DEFAULT_FASHION_ROOT
from weightspace.errors import ConfigError
from weightspace.shapes import (
    boundary_points,
    chamfer,
    field_values,
    grid_points,
    iou,
    load_silhouettes,
    marching_squares,
    occupancy_samples,
    pairwise_chamfer,
)


def _disk(radius=0.6, resolution=64, centre=(0.0, 0.0)):
    g = grid_points(resolution)
    return (radius - (g - torch.tensor(centre)).norm(dim=-1)).reshape(resolution, resolution)


def test_marching_squares_on_a_disk_gives_points_on_its_circle():
    pts = boundary_points(_disk(0.6), 128)
    assert pts.shape == (128, 2)
    assert (pts.norm(dim=-1) - 0.6).abs().max() < 2e-3  # chords of 1/32-wide cells sag by ~2e-4
    # spread by arc length: each eighth of the circle holds about an eighth of the points
    sector = ((torch.atan2(pts[:, 1], pts[:, 0]) + math.pi) / (2 * math.pi) * 8).long().clamp(max=7)
    counts = torch.bincount(sector, minlength=8)
    assert counts.min() >= 13 and counts.max() <= 19


def test_marching_squares_follows_x_along_columns_and_y_along_rows():
    pts = boundary_points(_disk(0.3, centre=(0.4, -0.2)), 64)
    assert torch.allclose(pts.mean(0), torch.tensor([0.4, -0.2]), atol=1e-2)


def test_marching_squares_batches_and_marks_empty_fields():
    fields = torch.stack([_disk(0.5), -torch.ones(64, 64)])
    seg, valid = marching_squares(fields)
    assert seg.shape == (2, 2 * 63 * 63, 2, 2) and valid.shape == (2, 2 * 63 * 63)
    assert valid[0].any() and not valid[1].any()
    pts = boundary_points(fields, 16)
    assert not pts[0].isnan().any() and pts[1].isnan().all()


@pytest.mark.parametrize("centre, cut", [(-0.5, (0, 2)), (0.5, (1, 3))])
def test_marching_squares_saddle_is_resolved_by_the_cell_centre(centre, cut):
    """Corners 0 and 2 inside, 1 and 3 outside: a centre outside cuts off the inside corners 0 and 2,
    a centre inside cuts off the outside corners 1 and 3."""
    values = torch.tensor([[1.0, -1.0], [-1.0, 1.0]]) + centre
    seg, valid = marching_squares(values)
    assert int(valid.sum()) == 2
    corners = torch.tensor([[-1.0, -1.0], [1.0, -1.0], [1.0, 1.0], [-1.0, 1.0]])
    mids = seg[valid].mean(1)
    nearest = torch.cdist(mids, corners).argmin(1)
    assert sorted(nearest.tolist()) == list(cut)


def test_chamfer_of_identical_sets_is_zero_and_symmetric():
    g = torch.Generator().manual_seed(0)
    a, b = torch.rand(50, 2, generator=g), torch.rand(70, 2, generator=g)
    assert float(chamfer(a, a)) == pytest.approx(0.0, abs=1e-6)
    assert float(chamfer(a, b)) == pytest.approx(float(chamfer(b, a)), rel=1e-6)
    assert float(chamfer(a, b)) > 0


def test_chamfer_known_value():
    a = torch.tensor([[0.0, 0.0]])
    b = torch.tensor([[1.0, 0.0], [0.0, 2.0]])
    # a→b: nearest is at squared distance 1; b→a: squared distances 1 and 4, mean 2.5
    assert float(chamfer(a, b)) == pytest.approx(3.5)


def test_pairwise_chamfer_matches_pairs_and_handles_sets_of_any_size():
    g = torch.Generator().manual_seed(1)
    a = [torch.rand(k, 2, generator=g) for k in (5, 9, 7)]
    b = [torch.rand(k, 2, generator=g) for k in (4, 6)] + [torch.zeros(0, 2)]
    d = pairwise_chamfer(a, b, max_elements=50)  # forces one row per chunk
    assert d.shape == (3, 3)
    for i in range(3):
        for j in range(2):
            assert float(d[i, j]) == pytest.approx(float(chamfer(a[i], b[j])), rel=1e-5)
    assert torch.isinf(d[:, 2]).all()  # an empty shape matches nothing


def test_iou_values():
    a = torch.tensor([[1, 1, 0, 0], [0, 0, 0, 0]], dtype=torch.bool)
    b = torch.tensor([[1, 0, 1, 0], [0, 0, 1, 1], [0, 0, 0, 0]], dtype=torch.bool)
    expected = torch.tensor([[1 / 3, 0.0, 0.0], [0.0, 0.0, 1.0]])
    assert torch.allclose(iou(a, b), expected)


def test_field_values_are_bilinear_and_hit_pixel_centres():
    f = torch.arange(12.0).reshape(1, 3, 4)
    pts = torch.tensor([[-1.0, -1.0], [1.0, 1.0], [-1.0 + 2 / 3, 0.0], [-1.0 + 1 / 3, -0.5]])
    # x = -1 + 2/3 is column 1, y = 0 is row 1; the last point is midway in both directions
    assert torch.allclose(field_values(f, pts), torch.tensor([[0.0, 11.0, 5.0, 2.5]]))


def test_occupancy_samples_label_points_by_the_field_and_crowd_the_boundary():
    fields = torch.stack([(_disk(0.5, 33) > 0).float()])
    pts, lab = occupancy_samples(fields, 2000, near_fraction=0.5, sigma=0.02,
                                 generator=torch.Generator().manual_seed(0))
    assert pts.shape == (1, 2000, 2) and lab.shape == (1, 2000)
    r = pts[0].norm(dim=-1)
    far = (r - 0.5).abs() > 0.08  # away from the blurred rim, labels are exact
    assert torch.equal(lab[0][far], (r[far] < 0.5).float())
    near = (r[1000:] - 0.5).abs() < 0.1
    assert near.float().mean() > 0.95


def test_silhouette_split_is_fixed_by_the_seed():
    a = load_silhouettes("digits", n_train=20, n_test=10, seed=3)
    b = load_silhouettes("digits", n_train=20, n_test=10, seed=3)
    c = load_silhouettes("digits", n_train=20, n_test=10, seed=4)
    assert a.train.ids == b.train.ids and a.test.ids == b.test.ids
    assert torch.equal(a.train.fields, b.train.fields)
    assert a.train.ids != c.train.ids
    assert not set(a.train.ids) & set(a.test.ids)
    assert a.info["source"] == "digits" and len(a.train) == 20 and len(a.test) == 10
    occ = a.train.occupancy(32)
    assert occ.any(1).all() and not occ.all(1).any()  # every shape is a real silhouette


def test_auto_source_falls_back_to_digits(tmp_path):
    s = load_silhouettes("auto", n_train=3, n_test=2, root=tmp_path / "missing")
    assert s.info["source"] == "digits"


@pytest.mark.skipif(not Path(DEFAULT_FASHION_ROOT).is_dir(), reason="Fashion-MNIST files not installed")
def test_fashion_silhouettes_are_one_category():
    s = load_silhouettes("fashion-mnist", n_train=10, n_test=5)
    assert s.info["class_names"] == ["Ankle boot"]
    assert (s.train.labels == 9).all() and (s.test.labels == 9).all()
    pts = s.train.boundary(64)
    assert not pts.isnan().any() and pts.abs().max() < 1.0  # the margin keeps outlines closed


def test_bad_arguments_name_the_argument():
    with pytest.raises(ConfigError, match="source"):
        load_silhouettes("mnist", n_train=2, n_test=2)
    with pytest.raises(ConfigError, match="n_train"):
        load_silhouettes("digits", n_train=0, n_test=2)
    with pytest.raises(ConfigError, match="n_train \\+ n_test"):
        load_silhouettes("digits", n_train=2000, n_test=2)
