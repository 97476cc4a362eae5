"""The study report's tables: compact enough to read in one screen width, one row per thing the
reader compares, with an interval in one cell; what a cell cannot say goes in short notes under it.
The full rows stay in results.json and the CSV files."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd

from ..audit.report import fmt, interval

NAN = float("nan")


def _seed_columns(rows: list[dict], key: tuple[str, ...], value: str) -> pd.DataFrame:
    """One row per ``key``, one column per seed holding ``value``."""
    df = pd.DataFrame(rows)
    if df.empty:
        return df
    wide = df.pivot_table(index=list(key), columns="seed", values=value, aggfunc="first", sort=False)
    wide.columns = [f"seed {s}" for s in wide.columns]
    return wide.reset_index()


def controls_table(parts: Sequence) -> tuple[pd.DataFrame, list[str]]:
    """Per method and control: the expected verdict and, per seed, the result ("pass", "inconclusive",
    or "FAIL: got …"); notes give each inconclusive or failed control's measured reason once."""
    rows, notes = [], []
    for p in parts:
        for r in p.control_rows:
            result = r["result"] if r["result"] != "FAIL" else f"FAIL: got {r['got']}"
            rows.append({"method": p.label, "control": r["control"].removeprefix("control: "),
                         "expected": r["expected"], "seed": r["seed"], "result": result})
            if r["result"] != "pass" and r.get("reason"):
                notes.append(f"{p.label}, {r['control']}, seed {r['seed']}: {r['reason']}")
    return _seed_columns(rows, ("method", "control", "expected"), "result"), list(dict.fromkeys(notes))


def axes_table(parts: Sequence) -> tuple[pd.DataFrame, list[str]]:
    """Per method and axis, per seed: does the axis separate its controls ("passes", "fails",
    "unchecked")? Notes: why each failing or unchecked one does."""
    rows, notes = [], []
    for p in parts:
        for r in p.axes:
            rows.append({"method": p.label, "axis": r["axis"], "seed": r["seed"], "status": r["status"]})
            if r["status"] != "passes":
                notes.append(f"{p.label}, {r['axis']} axis, seed {r['seed']}: {r['reason']}")
    return _seed_columns(rows, ("method", "axis"), "status"), list(dict.fromkeys(notes))


def pooled_table(parts: Sequence) -> pd.DataFrame:
    """Per method and audited group (generated, controls, held-out runs): the call of most seeds and
    the medians over seeds of what it rests on."""
    rows = []
    for p in parts:
        for r in p.summary:
            lo, hi = r["range of CI low over seeds"], r["range of CI high over seeds"]
            rows.append({"method": p.label, "group": r["group"].removeprefix("control: "), "verdict": r["verdict"],
                         "distance / spacing (bar)": f"{fmt(r['distance / spacing'])} ({fmt(r['replica bar'])})",
                         "beyond noise (CI range)": interval(r["beyond noise frontier"], lo, hi),
                         "quality (floor)": f"{fmt(r['quality'])} ({fmt(r['quality floor'])})",
                         "coverage": r["coverage"], "AUC": r["two-sample AUC"],
                         "errors": _count(r["median test errors"])})
    return pd.DataFrame(rows)


def seed_table(parts: Sequence) -> pd.DataFrame:
    """Per method and seed, the generated group's call and its numbers with their intervals."""
    rows = []
    for p in parts:
        for record in p.seeds:
            v = record["verdicts"][p.label]
            d_lo, d_hi = v.get("distance_ratio_ci", (NAN, NAN))
            f_lo, f_hi = v.get("fraction_ci", (NAN, NAN))
            rows.append({"method": p.label, "seed": record["seed"], "verdict": v["verdict"],
                         "distance / spacing": interval(v.get("distance_ratio", NAN), d_lo, d_hi),
                         "replica bar": v.get("replica_threshold_ratio", NAN),
                         "beyond noise": interval(v.get("fraction_beyond_frontier", NAN), f_lo, f_hi),
                         "quality": v["median_quality"], "coverage": v.get("coverage", NAN),
                         "AUC vs held-out": _auc(v.get("two_sample")),
                         "test errors": _count(v.get("median_errors", NAN))})
    return pd.DataFrame(rows)


FRESH_NOTE = ("Can the group be told from fresh runs? Each group against the held-out runs of its setting and seed, "
              "with the targets fixed in weightspace.audit.fresh_runs before any generator was measured: beyond "
              "every baseline frontier at least 0.9 × the held-out runs' fraction (lower interval end at least "
              "0.8), median quality within 1 point, median max error-IoU at most 0.005 above theirs, coverage at "
              "least 0.9 × theirs, two-sample AUC at most 0.6 (upper end at most 0.65). The row 'fresh half vs "
              "half' is the test's own control: one half of the held-out runs against the other, which must pass. "
              "A group fails on the criteria it misses where the control passes; a criterion the control fails "
              "too (too few held-out runs to show it) is inconclusive, and a group passes only when the control "
              "passes every criterion.")
CRITERIA = {"beyond every frontier": "beyond", "quality": "quality", "similarity": "IoU", "coverage": "coverage",
            "two-sample AUC": "AUC"}
HALVES = "fresh half vs half"


def fresh_runs_table(parts: Sequence) -> tuple[pd.DataFrame, list[str]]:
    """Per method, generated group (the method's and any companion's) and seed: the test against
    fresh runs, then its control (one half of the held-out runs against the other); notes name the
    criteria each control fails, which are inconclusive for that method and seed."""
    rows, notes = [], [FRESH_NOTE]
    for p in parts:
        for record in p.seeds:
            groups = [(g, v["fresh_runs"]) for g, v in record["verdicts"].items()
                      if g in (p.label, *record["generator"].get("companions", {})) and "fresh_runs" in v]
            control = record.get("fresh_runs_control")
            if control:
                groups.append((HALVES, control))
                missed = [CRITERIA[k] for k, ok in control["checks"].items() if not ok]
                if missed:
                    notes.append(f"{p.label}, seed {record['seed']}: the control fails {', '.join(missed)}; no group "
                                 "can pass or fail on them")
            for g, f in groups:
                lo, hi = f["beyond_ratio_ci"]
                a_lo, a_hi = f.get("auc_ci", (NAN, NAN))
                if g == HALVES:
                    result = "pass" if f["passes"] else "fail"
                    failed = [k for k, ok in f["checks"].items() if not ok]
                else:
                    result, failed = f["outcome"], f["failed"]
                rows.append({"method": p.label, "group": "generated" if g == p.label else g, "seed": record["seed"],
                             "beyond every / fresh": interval(f["beyond_ratio"], lo, hi),
                             "quality − fresh": f["quality_difference"],
                             "IoU − fresh": f.get("similarity_excess", NAN),
                             "coverage / fresh": f.get("coverage_ratio", NAN),
                             "AUC": interval(f.get("auc", NAN), a_lo, a_hi), "result": result,
                             "failed on": ", ".join(CRITERIA[k] for k in failed) or "–"})
    return pd.DataFrame(rows), list(dict.fromkeys(notes))


def _count(value) -> int | float:
    """A median count as an integer (NaN where there is none)."""
    return round(value) if value is not None and np.isfinite(value) else NAN


SHORT = {"per-parameter Gaussian": "Gaussian", "aligned interpolation": "aligned λ"}


def beyond_every_rows(table: pd.DataFrame) -> pd.DataFrame:
    """The beyond-every-frontier table with the interval in one cell, then the fraction beyond each
    baseline's frontier alone."""
    rows = []
    for r in table.to_dict("records"):
        per = {SHORT.get(k.removeprefix("beyond "), k.removeprefix("beyond ")): v for k, v in r.items()
               if k.startswith("beyond ") and k != "beyond every frontier"}
        rows.append({"group": r["group"].removeprefix("control: "), "seed": r["seed"],
                     "beyond every frontier": interval(r["beyond every frontier"], r["CI low"], r["CI high"]),
                     **per, "similarity": r["median similarity"], "quality": r["median quality"]})
    return pd.DataFrame(rows)


def _auc(result: dict | None) -> str:
    """The two-sample AUC against held-out runs with its interval, or a dash where there are none."""
    return "–" if not result else interval(result["auc"], result["ci_low"], result["ci_high"])
