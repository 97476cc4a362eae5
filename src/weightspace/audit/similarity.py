"""Similarity and distance between populations of models, all pairs at once.

Every function takes two populations (A models, B models) and returns an ``[A, B]`` matrix; no Python
loop runs over pairs. Set-overlap counts (error IoU, prediction agreement) are products of 0/1
indicator matrices: on CPU an int8 × int8 → int32 matrix product (``torch._int_mm``, exact and about
2.5× faster than float32 BLAS), elsewhere a float matrix product (exact for counts below 2**24).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

from ..align import l2_distances
from ..errors import ConfigError, LayoutError
from ..parallel import RayBackend, map_blocks, pairwise_blocks, row_blocks
from ..shapes import normalise_points, pad_point_sets, pairwise_chamfer


# ---------------------------------------------------------------- counting overlaps
def _count_products(a: Tensor, b: Tensor) -> Tensor:
    """``[A, K] bool`` × ``[B, K] bool`` → ``[A, B]`` integer counts (int32 or int64): how many of the K
    columns are True in both."""
    if a.shape[1] == 0:
        return torch.zeros(a.shape[0], b.shape[0], dtype=torch.int64, device=a.device)
    if a.device.type == "cpu" and hasattr(torch, "_int_mm") and a.shape[1] >= 16:
        # bool and int8 share a byte layout, so the views cost nothing. (torch 2.13's CPU kernel
        # returns garbage for a single column; tiny products take the float path below.)
        return torch._int_mm(a.view(torch.int8), b.view(torch.int8).T)
    dtype = torch.float32 if a.shape[1] < 2**24 else torch.float64
    return (a.to(dtype) @ b.to(dtype).T).round().to(torch.int64)


def _row_counts(mask: Tensor) -> Tensor:
    """True entries per row of ``bool[N, K]`` as ``float32[N]``, through the same product kernel:
    on CPU a matrix-vector product with ones is about 20× faster than a bool reduction."""
    ones = torch.ones(1, mask.shape[1], dtype=torch.bool, device=mask.device)
    return _count_products(mask, ones)[:, 0].to(torch.float32)


def _check_predictions(pred: Tensor, name: str, n_examples: int | None = None) -> None:
    if pred.dim() != 2 or pred.dtype.is_floating_point or pred.dtype == torch.bool:
        raise LayoutError(
            f"{name}: expected integer class labels of shape [models, examples], got {pred.dtype} {tuple(pred.shape)}"
        )
    if n_examples is not None and pred.shape[1] != n_examples:
        raise LayoutError(f"{name}: expected {n_examples} examples (columns), got {pred.shape[1]}")


# ---------------------------------------------------------------- classifier similarities
def error_iou(
    pred_a: Tensor,
    pred_b: Tensor,
    labels: Tensor,
    *,
    empty_union: float = 1.0,
    chunk_size: int = 4096,
    prune_below: float = 0.5,
    backend: RayBackend | None = None,
) -> Tensor:
    """Error similarity ``|E_a ∩ E_b| / |E_a ∪ E_b|``, E = the test examples a model gets wrong.

    ``pred_a``: ``LongTensor[A, E]`` predicted labels, ``pred_b``: ``[B, E]``, ``labels``: ``[E]`` →
    ``float32[A, B]``. ``|E_a ∩ E_b|`` is a product of 0/1 error matrices and
    ``|E_a ∪ E_b| = |E_a| + |E_b| - |E_a ∩ E_b|``, so the cost is one matrix product.

    Two models that both make no error have an empty union. We score them ``empty_union = 1.0``:
    their error sets are identical (both empty), and an audit that called two perfect models
    maximally *different* would report a replica of a perfect checkpoint as novel. The paper's code
    divides by ``|E_a ∪ E_b| + 1e-8`` and so scores 0; ``empty_union=0.0`` reproduces it (the 1e-8
    changes no other value in float32).

    Only examples that some model of A *and* some model of B get wrong can be in an intersection;
    when those are under ``prune_below`` of all examples the product runs over them alone (copying
    the columns costs more than it saves otherwise). B is processed ``chunk_size`` models at a time;
    with a :class:`~weightspace.parallel.RayBackend`, each such block is one Ray task.
    """
    if backend is not None:
        return pairwise_blocks(error_iou, pred_a, pred_b, block_size=chunk_size, backend=backend, labels=labels,
                               empty_union=empty_union, prune_below=prune_below)
    if labels.dim() != 1:
        raise LayoutError(f"labels: expected shape [examples], got {tuple(labels.shape)}")
    _check_predictions(pred_a, "pred_a", labels.shape[0])
    _check_predictions(pred_b, "pred_b", labels.shape[0])
    err_a = pred_a != labels
    n_a = _row_counts(err_a)
    cols_a = err_a.view(torch.uint8).amax(0).bool() if len(err_a) else err_a.any(0)
    out = torch.empty(pred_a.shape[0], pred_b.shape[0], dtype=torch.float32, device=pred_a.device)
    for s, e in row_blocks(pred_b.shape[0], chunk_size, "chunk_size"):
        err_b = pred_b[s:e] != labels
        n_b = _row_counts(err_b)
        keep = cols_a & err_b.view(torch.uint8).amax(0).bool()
        if int(keep.sum()) < prune_below * len(keep):
            inter = _count_products(err_a[:, keep], err_b[:, keep]).to(torch.float32)
        else:
            inter = _count_products(err_a, err_b).to(torch.float32)
        union = (n_a[:, None] + n_b[None, :]).sub_(inter).clamp_min_(1)
        out[:, s:e] = inter.div_(union)
        # An empty union means both models are perfect (and the intersection is 0).
        out[(n_a == 0).nonzero()[:, :1], s + (n_b == 0).nonzero()[:, 0]] = empty_union
    return out


def prediction_agreement(pred_a: Tensor, pred_b: Tensor, *, chunk_size: int = 2048,
                         backend: RayBackend | None = None) -> Tensor:
    """Fraction of examples on which two models predict the same label: ``float32[A, B]``.

    A one-hot product over (example, class) columns. Only the columns predicted by some model of
    each side are built, so the cost grows with how many classes are actually predicted per
    example, not with the number of classes. With a :class:`~weightspace.parallel.RayBackend`, each
    block of ``chunk_size`` models of B is one Ray task.
    """
    if backend is not None:
        return pairwise_blocks(prediction_agreement, pred_a, pred_b, block_size=chunk_size, backend=backend)
    _check_predictions(pred_a, "pred_a")
    _check_predictions(pred_b, "pred_b", pred_a.shape[1])
    n_ex = pred_a.shape[1]
    if n_ex == 0:
        raise LayoutError("predictions: expected at least one example (column), got 0")
    if any(len(p) and int(p.min()) < 0 for p in (pred_a, pred_b)):
        raise LayoutError("predictions: expected non-negative class labels")
    offset = torch.arange(n_ex, device=pred_a.device)
    keys_a = pred_a.to(torch.int64) * n_ex + offset  # one key per (class, example)
    uniq_a = torch.unique(keys_a)
    out = torch.empty(pred_a.shape[0], pred_b.shape[0], dtype=torch.float32, device=pred_a.device)
    for s, e in row_blocks(pred_b.shape[0], chunk_size, "chunk_size"):
        keys_b = pred_b[s:e].to(torch.int64) * n_ex + offset
        common = uniq_a[torch.isin(uniq_a, keys_b)]
        onehot_a = _one_hot_columns(keys_a, common)
        onehot_b = _one_hot_columns(keys_b, common)
        out[:, s:e] = _count_products(onehot_a, onehot_b).to(torch.float32) / n_ex
    return out


def _one_hot_columns(keys: Tensor, columns: Tensor) -> Tensor:
    """``bool[N, len(columns)]``: row n is True at the columns whose key appears in ``keys[n]``."""
    k = len(columns)
    pos = torch.searchsorted(columns, keys).clamp_max(max(k - 1, 0))
    hit = columns[pos] == keys if k else torch.zeros_like(keys, dtype=torch.bool)
    out = torch.zeros(keys.shape[0], k + 1, dtype=torch.bool, device=keys.device)
    out.scatter_(1, torch.where(hit, pos, k), True)  # misses land in a spare last column
    return out[:, :k].contiguous()


# ---------------------------------------------------------------- distances
def chamfer_distance(
    points_a: Sequence[Tensor] | Tensor,
    points_b: Sequence[Tensor] | Tensor,
    *,
    mask_a: Tensor | None = None,
    mask_b: Tensor | None = None,
    normalize: bool = True,
    max_elements: int = 2**23,
    backend: RayBackend | None = None,
    block_size: int = 256,
) -> Tensor:
    """Chamfer distance between every pair of point sets: ``[A, B]``.

    CD(X, Y) = mean over x of min over y of |x - y|² + mean over y of min over x of |x - y|²
    (squared distances, both directions, summed: HyperDiffusion's shape metric). With ``normalize``
    (the paper's evaluation) every cloud is first moved to zero mean and unit std
    (:func:`~weightspace.shapes.normalise_points`). Point sets are a list of ``Tensor[n_i, d]``
    or a padded ``Tensor[N, M, d]`` with an optional ``bool[N, M]`` mask of valid points. An empty
    set (a decoded shape with no boundary) is at distance ``inf``: count those, do not drop them.
    With a :class:`~weightspace.parallel.RayBackend`, blocks of ``block_size`` point sets of B are
    Ray tasks.
    """
    xa, xb = _with_mask(points_a, mask_a, "points_a"), _with_mask(points_b, mask_b, "points_b")
    if xa.shape[-1] != xb.shape[-1]:
        raise LayoutError(f"points: dimensions differ ({xa.shape[-1]} vs {xb.shape[-1]})")
    if normalize:
        xa, xb = (pad_point_sets(normalise_points([c[~c.isnan().any(-1)] for c in x])) for x in (xa, xb))
    if backend is not None:
        parts = map_blocks(_chamfer_block, row_blocks(len(xb), block_size), xa, xb, max_elements,
                           backend=backend, desc="Chamfer")
        return torch.cat(parts, 1)
    return pairwise_chamfer(xa, xb, max_elements=max_elements)


def _with_mask(points: Sequence[Tensor] | Tensor, mask: Tensor | None, name: str) -> Tensor:
    """Point sets → padded ``[N, M, d]`` with NaN rows where there is no point."""
    if isinstance(points, Tensor) and points.dim() != 3:
        raise LayoutError(f"{name}: expected a padded Tensor[N, M, d] or a list of Tensor[n_i, d], "
                          f"got shape {tuple(points.shape)}")
    try:
        x = pad_point_sets(points).to(torch.promote_types(points[0].dtype, torch.float32))
    except ConfigError as e:
        raise LayoutError(f"{name}: {e}") from None
    if mask is not None:
        if mask.shape != x.shape[:2]:
            raise LayoutError(f"{name}: mask must be bool{list(x.shape[:2])}, got {list(mask.shape)}")
        x = torch.where(mask.to(torch.bool)[..., None], x, float("nan"))
    return x


def _chamfer_block(span, xa, xb, max_elements) -> Tensor:
    s, e = span
    return pairwise_chamfer(xa, xb[s:e], max_elements=max_elements)


# ---------------------------------------------------------------- nearest neighbours
def mask_self(matrix: Tensor, exclude_self: bool | Tensor, fill: float) -> Tensor:
    if exclude_self is False:
        return matrix
    rows = torch.arange(matrix.shape[0], device=matrix.device)
    if exclude_self is True:
        if matrix.shape[0] != matrix.shape[1]:
            raise LayoutError(
                f"exclude_self=True: the model set must be the training set (a square matrix), got "
                f"{tuple(matrix.shape)}; pass each row's own training index as a LongTensor instead"
            )
        own = rows
    else:
        own = torch.as_tensor(exclude_self, device=matrix.device)
        if own.dim() != 1 or len(own) != matrix.shape[0] or own.dtype.is_floating_point:
            raise LayoutError(
                f"exclude_self: expected a bool or a LongTensor[{matrix.shape[0]}] of each row's training "
                f"index (-1 for none), got {own.dtype} {tuple(own.shape)}"
            )
        if len(own) and int(own.max()) >= matrix.shape[1]:
            raise LayoutError(f"exclude_self: index {int(own.max())} out of range for {matrix.shape[1]} columns")
        rows, own = rows[own >= 0], own[own >= 0]
    out = matrix.clone()
    out[rows, own] = fill
    return out


def nearest(
    matrix: Tensor, k: int = 1, *, largest: bool, exclude_self: bool | Tensor = False
) -> tuple[Tensor, Tensor]:
    """The k best columns of each row: ``(values[A, k], indices[A, k])``.

    ``largest=True`` for similarities, ``False`` for distances. ``exclude_self``: ``True`` when the
    rows are the columns' own models (the diagonal is skipped), or ``LongTensor[A]`` giving each
    row's own column (``-1``: none).
    """
    if matrix.dim() != 2:
        raise LayoutError(f"matrix: expected [A, B], got shape {tuple(matrix.shape)}")
    if not 1 <= k <= matrix.shape[1]:
        raise ConfigError(f"k: expected 1 <= k <= {matrix.shape[1]} (the number of columns), got {k}")
    masked = mask_self(matrix, exclude_self, float("-inf") if largest else float("inf"))
    return torch.topk(masked, k, dim=1, largest=largest)


def max_similarity_to_training(sim: Tensor, exclude_self: bool | Tensor = False) -> tuple[Tensor, Tensor]:
    """Each model's highest similarity to any training model and that model's index: ``([A], [A])``.

    When the models are the training set, pass ``exclude_self=True`` (or each row's own training
    index): a checkpoint is not compared with itself.
    """
    values, indices = nearest(sim, 1, largest=True, exclude_self=exclude_self)
    return values[:, 0], indices[:, 0]


def min_distance_to_training(dist: Tensor, exclude_self: bool | Tensor = False) -> tuple[Tensor, Tensor]:
    """Each model's smallest distance to any training model and that model's index: ``([A], [A])``."""
    values, indices = nearest(dist, 1, largest=False, exclude_self=exclude_self)
    return values[:, 0], indices[:, 0]


def nearest_spacing(weights: Tensor) -> float:
    """The median L2 distance of each model to its nearest other one: a population's own spacing."""
    if len(weights) < 2:
        return float(weights.double().norm(dim=1).median()) * 0.1
    return float(min_distance_to_training(l2_distances(weights, weights), exclude_self=True)[0].double().median())
