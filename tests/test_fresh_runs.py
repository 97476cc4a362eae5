"""The test against fresh runs: exact values on constructed tables, its own controls on a real audit."""

import numpy as np
import pandas as pd
import pytest

from weightspace.audit.controls import COPIES, HELDOUT, MIDPOINTS
from weightspace.audit.fresh_runs import TARGETS, against_fresh_runs, beyond_every_ratio, judged

SWEEPS = {"noise": {0.1: "noise a", 0.2: "noise b"}}


def _table(groups: dict[str, tuple[np.ndarray, np.ndarray]]) -> pd.DataFrame:
    return pd.concat([pd.DataFrame({"group": g, "model": np.arange(len(s)), "max_similarity": s, "quality": q})
                      for g, (s, q) in groups.items()], ignore_index=True)


def _with_noise(**groups) -> pd.DataFrame:
    rng = np.random.default_rng(0)
    noise = {"noise a": (rng.normal(0.8, 0.01, 40), rng.normal(0.8, 0.01, 40)),
             "noise b": (rng.normal(0.4, 0.01, 40), rng.normal(0.4, 0.01, 40))}
    return _table({**noise, **groups})


def test_the_ratio_is_one_for_a_group_equal_to_the_fresh_runs():
    s, q = np.full(10, 0.5), np.r_[np.full(6, 0.9), np.full(4, 0.1)]  # 6 of 10 above the frontier (0.6 at 0.5)
    r = beyond_every_ratio(_with_noise(a=(s, q), b=(s, q)), "max_similarity", SWEEPS, "a", "b", n_boot=300)
    assert (r["fraction"], r["fraction_fresh"], r["ratio"]) == (0.6, 0.6, 1.0)
    assert r["ci_low"] <= 1.0 <= r["ci_high"]


def test_the_ratio_counts_models_beyond_the_same_frontiers():
    s = np.full(10, 0.5)
    half = np.r_[np.full(3, 0.9), np.full(7, 0.1)]  # 3 beyond
    all_ = np.full(10, 0.9)  # 10 beyond
    r = beyond_every_ratio(_with_noise(a=(s, half), b=(s, all_)), "max_similarity", SWEEPS, "a", "b", n_boot=300)
    assert r["ratio"] == pytest.approx(0.3)
    assert r["ci_high"] < 0.8  # the interval excludes the target's lower end: fails
    none = beyond_every_ratio(_with_noise(a=(s, all_), b=(s, np.full(10, 0.1))), "max_similarity", SWEEPS, "a", "b",
                              n_boot=100)
    assert np.isnan(none["ratio"]) and none["ci_high"] == np.inf  # fresh runs never beyond: no finite ratio


def _verdict(q, sim, cov, auc):
    return {"median_quality": q, "median_similarity": sim, "coverage": cov,
            "two_sample": {"auc": auc, "ci_low": auc - 0.05, "ci_high": auc + 0.05}}


@pytest.mark.parametrize("change, failed", [
    ({}, []),
    ({"q": 0.745}, ["quality"]),                    # 1.5 points below fresh runs
    ({"sim": 0.62}, ["similarity"]),                # 0.01 above fresh runs' error-IoU
    ({"cov": 60.0}, ["coverage"]),                  # 0.8 × fresh runs' coverage
    ({"auc": 0.62}, ["two-sample AUC"]),
    ({"auc": 0.58}, []),                            # point under 0.6, upper end 0.63: passes
])
def test_each_criterion_fails_alone(change, failed):
    s = np.full(10, 0.5)
    table = _with_noise(g=(s, np.full(10, 0.9)), f=(s, np.full(10, 0.9)))
    fresh = _verdict(0.76, 0.61, 75.0, 0.5)
    args = {"q": 0.76, "sim": 0.61, "cov": 75.0, "auc": 0.5, **change}
    out = against_fresh_runs(table, "max_similarity", SWEEPS, {"g": _verdict(**args), "f": fresh}, "g", "f")
    assert [k for k, ok in out["checks"].items() if not ok] == failed
    assert out["passes"] == (not failed)
    assert out["targets"] == TARGETS


def test_the_audit_runs_the_test_and_its_controls(tmp_path):
    """On the aligned method's tiny setting: copies and midpoints are told from fresh runs (AUC 1),
    each with its numbers; the half-against-half control is measured on the held-out runs."""
    from weightspace.study.pipeline import run_method
    from weightspace.study.presets import PRESETS

    r = run_method("aligned", tmp_path, PRESETS["tiny"], seed=0, seeds=1, progress=False)
    audit = r.runs[0].audit
    for control in (COPIES, MIDPOINTS):
        f = audit.verdicts[control]["fresh_runs"]
        assert not f["passes"] and not f["checks"]["two-sample AUC"]
    copies = audit.verdicts[COPIES]["fresh_runs"]
    assert copies["quality"] == audit.verdicts[COPIES]["median_quality"]
    assert copies["quality_fresh"] == audit.verdicts[HELDOUT]["median_quality"]
    half = audit.fresh_control
    assert half is not None and set(half["checks"]) == set(copies["checks"])
    assert abs(half["auc"] - 0.5) < 0.3  # fresh runs against fresh runs: near chance


def test_a_criterion_the_control_fails_cannot_fail_a_group():
    checks = {"beyond every frontier": False, "quality": False, "similarity": True, "coverage": True,
              "two-sample AUC": True}
    group = {"checks": checks, "passes": False}
    weak = {"checks": {**checks, "quality": True}}  # the control fails beyond-every only
    out = judged(group, weak)
    assert (out["outcome"], out["failed"], out["inconclusive"]) == ("fail", ["quality"], ["beyond every frontier"])
    both = judged(group, {"checks": {**checks}})  # the control fails both the group fails
    assert both["outcome"] == "inconclusive" and both["failed"] == []
    good = {"checks": dict.fromkeys(checks, True), "passes": True}
    assert judged(good, weak)["outcome"] == "inconclusive"  # a pass needs the control to pass everything
    assert judged(good, {"checks": dict.fromkeys(checks, True)})["outcome"] == "pass"
    assert judged(good, None)["outcome"] == "inconclusive"  # no control (too few held-out runs)
