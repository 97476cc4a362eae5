"""The study's verdicts beside the paper's, and, where they differ, what this setting measured about
why. Every reason is read off numbers of the same study: copies of the training models (how far the
replica axis can see), held-out runs (what the noise frontier makes of models no generator saw), the
interpolation baselines' region. A difference with no such measurement says so."""

from __future__ import annotations

from collections.abc import Mapping

import pandas as pd

from .presets import COPIES, HELDOUT, PAPER_CALLS, PAPER_NAMES


def _yes(flags) -> bool:
    return 2 * sum(flags) > len(flags)


def _replica_reason(label: str, pooled: Mapping, first: Mapping) -> str:
    gen, thr = pooled[label], first[label].get("replica_threshold_ratio", float("nan"))
    said = (f"replica axis: the generated models sit at {gen.get('distance_ratio', float('nan')):.3g} × the "
            f"reference's spacing (replica threshold {thr:.3g})")
    copies = pooled.get(COPIES)
    if copies is None:
        return said + "; no copy check applies (the reference is the training models themselves)."
    ratio = copies.get("distance_ratio", float("nan"))
    if not _yes(copies["replicates"]):
        return (said + f"; exact copies of the training models sit at {ratio:.3g} and are not called replicas "
                "either: the training models' own distance to the paper's reference keeps even a copy above the "
                "rule's bar in this setting, so this axis cannot show replicas here.")
    return said + f"; exact copies sit at {ratio:.3g} and are called replicas: the samples are further out than copies."


def _noise_reason(label: str, pooled: Mapping) -> str:
    gen = pooled[label]
    said = (f"beats-noise axis: {gen.get('fraction_beyond_frontier', float('nan')):.2f} of the generated models lie "
            "beyond the noise frontier")
    # models that are no generator's work: held-out runs, or copies of the training models themselves
    others = [(name, pooled[name]) for name in (HELDOUT, COPIES) if name in pooled]
    beating = [(name, v) for name, v in others if _yes(v["beats_noise"])]
    if beating:
        listed = " and ".join(f"{v.get('fraction_beyond_frontier', float('nan')):.2f} of the {name}" for name, v in beating)
        return (said + f", and so do {listed}, which no generator made: noise added to this setting's reference "
                "models falls below models that are not generated at all, so this axis does not separate copies "
                "from new models here.")
    if others:
        names = " and ".join(name for name, _ in others)
        return said + f"; the {names} do not, so the generated models beat noise where those do not."
    return said + "; no held-out runs or copies exist in this setting to check the frontier against."


def _interpolation_reason(label: str, first: Mapping, span: float | None, ours: bool) -> str:
    v = first[label]
    parts = []
    for measure, region in v.get("interpolation_region", {}).items():
        value = {"quality": v.get("median_quality")}.get(measure)
        if value is None:
            value = v.get("median_similarity") if "similarity" in measure else v.get("median_min_distance")
        if value is not None:
            where = "inside" if region[0] <= value <= region[1] else "outside"
            parts.append(f"{measure} {value:.3g} {where} [{region[0]:.3g}, {region[1]:.3g}]")
    said = ("interpolation: the generated models' medians against the interpolation baselines' region (first seed): "
            + "; ".join(parts))
    if ours:
        return said + "."
    spacing, region = v.get("training_spacing"), v.get("interpolation_region", {}).get(v.get("replica_measure"))
    if span is None or not spacing or region is None:
        return said + "; no measurement of the reference explains it."
    lo, hi, ratio = region[0] / spacing, region[1] / spacing, v.get("distance_ratio", float("nan"))
    said += (f". The reference models span {span:.3g}× their own spacing (farthest pair); blends of them land "
             f"{lo:.3g}–{hi:.3g}× the spacing from their nearest reference model, the samples at {ratio:.3g}×")
    if ratio < lo:
        return said + ": the samples stay nearer to single reference models than averages of them do."
    if ratio > hi:
        return said + ": the samples lie further from every reference model than averages of them do."
    return said + ": on distance the samples sit among the blends and differ from them on the other measures."


def paper_comparison(results: Mapping[str, Mapping]) -> pd.DataFrame:
    """One row per method the paper audits: its call, the study's pooled call, and for each axis on
    which they differ, the measured reason. ``results``: method → ``{"pooled": group → pooled
    verdict, "first": group → first seed's verdict, "span": the reference's farthest pair over its
    spacing (or None)}``, the generated group named as the paper names the method."""
    rows = []
    for name, r in results.items():
        paper = PAPER_CALLS.get(name)
        if paper is None:
            continue
        label = PAPER_NAMES[name]
        gen = r["pooled"][label]
        ours = {"replicates": _yes(gen["replicates"]), "beats_noise": _yes(gen["beats_noise"]),
                "interpolates": _yes(gen["matches_interpolation"])}
        reasons = []
        if ours["replicates"] != paper["replicates"]:
            reasons.append(_replica_reason(label, r["pooled"], r["first"]))
        if ours["beats_noise"] != paper["beats_noise"]:
            reasons.append(_noise_reason(label, r["pooled"]))
        if ours["interpolates"] != paper["interpolates"]:
            reasons.append(_interpolation_reason(label, r["first"], r.get("span"), ours["interpolates"]))
        rows.append({"method": label, "paper": paper["verdict"], "this study": gen["label"],
                     "agrees": gen["verdict"] == paper["verdict"],
                     "where they differ, measured": " ".join(reasons) if reasons else "—"})
    return pd.DataFrame(rows)
