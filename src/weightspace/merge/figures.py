"""The figure of interpolation curves: loss and test error along λ, one line per variant."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import pandas as pd


def plot_interpolation(curves: pd.DataFrame, title: str = ""):
    """``curves``: rows of (``variant``, ``lam``, ``loss``, ``error``) → a two-panel Figure."""
    fig, axes = plt.subplots(1, 2, figsize=(11, 3.6))
    for variant, df in curves.groupby("variant", sort=False):
        df = df.sort_values("lam")
        axes[0].plot(df["lam"], df["loss"], marker="o", ms=3, label=variant)
        axes[1].plot(df["lam"], 100 * df["error"], marker="o", ms=3, label=variant)
    for ax, label in zip(axes, ("loss", "error (%)")):
        ax.set_xlabel("λ  (0 = model A, 1 = model B)")
        ax.set_ylabel(label)
        ax.grid(alpha=0.3)
    axes[1].legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.02, 1))  # outside: curves stay visible
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    return fig
