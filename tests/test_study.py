"""The study, the generate commands and 'weightspace audit' end to end on tiny settings; a method
registered from a module of its own runs through the same study."""

import importlib.util
import json
import os
import shutil
import subprocess
import sys
import textwrap
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from weightspace.audit.controls import AVERAGES, COPIES, EXPECTED, HELDOUT, MIDPOINTS, NEAR_COPIES, STRONG_NOISE
from weightspace.cli import main
from weightspace.registry import BUILTIN_METHODS, SETTINGS, setting
from weightspace.study import run_study
from weightspace.zoo import Zoo
from weightspace.zoo.setting import DataSetting

from .browser import inspect_page


def test_every_built_in_method_is_a_registered_data_setting():
    for name in BUILTIN_METHODS:
        s = setting(name)
        assert isinstance(s, DataSetting) and s.name == name and s.label
        assert s.generator_name in {"pdiff", "hyperrep", "gpt", "hyperdiffusion", "aligned"}
    # the paper's sample counts (HyperDiffusion's depends on its zoo: tested with it)
    assert [setting(m).n_samples(None) for m in ("pdiff", "hyperrep", "gpt")] == [200, 200, 128]
    assert [setting(m).paper.verdict for m in ("pdiff", "hyperrep", "gpt", "hyperdiffusion")] == [
        "interpolates", "replicates", "replicates", "replicates"]
    assert setting("aligned").paper is None


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
    (row,) = results["summary"]  # the headline: one row per method
    assert (row["method"], row["paper"]) == ("P-diff", "interpolates")
    assert row["seeds agreeing"].endswith("/2") and row["caveat"]
    first, second = results["results"]["pdiff"]["seeds"]
    verdict = first["verdicts"]["P-diff"]
    assert verdict["replica_measure"] == "min_l2" and "coverage" in verdict  # fine-tunes of one base: plain L2
    assert set(first["verdicts"]) >= {"P-diff", HELDOUT, "per-parameter Gaussian", "aligned interpolation λ=0.5"}
    # every control of the setting, with its expected answer fixed in code, and what the rule made of it
    controls = {c["control"]: c for c in first["controls"]}
    assert set(controls) == {COPIES, NEAR_COPIES, MIDPOINTS, AVERAGES, STRONG_NOISE, HELDOUT}
    for name, c in controls.items():
        assert c["expected"] == EXPECTED[name] and c["result"] in {"pass", "inconclusive", "FAIL"}
        assert (c["result"] == "inconclusive") == (c["got"] == "inconclusive")
        assert (c["result"] == "pass") == (c["got"] == c["expected"])
    assert set(first["axes"]) == {"interpolation", "replica", "noise"}
    # the pooled call is the majority of the two seeds, or says there is none
    pooled = results["results"]["pdiff"]["pooled"]["P-diff"]
    calls = [first["verdicts"]["P-diff"]["verdict"], second["verdicts"]["P-diff"]["verdict"]]
    assert pooled["seed_verdicts"] == calls and pooled["stable"] == (calls[0] == calls[1])
    assert pooled["verdict"] == (calls[0] if calls[0] == calls[1] else "no majority")
    assert pooled["median_quality"] == pytest.approx(
        np.median([first["verdicts"]["P-diff"]["median_quality"], second["verdicts"]["P-diff"]["median_quality"]]))
    # --seed seeds everything and the configs say so: the data once, one generator fit per seed
    configs = results["configs"]
    assert configs["seeds"] == [3, 4] and configs["methods"]["pdiff"]["data"]["seed"] == 3
    assert [g["config"]["seed"] for g in configs["methods"]["pdiff"]["generators"]] == [3, 4]
    assert Zoo.open(pdiff_study / "pdiff" / "zoo").info["config"]["seed"] == 3
    # the σ sweep reaches past the generated models' distance, plus the paper's two σ
    sigmas = configs["methods"]["pdiff"]["noise_sigmas"]
    assert len(sigmas) == 10 and sum(name.endswith("(paper)") for name in sigmas) == 2
    assert results["rule"] and "10% quantile" in " ".join(results["rule"])


def test_report_reads_as_a_figure_page(pdiff_study):
    page = (pdiff_study / "report.html").read_text()
    assert "Scale: CPU-sized" in page
    headings = inspect_page(pdiff_study / "report.html")["headings"]
    assert headings[:5] == ["Summary", "Controls", "The rule's axes on the controls", "Verdicts against the paper's",
                            "Pooled verdicts per group"]
    seen = inspect_page(pdiff_study / "report.html", width=1400)
    assert seen["summary_rows"] == 1 and seen["images"] >= 8 and seen["decoded"] == seen["images"]
    assert seen["scrolled"] == [], seen["scrolled"]  # every table fits the page at 1,400 px
    for figure in ("pdiff-similarity-hist", "pdiff-coverage", "pdiff-seeds"):
        assert f"id='fig-{figure}'" in page
    for width in (900, 1400):  # nothing wider than the window outside a scroll box
        seen = inspect_page(pdiff_study / "report.html", width=width)
        assert seen["overflowing"] == [] and seen["page_overflow"] <= 0, (width, seen)


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
    assert {c["control"] for c in res["results"]["controls"]} >= {COPIES, NEAR_COPIES, MIDPOINTS}

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


TOY_METHOD = '''
"""A method of its own: a data setting (independent runs of a small MLP on digits, plus held-out
runs) and a generator (the training runs' mean plus Gaussian noise), one module, one registration."""
import torch

from weightspace.data import load_dataset
from weightspace.generator import Generator, seeded
from weightspace.nets import build_architecture
from weightspace.zoo import Zoo
from weightspace.zoo.setting import DataSetting, register_method
from weightspace.zoo.trainer import HParams, Run, TrainConfig
from weightspace.zoo.train import train_population


class ToyGenerator(Generator):
    name = "toy-generator"

    def __init__(self, scale: float = 0.5, seed: int = 0):
        self.scale, self.seed = float(scale), int(seed)

    def fit(self, weights, *, progress=True, **context):
        self.mean, self.std = weights.mean(0), weights.std(0)
        return self

    def sample(self, n, seed=0):
        return self.mean + self.scale * self.std * torch.randn(n, len(self.mean), generator=seeded(seed))

    def config(self):
        return {"scale": self.scale, "seed": self.seed}

    def state(self):
        return {"mean": self.mean, "std": self.std}

    def load_state(self, state):
        self.mean, self.std = state["mean"], state["std"]


class ToySetting(DataSetting):
    name, label, generator, samples = "toy", "Toy method", "toy-generator", 12

    def build(self, out, *, preset="default", progress=True, seed=0):
        data = load_dataset("digits", seed=0)
        arch = build_architecture({"kind": "mlp", "in_features": 64, "widths": [8], "out_features": 10})
        zoo = Zoo.create(out, arch.space, architecture=arch.config, task=data.describe(),
                         config={"method": "toy", "preset": preset, "seed": seed})
        hp = HParams(lr=0.05, epochs=4)
        runs = [Run(f"run{i:02d}", 100 * seed + i, hp) for i in range(12)]
        runs += [Run(f"heldout{i:02d}", 100 * seed + 50 + i, hp) for i in range(6)]
        train_population(arch, data, runs, zoo, TrainConfig(), progress=progress)
        return zoo

    def _rows(self, zoo, held):
        weights, df = zoo.load()
        return weights[torch.tensor(df["run_id"].str.startswith("heldout").to_numpy() == held)]

    def training(self, zoo):
        return self._rows(zoo, False)

    def heldout(self, zoo):
        return self._rows(zoo, True)


register_method(ToySetting())
'''


def test_a_method_registered_from_its_own_module_runs_the_study(tmp_path):
    path = tmp_path / "toy_method.py"
    path.write_text(textwrap.dedent(TOY_METHOD))
    spec = importlib.util.spec_from_file_location("toy_method", path)
    module = importlib.util.module_from_spec(spec)
    try:
        spec.loader.exec_module(module)
        out = tmp_path / "study"
        run_study(out, preset="tiny", methods_=["toy"], workers=1, progress=False)
        results = json.loads((out / "results.json").read_text())
        (row,) = results["summary"]
        assert row["method"] == "Toy method" and row["paper"] == "—"
        seed = results["results"]["toy"]["seeds"][0]
        assert seed["generator"]["name"] == "toy-generator"
        assert {c["control"] for c in seed["controls"]} == set(EXPECTED)
        assert Zoo.open(out / "toy" / "zoo").info["config"]["method"] == "toy"
    finally:
        SETTINGS.pop("toy", None)


@pytest.mark.slow
def test_tiny_study_of_every_method_runs_every_control(tmp_path):
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
    assert seen["summary_rows"] == len(summary) == len(BUILTIN_METHODS) and seen["decoded"] == seen["images"]
    assert {r["method"] for r in summary} == {setting(m).label for m in BUILTIN_METHODS}
    # Two worker processes reach what one process does.
    both = [json.loads((d / "results.json").read_text())["results"]["pdiff"]["seeds"][0]["verdicts"]["P-diff"]
            for d in (out, alone)]
    assert json.dumps(both[0], sort_keys=True) == json.dumps(both[1], sort_keys=True)  # NaN-safe
    assert json.loads((out / "study.json").read_text())["workers"] == 2
    # Every control type in every method's setting; held-out runs where the setting has them; a
    # control that could not be made is named in the notes with its reason.
    results = json.loads((out / "results.json").read_text())["results"]
    for method in BUILTIN_METHODS:
        seed = results[method]["seeds"][0]
        made = {c["control"] for c in seed["controls"]}
        missing = set(EXPECTED) - made - ({HELDOUT} if setting(method).heldout.__func__ is DataSetting.heldout else set())
        assert all(any(note.startswith(m) for note in seed["notes"]) for m in missing), (method, missing, seed["notes"])
        assert {COPIES, NEAR_COPIES, MIDPOINTS, AVERAGES} <= made, method
        for c in seed["controls"]:
            assert c["expected"] == EXPECTED[c["control"]]
    assert results["pdiff"]["reference_span"] > 1  # a fine-tune trajectory spans several of its spacings


def test_gpt_and_weightspace_side_by_side_on_gpts_data(tmp_path):
    """G.pt's setting fits weightspace's generator on the same training runs and audits both in one
    audit: same reference, baselines, controls and held-out runs; both in the fresh-run table."""
    import pandas as pd

    from weightspace.generative.gpt.setting import ALIGNED_ON_GPT
    from weightspace.generator import load_generator, make_generator

    run_study(tmp_path, preset="tiny", methods_=["gpt"], workers=1, progress=False)
    results = json.loads((tmp_path / "results.json").read_text())["results"]["gpt"]
    seed = results["seeds"][0]
    assert {"G.pt", ALIGNED_ON_GPT} <= set(seed["verdicts"])
    assert seed["generator"]["companions"][ALIGNED_ON_GPT]["name"] == "aligned"
    assert results["pooled"][ALIGNED_ON_GPT]["seeds"] == [0]
    # the companion is the aligned generator fitted on G.pt's training runs' final checkpoints
    s = setting("gpt")
    zoo = Zoo.open(tmp_path / "gpt" / "zoo")
    fresh = make_generator("aligned", architecture=dict(zoo.info["architecture"]), seed=0).fit(s.training(zoo))
    saved = load_generator(tmp_path / "gpt" / "aligned-seed0")
    torch.testing.assert_close(saved.sample(5, 0), fresh.sample(5, 0))
    table = pd.read_csv(tmp_path / "against_fresh_runs.csv")
    assert set(table["group"]) == {"generated", ALIGNED_ON_GPT}  # 2 held-out runs: too few for the half control
    assert set(table["result"]) <= {"fail", "inconclusive"}  # no control (2 held-out runs): never a pass
    seen = inspect_page(tmp_path / "report.html", width=1400)
    assert seen["scrolled"] == [], seen["scrolled"]  # the side-by-side tables fit the page too


@pytest.mark.slow
def test_ablation_table(tmp_path):
    assert main(["study", "--ablation", "hyperrep", "--preset", "tiny", "--out", str(tmp_path), "--quiet"]) == 0
    results = json.loads((tmp_path / "results.json").read_text())
    variants = [r["variant"] for r in results["summary"]]
    assert variants[0] == "default" and "no permutation augmentation" in variants
    assert inspect_page(tmp_path / "report.html")["summary_rows"] == len(variants)


def _pooled(verdict, *, replicates=False, beats=False, interp=False, ratio=1.0, fraction=0.2, seeds=None):
    calls = seeds or [verdict] * 3
    return {"verdict": verdict, "label": verdict, "replicates": [replicates] * 3, "beats_noise": [beats] * 3,
            "matches_interpolation": [interp] * 3, "distance_ratio": ratio, "fraction_beyond_frontier": fraction,
            "seed_verdicts": calls, "agreeing_seeds": sum(c == verdict for c in calls), "median_quality": 0.8,
            "quality_floor": 0.75}


def _part(name, label, pooled, first, axes=(), raw=None):
    return SimpleNamespace(name=name, label=label, pooled=pooled, seeds=[{"verdicts": first}], axes=list(axes),
                           raw_verdicts=raw, reference_view="training checkpoints")


def test_paper_comparison_reads_each_difference_off_the_studys_own_numbers():
    from weightspace.study.paper_calls import headline, paper_comparison

    first = {"replica_threshold_ratio": 0.45, "median_similarity": 0.94, "median_quality": 0.8,
             "interpolation_regions": {"aligned midpoints": {"max_similarity": (0.86, 0.93)}}}
    failed = [{"seed": 0, "axis": "replica", "status": "fails", "reason": "control: exact copies at 0.52"}]
    parts = {
        # HyperDiffusion: a copy of a training MLP is not called a replica: that axis fails its controls
        "hyperdiffusion": _part("hyperdiffusion", "HyperDiffusion",
                                {"HyperDiffusion": _pooled("replicates", replicates=True, ratio=0.3),
                                 COPIES: _pooled("inconclusive", ratio=0.52)}, {"HyperDiffusion": first}, failed),
        # G.pt: replicates as the paper says, but beats noise, as held-out runs do too
        "gpt": _part("gpt", "G.pt", {"G.pt": _pooled("replicates", replicates=True, beats=True, ratio=0.3, fraction=0.94),
                                     HELDOUT: _pooled("novel and good", beats=True, fraction=1.0)}, {"G.pt": first}),
        "hyperrep": _part("hyperrep", "Hyper-Representations",
                          {"Hyper-Representations": _pooled("replicates", replicates=True, ratio=0.01)},
                          {"Hyper-Representations": first},
                          raw={"Hyper-Representations (raw checkpoints)": {"verdict": "novel and good"}}),
        # P-diff: the seeds split with no majority: never counted as agreeing
        "pdiff": _part("pdiff", "P-diff", {"P-diff": _pooled("no majority", seeds=["interpolates", "replicates",
                                                                                     "no better than noise"])},
                       {"P-diff": first}),
        "aligned": _part("aligned", "Aligned Gaussian (weightspace)",
                         {"Aligned Gaussian (weightspace)": _pooled("novel and good", beats=True)},
                         {"Aligned Gaussian (weightspace)": first}),  # not one of the paper's: no row
    }
    table = paper_comparison(parts).set_index("method")
    assert list(table.index) == ["HyperDiffusion", "G.pt", "Hyper-Representations", "P-diff"]
    # HyperDiffusion says what the paper says, but an axis failed its controls there: not "agrees"
    assert list(table["agrees"]) == [False, True, True, False]
    assert list(table["seeds agreeing"]) == ["3/3", "3/3", "3/3", "1/3"]
    hd, gpt = table.loc["HyperDiffusion", "where they differ, measured"], table.loc["G.pt", "where they differ, measured"]
    assert "replica axis inconclusive in this setting (seed 0): control: exact copies at 0.52" in hd
    assert "beats-noise axis: 0.94" in gpt and "held-out runs: 1.00 beyond" in gpt
    assert table.loc["Hyper-Representations", "where they differ, measured"] == "—"
    rows = headline(list(parts.values()), paper_comparison(parts)).set_index("method")
    assert rows.loc["Aligned Gaussian (weightspace)", "paper"] == "—"
    assert rows.loc["P-diff", "ours"] == "no majority" and "no majority" in rows.loc["P-diff", "caveat"]
    assert "raw checkpoints the first seed's call is 'novel and good'" in rows.loc["Hyper-Representations", "caveat"]
    assert rows.loc["HyperDiffusion", "caveat"].startswith("replica axis inconclusive")
