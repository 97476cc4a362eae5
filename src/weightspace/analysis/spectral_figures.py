"""Figures of a spectral analysis (matplotlib, Agg); the numbers come from :class:`SpectralAnalyzer`."""

from __future__ import annotations

import re
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd


def layer_esd_figure(rec: dict, i: int, title: str):
    """Log-log ESD with the fitted tail from xmin, and the linear ESD with the MP density when fitted.

    ``rec``: one layer's entry of ``SpectralAnalyzer.spectra_``; ``i``: which of its models.
    """
    rec = {k: (v[i] if isinstance(v, np.ndarray) else v) for k, v in rec.items() if k != "models"}
    fig, (ax_log, ax_lin) = plt.subplots(1, 2, figsize=(10, 3.6))
    ev = np.asarray(rec["fit_evals"], dtype=float)
    ev = ev[ev > 1e-5]
    if len(ev) > 1:
        edges = np.logspace(np.log10(ev.min()), np.log10(ev.max()), 40)
        dens, _ = np.histogram(ev, edges, density=True)
        mids = np.sqrt(edges[1:] * edges[:-1])
        ax_log.loglog(mids[dens > 0], dens[dens > 0], "o", ms=3, label="ESD")
        xmin, alpha = rec.get("xmin"), rec.get("alpha")
        if xmin is not None and np.isfinite(xmin) and np.isfinite(alpha) and alpha > 1:
            tail = ev[ev >= xmin]
            x = np.logspace(np.log10(xmin), np.log10(ev.max()), 50)
            frac = len(tail) / len(ev)  # the tail's share of the density
            ax_log.loglog(x, frac * (alpha - 1) / xmin * (x / xmin) ** (-alpha), "r-", label=f"power law α={alpha:.2f}")
            ax_log.axvline(xmin, color="r", ls="--", lw=0.8, label="xmin")
        ax_log.legend(fontsize=7)
    ax_log.set(xlabel="λ", ylabel="density", title="log-log ESD (fitted spectrum)")
    full = np.asarray(rec["evals"], dtype=float)
    ax_lin.hist(full, bins=60, density=True, alpha=0.6, label="ESD")
    if "rand_evals" in rec:
        ax_lin.hist(rec["rand_evals"], bins=60, density=True, alpha=0.4, label="shuffled W")
    sigma = rec.get("sigma_mp")
    if sigma is not None and np.isfinite(sigma) and full.sum() > 0:
        Q = rec["N"] / rec["M"]
        scale2 = len(full) / full.sum()  # the MP fit's units: mean eigenvalue 1
        a, b = (sigma * (1 - Q**-0.5)) ** 2, (sigma * (1 + Q**-0.5)) ** 2
        x = np.linspace(max(a, 1e-9), b, 200)
        rho = Q * np.sqrt(np.clip((b - x) * (x - a), 0, None)) / (2 * np.pi * sigma**2 * x)
        ax_lin.plot(x / scale2, rho * scale2, "k-", label=f"MP σ={sigma:.2f}")
    ax_lin.set(xlabel="λ", ylabel="density", title="linear ESD")
    ax_lin.legend(fontsize=7)
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    return fig


def alpha_by_layer_figure(details: pd.DataFrame, model: str):
    """α of each fitted layer of one model, with its interval (bootstrap in robust mode, ±σ in ww mode)."""
    d = details[(details["model"] == model) & details["status"].isin(["ok", "random-like"])]
    fig, ax = plt.subplots(figsize=(max(5, 0.35 * len(d) + 2), 3.6))
    x = np.arange(len(d))
    a = d["alpha"].to_numpy(float)
    if "alpha_lo" in d and d["alpha_lo"].notna().any():
        err = np.clip(np.vstack([a - d["alpha_lo"].to_numpy(float), d["alpha_hi"].to_numpy(float) - a]), 0, None)
    else:
        err = d["sigma"].to_numpy(float)
    ok = (d["status"] == "ok").to_numpy()
    ax.errorbar(x[ok], a[ok], yerr=err[:, ok] if np.ndim(err) == 2 else err[ok], fmt="o", ms=4, label="ok")
    if (~ok).any():
        ax.errorbar(x[~ok], a[~ok], yerr=err[:, ~ok] if np.ndim(err) == 2 else err[~ok], fmt="x", color="grey",
                    label="random-like (α not meaningful)")
    ax.axhspan(2, 6, color="green", alpha=0.08, label="2 ≤ α ≤ 6")
    ax.set_xticks(x, d["name"].tolist(), rotation=70, ha="right", fontsize=6)
    ax.set(ylabel="α", title=f"α by layer: {model}")
    ax.legend(fontsize=7)
    fig.tight_layout()
    return fig


def alpha_hat_vs_accuracy_figure(summary: pd.DataFrame, metric: str = "alpha_hat", accuracy: str = "test_acc"):
    """Per model of a zoo: a summary metric against test accuracy."""
    fig, ax = plt.subplots(figsize=(4.5, 3.6))
    ax.scatter(summary[metric], summary[accuracy], s=10)
    ax.set(xlabel=metric, ylabel=accuracy, title=f"{metric} vs {accuracy} ({len(summary)} models)")
    fig.tight_layout()
    return fig


def save_spectral_figures(analyzer, out: str | Path, *, max_layers: int = 24) -> list[Path]:
    """Write the figures of a fitted analyzer under ``out``: per-layer ESDs of the first model (at most
    ``max_layers``), α by layer of the first model, and α̂ vs test accuracy when the models have one."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    written = []

    def save(fig, name):
        path = out / name
        fig.savefig(path, dpi=110)
        plt.close(fig)
        written.append(path)

    details, summary = analyzer.details_, analyzer.summary_
    if len(details) == 0:
        return written
    first = summary["model"].iloc[0]
    recs = [(name, rec) for name, rec in analyzer.spectra_.items() if first in rec["models"]]
    for k, (name, rec) in enumerate(recs[:max_layers]):
        fig = layer_esd_figure(rec, rec["models"].index(first), f"{first}: {name}")
        save(fig, f"esd_{k:03d}_{_slug(name)}.png")
    save(alpha_by_layer_figure(details, first), "alpha_by_layer.png")
    if "test_acc" in summary and summary["test_acc"].notna().sum() > 1:
        save(alpha_hat_vs_accuracy_figure(summary), "alpha_hat_vs_test_acc.png")
    return written


def _slug(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", name)[:80]
