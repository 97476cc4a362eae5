"""The study, the generate commands and 'weightspace audit' end to end on tiny settings."""

import json
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest
import torch

from weightspace.cli import main
from weightspace.generative.methods import METHODS, method_module
from weightspace.study import run_study
from weightspace.study.presets import PAPER_NAMES
from weightspace.study.run import COPIES
from weightspace.zoo import Zoo

from .browser import inspect_page


def test_every_method_module_provides_what_the_study_calls():
    for name in METHODS:
        module = method_module(name)
        for fn in ("build_data", "training_weights", "fit_context", "n_samples", "quality"):
            assert callable(getattr(module, fn, None)), f"{name}.{fn}"
        assert callable(getattr(module, "predictions", None)) or callable(getattr(module, "shapes", None))
    # the paper's sample counts (HyperDiffusion's depends on its zoo: tested with it)
    assert [method_module(m).n_samples(None) for m in ("pdiff", "hyperrep", "gpt")] == [200, 200, 128]


def test_bad_worker_count_is_named(tmp_path, capsys):
    assert main(["study", "--workers", "0", "--out", str(tmp_path), "--quiet"]) == 2
    assert "--workers" in capsys.readouterr().err
    assert not (tmp_path / "report.html").exists()


@pytest.fixture(scope="module")
def pdiff_study(tmp_path_factory):
    out = tmp_path_factory.mktemp("study")
    run_study(out, preset="tiny", methods_=["pdiff"], seed=3, seeds=2, progress=False)
    return out


def test_study_report_and_results(pdiff_study):
    results = json.loads((pdiff_study / "results.json").read_text())
    row, held = results["summary"]
    assert (row["method"], row["group"], held["group"]) == ("P-diff", "generated", "held-out runs")
    assert row["verdict"] in {"replicates", "interpolates", "novel and good", "no better than noise"}
    assert row["beats noise"].split()[0] in {"yes", "no"} and row["replicates"].split()[0] in {"yes", "no"}
    first, second = results["results"]["pdiff"]["seeds"]
    verdict = first["verdicts"]["P-diff"]
    assert verdict["replica_measure"] == "aligned_min_l2"
    assert set(first["verdicts"]) >= {"P-diff", "held-out runs", "per-parameter Gaussian"}
    # the summary pools the two seeds: the most frequent verdict, medians of the numbers
    pooled = results["results"]["pdiff"]["pooled"]["P-diff"]
    calls = [first["verdicts"]["P-diff"]["verdict"], second["verdicts"]["P-diff"]["verdict"]]
    assert pooled["seed_verdicts"] == calls and pooled["stable"] == (calls[0] == calls[1])
    assert row["verdict"].startswith(pooled["verdict"]) and row["seeds"] == 2
    assert pooled["median_quality"] == pytest.approx(
        np.median([first["verdicts"]["P-diff"]["median_quality"], second["verdicts"]["P-diff"]["median_quality"]]))
    assert row["quality (generated)"] == pytest.approx(pooled["median_quality"], rel=1e-3)
    # --seed seeds everything and the configs say so: the data once, one generator fit per seed
    configs = results["configs"]
    assert configs["seeds"] == [3, 4] and configs["methods"]["pdiff"]["data"]["seed"] == 3
    assert [g["config"]["seed"] for g in configs["methods"]["pdiff"]["generators"]] == [3, 4]
    assert set(configs["methods"]["pdiff"]) >= {"data", "generators", "samples", "noise_sigmas", "paper_sigmas"}
    assert Zoo.open(pdiff_study / "pdiff" / "zoo").info["config"]["seed"] == 3
    # the σ sweep reaches past the generated models' distance, plus the paper's two σ
    sigmas = configs["methods"]["pdiff"]["noise_sigmas"]
    assert len(sigmas) == 10 and sum(name.endswith("(paper)") for name in sigmas) == 2
    assert results["rule"] and "10% quantile" in " ".join(results["rule"])
    seen = inspect_page(pdiff_study / "report.html")
    assert seen["summary_rows"] == 2 and seen["images"] >= 6 and seen["decoded"] == seen["images"]
    for width in (900, 1400):  # nothing wider than the window outside a scroll box
        page = inspect_page(pdiff_study / "report.html", width=width)
        assert page["overflowing"] == [] and page["page_overflow"] <= 0, (width, page)


def test_a_study_run_again_reuses_its_fits_and_gives_the_same_verdicts(pdiff_study, tmp_path):
    out = tmp_path / "again"
    shutil.copytree(pdiff_study, out)
    saved = {p: p.stat().st_mtime_ns for p in (out / "pdiff").glob("generator-seed*/state.safetensors")}
    assert len(saved) == 2
    run_study(out, preset="tiny", methods_=["pdiff"], seed=3, seeds=2, progress=False)
    assert {p: p.stat().st_mtime_ns for p in saved} == saved  # loaded, not refitted
    before, after = (json.loads((d / "results.json").read_text())["results"]["pdiff"]["pooled"]
                     for d in (pdiff_study, out))
    assert json.dumps(before, sort_keys=True) == json.dumps(after, sort_keys=True)
    part = json.loads((out / "pdiff" / "results.json").read_text())  # written when the method finished
    assert [s["seed"] for s in part["seeds"]] == [3, 4] and part["pooled"]["P-diff"]["verdict"]


def test_generate_commands_and_audit_of_own_models(pdiff_study, tmp_path, capsys):
    zoo = str(pdiff_study / "pdiff" / "zoo")
    gen = tmp_path / "gen"
    assert main(["generate", "fit", "pdiff", "--zoo", zoo, "--out", str(gen), "--quiet",
                 "--set", "ae_steps=60", "--set", "ddpm_steps=60"]) == 0
    for name in ("a", "b"):
        assert main(["generate", "sample", str(gen), "-n", "6", "--seed", "3", "--out", str(tmp_path / name),
                     "--quiet"]) == 0
    wa, df = Zoo.open(tmp_path / "a").load()
    wb, _ = Zoo.open(tmp_path / "b").load()
    assert wa.shape[0] == 6 and torch.equal(wa, wb)
    assert df["test_acc"].notna().all()

    assert main(["audit", "--train", zoo, "--generated", str(tmp_path / "a"), "--out", str(tmp_path / "r")]) == 0
    assert "generated" in capsys.readouterr().out
    res = json.loads((tmp_path / "r" / "results.json").read_text())
    assert res["summary"][0]["method"] == "generated"

    # Precomputed predictions: the audit needs no weights.
    from weightspace.zoo.build import task_for_zoo

    preds = task_for_zoo(Zoo.open(zoo)).predictions(wa).numpy()
    np.save(tmp_path / "preds.npy", preds)
    assert main(["audit", "--train", zoo, "--generated", str(tmp_path / "preds.npy"), "--out",
                 str(tmp_path / "r2")]) == 0
    res2 = json.loads((tmp_path / "r2" / "results.json").read_text())
    assert res2["summary"][0]["similarity to reference"] == pytest.approx(
        res["summary"][0]["similarity to reference"])
    np.save(tmp_path / "bad.npy", preds[:, :10])
    assert main(["audit", "--train", zoo, "--generated", str(tmp_path / "bad.npy"), "--out",
                 str(tmp_path / "r3")]) == 2
    assert "cover 10 examples" in capsys.readouterr().err


@pytest.mark.slow
def test_tiny_study_of_all_four_methods(tmp_path):
    # The one-process reference runs in a fresh process: inside the test session, after other slow
    # tests, the same in-process run gave other P-diff checkpoints (cause not found yet).
    alone = tmp_path / "alone"
    subprocess.run([sys.executable, "-m", "weightspace.cli", "study", "--preset", "tiny", "--methods", "pdiff",
                    "--seed", "3", "--workers", "1", "--out", str(alone), "--quiet"], check=True,
                   env={**os.environ, "OMP_NUM_THREADS": "1"}, capture_output=True)
    out = tmp_path / "both"
    run_study(out, preset="tiny", workers=2, seed=3, progress=False)
    seen = inspect_page(out / "report.html")
    summary = json.loads((out / "results.json").read_text())["summary"]
    assert seen["summary_rows"] == len(summary) and seen["decoded"] == seen["images"]
    rows = {r["method"]: r for r in summary if r["group"] == "generated"}
    assert set(rows) == {PAPER_NAMES[m] for m in METHODS}  # the paper's four and ours
    # Two worker processes reach what one process does.
    both = [json.loads((d / "results.json").read_text())["results"]["pdiff"]["seeds"][0]["verdicts"]["P-diff"]
            for d in (out, alone)]
    assert json.dumps(both[0], sort_keys=True) == json.dumps(both[1], sort_keys=True)  # NaN-safe
    assert json.loads((out / "study.json").read_text())["workers"] == 2
    # Where the paper's reference is not the training models, copies of them are audited: the floor of
    # the replica axis (a copy of a HyperDiffusion MLP is its decoded shape, not the ground truth).
    results = json.loads((out / "results.json").read_text())["results"]
    for method in METHODS:
        verdicts = results[method]["seeds"][0]["verdicts"]
        assert (COPIES in verdicts) == (method in ("hyperrep", "hyperdiffusion")), method
        if COPIES in verdicts:
            assert verdicts[COPIES]["distance_ratio"] > 0
    assert results["pdiff"]["reference_span"] > 1  # a fine-tune trajectory spans several of its spacings


@pytest.mark.slow
def test_ablation_table(tmp_path):
    assert main(["study", "--ablation", "hyperrep", "--preset", "tiny", "--out", str(tmp_path), "--quiet"]) == 0
    results = json.loads((tmp_path / "results.json").read_text())
    variants = [r["variant"] for r in results["summary"]]
    assert variants[0] == "default" and "no permutation augmentation" in variants
    assert inspect_page(tmp_path / "report.html")["summary_rows"] == len(variants)


def _pooled(verdict, *, replicates=False, beats=False, interp=False, ratio=1.0, fraction=0.2):
    return {"verdict": verdict, "label": verdict, "replicates": [replicates] * 3, "beats_noise": [beats] * 3,
            "matches_interpolation": [interp] * 3, "distance_ratio": ratio, "fraction_beyond_frontier": fraction}


def test_paper_comparison_reads_each_difference_off_the_studys_own_numbers():
    from weightspace.study.paper_calls import paper_comparison
    from weightspace.study.presets import HELDOUT

    first = {"replica_threshold_ratio": 0.45, "interpolation_region": {"max_similarity": (0.86, 0.93)},
             "median_similarity": 0.94, "median_quality": 0.8}
    results = {
        # HyperDiffusion: a copy of a training MLP is already beyond the replica threshold
        "hyperdiffusion": {"pooled": {"HyperDiffusion": _pooled("interpolates", interp=True, ratio=0.93, beats=True),
                                      COPIES: _pooled("no better than noise", ratio=0.52, beats=True, fraction=0.67)},
                           "first": {"HyperDiffusion": {**first, "median_similarity": 0.9}}},
        # G.pt: replicates as the paper says, but beats noise, as held-out runs do too
        "gpt": {"pooled": {"G.pt": _pooled("replicates", replicates=True, beats=True, ratio=0.3, fraction=0.94),
                           HELDOUT: _pooled("novel and good", beats=True, fraction=1.0)},
                "first": {"G.pt": first}},
        "hyperrep": {"pooled": {"Hyper-Representations": _pooled("replicates", replicates=True, ratio=0.01)},
                     "first": {"Hyper-Representations": first}},
        # P-diff: its samples sit nearer to single checkpoints of a drifting trajectory than blends of them
        "pdiff": {"pooled": {"P-diff": _pooled("no better than noise", ratio=6.7)},
                  "first": {"P-diff": {**first, "replica_measure": "aligned_min_l2", "training_spacing": 0.054,
                                       "distance_ratio": 6.7, "median_min_distance": 0.362,
                                       "interpolation_region": {"max_similarity": (0.86, 0.94),
                                                                "aligned_min_l2": (0.417, 1.22)}}},
                  "span": 40.0},
        "aligned": {"pooled": {}, "first": {}},  # not one of the paper's: no row
    }
    table = paper_comparison(results).set_index("method")
    assert list(table.index) == ["HyperDiffusion", "G.pt", "Hyper-Representations", "P-diff"]
    assert list(table["agrees"]) == [False, True, True, False]
    pdiff = table.loc["P-diff", "where they differ, measured"]
    assert "span 40× their own spacing" in pdiff and "7.72–22.6× the spacing" in pdiff and "at 6.7×" in pdiff
    assert "nearer to single reference models than averages" in pdiff and "aligned_min_l2 0.362 outside" in pdiff
    hd, gpt = table.loc["HyperDiffusion", "where they differ, measured"], table.loc["G.pt", "where they differ, measured"]
    assert "exact copies of the training models sit at 0.52 and are not called replicas" in hd
    assert "cannot show replicas" in hd and "0.67 of the copies of training models" in hd
    assert "0.9 inside [0.86, 0.93]" in hd
    assert "1.00 of the held-out runs" in gpt and "replica" not in gpt
    assert table.loc["Hyper-Representations", "where they differ, measured"] == "—"
