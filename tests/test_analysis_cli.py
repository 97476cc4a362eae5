"""``weightspace predict-accuracy`` and ``weightspace regions`` from the command line."""

import numpy as np
import pytest

from weightspace.analysis.predictors import load_predictor
from weightspace.cli import main
from weightspace.zoo import Zoo
from weightspace.zoo.build import build_zoo

from .test_regions import TINY

ZOO = {
    "dataset": {"name": "digits", "seed": 0},
    "architecture": {"kind": "mlp", "widths": [12]},
    "population": {"runs": 30, "seed": 0, "hparams": {"lr": {"log_uniform": [0.0003, 0.3]}, "epochs": 3,
                                                      "init_scale": {"uniform": [0.5, 1.5]}}},
    "training": {"checkpoint_epochs": [1]},
}


def test_predict_accuracy_trains_saves_and_scores(tmp_path, capsys):
    zoo = build_zoo(ZOO, out=tmp_path / "zoo", progress=False)
    assert main(["predict-accuracy", str(zoo.root), "--predictors", "gbt-statistics,gbt", "--save",
                 str(tmp_path / "p"), "--quiet"]) == 0
    out = capsys.readouterr().out
    assert "kendall_tau" in out and "gbt-statistics" in out and "features that matter most" in out
    pred = load_predictor(tmp_path / "p")
    weights, table = zoo.load()
    assert main(["predict-accuracy", "--model", str(tmp_path / "p"), str(zoo.root),
                 str(zoo.root / table["file"].iloc[0])]) == 0
    lines = capsys.readouterr().out.strip().splitlines()[1:]
    assert len(lines) == len(table) + 1
    scored = np.array([float(line.split()[-1]) for line in lines])
    expected = pred.predict(weights)
    np.testing.assert_allclose(scored[:-1], expected, atol=1e-4)
    assert scored[-1] == pytest.approx(expected[0], abs=1e-4)
    assert lines[0].split()[0] == f"{zoo.root}::{table['model_id'].iloc[0]}"  # the ZOO::ID form merge and align take


def test_predict_accuracy_scores_a_folder_of_checkpoints_as_audit_reads_it(tmp_path, capsys):
    import torch

    from weightspace.io import save_checkpoint

    zoo = build_zoo({**ZOO, "population": {**ZOO["population"], "runs": 10}}, out=tmp_path / "zoo", progress=False)
    assert main(["predict-accuracy", str(zoo.root), "--predictors", "gbt-statistics", "--save", str(tmp_path / "p"),
                 "--quiet"]) == 0
    weights, _ = zoo.load()
    folder = tmp_path / "generated"
    folder.mkdir()
    save_checkpoint(folder / "b.safetensors", zoo.space.unflatten(weights[3]))
    torch.save({"model_state": zoo.space.unflatten(weights[5])}, folder / "a.PT")  # any case, as audit takes it
    (folder / "notes.txt").write_text("not a model")
    capsys.readouterr()
    assert main(["predict-accuracy", "--model", str(tmp_path / "p"), str(folder), "--key", "model_state"]) == 0
    lines = capsys.readouterr().out.strip().splitlines()[1:]
    assert [line.split()[0] for line in lines] == [str(folder / "a.PT"), str(folder / "b.safetensors")]
    expected = load_predictor(tmp_path / "p").predict(weights[[5, 3]])
    np.testing.assert_allclose([float(line.split()[-1]) for line in lines], expected, atol=1e-4)
    empty = tmp_path / "empty"
    empty.mkdir()
    assert main(["predict-accuracy", "--model", str(tmp_path / "p"), str(empty)]) == 2
    assert "no zoo.json and no checkpoint files" in capsys.readouterr().err


def test_analyze_without_out_claims_no_file(tmp_path, capsys, monkeypatch):
    zoo = build_zoo({**ZOO, "population": {**ZOO["population"], "runs": 11}}, out=tmp_path / "zoo", progress=False)
    assert len(zoo) == 22  # more than the 20 rows shown
    monkeypatch.chdir(tmp_path)
    assert main(["analyze", str(zoo.root), "--quiet"]) == 0
    text = capsys.readouterr().out
    assert "... 22 models (all with --out DIR, in DIR/summary.csv)" in text and "wrote" not in text
    assert not list(tmp_path.rglob("summary.csv"))
    assert main(["analyze", str(zoo.root), "--quiet", "--out", str(tmp_path / "a")]) == 0
    text = capsys.readouterr().out
    assert f"... 22 models (all in {tmp_path / 'a' / 'summary.csv'})" in text
    assert (tmp_path / "a" / "summary.csv").is_file()


def test_probe_predictor_scores_each_model_with_its_own_activation(tmp_path, capsys):
    mixed = {**ZOO, "population": {**ZOO["population"], "hparams": {**ZOO["population"]["hparams"],
                                                                     "activation": ["relu", "tanh"]}}}
    zoo = build_zoo(mixed, out=tmp_path / "zoo", progress=False)
    assert main(["predict-accuracy", str(zoo.root), "--predictors", "probe", "--save", str(tmp_path / "p"),
                 "--quiet"]) == 0
    pred = load_predictor(tmp_path / "p")
    weights, table = zoo.load()
    tanh = int(np.flatnonzero(table["hp_activation"] == "tanh")[0])
    capsys.readouterr()
    file = str(zoo.root / table["file"].iloc[tanh])
    assert main(["predict-accuracy", "--model", str(tmp_path / "p"), str(zoo.root), file, "--activation", "tanh"]) == 0
    scored = np.array([float(line.split()[-1]) for line in capsys.readouterr().out.strip().splitlines()[1:]])
    expected = pred.predict(weights, activations=list(table["hp_activation"]))
    np.testing.assert_allclose(scored[:-1], expected, atol=1e-4)
    assert scored[-1] == pytest.approx(expected[tanh], abs=1e-4)
    assert main(["predict-accuracy", "--model", str(tmp_path / "p"), file, "--activation", "swish"]) == 2
    assert "activation: expected one of" in capsys.readouterr().err


def test_predict_accuracy_errors_are_one_line(tmp_path, capsys):
    assert main(["predict-accuracy"]) == 2
    assert "give one zoo directory" in capsys.readouterr().err
    assert main(["predict-accuracy", "--model", str(tmp_path), "x.safetensors"]) == 2
    assert "not a saved accuracy predictor" in capsys.readouterr().err


def test_regions_command_builds_and_writes_tables_and_figures(tmp_path, capsys):
    import yaml

    cfg = tmp_path / "regions.yaml"
    cfg.write_text(yaml.safe_dump({**TINY, "finetune": {**TINY["finetune"], "seeds": 2}}))
    assert main(["regions", str(tmp_path / "r"), "--by", "family", "--build", str(cfg), "--embeddings", "pca",
                 "--samples", "4", "--quiet", "--out", str(tmp_path / "out")]) == 0
    out = capsys.readouterr().out
    assert "metrics:" in out and "starts:" in out
    files = {p.name for p in (tmp_path / "out").iterdir()}
    assert {"metrics.csv", "embedding.csv", "starts.csv", "embeddings.png", "starts.png"} <= files
    assert len(Zoo.open(tmp_path / "r")) > 0
    assert main(["regions", str(tmp_path / "r"), "--by", "colour", "--out", str(tmp_path / "out2")]) == 2
    assert "--by 'colour'" in capsys.readouterr().err


def test_zoo_train_points_a_regions_config_to_the_regions_command(capsys):
    assert main(["zoo", "train", "regions-fashion", "--out", "unused"]) == 2
    assert "weightspace regions DIR --build" in capsys.readouterr().err
