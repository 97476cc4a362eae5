"""The study's verdicts beside the paper's, and, where they differ, what this setting measured about
why. Every reason is read off numbers of the same study: the controls (how far each axis can see in
this setting), held-out runs (what the noise frontier makes of models no generator saw), the
interpolation baselines' region. A difference with no such measurement says so."""

from __future__ import annotations

from collections.abc import Mapping

import pandas as pd

from ..audit.controls import COPIES, HELDOUT
from ..audit.verdict import FAILS, INCONCLUSIVE, NO_MAJORITY
from ..registry import setting


def _yes(flags) -> bool:
    return 2 * sum(flags) > len(flags)


def _replica_reason(label: str, pooled: Mapping, first: Mapping) -> str:
    gen, bar = pooled[label], first[label].get("replica_threshold_ratio", float("nan"))
    said = (f"replica axis: the generated models sit at {gen.get('distance_ratio', float('nan')):.3g} × the "
            f"reference's spacing (replica bar {bar:.3g})")
    copies = pooled.get(COPIES)
    if copies is None:
        return said + "; no copy control in this setting."
    ratio = copies.get("distance_ratio", float("nan"))
    if not _yes(copies["replicates"]):
        return (said + f"; exact copies sit at {ratio:.3g} and are not called replicas either: this axis cannot show "
                "replicas in this setting.")
    return said + f"; exact copies sit at {ratio:.3g} and are called replicas: the samples are further out than copies."


def _noise_reason(label: str, pooled: Mapping) -> str:
    gen = pooled[label]
    said = (f"beats-noise axis: {gen.get('fraction_beyond_frontier', float('nan')):.2f} of the generated models lie "
            f"beyond the noise frontier, median quality {gen.get('median_quality', float('nan')):.4g} against the "
            f"floor {gen.get('quality_floor', float('nan')):.4g}")
    held = pooled.get(HELDOUT)
    if held is None:
        return said + "; no held-out runs in this setting to show what new models score."
    return (said + f"; held-out runs: {held.get('fraction_beyond_frontier', float('nan')):.2f} beyond, median quality "
            f"{held.get('median_quality', float('nan')):.4g}.")


def _interpolation_reason(label: str, first: Mapping) -> str:
    v = first[label]
    parts = []
    for family, region in v.get("interpolation_regions", {}).items():
        inside = []
        for measure, (lo, hi) in region.items():
            value = {"quality": v.get("median_quality")}.get(measure)
            if value is None:
                value = v.get("median_similarity") if "similarity" in measure else v.get("median_min_distance")
            if value is not None:
                inside.append(f"{measure} {value:.3g} {'in' if lo <= value <= hi else 'outside'} [{lo:.3g}, {hi:.3g}]")
        parts.append(f"{family}: " + ", ".join(inside))
    return "interpolation (first seed): " + "; ".join(parts) + "."


def _failed_axes(part) -> list[str]:
    """'axis (seeds a, b): reason' for every axis that failed its controls on some seed."""
    failed: dict[str, list] = {}
    for row in part.axes:
        if row["status"] == FAILS:
            failed.setdefault(row["axis"], []).append(row)
    return [f"{axis} axis inconclusive in this setting (seed{'s' if len(rows) > 1 else ''} "
            f"{', '.join(str(r['seed']) for r in rows)}): {rows[0]['reason']}" for axis, rows in failed.items()]


def paper_comparison(parts: Mapping[str, object]) -> pd.DataFrame:
    """One row per method the paper audits: its call, the study's pooled call, the seeds that make the
    paper's call, whether they agree, and for each axis on which they differ, the measured reason.
    ``parts``: method → :class:`~weightspace.study.pipeline.MethodPart`."""
    rows = []
    for name, part in parts.items():
        paper = setting(name).paper
        if paper is None:
            continue
        label = part.label
        gen = part.pooled[label]
        first = part.seeds[0]["verdicts"]
        ours = {"replicates": _yes(gen["replicates"]), "beats_noise": _yes(gen["beats_noise"]),
                "interpolates": _yes(gen["matches_interpolation"])}
        reasons = _failed_axes(part)
        if ours["interpolates"] != paper.interpolates:
            reasons.append(_interpolation_reason(label, first))
        if ours["replicates"] != paper.replicates:
            reasons.append(_replica_reason(label, part.pooled, first))
        if ours["beats_noise"] != paper.beats_noise:
            reasons.append(_noise_reason(label, part.pooled))
        agreeing = sum(c == paper.verdict for c in gen["seed_verdicts"])
        conclusive = gen["verdict"] not in (INCONCLUSIVE, NO_MAJORITY) and not _failed_axes(part)
        rows.append({"method": label, "paper": paper.verdict, "this study": gen["label"],
                     "seeds agreeing": f"{agreeing}/{len(gen['seed_verdicts'])}",
                     "agrees": bool(conclusive and gen["verdict"] == paper.verdict),
                     "where they differ, measured": " ".join(reasons) if reasons else "—"})
    return pd.DataFrame(rows)


def _caveat(part, comparison_row: Mapping | None) -> str:
    failed = _failed_axes(part)
    if failed:
        return failed[0]
    gen = part.pooled[part.label]
    if gen["verdict"] == NO_MAJORITY:
        return "the seeds split with no majority: " + " / ".join(gen["seed_verdicts"])
    if part.raw_verdicts is not None:
        raw = part.raw_verdicts[part.label + " (raw checkpoints)"]["verdict"]
        return (f"against the {part.reference_view} (the paper's reference); against the raw checkpoints the first "
                f"seed's call is '{raw}'")
    if comparison_row is not None and not comparison_row["agrees"]:
        return comparison_row["where they differ, measured"].split(". ")[0]
    if comparison_row is None:
        return "weightspace's own method; not in the paper"
    return "every control gets its known answer on every seed"


def headline(parts, comparison: pd.DataFrame) -> pd.DataFrame:
    """The report's first table, one row per method: the paper's call, ours, the seeds that make the
    paper's call (or ours, for a method the paper did not audit), and a one-line caveat."""
    by_label = {r["method"]: r for r in comparison.to_dict("records")} if len(comparison) else {}
    rows = []
    for part in parts:
        gen = part.pooled[part.label]
        row = by_label.get(part.label)
        agreeing = row["seeds agreeing"] if row else f"{gen['agreeing_seeds']}/{len(gen['seed_verdicts'])}"
        rows.append({"method": part.label, "paper": row["paper"] if row else "—", "ours": gen["label"],
                     "seeds agreeing": agreeing, "caveat": _caveat(part, row)})
    return pd.DataFrame(rows)
