"""2-D shapes for implicit-network zoos: offline silhouettes, marching squares, Chamfer distance, IoU.

HyperDiffusion fits one occupancy MLP per 3-D mesh and compares shapes as point clouds. This module
is its CPU-sized 2-D counterpart: a shape is a smooth field on ``[-1, 1]^2`` (inside where the field
exceeds a level), its boundary is extracted by marching squares and sampled uniformly by arc length
(as the paper samples points uniformly on mesh surfaces), and two shapes are compared by the Chamfer
distance of those point sets or by the IoU of their occupancy grids.

Coordinates are ``(x, y)`` with ``x`` along image columns and ``y`` along image rows (downwards); a
field ``[..., H, W]`` covers ``[-1, 1]^2`` with its pixel centres on ``linspace(-1, 1, W)`` and
``linspace(-1, 1, H)`` (``grid_sample``'s ``align_corners=True`` convention).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F
from scipy import ndimage
from torch import Tensor

from .data import DEFAULT_FASHION_ROOT, FASHION_CLASSES, load_digits, load_fashion_mnist
from .errors import ConfigError, DataNotFoundError

__all__ = [
    "SOURCES",
    "ShapeSet",
    "Silhouettes",
    "boundary_points",
    "chamfer",
    "field_values",
    "grid_points",
    "iou",
    "load_silhouettes",
    "marching_squares",
    "occupancy_samples",
    "pad_point_sets",
    "pairwise_chamfer",
]

# --------------------------------------------------------------------------- geometry


def grid_points(resolution: int, device: torch.device | str | None = None) -> Tensor:
    """``Tensor[R*R, 2]`` of ``(x, y)`` grid points, row-major, so ``values.reshape(R, R)`` is ``[y, x]``."""
    if int(resolution) < 2:
        raise ConfigError(f"resolution: expected an integer >= 2, got {resolution!r}")
    lin = torch.linspace(-1.0, 1.0, int(resolution), device=device)
    ys, xs = torch.meshgrid(lin, lin, indexing="ij")
    return torch.stack([xs, ys], dim=-1).reshape(-1, 2)


def field_values(fields: Tensor, points: Tensor) -> Tensor:
    """Bilinear interpolation of ``fields [n, H, W]`` at ``points [n, B, 2]`` (or shared ``[B, 2]``) → ``[n, B]``.

    Points outside ``[-1, 1]^2`` take the border value (the fields here are padded with background)."""
    if fields.dim() != 3:
        raise ConfigError(f"fields: expected a Tensor[n, H, W], got shape {tuple(fields.shape)}")
    n = fields.shape[0]
    pts = points.expand(n, *points.shape) if points.dim() == 2 else points
    out = F.grid_sample(fields[:, None], pts[:, None].to(fields.dtype), mode="bilinear",
                        padding_mode="border", align_corners=True)
    return out[:, 0, 0]


# Marching squares. Corners of a cell: 0 = (i, j), 1 = (i, j+1), 2 = (i+1, j+1), 3 = (i+1, j) (row i,
# column j); edges: 0 = corners 0-1 (top), 1 = 1-2 (right), 2 = 3-2 (bottom), 3 = 0-3 (left). Case
# index = sum of 2^corner over inside corners; the two saddles (5, 10) get cases 16, 17 when the cell
# centre is inside, which joins the two inside corners through the middle.
_SEGMENTS = torch.tensor(
    [
        [[-1, -1], [-1, -1]],  # 0
        [[3, 0], [-1, -1]],  # 1
        [[0, 1], [-1, -1]],  # 2
        [[3, 1], [-1, -1]],  # 3
        [[1, 2], [-1, -1]],  # 4
        [[3, 0], [1, 2]],  # 5, centre outside: corners 0 and 2 cut off
        [[0, 2], [-1, -1]],  # 6
        [[3, 2], [-1, -1]],  # 7
        [[2, 3], [-1, -1]],  # 8
        [[0, 2], [-1, -1]],  # 9
        [[0, 1], [2, 3]],  # 10, centre outside: corners 1 and 3 cut off
        [[1, 2], [-1, -1]],  # 11
        [[1, 3], [-1, -1]],  # 12
        [[0, 1], [-1, -1]],  # 13
        [[3, 0], [-1, -1]],  # 14
        [[-1, -1], [-1, -1]],  # 15
        [[0, 1], [2, 3]],  # 16 = 5 with centre inside: outside corners 1 and 3 cut off
        [[3, 0], [1, 2]],  # 17 = 10 with centre inside: outside corners 0 and 2 cut off
    ],
    dtype=torch.long,
)


def _crossing(a: Tensor, b: Tensor) -> Tensor:
    """Where the linear interpolation from value ``a`` to ``b`` crosses 0, as a fraction in [0, 1]."""
    den = a - b
    safe = torch.where(den == 0, torch.ones_like(den), den)
    return torch.where(den == 0, torch.full_like(a, 0.5), a / safe).clamp(0.0, 1.0)


def marching_squares(values: Tensor, level: float = 0.0) -> tuple[Tensor, Tensor]:
    """The iso-line ``values == level`` of fields ``[..., H, W]`` as line segments.

    Returns ``segments [..., S, 2, 2]`` (S = 2 (H-1)(W-1) slots, two ``(x, y)`` end points each) and
    ``valid [..., S]`` (which slots hold a segment). Fixed-size outputs keep it batched over any number
    of fields; inside is ``values > level``.
    """
    if values.dim() < 2 or min(values.shape[-2:]) < 2:
        raise ConfigError(f"values: expected a Tensor[..., H, W] with H, W >= 2, got shape {tuple(values.shape)}")
    h, w = values.shape[-2:]
    v = values - level
    c0, c1, c2, c3 = v[..., :-1, :-1], v[..., :-1, 1:], v[..., 1:, 1:], v[..., 1:, :-1]
    case = sum((c > 0).long() << k for k, c in enumerate((c0, c1, c2, c3)))
    centre = (c0 + c1 + c2 + c3) > 0
    case = torch.where((case == 5) & centre, 16, case)
    case = torch.where((case == 10) & centre, 17, case)
    dx, dy = 2.0 / (w - 1), 2.0 / (h - 1)
    xs = torch.linspace(-1.0, 1.0, w, device=v.device, dtype=v.dtype)[:-1].expand_as(c0)
    ys = torch.linspace(-1.0, 1.0, h, device=v.device, dtype=v.dtype)[:-1, None].expand_as(c0)
    edges = torch.stack(
        [
            torch.stack([xs + _crossing(c0, c1) * dx, ys], -1),  # top
            torch.stack([xs + dx, ys + _crossing(c1, c2) * dy], -1),  # right
            torch.stack([xs + _crossing(c3, c2) * dx, ys + dy], -1),  # bottom
            torch.stack([xs, ys + _crossing(c0, c3) * dy], -1),  # left
        ],
        dim=-2,
    )  # [..., H-1, W-1, 4, 2]
    idx = _SEGMENTS.to(v.device)[case]  # [..., H-1, W-1, 2, 2]
    valid = idx[..., 0] >= 0
    flat = idx.clamp(min=0).flatten(-2)[..., None].expand(*idx.shape[:-2], 4, 2)
    seg = torch.gather(edges, -2, flat).reshape(*idx.shape, 2)
    lead = values.shape[:-2]
    return seg.reshape(*lead, -1, 2, 2), valid.reshape(*lead, -1)


def boundary_points(values: Tensor, n_points: int = 128, level: float = 0.0) -> Tensor:
    """``n_points`` points spread uniformly by arc length over the iso-line of fields ``[..., H, W]``.

    Returns ``[..., n_points, 2]``; a field with no boundary (all inside or all outside) gives NaN
    rows, which :func:`chamfer` treats as an empty set. Deterministic, stratified sampling (the
    2-D analogue of sampling points uniformly on a mesh): the k-th point sits at arc length
    ``(k + 1/2) / n_points`` of the total, with segments taken in marching-squares cell order
    (not chained into curves, so neighbouring points need not be neighbours on the outline).
    """
    if int(n_points) < 1:
        raise ConfigError(f"n_points: expected a positive integer, got {n_points!r}")
    seg, valid = marching_squares(values, level)
    p0, p1 = seg[..., 0, :], seg[..., 1, :]
    length = (p1 - p0).norm(dim=-1) * valid
    cum = length.cumsum(-1)
    total = cum[..., -1:]
    frac = (torch.arange(int(n_points), device=values.device, dtype=cum.dtype) + 0.5) / int(n_points)
    target = (total * frac).contiguous()
    k = torch.searchsorted(cum.contiguous(), target).clamp(max=cum.shape[-1] - 1)
    seg_len = length.gather(-1, k)
    start = cum.gather(-1, k) - seg_len
    t = ((target - start) / seg_len.clamp(min=1e-12)).clamp(0.0, 1.0)[..., None]
    kk = k[..., None].expand(*k.shape, 2)
    pts = p0.gather(-2, kk) + t * (p1.gather(-2, kk) - p0.gather(-2, kk))
    return torch.where(total[..., None] > 0, pts, torch.full_like(pts, float("nan")))


# --------------------------------------------------------------------------- comparisons


def pad_point_sets(sets: Sequence[Tensor] | Tensor) -> Tensor:
    """Point sets of different sizes as one ``Tensor[n, K, d]``, padded with NaN rows (= no point);
    an empty set (``Tensor[0, d]``) is all NaN."""
    if isinstance(sets, Tensor):
        return sets
    if not len(sets):
        raise ConfigError("point sets: expected at least one set, got none")
    dims = {s.shape[-1] for s in sets if s.dim() == 2}
    if len(dims) != 1 or any(s.dim() != 2 for s in sets):
        raise ConfigError(f"point sets: expected Tensor[k_i, d] with one d, got {[tuple(s.shape) for s in sets]}")
    k = max(1, max(len(s) for s in sets))
    ref = sets[0]
    out = torch.full((len(sets), k, dims.pop()), float("nan"), dtype=ref.dtype, device=ref.device)
    for i, s in enumerate(sets):
        out[i, : len(s)] = s
    return out


def normalise_points(sets: Sequence[Tensor]) -> list[Tensor]:
    """Each point set ``[k, d]`` moved to zero mean and scaled to unit standard deviation (one
    scalar over all its coordinates), as HyperDiffusion's evaluation does before Chamfer distances;
    an empty set stays empty, a single point goes to the origin."""
    out = []
    for s in sets:
        if len(s) == 0:
            out.append(s)
            continue
        c = s - s.mean(0)
        std = c.std(correction=0)
        out.append(c / std if std > 0 else c)
    return out


def chamfer(a: Tensor, b: Tensor) -> Tensor:
    """Chamfer distance of point sets ``a [..., K, d]`` and ``b [..., L, d]`` (batch dims broadcast).

    ``mean_i min_j |a_i - b_j|^2 + mean_j min_i |a_i - b_j|^2``, as HyperDiffusion's evaluation.
    NaN rows are absent points; an empty set is at distance ``inf`` from everything.
    """
    va, vb = ~a.isnan().any(-1), ~b.isnan().any(-1)
    # Absent points move to opposite far corners, further from every present point than any two
    # present points are from each other, so they are never a present point's nearest; this spares
    # a masked copy of the whole distance block. Minima are taken before squaring (same order).
    big = 4 * max(float(torch.nan_to_num(a).abs().max()), float(torch.nan_to_num(b).abs().max())) + 1
    a = torch.where(va[..., None], a, big)
    b = torch.where(vb[..., None], b, -big)
    d = torch.cdist(a, b)
    ab = _masked_mean(d.amin(-1).square(), va)
    ba = _masked_mean(d.amin(-2).square(), vb)
    return ab + ba


def _masked_mean(x: Tensor, mask: Tensor) -> Tensor:
    n = mask.sum(-1)
    s = torch.where(mask, x, torch.zeros_like(x)).sum(-1)
    return torch.where(n > 0, s / n.clamp(min=1), torch.full_like(s, float("inf")))


def pairwise_chamfer(a: Sequence[Tensor] | Tensor, b: Sequence[Tensor] | Tensor, *, max_elements: int = 2**20) -> Tensor:
    """``Tensor[n, m]`` of Chamfer distances between every set of ``a`` and every set of ``b`` (the
    project's one Chamfer implementation; the audit's ``chamfer_distance`` normalises, then calls it).

    Each is a ``Tensor[n, K, d]`` (NaN rows: no point) or a list of ``Tensor[k_i, d]``; an empty set
    is at distance ``inf`` from everything. Rows of ``a`` go in chunks so that
    one chunk's distance block holds at most ``max_elements`` numbers.
    """
    a, b = pad_point_sets(a), pad_point_sets(b)
    per_row = b.shape[0] * a.shape[1] * b.shape[1]
    step = max(1, int(max_elements) // max(per_row, 1))
    return torch.cat([chamfer(a[i : i + step, None], b[None]) for i in range(0, a.shape[0], step)])


def iou(a: Tensor, b: Tensor) -> Tensor:
    """``Tensor[n, m]`` IoU of boolean occupancy grids ``a [n, G]`` and ``b [m, G]`` (two empty grids: 1)."""
    af, bf = a.flatten(1).float(), b.flatten(1).float()
    inter = af @ bf.T
    union = af.sum(1)[:, None] + bf.sum(1)[None] - inter
    return torch.where(union > 0, inter / union.clamp(min=1), torch.ones_like(inter))


def occupancy_samples(
    fields: Tensor, n_points: int, *, near_fraction: float = 0.5, sigma: float = 0.04, level: float = 0.5,
    resolution: int = 64, generator: torch.Generator | None = None,
) -> tuple[Tensor, Tensor]:
    """Training points for occupancy networks: ``points [n, B, 2]`` and ``labels [n, B]`` in {0, 1}.

    As HyperDiffusion samples its meshes, a share ``near_fraction`` lies near the boundary (boundary
    points plus Gaussian jitter of scale ``sigma``), the rest uniformly in ``[-1, 1]^2``; labels are the
    field thresholded at ``level``.
    """
    if not 0.0 <= near_fraction <= 1.0:
        raise ConfigError(f"near_fraction: expected a number in [0, 1], got {near_fraction!r}")
    n, dev = fields.shape[0], fields.device
    n_near = round(near_fraction * int(n_points))
    gen_dev = generator.device if generator is not None else torch.device("cpu")
    uniform = torch.rand(n, int(n_points) - n_near, 2, generator=generator, device=gen_dev).to(dev) * 2 - 1
    parts = [uniform]
    if n_near:
        grid = field_values(fields, grid_points(resolution, dev)).reshape(n, resolution, resolution)
        edge = boundary_points(grid, n_near, level)
        jitter = torch.randn(n, n_near, 2, generator=generator, device=gen_dev).to(dev) * sigma
        # a shape with no boundary has nothing to sample near: use uniform points there too
        fallback = torch.rand(n, n_near, 2, generator=generator, device=gen_dev).to(dev) * 2 - 1
        near = torch.where(edge.isnan(), fallback, edge + jitter).clamp(-1.0, 1.0)
        parts.append(near)
    points = torch.cat(parts, dim=1)
    labels = (field_values(fields, points) > level).to(fields.dtype)
    return points, labels


# --------------------------------------------------------------------------- data


@dataclass(frozen=True, eq=False)
class ShapeSet:
    """Shapes as smooth fields ``[n, H, W]`` on ``[-1, 1]^2``: inside where ``fields > level``."""

    fields: Tensor
    labels: Tensor
    ids: tuple[str, ...]
    level: float = 0.5

    def __len__(self) -> int:
        return self.fields.shape[0]

    def on_grid(self, resolution: int = 64) -> Tensor:
        """``[n, R, R]`` field values on the ``R x R`` grid of :func:`grid_points`."""
        g = grid_points(resolution, self.fields.device)
        return field_values(self.fields, g).reshape(len(self), resolution, resolution)

    def occupancy(self, resolution: int = 64) -> Tensor:
        """Boolean occupancy grids ``[n, R*R]``."""
        return self.on_grid(resolution).flatten(1) > self.level

    def boundary(self, n_points: int = 128, resolution: int = 64) -> Tensor:
        """Boundary point sets ``[n, n_points, 2]``, extracted as for decoded networks."""
        return boundary_points(self.on_grid(resolution), n_points, self.level)


@dataclass(frozen=True, eq=False)
class Silhouettes:
    """A fixed, seeded train/test split of silhouettes, and how it was made (``info``)."""

    train: ShapeSet
    test: ShapeSet
    info: dict = field(default_factory=dict)


# Per source: which labels by default, the binarisation threshold on raw [0, 1] intensities, whether
# to fill holes (a silhouette is the filled outline), the upsampling factor of the raw image before
# thresholding, the blur that makes the field smooth, and the background margin in (upsampled) pixels.
SOURCES = {
    "fashion-mnist": {"classes": (9,), "threshold": 0.05, "fill_holes": True, "upsample": 1, "blur": 1.0,
                      "margin": 4},
    "digits": {"classes": tuple(range(10)), "threshold": 0.3, "fill_holes": False, "upsample": 4, "blur": 1.0,
               "margin": 6},
}


def _raw_pool(source: str, need: int, seed: int, root) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """All images of a source (for Fashion-MNIST a seeded stratified subset with about ``need`` images
    of each class per file, so it reads fast) as raw intensities in [0, 1], with their labels and ids
    ``<source>/<split>/<row>`` (the row in the loader's split, reproducible from the arguments)."""
    if source == "fashion-mnist":
        ds = load_fashion_mnist(root=root, seed=seed, image=True, max_train=10 * need if need < 6000 else None,
                                max_test=10 * need if need < 1000 else None)
    else:
        ds = load_digits(seed=seed, image=True)
    norm = ds.info["normalisation"]
    images, labels, ids = [], [], []
    for split in ("train", "val", "test"):
        x, y = ds.split(split)
        raw = x[:, 0].double().numpy() * norm["std"] + norm["mean"]  # = raw pixel * scale, in [0, 1]
        images.append(np.clip(raw, 0.0, 1.0))
        labels.append(y.numpy())
        ids += [f"{source}/{split}/{i}" for i in range(len(y))]
    return np.concatenate(images), np.concatenate(labels), ids


def _silhouette(image: np.ndarray, p: dict) -> np.ndarray:
    """Raw image → smooth field in [0, 1] whose 0.5 level set is the silhouette's outline."""
    im = ndimage.zoom(image, p["upsample"], order=3) if p["upsample"] > 1 else image
    mask = im > p["threshold"]
    if p["fill_holes"]:
        mask = ndimage.binary_fill_holes(mask)
    mask = np.pad(mask, p["margin"])
    return ndimage.gaussian_filter(mask.astype(np.float64), p["blur"]).astype(np.float32)


def load_silhouettes(
    source: str = "auto", *, n_train: int = 300, n_test: int = 100, classes: Sequence[int] | None = None,
    seed: int = 0, root: str | os.PathLike = DEFAULT_FASHION_ROOT,
) -> Silhouettes:
    """Silhouettes of one category of an offline image set, split into train and held-out test shapes.

    ``source`` is ``"fashion-mnist"`` (filled outlines of the images in ``root``; default category
    9, ankle boots, as HyperDiffusion trains per category), ``"digits"`` (scikit-learn's bundled 8x8
    digits, upsampled), or ``"auto"``: Fashion-MNIST when its files are there, else digits. Shapes
    whose outline is empty are skipped; then a seeded permutation picks ``n_train`` then ``n_test``.
    The split is fixed by all the arguments (the image pool read depends on ``n_train + n_test``).
    """
    if source == "auto":
        try:
            return load_silhouettes("fashion-mnist", n_train=n_train, n_test=n_test, classes=classes,
                                    seed=seed, root=root)
        except DataNotFoundError:
            source = "digits"
    if source not in SOURCES:
        raise ConfigError(f"source: expected 'auto' or one of {sorted(SOURCES)}, got {source!r}")
    for key, v in (("n_train", n_train), ("n_test", n_test)):
        if isinstance(v, bool) or not isinstance(v, int) or v < 1:
            raise ConfigError(f"{key}: expected a positive integer, got {v!r}")
    p = dict(SOURCES[source])
    classes = tuple(int(c) for c in (p["classes"] if classes is None else classes))
    need = n_train + n_test
    images, labels, ids = _raw_pool(source, need, seed, root)
    keep = np.flatnonzero(np.isin(labels, classes))
    if len(keep) < need:
        raise ConfigError(
            f"n_train + n_test: {source} has {len(keep)} images of classes {list(classes)}, fewer than "
            f"the {need} asked; ask for fewer or add classes"
        )
    order = keep[np.random.default_rng(seed).permutation(len(keep))]
    fields, chosen = [], []
    for i in order:
        f = _silhouette(images[i], p)
        if f.max() > 0.5 and f.min() < 0.5:
            fields.append(f)
            chosen.append(int(i))
        if len(chosen) == need:
            break
    if len(chosen) < need:
        raise ConfigError(f"n_train + n_test: only {len(chosen)} non-empty silhouettes of {list(classes)} in {source}")
    stack = torch.from_numpy(np.stack(fields))
    lab = torch.from_numpy(labels[chosen].astype(np.int64))
    names = tuple(ids[i] for i in chosen)
    sets = [ShapeSet(stack[s], lab[s], names[s]) for s in (slice(0, n_train), slice(n_train, need))]
    class_names = [FASHION_CLASSES[c] for c in classes] if source == "fashion-mnist" else [str(c) for c in classes]
    info = {"source": source, "n_train": n_train, "n_test": n_test, "classes": list(classes),
            "class_names": class_names, "seed": seed, "preprocess": {k: v for k, v in p.items() if k != "classes"},
            "field_shape": list(stack.shape[1:]), "level": 0.5,
            "split": "seeded permutation (numpy default_rng(seed)) of the source's images of these classes; "
                     "first n_train are train, next n_test are test"}
    if source == "fashion-mnist":
        info["root"] = str(root)
    return Silhouettes(sets[0], sets[1], info)
