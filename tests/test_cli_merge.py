"""``weightspace merge|soup|align|barrier`` end to end on a small digits zoo, and their one-line errors."""

import pytest
import torch
import yaml
from safetensors.torch import load_file, save_file

from weightspace.cli import main
from weightspace.io import save_checkpoint
from weightspace.merge import merge_state_dicts
from weightspace.zoo.build import build_zoo, task_for_zoo

CONFIG = {
    "name": "merge-cli",
    "dataset": {"name": "digits", "seed": 1},
    "architecture": {"kind": "mlp", "widths": [16]},
    "population": {"runs": 4, "seed": 3, "hparams": {"lr": 0.05, "epochs": 3, "optimizer": "adam"}},
    "training": {},
}


@pytest.fixture(scope="module")
def zoo(tmp_path_factory):
    return build_zoo(CONFIG, out=tmp_path_factory.mktemp("z") / "zoo", progress=False)


def _ids(zoo):
    return sorted(zoo.index()["model_id"])


def test_merge_yaml_with_files_and_zoo_entries(zoo, tmp_path, capsys):
    ids = _ids(zoo)
    weights, _ = zoo.load(ids=ids)
    sds = zoo.space.unstack(weights)
    save_checkpoint(tmp_path / "a.safetensors", sds[1])
    hf = tmp_path / "hf"
    hf.mkdir()
    save_file(sds[2], str(hf / "model.safetensors"))
    cfg = {"merge_method": "ties", "base_model": f"{zoo.root}::{ids[0]}",
           "models": [{"model": f"{zoo.root}::{ids[0]}"},
                      {"model": str(tmp_path / "a.safetensors"), "parameters": {"weight": 0.7, "density": 0.5}},
                      {"model": str(hf), "parameters": {"weight": 0.3}},
                      {"model": {"zoo": str(zoo.root), "id": ids[3]}, "parameters": {"density": 0.9}}],
           "parameters": {"density": 0.4}, "seed": 3}
    (tmp_path / "m.yaml").write_text(yaml.safe_dump(cfg))
    assert main(["merge", str(tmp_path / "m.yaml"), str(tmp_path / "out")]) == 0
    got = load_file(str(tmp_path / "out" / "model.safetensors"))
    expected = merge_state_dicts(sds[1:], "ties", base=sds[0],
                                 parameters={"density": [0.5, 0.4, 0.9], "weight": [0.7, 0.3, 1.0]})
    for k in expected:
        torch.testing.assert_close(got[k], expected[k])
    saved = yaml.safe_load((tmp_path / "out" / "merge.yaml").read_text())
    assert saved["merge_method"] == "ties" and len(saved["models"]) == 4 and saved["seed"] == 3
    # the resolved config repeats the merge
    assert main(["merge", str(tmp_path / "out" / "merge.yaml"), str(tmp_path / "again.safetensors"), "--quiet"]) == 0
    again = load_file(str(tmp_path / "again.safetensors"))
    assert all(torch.equal(again[k], got[k]) for k in got)


@pytest.mark.parametrize("text,message", [
    ("- a\n- b\n", "expected a mapping"),
    ("merge_method: ties\nmodels: []\n", "non-empty list"),
    ("merge_method: nope\nmodels: [{model: a}]\n", "expected one of"),
    ("merge_method: ties\nmodels: [{model: a, parameters: {normalize: true}}]\n", "not per-model"),
    ("merge_method: linear\nmodels: [{model: missing.safetensors}]\n", "no such file"),
    ("merge_method: linear\nmodel: [{model: a}]\n", "unknown keys"),
])
def test_merge_config_errors_are_one_line(tmp_path, capsys, text, message):
    (tmp_path / "bad.yaml").write_text(text)
    assert main(["merge", str(tmp_path / "bad.yaml"), str(tmp_path / "o.safetensors")]) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1


@pytest.mark.parametrize("flag", [[], ["--greedy"], ["--greedy", "--strict"], ["--learned"]])
def test_soup(zoo, tmp_path, capsys, flag):
    out = tmp_path / "soup.safetensors"
    assert main(["soup", str(zoo.root), *flag, "--out", str(out), "--quiet"]) == 0
    text = capsys.readouterr().out
    assert "soup: val acc" in text
    if "--greedy" in flag:
        assert "ingredients taken:" in text
        saved = yaml.safe_load(out.with_suffix(".yaml").read_text())
        assert saved["soup_val_acc"] >= saved["best_single_val_acc"]
    assert set(load_file(str(out))) == set(zoo.space.names)


def test_a_soup_at_chance_says_so_and_points_to_align_and_greedy(zoo, tmp_path, capsys):
    from weightspace.zoo import Zoo

    one = build_zoo({**CONFIG, "population": {**CONFIG["population"], "runs": 1}}, out=tmp_path / "z", progress=False)
    w, rows = one.load()
    one.add("negated", -w[0], {"run_id": "negated", "seed": 0, "epoch": int(rows["epoch"][0])})  # the mean: zeros
    assert main(["soup", str(one.root), "--out", str(tmp_path / "s.safetensors"), "--quiet"]) == 0
    captured = capsys.readouterr()
    acc = yaml.safe_load((tmp_path / "s.safetensors").with_suffix(".yaml").read_text())["soup_test_acc"]
    assert acc < 0.15 and "uniform soup: val acc" in captured.out
    warnings = captured.err.splitlines()
    assert len(warnings) == 1 and warnings[0].startswith(f"warning: the uniform soup is at chance (test acc {acc:.3f}; "
                                                         "chance 0.100)")
    assert "weightspace align" in warnings[0] and "--greedy" in warnings[0]
    assert len(Zoo.open(one.root)) == 2
    assert main(["soup", str(zoo.root), "--out", str(tmp_path / "fine.safetensors"), "--quiet", "--greedy"]) == 0
    assert capsys.readouterr().err == ""  # a soup well above chance, of final checkpoints only: nothing to say


def test_a_soup_over_several_epochs_says_so_unless_where_chose(tmp_path, capsys):
    epochs = build_zoo({**CONFIG, "training": {"checkpoint_epochs": [1, 3]}}, out=tmp_path / "z", progress=False)
    assert main(["soup", str(epochs.root), "--out", str(tmp_path / "a.safetensors"), "--quiet"]) == 0
    err = capsys.readouterr().err.splitlines()
    assert 'warning: the soup mixes checkpoints from 2 epochs (1, 3); choose one with --where "epoch = 3"' in err
    assert main(["soup", str(epochs.root), "--out", str(tmp_path / "b.safetensors"), "--quiet",
                 "--where", "epoch = 3"]) == 0
    assert "mixes" not in capsys.readouterr().err


@pytest.mark.parametrize("method", ["weight", "activation"])
def test_align_keeps_the_function_and_moves_closer(zoo, tmp_path, capsys, method):
    ids = _ids(zoo)
    out = tmp_path / "b.safetensors"
    assert main(["align", f"{zoo.root}::{ids[0]}", f"{zoo.root}::{ids[1]}", "--out", str(out),
                 "--method", method]) == 0
    task = task_for_zoo(zoo)
    b = zoo.load(ids=[ids[1]])[0]
    aligned = zoo.space.flatten(load_file(str(out)))[None]
    torch.testing.assert_close(task.logits(aligned), task.logits(b), atol=1e-5, rtol=1e-5)
    saved = yaml.safe_load(out.with_suffix(".yaml").read_text())
    assert saved["l2_after"] < saved["l2_before"]


def test_an_unknown_model_id_shows_the_zoos_own(zoo, tmp_path, capsys):
    ids = _ids(zoo)
    assert main(["align", f"{zoo.root}::{ids[0]}", f"{zoo.root}::r0001-e0003", "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "has no models ['r0001-e0003']" in err and f"did you mean {ids[1]!r}?" in err
    assert not (tmp_path / "o").exists()


def test_align_plain_files_need_a_layout(zoo, tmp_path, capsys):
    w, _ = zoo.load(ids=_ids(zoo)[:2])
    for i in range(2):
        save_file(zoo.space.unflatten(w[i]), str(tmp_path / f"{i}.safetensors"))
    assert main(["align", str(tmp_path / "0.safetensors"), str(tmp_path / "1.safetensors"),
                 "--out", str(tmp_path / "o.safetensors")]) == 2
    assert "--zoo" in capsys.readouterr().err
    assert main(["align", str(tmp_path / "0.safetensors"), str(tmp_path / "1.safetensors"),
                 "--out", str(tmp_path / "o.safetensors"), "--zoo", str(zoo.root)]) == 0


def test_barrier_prints_curves_and_writes_the_figure(zoo, tmp_path, capsys):
    import pandas as pd

    ids = _ids(zoo)
    fig = tmp_path / "curves.png"
    pair = [f"{zoo.root}::{ids[0]}", f"{zoo.root}::{ids[1]}"]
    assert main(["barrier", *pair, "--repair", "--points", "5", "--figure", str(fig)]) == 0
    text = capsys.readouterr().out
    assert "plain" in text and "weight matching + REPAIR" in text and "loss_barrier" in text
    assert "test loss along the straight path from A (λ = 0) to B (λ = 1)" in text and "\nbarriers (" in text
    assert fig.stat().st_size > 1000
    curves = pd.read_csv(tmp_path / "curves.csv")  # beside the figure
    assert list(curves.columns) == ["variant", "lam", "loss", "acc", "error"] and len(curves) == 15
    assert f"→ {tmp_path / 'curves.csv'}" in text
    assert main(["barrier", *pair, "--points", "5", "--figure", str(fig)]) == 2  # the table is not replaced ...
    assert "curves.csv exists" in capsys.readouterr().err and len(pd.read_csv(tmp_path / "curves.csv")) == 15
    assert main(["barrier", *pair, "--points", "5", "--out", str(tmp_path / "out")]) == 0  # ... a folder takes all
    assert {p.name for p in (tmp_path / "out").iterdir()} >= {"curves.csv", "barriers.csv", "curves.png"}
    barriers = pd.read_csv(tmp_path / "out" / "barriers.csv")
    assert list(barriers["variant"]) == ["plain", "weight matching"]
    assert list(barriers.columns) == ["variant", "loss_barrier", "error_barrier"]
