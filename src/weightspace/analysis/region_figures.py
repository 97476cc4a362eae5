"""Figures of a knowledge-regions analysis. Each function takes computed tables and returns a Figure;
nothing here computes a metric."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402


def plot_embeddings(embedding: pd.DataFrame, by: str) -> Figure:
    """One panel per embedding method, points coloured by ``by`` (marker by family when present)."""
    methods = list(dict.fromkeys(embedding["method"]))
    fig, axes = plt.subplots(1, len(methods), figsize=(4.2 * len(methods), 4), squeeze=False)
    values = sorted(embedding[by].astype(str).unique())
    colors = {v: plt.get_cmap("tab20")(i % 20) for i, v in enumerate(values)}
    families = sorted(embedding["family"].astype(str).unique()) if "family" in embedding else []
    markers = {f: "os^vDP*X"[i % 8] for i, f in enumerate(families)}
    for ax, method in zip(axes[0], methods):
        part = embedding[embedding["method"] == method]
        for v in values:
            pts = part[part[by].astype(str) == v]
            marker = markers.get(str(pts["family"].iloc[0]), "o") if families and len(pts) else "o"
            ax.scatter(pts["x"], pts["y"], s=22, color=colors[v], marker=marker, label=v)
        ax.set_title(method.upper() if method != "tsne" else "t-SNE")
        ax.set_xticks([])
        ax.set_yticks([])
    axes[0][-1].legend(fontsize=7, loc="center left", bbox_to_anchor=(1.0, 0.5), title=by)
    fig.suptitle(f"fine-tuned weights, coloured by {by}")
    fig.tight_layout()
    return fig


def plot_interior(interior: pd.DataFrame) -> Figure:
    """Members' accuracy (mean, min) against convex combinations' (mean, min), per region."""
    fig, ax = plt.subplots(figsize=(max(4, 0.8 * len(interior) + 2), 3.6))
    x = np.arange(len(interior))
    ax.bar(x - 0.2, interior["member_acc_mean"], 0.4, label="members (mean)", color="tab:blue")
    ax.bar(x + 0.2, interior["interior_acc_mean"], 0.4, label="inside the region (mean)", color="tab:orange")
    ax.scatter(x - 0.2, interior["member_acc_min"], color="k", marker="_", s=200, label="min")
    ax.scatter(x + 0.2, interior["interior_acc_min"], color="k", marker="_", s=200)
    ax.set_xticks(x, interior["region"].astype(str), rotation=40, ha="right")
    ax.set_ylabel("test accuracy on the region's task")
    ax.set_ylim(max(0.0, float(interior[["member_acc_min", "interior_acc_min"]].min().min()) - 0.1), 1.0)
    ax.legend(fontsize=8)
    fig.tight_layout()
    return fig


def plot_starts(starts: pd.DataFrame) -> Figure:
    """Held-out tasks: accuracy after the same fine-tune from the base and from the family's centroid."""
    fig, ax = plt.subplots(figsize=(max(4, 1.2 * len(starts) + 2), 3.6))
    x = np.arange(len(starts))
    ax.bar(x - 0.2, starts["base_start_acc"], 0.4, label="from the base model", color="tab:gray")
    ax.bar(x + 0.2, starts["centroid_start_acc"], 0.4, label="from the family's centroid", color="tab:green")
    ax.set_xticks(x, [f"{t}\n({f})" for t, f in zip(starts["task"], starts["family"])])
    ax.set_ylabel("test accuracy (mean over seeds)")
    lo = float(starts[["base_start_acc", "centroid_start_acc"]].min().min())
    ax.set_ylim(max(0.0, lo - 0.1), 1.0)
    ax.legend(fontsize=8)
    fig.tight_layout()
    return fig


def save_region_figures(result, out: str | Path) -> list[Path]:
    """Write the figures of a fitted :class:`~weightspace.analysis.regions.KnowledgeRegions` as PNGs."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    figures = {"embeddings.png": plot_embeddings(result.embedding_, result.by)}
    if len(result.interior_):
        figures["interior.png"] = plot_interior(result.interior_)
    if len(result.starts_):
        figures["starts.png"] = plot_starts(result.starts_)
    paths = []
    for name, fig in figures.items():
        fig.savefig(out / name, dpi=110, bbox_inches="tight")
        plt.close(fig)
        paths.append(out / name)
    return paths
