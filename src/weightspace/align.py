"""Permutation alignment (core: the audit, the merges and the generators share it) and distances.

Plain L2 between stacked weight vectors, and permutation-aligned L2: the distance between two networks
after reordering the hidden neurons of one to best match the other (G.pt analysis of the memorization
study).

Two checkpoints that differ only by a neuron permutation compute the same function but lie far apart
in plain L2; aligned L2 measures the distance between their symmetry orbits. Matching uses the
WeightSpace's permutation groups: for a group, the cost of pairing neuron i of model a with neuron j
of model b is the squared distance of everything indexed by those neurons (incoming weights, bias,
BatchNorm parameters and statistics, outgoing weights), solved exactly with the Hungarian algorithm.

Several groups interact (a hidden layer's outgoing weights are the next layer's incoming weights),
so matching is weight matching as in Git Re-Basin: a first pass aligns groups in layer order using
only tensors whose other neuron axes are already aligned, then sweeps re-solve each group with all
its axes, the others held fixed, until a sweep changes nothing. Every step is a function of the two
models alone, not of how b's neurons happen to be labelled, so the result is the same for b and any
permutation of b (up to ties). With one hidden group the first pass already uses every axis and the
result is the exact minimum over permutations; with several it is a local minimum.

Activation matching (Git Re-Basin's other method) instead pairs neurons whose outputs on a data
batch correlate best: one assignment per group, no sweeps, since a neuron's outputs do not depend on
how the other layers are labelled. The canonical form sorts every group's neurons by the norm of
their incoming coordinates, which no other group's permutation changes: a deterministic order, the
same for every member of a permutation orbit.
"""

from __future__ import annotations

import numpy as np
import torch
from scipy.optimize import linear_sum_assignment
from scipy.stats import spearmanr
from torch import Tensor
from torch.func import functional_call, vmap

from .errors import ConfigError, LayoutError
from .nets import Architecture
from .parallel import RayBackend, map_blocks, map_rows, row_blocks
from .space import PermutationGroup, WeightSpace
from .symmetry import permute


def l2_distances(
    weights_a: Tensor, weights_b: Tensor, *, chunk_size: int = 2048, dtype: torch.dtype = torch.float64
) -> Tensor:
    """Euclidean distances between flattened weight vectors: ``[A, P]``, ``[B, P]`` → ``[A, B]``.

    A Gram-matrix product (``|a|² + |b|² - 2 a·b``) after subtracting one common vector (B's mean),
    computed in ``dtype`` (float64 by default): near-replicas sit at distances far below the
    weights' norms, where float32 Gram products cancel to noise. The result has the inputs' dtype.
    Coordinates equal in every model of both sets add nothing and are left out (P-diff's models
    differ in 2,048 of their parameters).
    """
    if weights_a.dim() != 2 or weights_b.dim() != 2 or weights_a.shape[1] != weights_b.shape[1]:
        raise LayoutError(
            f"weights: expected [A, P] and [B, P] with the same P, got {tuple(weights_a.shape)} "
            f"and {tuple(weights_b.shape)}"
        )
    out_dtype = torch.promote_types(weights_a.dtype, weights_b.dtype)
    if len(weights_a) and len(weights_b):
        first = weights_b[:1]
        varying = (weights_a != first).any(0) | (weights_b != first).any(0)
        if not bool(varying.all()):
            weights_a, weights_b = weights_a[:, varying], weights_b[:, varying]
    center = weights_b.to(dtype).mean(0) if len(weights_b) else 0.0
    a = weights_a.to(dtype) - center
    sq_a = (a * a).sum(1)
    out = torch.empty(len(a), len(weights_b), dtype=out_dtype, device=weights_a.device)
    for s, e in row_blocks(len(weights_b), chunk_size, "chunk_size"):
        b = weights_b[s:e].to(dtype) - center
        d2 = sq_a[:, None] + (b * b).sum(1)[None, :] - 2.0 * (a @ b.T)
        out[:, s:e] = d2.clamp_min_(0).sqrt_().to(out_dtype)
    return out


def _grouped_axes(space: WeightSpace) -> dict[str, dict[int, str]]:
    """tensor name → {axis: group name} for every axis some permutation group indexes."""
    out: dict[str, dict[int, str]] = {}
    for g in space.groups:
        for tname, axis in g.axes:
            out.setdefault(tname, {})[axis] = g.name
    return out


def _cost(space: WeightSpace, group: PermutationGroup, axes, wa: Tensor, wb: Tensor) -> Tensor:
    """``float64[K, n, n]``: cost of pairing neuron i of a with neuron j of b (minus constants).

    |a_i - b_j|² = |a_i|² + |b_j|² - 2 a_i·b_j; the norms add the same amount to every assignment,
    so the Hungarian algorithm needs only ``-a_i·b_j``.
    """
    sa, sb = space.unflatten(wa, cast=False), space.unflatten(wb, cast=False)
    k, n = wa.shape[0], group.size
    cost = torch.zeros(k, n, n, dtype=torch.float64, device=wa.device)
    for tname, axis in axes:
        a = sa[tname].movedim(axis + 1, 1).reshape(k, n, -1).to(torch.float64)
        b = sb[tname].movedim(axis + 1, 1).reshape(k, n, -1).to(torch.float64)
        cost -= a @ b.mT
    return cost


def _solve(cost: Tensor) -> Tensor:
    """One Hungarian assignment per matrix: ``[K, n, n]`` → ``LongTensor[K, n]``; row i (a's neuron)
    takes b's neuron ``out[k, i]``, which is exactly ``permute``'s convention (new i = old out[i])."""
    c = cost.cpu().numpy()
    cols = np.stack([linear_sum_assignment(m)[1] for m in c]) if len(c) else np.zeros((0, cost.shape[1]))
    return torch.as_tensor(cols, dtype=torch.int64, device=cost.device)


def _check_pair(space: WeightSpace, weights_a: Tensor, weights_b: Tensor) -> tuple[Tensor, Tensor]:
    if weights_b.dim() != 2 or weights_b.shape[1] != space.num_params:
        raise LayoutError(
            f"weights_b: expected [K, {space.num_params}] for layout '{space.name}', got {tuple(weights_b.shape)}"
        )
    if weights_a.dim() == 1:
        weights_a = weights_a.expand(weights_b.shape[0], -1)
    if weights_a.shape != weights_b.shape:
        raise LayoutError(
            f"weights_a: expected [{space.num_params}] or the shape of weights_b {tuple(weights_b.shape)}, "
            f"got {tuple(weights_a.shape)}"
        )
    return weights_a, weights_b


def match_permutations(
    space: WeightSpace, weights_a: Tensor, weights_b: Tensor, *, max_sweeps: int = 50
) -> dict[str, Tensor]:
    """Neuron permutations that bring each ``weights_b[k]`` closest to ``weights_a[k]``.

    ``weights_a``: ``[K, P]`` (or one ``[P]`` model for all), ``weights_b``: ``[K, P]`` →
    ``{group: LongTensor[K, size]}``, to apply with ``permute(space, weights_b, perms)``. Costs are
    computed for all K pairs at once; only the Hungarian solves run one pair at a time.
    """
    wa, wb = _check_pair(space, weights_a, weights_b)
    if max_sweeps < 0:
        raise ConfigError(f"max_sweeps: expected a non-negative integer, got {max_sweeps}")
    k = wb.shape[0]
    perms = {g.name: torch.arange(g.size, device=wb.device).expand(k, g.size).clone() for g in space.groups}
    if not space.groups or k == 0:
        return perms
    grouped = _grouped_axes(space)

    def others(g: str, rows: Tensor) -> dict[str, Tensor]:
        return {h: p[rows] for h, p in perms.items() if h != g}

    # First pass, in layer order: only tensors whose every other neuron axis is already aligned
    # (or belongs to no group), so the costs do not depend on b's arbitrary labelling.
    aligned: set[str] = set()
    complete = True  # did the first pass use every axis of every group?
    every = torch.arange(k, device=wb.device)
    for g in space.groups:
        axes = [(t, ax) for t, ax in g.axes if all(h in aligned for a2, h in grouped[t].items() if a2 != ax)]
        complete &= len(axes) == len(g.axes)
        perms[g.name] = _solve(_cost(space, g, axes or g.axes, wa, permute(space, wb, others(g.name, every))))
        aligned.add(g.name)

    # Sweeps with every axis; a pair is done when a whole sweep leaves its permutations unchanged.
    active = every
    for _ in range(0 if complete and len(space.groups) == 1 else max_sweeps):
        changed = torch.zeros(len(active), dtype=torch.bool, device=wb.device)
        for g in space.groups:
            b = permute(space, wb[active], others(g.name, active))
            new = _solve(_cost(space, g, g.axes, wa[active], b))
            changed |= (new != perms[g.name][active]).any(1)
            perms[g.name][active] = new
        active = active[changed]
        if len(active) == 0:
            break
    return perms


_PAIR_ELEMENTS = 1 << 25  # values held per block of pairs: K·P coordinates or K·n² costs (256 MiB of float64)


def aligned_l2_pairs(space: WeightSpace, weights_a: Tensor, weights_b: Tensor, *, max_sweeps: int = 50) -> Tensor:
    """Aligned L2 of each pair (``weights_a[k]``, ``weights_b[k]``): ``[K, P]``, ``[K, P]`` → ``[K]``,
    in blocks of pairs whose coordinates and cost matrices stay within ``_PAIR_ELEMENTS`` values (a
    992-channel layer's costs are a million values per pair)."""
    wa, wb = _check_pair(space, weights_a, weights_b)
    widest = max([g.size for g in space.groups], default=1)
    step = max(1, _PAIR_ELEMENTS // max(space.num_params, widest * widest))
    out = []
    for i in range(0, wb.shape[0], step):
        a, b = wa[i:i + step], wb[i:i + step]
        perms = match_permutations(space, a, b, max_sweeps=max_sweeps)
        out.append((a.to(torch.float64) - permute(space, b, perms).to(torch.float64)).norm(dim=1))
    dist = torch.cat(out) if out else wa.new_zeros(0, dtype=torch.float64)
    return dist.to(torch.promote_types(wa.dtype, wb.dtype))


def aligned_l2(
    space: WeightSpace,
    weights_a: Tensor,
    weights_b: Tensor,
    *,
    max_sweeps: int = 50,
    chunk_pairs: int = 2048,
    progress: bool = False,
    backend: RayBackend | None = None,
) -> Tensor:
    """Aligned L2 between every model of ``weights_a`` ``[A, P]`` and of ``weights_b`` ``[B, P]``: ``[A, B]``.

    One matching per pair (A·B Hungarian solves per group and sweep): exact, and fine for small
    layers or subsets. For large sets use ``aligned_l2_fast``. Pairs go in blocks of
    ``chunk_pairs``; with a :class:`~weightspace.parallel.RayBackend` each block is one Ray task.
    """
    if weights_a.dim() != 2:
        raise LayoutError(f"weights_a: expected [A, {space.num_params}], got {tuple(weights_a.shape)}")
    n_a, n_b = weights_a.shape[0], weights_b.shape[0]
    parts = map_blocks(_aligned_block, row_blocks(n_a * n_b, chunk_pairs), space, weights_a, weights_b, max_sweeps,
                       backend=backend, progress=progress, desc="aligned L2")
    dtype = torch.promote_types(weights_a.dtype, weights_b.dtype)
    out = torch.cat(parts) if parts else torch.empty(0, dtype=dtype, device=weights_a.device)
    return out.reshape(n_a, n_b)


def _aligned_block(span, space, weights_a, weights_b, max_sweeps) -> Tensor:
    """Aligned L2 of the pairs ``span`` of ``A × B``, numbered row by row."""
    pair = torch.arange(*span, device=weights_a.device)
    n_b = weights_b.shape[0]
    return aligned_l2_pairs(space, weights_a[pair // n_b], weights_b[pair % n_b], max_sweeps=max_sweeps)


def align_to(space: WeightSpace, weights: Tensor, reference: Tensor, *, max_sweeps: int = 50) -> Tensor:
    """Every model of ``weights`` ``[N, P]`` with its neurons reordered to best match ``reference`` ``[P]``."""
    if reference.dim() != 1:
        raise LayoutError(f"reference: expected one model [{space.num_params}], got {tuple(reference.shape)}")
    return permute(space, weights, match_permutations(space, reference, weights, max_sweeps=max_sweeps))


def aligned_l2_fast(
    space: WeightSpace,
    weights_a: Tensor,
    weights_b: Tensor,
    *,
    reference: Tensor | None = None,
    max_sweeps: int = 50,
    backend: RayBackend | None = None,
    block_size: int = 256,
) -> Tensor:
    """Approximate aligned L2, ``[A, B]``: align every model once to one ``reference`` model (default:
    ``weights_b[0]``, e.g. the first training checkpoint), then plain L2 between aligned vectors.

    A + B matchings instead of A·B, then one matrix product. Each entry is the smaller of that and
    the plain L2: both are distances under some permutation of b, so each is an upper bound on
    the per-pair aligned L2 (exactly so when matching is exact), and the plain one wins for models
    already aligned to each other but not to the reference. Check how well it ranks pairs with
    ``fast_path_agreement``. With a :class:`~weightspace.parallel.RayBackend` the matchings run as
    Ray tasks of ``block_size`` models.
    """
    ref = weights_b[0] if reference is None else reference
    if backend is None:
        a = align_to(space, weights_a, ref, max_sweeps=max_sweeps)
        b = align_to(space, weights_b, ref, max_sweeps=max_sweeps)
    else:
        a, b = (torch.cat(map_rows(_align_block, w, block_size=block_size, backend=backend, desc="aligning",
                                   space=space, reference=ref, max_sweeps=max_sweeps))
                for w in (weights_a, weights_b))
    return torch.minimum(l2_distances(a, b), l2_distances(weights_a, weights_b))


_GAP_ELEMENTS = 1 << 24  # block distances held at once by _slice_gaps (128 MiB of float64)


def _slice_gaps(space: WeightSpace, name: str, axis: int, tensor: Tensor) -> Tensor:
    """``[n, n]`` lower bounds on the squared distance between neuron slice j of ``tensor`` (along
    ``axis``) and slice k, whatever permutation other groups apply to its other axes: exact when no
    other axis is permuted; with one, each block of slice j meets its nearest block of slice k; with
    more, the distance between sorted entries."""
    others = [a for g in space.groups for t, a in g.axes if t == name and a != axis]
    x = tensor.movedim(axis, 0)
    n = x.shape[0]
    if not others:
        rows = x.reshape(n, -1)
        return torch.cdist(rows, rows).square()
    if len(others) == 1:
        other = others[0] - (others[0] > axis)  # its index once ``axis`` moved to the front
        blocks = x.movedim(other + 1, 1).reshape(n, x.shape[other + 1], -1)  # [n, blocks, block size]
        flat = blocks.reshape(-1, blocks.shape[-1])
        m = blocks.shape[1]
        step = max(1, _GAP_ELEMENTS // max(m * m * n, 1))  # slices j per chunk: [step·m, n·m] distances at once
        return torch.cat([torch.cdist(blocks[j:j + step].reshape(-1, blocks.shape[-1]), flat).square()
                          .reshape(-1, m, n, m).amin(3).sum(1) for j in range(0, n, step)])
    rows = x.reshape(n, -1).sort(dim=1).values
    return torch.cdist(rows, rows).square()


def symmetry_margin(space: WeightSpace, weights: Tensor) -> float:
    """The least squared L2 that any neuron permutation other than the identity adds between two of
    these models ``[N, P]`` through the tensors they all share (0 when a group has none). A pair whose
    plain squared distance is at most this margin is already aligned, and a model whose nearest
    neighbour is that close has its aligned nearest distance equal to its plain one (aligned² ≥
    min(plain², margin) for every pair). P-diff's models share every layer but two BatchNorm layers:
    matching them would be work for nothing.

    Permuting a group moves at least two neuron slices of every shared tensor of the group, each at
    a cost of at least the gap to the slice it replaces (:func:`_slice_gaps`); the margin is the
    smallest total of a group that reaches a coordinate the models do not share. A group whose every
    tensor is shared never helps: it leaves the differing coordinates where they are and only adds
    distance, so the identity beats every permutation that moves only such groups."""
    if not space.groups:
        return float("inf")
    shared = (weights == weights[:1]).all(0)  # no double copy of all N models: only the first is read
    first = space.unflatten(weights[0].double())
    margin = float("inf")
    for g in space.groups:
        if all(bool(shared[space.slice(name)].all()) for name, _ in g.axes):
            continue
        cost = 0.0
        for name, axis in g.axes:
            if bool(shared[space.slice(name)].all()):
                gaps = _slice_gaps(space, name, axis, first[name])
                cost += 2 * float((gaps + torch.diag(torch.full((g.size,), float("inf"), dtype=gaps.dtype))).min())
        margin = min(margin, cost)
    return margin


def _align_block(weights: Tensor, *, space: WeightSpace, reference: Tensor, max_sweeps: int) -> Tensor:
    return align_to(space, weights, reference, max_sweeps=max_sweeps)


def refine_nearest(
    space: WeightSpace, weights_a: Tensor, weights_b: Tensor, upper: Tensor, *, candidates: int = 8,
    max_sweeps: int = 50,
) -> Tensor:
    """Exact aligned L2 where it decides the nearest neighbour: ``upper`` ``[A, B]`` holds upper bounds
    on the aligned distances (``aligned_l2_fast``; ``inf`` for pairs to skip, e.g. a model and
    itself). Each row's ``candidates`` smallest finite entries are replaced by the per-pair aligned L2
    (never above the bound), so a row's minimum is exact whenever its true nearest neighbour is among
    the fast path's ``candidates`` nearest. A·candidates matchings instead of A·B."""
    if upper.shape != (weights_a.shape[0], weights_b.shape[0]):
        raise LayoutError(f"upper: expected [{weights_a.shape[0]}, {weights_b.shape[0]}], got {tuple(upper.shape)}")
    m = min(int(candidates), weights_b.shape[0])
    if m < 1 or weights_a.shape[0] == 0:
        return upper.clone()
    value, index = upper.topk(m, dim=1, largest=False)
    rows = torch.arange(weights_a.shape[0], device=upper.device)[:, None].expand(-1, m)
    finite = torch.isfinite(value)
    exact = aligned_l2_pairs(space, weights_a[rows[finite]], weights_b[index[finite]], max_sweeps=max_sweeps)
    out = upper.clone()
    out[rows[finite], index[finite]] = torch.minimum(exact.to(upper.dtype), value[finite])
    return out


def fast_path_agreement(
    space: WeightSpace,
    weights_a: Tensor,
    weights_b: Tensor,
    *,
    n_pairs: int = 200,
    seed: int = 0,
    reference: Tensor | None = None,
    exclude_self: bool = False,
    max_sweeps: int = 50,
) -> dict:
    """How well ``aligned_l2_fast`` matches ``aligned_l2`` on ``n_pairs`` random pairs (seeded).

    Returns Spearman rank correlation, mean relative error ``|fast - exact| / exact`` (pairs at
    exact distance 0 left out), the mean of each, and the pairs and seed used. ``exclude_self``
    skips pairs (i, i) when both sets are the same models.
    """
    g = torch.Generator().manual_seed(seed)
    n_a, n_b = weights_a.shape[0], weights_b.shape[0]
    i = torch.randint(0, n_a, (n_pairs,), generator=g)
    j = torch.randint(0, n_b, (n_pairs,), generator=g)
    if exclude_self:
        if n_b < 2:
            raise ConfigError("exclude_self=True needs at least two models in weights_b")
        j = torch.where(j == i, (j + 1) % n_b, j)
    i, j = i.to(weights_a.device), j.to(weights_b.device)
    exact = aligned_l2_pairs(space, weights_a[i], weights_b[j], max_sweeps=max_sweeps).double()
    ref = weights_b[0] if reference is None else reference
    fa = align_to(space, weights_a[i], ref, max_sweeps=max_sweeps).double()
    fb = align_to(space, weights_b[j], ref, max_sweeps=max_sweeps).double()
    plain = (weights_a[i].double() - weights_b[j].double()).norm(dim=1)
    fast = torch.minimum((fa - fb).norm(dim=1), plain)
    pos = exact > 0
    rel = ((fast - exact).abs()[pos] / exact[pos]).mean()
    rho = spearmanr(exact.cpu().numpy(), fast.cpu().numpy()).statistic
    return {
        "spearman": float(rho),
        "mean_relative_error": float(rel),
        "mean_exact": float(exact.mean()),
        "mean_fast": float(fast.mean()),
        "n_pairs": n_pairs,
        "seed": seed,
    }


# ---------------------------------------------------------------- activations, activation matching
def group_modules(space: WeightSpace) -> dict[str, str]:
    """Permutation group → name of the module whose outputs are the group's neurons: the owner of the
    group's last producing (axis-0) tensor, e.g. the BatchNorm after a convolution, else the layer."""
    out = {}
    order = {name: i for i, name in enumerate(space.names)}
    for g in space.groups:
        producing = [t for t, axis in g.axes if axis == 0]
        if not producing:
            raise LayoutError(f"permutation group '{g.name}' has no producing (axis-0) tensor")
        out[g.name] = max(producing, key=order.__getitem__).rpartition(".")[0]
    return out


def group_activations(arch: Architecture, weights: Tensor, x: Tensor) -> dict[str, Tensor]:
    """Outputs of every permutation group's neurons (before the nonlinearity) for N models on one
    batch: ``weights [N, P]``, ``x [B, *input]`` → ``{group: Tensor[N, size, B·positions]}``.

    One vmapped ``functional_call`` of the architecture's module in evaluation mode, with forward
    hooks on the modules ``group_modules`` names.
    """
    space = arch.space
    if weights.dim() == 1:
        weights = weights[None]
    if weights.shape[-1] != space.num_params:
        raise LayoutError(f"weights: expected [N, {space.num_params}] for layout '{space.name}', "
                          f"got {tuple(weights.shape)}")
    module = arch.module().eval()
    modules = dict(module.named_modules())
    names = group_modules(space)

    def run(params):
        out = {}
        hooks = [modules[m].register_forward_hook(lambda _m, _i, o, g=g: out.__setitem__(g, o))
                 for g, m in names.items()]
        try:
            functional_call(module, params, (x,))
        finally:
            for h in hooks:
                h.remove()
        return out

    with torch.no_grad():
        acts = vmap(run)(space.unflatten(weights))
    # [N, B, size, *positions] → [N, size, B·positions]
    return {g: a.movedim(2, 1).reshape(a.shape[0], a.shape[2], -1) for g, a in acts.items()}


def _standardised(a: Tensor, eps: float = 1e-8) -> Tensor:
    a = a.to(torch.float64)
    a = a - a.mean(-1, keepdim=True)
    return a / (a.norm(dim=-1, keepdim=True) + eps)


def match_activations(arch: Architecture, weights_a: Tensor, weights_b: Tensor, x: Tensor) -> dict[str, Tensor]:
    """Neuron permutations of ``weights_b[k]`` that maximise, group by group, the summed correlation
    of its neurons' outputs on ``x`` with those of ``weights_a[k]``: ``{group: LongTensor[K, size]}``,
    to apply with ``permute(arch.space, weights_b, perms)`` (the convention of ``match_permutations``)."""
    wa, wb = _check_pair(arch.space, weights_a, weights_b)
    acts_a, acts_b = group_activations(arch, wa, x), group_activations(arch, wb, x)
    return {g: _solve(-(_standardised(acts_a[g]) @ _standardised(acts_b[g]).mT)) for g in acts_a}


# ---------------------------------------------------------------- canonical form
def canonical_permutations(space: WeightSpace, weights: Tensor) -> dict[str, Tensor]:
    """Per group, the neuron order by decreasing norm of the neuron's producing coordinates (incoming
    weights, bias, BatchNorm entries): ``weights [N, P]`` → ``{group: LongTensor[N, size]}``.

    A neuron's producing coordinates are permuted only along their other axes by other groups, which
    leaves their norm unchanged, so every member of a permutation orbit gets the same order (up to
    exact ties, broken by the current index)."""
    if weights.dim() != 2 or weights.shape[1] != space.num_params:
        raise LayoutError(f"weights: expected [N, {space.num_params}] for layout '{space.name}', "
                          f"got {tuple(weights.shape)}")
    sd = space.unflatten(weights, cast=False)
    n = weights.shape[0]
    out = {}
    for g in space.groups:
        key = sum(sd[t].movedim(axis + 1, 1).reshape(n, g.size, -1).to(torch.float64).square().sum(-1)
                  for t, axis in g.axes if axis == 0)
        out[g.name] = torch.argsort(-key, dim=1, stable=True)
    return out


def canonical_form(space: WeightSpace, weights: Tensor) -> Tensor:
    """``weights [N, P]`` with every group's neurons in the deterministic order of
    ``canonical_permutations``: permuted copies of one model map to the same vector."""
    return permute(space, weights, canonical_permutations(space, weights))
