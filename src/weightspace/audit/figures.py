"""The study's figures, as in the paper. Each function takes computed results and returns a Figure;
nothing here computes a metric."""

from __future__ import annotations

import io
from collections.abc import Callable, Mapping, Sequence

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import torch
from matplotlib.figure import Figure
from torch import Tensor

TRAINING = "training"
_BASE = {  # one colour and marker per group, in every figure
    TRAINING: ("0.55", "o"), f"{TRAINING} (final epoch)": ("0.55", "o"),
    "held-out runs": ("#2ca02c", "P"), "copies of training models": ("#8c564b", "o"),
    "control: exact copies": ("#17becf", "s"), "control: copies + 1% noise": ("#1f77b4", "D"),
    "control: aligned midpoints": ("#9467bd", "^"), "control: averages of 4": ("#e377c2", "v"),
    "control: noise, half-way to chance": ("#444444", "x"), "per-parameter Gaussian": ("#bcbd22", "h"),
}
GENERATED_STYLE = ("#d62728", "*")


def group_style(group: str) -> tuple[object, str]:
    """``(colour, marker)`` of a group, the same in every figure: fixed for the reference, held-out
    runs, controls and baselines (a sweep in shades of its family's colour), and one style for the
    generated group, whatever its name."""
    if group in _BASE:
        return _BASE[group]
    for prefix, cmap, marker in (("average of ", "Oranges", "<"), ("aligned interpolation λ=", "Purples", ">"),
                                 ("noise σ=", "Greys", ".")):
        if group.startswith(prefix):
            try:
                value = float(group[len(prefix):].split()[0])
            except ValueError:
                value = 0.5
            shade = {"average of ": lambda v: min(1.0, 0.35 + 0.04 * v), "aligned interpolation λ=": lambda v: 0.35 + v,
                     "noise σ=": lambda v: 0.6}[prefix](value)
            return plt.get_cmap(cmap)(shade), marker
    return GENERATED_STYLE


def _colors(groups: Sequence[str]) -> dict[str, object]:
    return {g: group_style(g)[0] for g in groups}


def png_bytes(fig: Figure, dpi: int = 110) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi, bbox_inches="tight")
    plt.close(fig)
    return buf.getvalue()


def _style(group: str, emphasis: Sequence[str]) -> dict:
    """Reference models faint underneath, baselines hollow, emphasised groups filled on top: no group
    hides another."""
    marker = group_style(group)[1]
    if group == TRAINING:
        return {"s": 12, "alpha": 0.35, "marker": marker, "zorder": 1}
    if group in emphasis:
        return {"s": 40 if marker == "*" else 26, "alpha": 0.85, "marker": marker, "edgecolors": "k",
                "linewidths": 0.4, "zorder": 4}
    if marker in "x+.":
        return {"s": 22, "alpha": 0.8, "marker": marker, "zorder": 2}
    return {"s": 22, "alpha": 0.8, "marker": marker, "facecolors": "none", "zorder": 2}


def envelope(frontier: pd.DataFrame, x: str, y: str = "quality") -> pd.DataFrame:
    """The frontier as the rule reads it: the best quality noise reaches at each similarity or lower
    (a running maximum over the σ points sorted by similarity), so it never turns down."""
    f = frontier[np.isfinite(frontier[x].to_numpy(float))].sort_values(x, kind="stable")
    return pd.DataFrame({x: f[x].to_numpy(float), y: np.maximum.accumulate(f[y].to_numpy(float))})


def novelty_quality_scatter(
    table: pd.DataFrame, frontier: pd.DataFrame | None = None, *, x: str = "max_similarity",
    y: str = "quality", title: str = "", xlabel: str = "max similarity to training",
    ylabel: str = "test accuracy", emphasis: Sequence[str] = (), paper_sigmas: Sequence[float] = (),
) -> Figure:
    """One point per model, coloured by ``group`` (``emphasis``: groups drawn filled on top); the
    noise-addition frontier (one point per σ) as a line, the sweep's σ range in the legend, and the
    paper's own σ values (``paper_sigmas``) as labelled stars. Up-and-left of the frontier means
    better than adding noise to a checkpoint."""
    fig, ax = plt.subplots(figsize=(7.2, 4.8))
    groups = list(dict.fromkeys(table["group"]))
    colors = _colors(groups)
    for g in groups:
        d = table[table["group"] == g]
        style = _style(g, emphasis)
        color = {"edgecolors": colors[g]} if style.get("facecolors") == "none" else {"color": colors[g]}
        ax.scatter(d[x], d[y], label=g, **color, **style)
    if frontier is not None and len(frontier):
        paper = np.isin(np.round(frontier["sigma"].to_numpy(float), 12), np.round(np.asarray(paper_sigmas, float), 12))
        f = envelope(frontier, x, y)
        sweep = frontier[~paper]
        rng = f"σ {sweep['sigma'].min():.2g} to {sweep['sigma'].max():.2g}" if len(sweep) else "σ sweep"
        ax.step(f[x], f[y], "k--", where="post", lw=1.2, zorder=3, label=f"noise frontier ({rng})")
        for k, (_, row) in enumerate(frontier[paper].iterrows()):
            ax.scatter([row[x]], [row[y]], marker="*", s=140, color="k", zorder=5,
                       label="noise at the paper's σ" if k == 0 else None)
            ax.annotate(f"σ={row['sigma']:.2g}", (row[x], row[y]), fontsize=7, xytext=(6, -10 - 9 * k),
                        textcoords="offset points", zorder=5)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.legend(fontsize=7, loc="center left", bbox_to_anchor=(1.01, 0.5), frameon=False)
    ax.grid(alpha=0.3)
    return fig


def min_distance_histogram(table: pd.DataFrame, *, column: str = "min_l2", title: str = "",
                           xlabel: str | None = None) -> Figure:
    """Distance of each model to its nearest training checkpoint (for training models: to the nearest
    *other* one). Generated models far left of the training histogram are replicas."""
    fig, ax = plt.subplots(figsize=(6.4, 4.0))
    groups = list(dict.fromkeys(table["group"]))
    colors = _colors(groups)
    values = table[column].to_numpy(dtype=float)
    finite = values[np.isfinite(values)]
    bins = np.linspace(0, finite.max() * 1.05 if len(finite) else 1, 40)
    for g in groups:
        ax.hist(table.loc[table["group"] == g, column], bins=bins, alpha=0.55, color=colors[g], label=g)
    ax.set_xlabel(xlabel or f"{column.replace('_', ' ')} to training")
    ax.set_ylabel("models")
    ax.set_title(title)
    ax.legend(fontsize=7)
    return fig


def parameter_heatmap(generated: Tensor, nearest: Tensor, *, n_params: int = 24, seed: int = 0,
                      title: str = "") -> Figure:
    """Rows: a generated model, then its nearest training models (``nearest [k, P]``), on a few random
    parameter indices. Identical colour columns mean a copy."""
    g = torch.Generator().manual_seed(seed)
    idx = torch.randperm(generated.shape[-1], generator=g)[: min(n_params, generated.shape[-1])].sort().values
    rows = torch.cat([generated[None, idx], nearest[:, idx]]).numpy()
    fig, ax = plt.subplots(figsize=(7.0, 0.45 * len(rows) + 1.0))
    lim = float(np.abs(rows).max()) or 1.0
    im = ax.imshow(rows, cmap="RdBu_r", vmin=-lim, vmax=lim, aspect="auto")
    ax.set_yticks(range(len(rows)), ["generated"] + [f"nearest training #{i + 1}" for i in range(len(rows) - 1)])
    ax.set_xticks(range(len(idx)), [str(int(i)) for i in idx], rotation=90, fontsize=6)
    ax.set_xlabel("parameter index")
    ax.set_title(title)
    fig.colorbar(im, ax=ax, fraction=0.03)
    return fig


def decision_boundaries(
    predict: Callable[[Tensor], Tensor], x: Tensor, y: Tensor, models: Mapping[str, Tensor], *,
    resolution: int = 120, title: str = "",
) -> Figure:
    """Decision regions in the plane of the inputs' first two principal components.

    ``predict(W[n, P], inputs[m, d]) -> labels[n, m]``; grid points are mapped back to input space
    through the PCA (other components at the data mean). Matching regions mean the same function.
    """
    xf = x.flatten(1).double()
    mean = xf.mean(0)
    _, _, v = torch.linalg.svd(xf - mean, full_matrices=False)
    comps = v[:2]
    z = (xf - mean) @ comps.T
    lo, hi = z.min(0).values - 0.5, z.max(0).values + 0.5
    gx, gy = torch.meshgrid(torch.linspace(lo[0], hi[0], resolution, dtype=torch.float64),
                            torch.linspace(lo[1], hi[1], resolution, dtype=torch.float64), indexing="xy")
    grid = torch.stack([gx.flatten(), gy.flatten()], 1)
    inputs = (mean + grid @ comps).to(x.dtype).reshape(-1, *x.shape[1:])
    names = list(models)
    labels = predict(torch.stack([models[n] for n in names]), inputs)
    fig, axes = plt.subplots(1, len(names), figsize=(3.4 * len(names), 3.4), squeeze=False)
    n_classes = int(max(int(y.max()), int(labels.max()))) + 1
    for ax, name, lab in zip(axes[0], names, labels):
        ax.contourf(gx.numpy(), gy.numpy(), lab.reshape(resolution, resolution).numpy(),
                    levels=np.arange(n_classes + 1) - 0.5, cmap="tab10", alpha=0.35)
        ax.scatter(z[:, 0], z[:, 1], c=y.numpy(), cmap="tab10", s=4, vmin=-0.5, vmax=9.5)
        ax.set_title(name, fontsize=9)
        ax.set_xticks([])
        ax.set_yticks([])
    fig.suptitle(title)
    return fig


def weight_tsne(weights: Mapping[str, Tensor], *, seed: int = 0, max_per_group: int = 200,
                title: str = "") -> Figure:
    """t-SNE of flattened weights, per group: generated clusters sitting on training points are copies."""
    from sklearn.manifold import TSNE

    names = list(weights)
    parts = [weights[n][:max_per_group].double().numpy() for n in names]
    data = np.concatenate(parts)
    perplexity = float(min(30, max(2, (len(data) - 1) // 3)))
    emb = TSNE(n_components=2, perplexity=perplexity, random_state=seed, init="pca").fit_transform(data)
    fig, ax = plt.subplots(figsize=(6.0, 5.0))
    colors = _colors(names)
    start = 0
    for n, p in zip(names, parts):
        e = emb[start : start + len(p)]
        start += len(p)
        ax.scatter(e[:, 0], e[:, 1], s=10, alpha=0.7, color=colors[n], marker=group_style(n)[1], label=n)
    ax.set_xticks([])
    ax.set_yticks([])
    ax.set_title(title)
    ax.legend(fontsize=7)
    return fig


def parameter_kde(weights: Mapping[str, Tensor], indices: Sequence[int], *, title: str = "") -> Figure:
    """Kernel density of single parameters per group: generated densities that trace the training
    density's spikes are memorised values."""
    from scipy.stats import gaussian_kde

    names = list(weights)
    colors = _colors(names)
    fig, axes = plt.subplots(1, len(indices), figsize=(3.4 * len(indices), 3.2), squeeze=False, layout="constrained")
    for ax, idx in zip(axes[0], indices):
        values = {n: weights[n][:, idx].double().numpy() for n in names}
        lo = min(v.min() for v in values.values())
        hi = max(v.max() for v in values.values())
        pad = 0.1 * (hi - lo) + 1e-6
        grid = np.linspace(lo - pad, hi + pad, 200)
        for n, v in values.items():
            if len(v) > 1 and np.std(v) > 0:
                ax.plot(grid, gaussian_kde(v)(grid), color=colors[n], label=n)
            else:
                ax.axvline(float(v.mean()), color=colors[n], label=n)
        ax.set_title(f"parameter #{idx}", fontsize=9)
        ax.set_xlabel("value", fontsize=8)
        ax.tick_params(labelsize=7)
    axes[0][0].set_ylabel("density", fontsize=8)
    handles, labels = axes[0][0].get_legend_handles_labels()
    fig.legend(handles, labels, fontsize=7, loc="outside lower center", ncol=min(len(labels), 4), frameon=False)
    fig.suptitle(title, fontsize=10)
    return fig


def shapes_side_by_side(pairs: Sequence[tuple[Tensor, Tensor]], *, titles=("generated", "nearest training"),
                        title: str = "") -> Figure:
    """Each generated shape (boundary points) beside its nearest training shape."""
    fig, axes = plt.subplots(2, len(pairs), figsize=(2.2 * len(pairs), 4.6), squeeze=False)
    for j, pair in enumerate(pairs):
        for i, pts in enumerate(pair):
            ax = axes[i][j]
            p = pts.numpy()
            ax.scatter(p[:, 0], p[:, 1], s=1.5, color="C0" if i == 0 else "0.3")
            ax.set_aspect("equal")
            ax.set_xticks([])
            ax.set_yticks([])
            if j == 0:
                ax.set_ylabel(titles[i], fontsize=8)
    fig.suptitle(title)
    return fig


def similarity_histogram(table: pd.DataFrame, *, column: str = "max_similarity", title: str = "",
                         xlabel: str = "max error-IoU similarity to the reference") -> Figure:
    """Each group's similarity to its most similar reference model, in function space (the paper shows
    only the scatter): copies pile up at the right, new models where the reference's own sit."""
    fig, ax = plt.subplots(figsize=(6.8, 4.0))
    values = table[column].to_numpy(dtype=float)
    finite = values[np.isfinite(values)]
    lo, hi = (finite.min(), finite.max()) if len(finite) else (0.0, 1.0)
    bins = np.linspace(lo, hi + 1e-9, 40)
    for g in dict.fromkeys(table["group"]):
        color, _ = group_style(g)
        v = table.loc[table["group"] == g, column].to_numpy(float)
        ax.hist(v[np.isfinite(v)], bins=bins, histtype="step", lw=1.6, color=color, label=g, density=True)
    ax.set_xlabel(xlabel)
    ax.set_ylabel("density")
    ax.set_title(title)
    ax.legend(fontsize=7, loc="center left", bbox_to_anchor=(1.01, 0.5), frameon=False)
    return fig


def coverage_bars(coverage: Mapping[str, float], *, title: str = "") -> Figure:
    """Distinct nearest reference models per 100 models of each group: a generator that copies a few
    checkpoints covers few, fresh runs cover many."""
    names = list(coverage)
    fig, ax = plt.subplots(figsize=(6.8, 0.35 * len(names) + 1.2))
    ax.barh(range(len(names)), [coverage[n] for n in names], color=[group_style(n)[0] for n in names])
    ax.set_yticks(range(len(names)), names, fontsize=8)
    ax.invert_yaxis()
    ax.set_xlabel("distinct nearest reference models per 100 models")
    ax.set_title(title)
    ax.grid(axis="x", alpha=0.3)
    return fig


def seed_spread(rows: pd.DataFrame, *, title: str = "") -> Figure:
    """Per seed, each group's distance ratio, fraction beyond the noise frontier and quality, with
    their intervals where they have one: how much a call moves from one generator fit to the next.
    ``rows``: ``seed, group, distance_ratio, distance_lo, distance_hi, beyond, beyond_lo, beyond_hi,
    quality``."""
    panels = (("distance_ratio", "distance_lo", "distance_hi", "distance / spacing"),
              ("beyond", "beyond_lo", "beyond_hi", "beyond the noise frontier"), ("quality", None, None, "quality"))
    fig, axes = plt.subplots(1, 3, figsize=(10.5, 3.2), layout="constrained")
    groups = list(dict.fromkeys(rows["group"]))
    for ax, (col, lo, hi, label) in zip(axes, panels):
        for j, g in enumerate(groups):
            d = rows[rows["group"] == g]
            color, marker = group_style(g)
            xs = d["seed"].to_numpy(float) + 0.08 * (j - (len(groups) - 1) / 2)
            err = None
            if lo is not None:
                err = np.abs(np.stack([d[col] - d[lo], d[hi] - d[col]]).astype(float))
            ax.errorbar(xs, d[col], yerr=err, fmt=marker, color=color, ms=6, capsize=2, label=g)
        ax.set_xticks(sorted(rows["seed"].unique()))
        ax.set_xlabel("fit seed")
        ax.set_ylabel(label)
        ax.grid(alpha=0.3)
    handles, labels = axes[0].get_legend_handles_labels()
    fig.legend(handles, labels, fontsize=7, loc="outside lower center", ncol=min(len(labels), 4), frameon=False)
    fig.suptitle(title, fontsize=10)
    return fig
