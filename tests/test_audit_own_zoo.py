"""Auditing your own generator: a stand-in whose answer is known (noisy copies, midpoints, fresh runs)
against a zoo built here, with the default reference (the final checkpoint of every run), the
controls drawn from it, and both input forms (checkpoint files, test predictions)."""

import html
import json

import numpy as np
import pytest
import torch

from weightspace.audit.controls import HELDOUT
from weightspace.audit.external import audit_generated, reference_selection
from weightspace.baselines import AlignedInterpolation
from weightspace.cli import main
from weightspace.data import load_dataset
from weightspace.errors import ConfigError
from weightspace.io import save_checkpoint
from weightspace.nets import build_architecture
from weightspace.zoo import Zoo
from weightspace.zoo.build import task_for_zoo
from weightspace.zoo.train import train_population
from weightspace.zoo.trainer import HParams, Run, TrainConfig

RUNS, HELD, FRESH = 24, 8, 12


@pytest.fixture(scope="module")
def zoo(tmp_path_factory):
    """Runs of a digits MLP with checkpoints at four epochs, as `zoo train` builds them; runs
    'heldout*' are trained alike for the audit's control, runs 'fresh*' alike as a generator's output."""
    data = load_dataset("digits", seed=0)
    arch = build_architecture({"kind": "mlp", "in_features": 64, "widths": [16], "out_features": 10})
    root = tmp_path_factory.mktemp("own") / "zoo"
    z = Zoo.create(root, arch.space, architecture=arch.config, task=data.describe(), config={"name": "own"})
    hp = HParams(lr=0.05, epochs=12)
    runs = [Run(f"run{i:03d}", i, hp) for i in range(RUNS)]
    runs += [Run(f"heldout{i:03d}", 1000 + i, hp) for i in range(HELD)]
    runs += [Run(f"fresh{i:03d}", 2000 + i, hp) for i in range(FRESH)]
    train_population(arch, data, runs, z, TrainConfig(checkpoint_epochs=(3, 6, 9)), progress=False)
    return Zoo.open(root)


def _finals(zoo, prefix):
    w, df = zoo.load("run_id LIKE ? AND epoch = 12", (f"{prefix}%",))
    return w


def _folder(zoo, weights, path):
    path.mkdir()
    for i, w in enumerate(weights):
        save_checkpoint(path / f"model{i:03d}.safetensors", zoo.space.unflatten(w))
    return path


def _noisy_copies(zoo, fraction=0.2, seed=0):
    finals = _finals(zoo, "run")
    d = torch.cdist(finals.double(), finals.double())
    d.fill_diagonal_(float("inf"))
    spacing = float(d.min(1).values.median())
    g = torch.Generator().manual_seed(seed)
    noise = torch.randn(20, finals.shape[1], generator=g)
    noise = noise / noise.norm(dim=1, keepdim=True) * fraction * spacing
    return finals[torch.randperm(RUNS, generator=g)[:20]] + noise


HELD_OUT = "run_id LIKE 'heldout%'"


def _verdict(out):
    res = json.loads((out / "results.json").read_text())
    return res["results"]["verdicts"]["generated"], res


def test_the_default_reference_is_every_runs_final_checkpoint(zoo):
    reference, held, info = reference_selection(zoo, held_out=HELD_OUT)
    assert info["reference"] == "the final checkpoint of every run" and info["reference runs"] == RUNS + FRESH
    assert len(reference) == RUNS + FRESH and len(held) == HELD and info["held-out models"] == HELD
    all_epochs, _, said = reference_selection(zoo, where="run_id LIKE 'run%'", held_out=HELD_OUT)
    assert len(all_epochs) == 4 * RUNS and said["reference"] == "the checkpoints where run_id LIKE 'run%'"
    with pytest.raises(ConfigError, match="--held-out .* selects no model"):
        reference_selection(zoo, held_out="run_id = 'nope'")


def test_noisy_copies_are_replicas_in_both_input_forms(zoo, tmp_path):
    where = "run_id LIKE 'run%' AND epoch = 12"
    copies = _folder(zoo, _noisy_copies(zoo), tmp_path / "copies")
    audit_generated(zoo.root, copies, tmp_path / "a", where=where, held_out=HELD_OUT)
    v, res = _verdict(tmp_path / "a")
    assert v["verdict"] == "replicates", (v["verdict"], v["reason"], res["results"]["axes"])
    assert res["results"]["reference"]["reference models"] == RUNS
    per_model = (tmp_path / "a" / "per_model.csv").read_text()
    assert "model000.safetensors" in per_model  # model ids, not row numbers
    # the same models as test predictions: no distance to the reference, so never "novel and good"
    preds = task_for_zoo(zoo).predictions(_noisy_copies(zoo)).numpy()
    np.save(tmp_path / "preds.npy", preds)
    audit_generated(zoo.root, tmp_path / "preds.npy", tmp_path / "b", where=where, held_out=HELD_OUT)
    v, res = _verdict(tmp_path / "b")
    assert v["verdict"] != "novel and good" and not v["replica_measured"]
    assert res["summary"][0]["replicates"] == "not measured"


def test_against_every_checkpoint_the_reference_is_said(zoo, tmp_path):
    """With every epoch of every run in the reference, neighbouring epochs are each other's nearest:
    the report says which checkpoints the reference holds and how many."""
    copies = _folder(zoo, _noisy_copies(zoo), tmp_path / "copies")
    assert main(["audit", "--train", str(zoo.root), "--generated", str(copies), "--out", str(tmp_path / "r"),
                 "--where", "run_id NOT LIKE 'heldout%'", "--held-out", HELD_OUT, "--quiet"]) == 0
    _, res = _verdict(tmp_path / "r")
    assert res["results"]["reference"]["reference models"] == 4 * (RUNS + FRESH)
    page = html.unescape((tmp_path / "r" / "report.html").read_text())
    assert "the checkpoints where run_id NOT LIKE 'heldout%'" in page


def test_midpoints_interpolate_and_fresh_runs_are_new_or_said_inconclusive(zoo, tmp_path):
    where = "run_id LIKE 'run%' AND epoch = 12"
    finals = _finals(zoo, "run")
    mid = AlignedInterpolation(lam=0.5, space=zoo.space).fit(finals).sample(40, seed=7)
    audit_generated(zoo.root, _folder(zoo, mid, tmp_path / "mid"), tmp_path / "m", where=where, held_out=HELD_OUT)
    v, _ = _verdict(tmp_path / "m")
    assert v["verdict"] == "interpolates", (v["verdict"], v["reason"])
    fresh = _finals(zoo, "fresh")
    audit_generated(zoo.root, _folder(zoo, fresh, tmp_path / "fresh"), tmp_path / "f", where=where,
                    held_out=HELD_OUT)
    v, res = _verdict(tmp_path / "f")
    # digits' test split is small: few test errors; either the rule calls fresh runs new, or it says why not
    assert v["verdict"] == "novel and good" or (v["verdict"] == "inconclusive" and v["reason"]), v
    assert {c["control"] for c in res["results"]["controls"]} >= {HELDOUT}
