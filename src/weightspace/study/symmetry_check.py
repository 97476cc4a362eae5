"""The paper's symmetry check: did permutation augmentation teach the autoencoder the symmetry?

A model W and a function-preserving transform T(W) (a neuron permutation, a positive rescaling of
ReLU neurons) are the same function. An autoencoder that learned the symmetry maps both to the same
function: its reconstructions R = decode(encode(W)) and R' = decode(encode(T(W))) agree on the test
set (agreement 1), ideally with R' = T(R) (equivariance, L2 between R and T⁻¹(R') of 0) or with
encode(W) = encode(T(W)) (invariance, latent distance 0). The identity row is the control: the
same input twice must give agreement 1 and latent distance 0.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import torch
from matplotlib.figure import Figure
from torch import Tensor

from ..audit.similarity import l2_distances
from ..errors import ConfigError, LayoutError
from ..space import WeightSpace
from ..symmetry import random_permutation, scale_neurons

TRANSFORMS = ("identity", "permutation", "scaling")
SCALE_RANGE = (0.5, 2.0)  # scaling factors are log-uniform in this range


def _scalable_groups(space: WeightSpace) -> list:
    """Groups that positive scaling applies to (``scale_neurons`` refuses BatchNorm'd ones)."""
    out = []
    for g in space.groups:
        try:
            scale_neurons(space, torch.zeros(space.num_params), {g.name: torch.ones(g.size)})
        except LayoutError:
            continue
        out.append(g)
    return out


def _transforms(space: WeightSpace, n: int, seed: int, scale_range: tuple[float, float]) -> dict:
    """name → (T, T⁻¹), each mapping ``[n, P]`` to ``[n, P]``, one random draw per model."""
    g = torch.Generator().manual_seed(int(seed))
    out = {"identity": (lambda w: w, lambda w: w)}
    if space.groups:
        perms = random_permutation(space, n=n, generator=g)
        inverse = {k: torch.argsort(v, dim=-1) for k, v in perms.items()}
        fwd, inv = space.coordinate_permutation(perms), space.coordinate_permutation(inverse)
        out["permutation"] = (lambda w: torch.gather(w, -1, fwd.to(w.device)),
                              lambda w: torch.gather(w, -1, inv.to(w.device)))
    groups = _scalable_groups(space)
    if groups:
        lo, hi = math.log(scale_range[0]), math.log(scale_range[1])
        factors = {grp.name: torch.exp(torch.empty(n, grp.size).uniform_(lo, hi, generator=g)) for grp in groups}
        inv_factors = {k: 1.0 / v for k, v in factors.items()}
        out["scaling"] = (lambda w: scale_neurons(space, w, factors), lambda w: scale_neurons(space, w, inv_factors))
    return out


def _outputs_fn(predict) -> tuple[Callable[[Tensor], Tensor], Tensor | None]:
    """(weights → logits ``[n, E, C]`` or labels ``[n, E]``, test labels or None) from an evaluator
    (``.task.logits`` and ``.labels``, as :class:`~weightspace.audit.groups.ZooEvaluator`) or a callable."""
    task = getattr(predict, "task", None)
    if task is not None and hasattr(task, "logits"):
        return (lambda w: task.logits(w, "test")), predict.labels
    if callable(predict):
        return predict, None
    raise ConfigError(f"predict: expected a ZooEvaluator or a callable weights[n, P] -> predictions[n, examples], "
                      f"got {type(predict).__name__}")


def _labels_of(out: Tensor) -> Tensor:
    return out.argmax(-1) if out.dtype.is_floating_point else out


def symmetry_check(generator, space: WeightSpace, weights: Tensor, predict, *, labels: Tensor | None = None,
                   seed: int = 0, scale_range: tuple[float, float] = SCALE_RANGE) -> pd.DataFrame:
    """Pass each model and a function-preserving transform of it through ``generator``'s autoencoder.

    ``generator``: fitted, with ``encode(weights [n, P]) -> [n, d]`` and ``decode([n, d]) -> [n, P]``
    (HyperRep). ``weights``: ``[n, P]`` models (n >= 2; typically training checkpoints). ``predict``:
    a ZooEvaluator (test logits and labels) or a callable ``weights -> predictions [n, examples]``
    (or logits ``[n, examples, classes]``) with ``labels`` for accuracies. One row per transform:
    identity (control), permutation (one random permutation of every group per model) and scaling
    (positive factors log-uniform in ``scale_range`` on every group without BatchNorm); a transform
    the layout does not admit is left out. Columns:

    - ``function_agreement``: min over models of the test-prediction agreement of W and T(W) (1.0:
      the transform preserved the function); ``max_logit_change`` when logits are available;
    - ``transform_l2``: median |T(W) − W| (how far the transform moves the vector);
    - ``latent_distance``: median |z − z'| / |z|; ``latent_spacing``: median latent distance between
      different models of ``weights``; ``latent_distance_vs_spacing``: median |z − z'| over it;
    - ``agreement`` / ``agreement_min``: median / min prediction agreement of R and R' (1.0: the
      autoencoder treats both as the same function, i.e. it learned the symmetry);
    - ``accuracy_input``, ``accuracy_R``, ``accuracy_R_prime``: mean test accuracy of W, R, R';
    - ``reconstruction_l2``: median |R − W|; ``equivariance_l2``: median |R − T⁻¹(R')| (0: equivariant).
    """
    if not isinstance(weights, Tensor) or weights.dim() != 2 or weights.shape[1] != space.num_params \
            or weights.shape[0] < 2:
        shape = tuple(weights.shape) if isinstance(weights, Tensor) else type(weights).__name__
        raise LayoutError(f"weights: expected [n, {space.num_params}] with n >= 2 for layout '{space.name}', "
                          f"got {shape}")
    if not (hasattr(generator, "encode") and hasattr(generator, "decode")):
        raise ConfigError(f"generator: expected an autoencoder with encode() and decode() (HyperRep), "
                          f"got {type(generator).__name__}")
    if not 0 < scale_range[0] <= scale_range[1]:
        raise ConfigError(f"scale_range: expected 0 < low <= high, got {scale_range!r}")
    outputs, ev_labels = _outputs_fn(predict)
    labels = ev_labels if labels is None else labels
    w = weights.detach()
    n = len(w)

    def through(x: Tensor) -> tuple[Tensor, Tensor]:
        z = generator.encode(x)
        return z, generator.decode(z).to(device=w.device, dtype=w.dtype)

    def accuracy(pred: Tensor) -> float:
        return float((pred == labels.to(pred.device)).float().mean()) if labels is not None else np.nan

    out_w = outputs(w)
    pred_w = _labels_of(out_w)
    z, rec = through(w)
    pred_r = _labels_of(outputs(rec))
    zd = l2_distances(z, z).double()
    spacing = float(zd[~torch.eye(n, dtype=torch.bool, device=zd.device)].median())
    z_norm = z.double().norm(dim=1).clamp_min(1e-12)
    reconstruction = float((rec - w).double().norm(dim=1).median())

    rows = []
    for name, (fwd, inv) in _transforms(space, n, seed, scale_range).items():
        tw = fwd(w)
        out_tw = outputs(tw)
        pred_tw = _labels_of(out_tw)
        z2, rec2 = through(tw)
        pred_r2 = _labels_of(outputs(rec2))
        dz = (z2 - z).double().norm(dim=1)
        agree = (pred_r == pred_r2).double().mean(1)
        rows.append({
            "transform": name, "models": n,
            "function_agreement": float((pred_w == pred_tw).double().mean(1).min()),
            "max_logit_change": float((out_tw - out_w).abs().max()) if out_w.dtype.is_floating_point else np.nan,
            "transform_l2": float((tw - w).double().norm(dim=1).median()),
            "latent_distance": float((dz / z_norm).median()),
            "latent_spacing": spacing,
            "latent_distance_vs_spacing": float(dz.median()) / spacing if spacing > 0 else np.nan,
            "agreement": float(agree.median()), "agreement_min": float(agree.min()),
            "accuracy_input": accuracy(pred_w), "accuracy_R": accuracy(pred_r), "accuracy_R_prime": accuracy(pred_r2),
            "reconstruction_l2": reconstruction,
            "equivariance_l2": float((rec - inv(rec2)).double().norm(dim=1).median()),
        })
    return pd.DataFrame(rows)


def symmetry_figure(table: pd.DataFrame) -> Figure:
    """Three panels per transform: agreement of the reconstructions R and R' (1 = the symmetry was
    learned), latent distance in units of the spacing between different models, and accuracy of
    R and R'."""
    fig, axes = plt.subplots(1, 3, figsize=(12.5, 3.8))
    x = np.arange(len(table))
    names = table["transform"].tolist()
    colors = [plt.get_cmap("tab10")(i) for i in range(len(table))]
    ax = axes[0]
    ax.bar(x, table["agreement"], color=colors)
    ax.scatter(x, table["agreement_min"], color="k", marker="_", s=200, zorder=3, label="min over models")
    ax.scatter(x, table["function_agreement"], color="k", marker="x", zorder=3, label="W vs T(W) (input)")
    ax.set_ylim(0, 1.05)
    ax.set_ylabel("test agreement of R and R'")
    ax = axes[1]
    ax.bar(x, table["latent_distance_vs_spacing"], color=colors)
    ax.axhline(1.0, color="0.45", ls=":", lw=1, label="distance between different models")
    ax.set_ylabel("median |z − z'| / latent spacing")
    ax = axes[2]
    width = 0.38
    ax.bar(x - width / 2, table["accuracy_R"], width, color="0.6", label="R = dec(enc(W))")
    ax.bar(x + width / 2, table["accuracy_R_prime"], width, color="C0", label="R' = dec(enc(T(W)))")
    if table["accuracy_input"].notna().any():
        ax.axhline(float(table["accuracy_input"].iloc[0]), color="k", ls="--", lw=1, label="inputs W")
    ax.set_ylabel("mean test accuracy")
    for ax in axes:  # legends below the panels: the bars fill them
        ax.set_xticks(x, names)
        ax.grid(alpha=0.3, axis="y")
        ax.legend(fontsize=7, loc="upper center", bbox_to_anchor=(0.5, -0.1), ncol=2)
    fig.suptitle("symmetry check: the autoencoder on function-preserving transforms of the same models")
    fig.tight_layout()
    return fig
