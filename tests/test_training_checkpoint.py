"""Training checkpoints (the state dict inside, beside the optimiser's state, an EMA copy, ...):
found without code running, chosen with --key, and refused in one line when the choice is the user's."""

from __future__ import annotations

import argparse
import importlib.metadata
import os
from pathlib import Path

import pytest
import torch
import yaml
from safetensors.torch import load_file, save_file
from torch import nn

from weightspace.cli import build_parser, main
from weightspace.errors import (
    AmbiguousCheckpointError,
    CheckpointError,
    ConfigError,
    UnsafeCheckpointError,
)
from weightspace.io import load_checkpoint, load_weights, save_checkpoint
from weightspace.training_checkpoint import MAX_DEPTH, MAX_ENTRIES, find_state_dict
from weightspace.zoo.build import build_zoo


def trained():
    """A small module with a buffer, one Adam step taken: its state dict, optimiser state and loss."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 8), nn.BatchNorm1d(8), nn.ReLU(), nn.Linear(8, 3))
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    loss = model(torch.randn(16, 4)).square().mean()
    loss.backward()
    opt.step()
    return model.state_dict(), opt.state_dict(), loss.detach()


def same(actual: dict, expected: dict) -> None:
    assert list(actual) == list(expected)
    for name, tensor in expected.items():
        assert torch.equal(actual[name], tensor), name


SD, OPT, LOSS = trained()
EMA = {k: v * 0.5 if v.is_floating_point() else v.clone() for k, v in SD.items()}
LIGHTNING = {
    "epoch": 3, "global_step": 120, "pytorch-lightning_version": "2.4.0",
    "state_dict": {f"model.{k}": v for k, v in SD.items()},
    "loops": {"fit_loop": {"state_dict": {}, "epoch_progress": {"total": {"ready": 3, "completed": 3}}}},
    "callbacks": {"ModelCheckpoint{'monitor': 'val_loss'}": {"best_model_score": torch.tensor(0.25),
                                                             "best_model_path": "epoch=2.ckpt", "best_k_models": {}}},
    "optimizer_states": [OPT], "lr_schedulers": [], "hparams_name": "kwargs", "hyper_parameters": {"lr": 1e-3},
}
LAYOUTS = {
    "resemblyzer": ({"step": 1564501, "model_state": SD, "optimizer_state": OPT}, "model_state"),
    "pytorch tutorial": ({"epoch": 3, "model_state_dict": SD, "optimizer_state_dict": OPT, "loss": LOSS},
                         "model_state_dict"),
    "model and optimizer": ({"model": SD, "optimizer": OPT, "epoch": 7, "args": {"lr": 0.1, "widths": [8]}}, "model"),
    "net": ({"net": SD, "scheduler": {"last_epoch": 3, "_last_lr": [0.1]}}, "net"),
    "nested twice": ({"checkpoint": {"model": {"state_dict": SD}}, "epoch": 1}, "checkpoint.model.state_dict"),
}


# ------------------------------------------------------------------------------ finding it
@pytest.mark.parametrize("layout", LAYOUTS)
def test_common_layouts_give_the_models_state_dict(layout):
    tree, key = LAYOUTS[layout]
    found = find_state_dict(tree)
    same(found.state_dict, SD)
    assert found.key == key
    assert found.note.startswith(f"read the state dict under '{key}' (9 tensors, 100 parameters)")


def test_lightning_names_keep_their_prefix_and_the_note_says_how_to_drop_it():
    found = find_state_dict(LIGHTNING)
    same(found.state_dict, {f"model.{k}": v for k, v in SD.items()})
    assert found.key == "state_dict"
    assert "every name starts with 'model.' (--key state_dict.model reads them without it)" in found.note
    assert "also there: 'callbacks' (1 tensor, 1 parameter); --key NAME reads another" in found.note
    same(find_state_dict(LIGHTNING, "state_dict.model").state_dict, SD)


def test_plain_state_dicts_are_read_as_before_and_quietly():
    plain = dict(SD)
    plain["_metadata"] = SD._metadata  # what dict(model.state_dict()) loses, kept by hand: torch's module versions
    found = find_state_dict(plain)
    same(found.state_dict, SD)
    assert found.key is None and found.note is None
    nested = {"encoder": {"w": torch.ones(2)}, "head.w": torch.zeros(1)}  # a nested state dict, not a wrapper
    same(find_state_dict(nested).state_dict, {"encoder.w": torch.ones(2), "head.w": torch.zeros(1)})


def test_a_wrapper_name_wins_over_a_tensor_beside_it():
    found = find_state_dict({"model": SD, "loss": LOSS})
    same(found.state_dict, SD)
    assert found.key == "model"


def test_data_parallel_prefix_is_removed_and_said():
    found = find_state_dict({"state_dict": {f"module.{k}": v for k, v in SD.items()}, "epoch": 2})
    same(found.state_dict, SD)
    assert "removed 'module.' (added by DataParallel) from every name" in found.note


def test_non_tensor_entries_inside_the_state_dict_are_left_out_and_counted():
    inside = {**SD, "version": 2, "_extra_state": [1, 2], "note": "bn folded"}
    found = find_state_dict({"model_state": inside, "optimizer_state": OPT})
    same(found.state_dict, SD)
    assert "left out 3 entries that are not tensors (version, _extra_state, note)" in found.note


@pytest.mark.parametrize("tree, candidates", [
    ({"model": SD, "ema": EMA, "optimizer": OPT, "epoch": 4}, ["model", "ema"]),
    ({"state_dict": SD, "state_dict_ema": EMA, "arch": "mlp", "epoch": 4}, ["state_dict", "state_dict_ema"]),
    ({"student": SD, "teacher": EMA, "step": 9}, ["student", "teacher"]),
])
def test_two_dicts_of_the_same_size_are_the_users_choice(tree, candidates):
    with pytest.raises(AmbiguousCheckpointError) as info:
        find_state_dict(tree)
    assert info.value.candidates == candidates
    message = str(info.value)
    assert "\n" not in message and f"choose one with --key, e.g. --key {candidates[0]}" in message
    assert all(f"'{c}' (9 tensors, 100 parameters)" in message for c in candidates)
    same(find_state_dict(tree, candidates[1]).state_dict, tree[candidates[1]])


def test_one_dict_saved_under_two_names_is_no_dilemma():
    found = find_state_dict({"model": SD, "ema": SD, "epoch": 1})
    assert found.key == "model"


def test_the_largest_dict_wins_and_the_others_are_named():
    small = {"w": torch.ones(3)}
    found = find_state_dict({"generator": SD, "discriminator": small, "opt": [OPT]})
    assert found.key == "generator"
    assert "also there: 'discriminator' (1 tensor, 3 parameters); --key NAME reads another" in found.note


@pytest.mark.parametrize("key", ["checkpoint.model.state_dict", "checkpoint/model/state_dict",
                                 "checkpoint/model.state_dict"])
def test_nested_keys_with_dots_or_slashes(key):
    tree = LAYOUTS["nested twice"][0]
    found = find_state_dict(tree, key)
    same(found.state_dict, SD)
    assert found.note.startswith(f"read the state dict under --key '{key}'")


def test_keys_holding_dots_lists_and_name_prefixes():
    tree = {"runs.best": {"models": [EMA, SD]}, "step": 1}
    same(find_state_dict(tree, "runs.best.models.1").state_dict, SD)
    same(find_state_dict(tree, "runs.best/models/0").state_dict, EMA)
    head = find_state_dict({"state_dict": SD}, "state_dict.3").state_dict  # a name prefix: '3.weight' → 'weight'
    same(head, {"weight": SD["3.weight"], "bias": SD["3.bias"]})


@pytest.mark.parametrize("key, message", [
    ("nope", ("no entry 'nope' (--key); dicts of tensors: 'model_state' (9 tensors, 100 parameters); top-level "
              "entries: step, model_state, optimizer_state")),
    ("step", "--key 'step' is an int, not a dict of tensors"),
    ("optimizer_state", "--key 'optimizer_state' names a dict that holds no tensors"),
    ("model_state.0.weight", "--key 'model_state.0.weight' names one tensor"),
    ("optimizer_state.param_groups.0.lr.x", "'optimizer_state.param_groups.0.lr' is a float, not a dict"),
    ("", "--key '': expected an entry name"),
])
def test_a_key_that_names_no_state_dict_says_what_there_is(key, message):
    with pytest.raises(CheckpointError) as info:
        find_state_dict(LAYOUTS["resemblyzer"][0], key)
    assert message in str(info.value)


def test_nothing_to_read():
    with pytest.raises(CheckpointError, match=r"holds no dict of tensors \(top-level entries: step, optimizer\)"):
        find_state_dict({"step": 3, "optimizer": OPT})
    with pytest.raises(CheckpointError, match="holds a list, not a dict of tensors"):
        find_state_dict([SD])


def test_recursive_and_exponentially_shared_dicts_are_refused():
    loop: dict = {"w": torch.ones(1)}
    loop["self"] = loop
    with pytest.raises(CheckpointError, match=f"nested more than {MAX_DEPTH} dicts deep"):
        find_state_dict(loop)
    bomb: dict = {"w": torch.ones(1)}
    for _ in range(MAX_DEPTH - 2):
        bomb = {"a": bomb, "b": bomb}  # 2^30 paths through 30 dicts
    with pytest.raises(CheckpointError, match=f"more than {MAX_ENTRIES:,} entries"):
        find_state_dict(bomb)


# ------------------------------------------------------------------------------ files
class TouchesAFile:
    """A pickle payload: unpickling it the unsafe way would create ``target``."""

    def __init__(self, target):
        self.target = target

    def __reduce__(self):
        return (os.system, (f"touch {self.target}",))


def test_a_payload_nested_in_a_training_checkpoint_never_runs(tmp_path, capsys):
    pwned = tmp_path / "pwned"
    opt = {"state": {0: {"step": 1, "exp_avg": TouchesAFile(pwned)}}, "param_groups": OPT["param_groups"]}
    path = tmp_path / "train.pt"
    torch.save({"step": 10, "model_state": SD, "optimizer_state": opt}, path)
    for key in (None, "model_state"):
        with pytest.raises(UnsafeCheckpointError, match="it asks for posix.system"):
            load_checkpoint(path, key=key)
    assert main(["analyze", str(path), "--key", "model_state", "--quiet"]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"error: {path}: the file tries to load objects other than tensors") and err.count("\n") == 1
    assert not pwned.exists()


def test_files_log_the_key_they_were_read_from(tmp_path, caplog):
    path = tmp_path / "train.PT"
    torch.save(LAYOUTS["resemblyzer"][0], path)
    with caplog.at_level("INFO", logger="weightspace"):
        tensors, metadata = load_checkpoint(path)
    same(tensors, SD)
    assert metadata == {}
    [record] = caplog.records
    assert record.checkpoint == str(path)
    assert record.getMessage() == "read the state dict under 'model_state' (9 tensors, 100 parameters)"


def test_ambiguous_file_names_itself_and_its_candidates(tmp_path):
    path = tmp_path / "ema.pt"
    torch.save({"model": SD, "ema": EMA}, path)
    with pytest.raises(AmbiguousCheckpointError) as info:
        load_checkpoint(path)
    assert str(info.value).startswith(f"{path}: holds 2 dicts of tensors of about the same size")
    assert info.value.candidates == ["model", "ema"]
    same(load_weights(path, "ema")[0], EMA)


def test_key_is_refused_where_there_is_nothing_to_pick_from(tmp_path):
    save_checkpoint(tmp_path / "m.safetensors", SD)
    with pytest.raises(CheckpointError, match=r"m.safetensors: --key 'model' picks an entry of a training checkpoint"):
        load_checkpoint(tmp_path / "m.safetensors", key="model")
    folder = tmp_path / "hf"
    folder.mkdir()
    save_file(dict(SD), str(folder / "model.safetensors"))
    with pytest.raises(CheckpointError, match="this is a model folder"):
        load_weights(folder, "model")


def resemblyzer_checkpoint() -> Path | None:
    """The pretrained voice encoder the PyPI package resemblyzer ships, if installed."""
    try:
        dist = importlib.metadata.distribution("resemblyzer")
    except importlib.metadata.PackageNotFoundError:
        return None
    return next((Path(dist.locate_file(f)) for f in dist.files or [] if f.name == "pretrained.pt"), None)


def test_real_resemblyzer_checkpoint_is_analysed(tmp_path, capsys):
    path = resemblyzer_checkpoint()
    if path is None:
        pytest.skip("resemblyzer is not installed (pip install --no-deps resemblyzer)")
    tensors, _ = load_checkpoint(path)
    assert len(tensors) == 16 and sum(t.numel() for t in tensors.values()) == 1_423_618
    assert tensors["lstm.weight_ih_l0"].shape == (1024, 40) and tensors["linear.weight"].shape == (256, 256)

    assert main(["analyze", str(path), "--quiet", "--out", str(tmp_path / "a")]) == 0
    out, err = capsys.readouterr()
    assert err == f"note: {path}: read the state dict under 'model_state' (16 tensors, 1,423,618 parameters)\n"
    assert "lstm.weight_hh_l2[gate3]" in out and "linear.weight" in out
    assert "34 rows, 25 layers ok" in out
    assert main(["analyze", str(path), "--quiet", "--key", "optimizer_state"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "dicts of tensors: 'model_state' (16 tensors, 1,423,618 parameters)" in err


# ------------------------------------------------------------------------------ every command
CHECKPOINT_READERS = {("analyze",), ("merge",), ("align",), ("barrier",), ("predict-accuracy",), ("audit",)}


def test_every_command_that_reads_checkpoint_files_takes_key():
    """The commands that read checkpoint files a user names (not zoos only) have --key; zoo configs
    take init_from: {path, key} (see test_zoo_train_init_from_a_training_checkpoint)."""
    def leaves(parser, path):
        subs = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
        if not subs:
            yield path, parser
        for action in subs:
            for name, child in action.choices.items():
                yield from leaves(child, (*path, name))

    with_key = {path for path, parser in leaves(build_parser(), ()) if any(a.dest == "key" for a in parser._actions)}
    assert with_key == CHECKPOINT_READERS


CONFIG = {
    "name": "keys",
    "dataset": {"name": "digits", "seed": 0},
    "architecture": {"kind": "mlp", "widths": [8]},
    "population": {"runs": 2, "seed": 0, "hparams": {"lr": 0.05, "epochs": 2}},
    "training": {"checkpoint_epochs": [2]},
}


@pytest.fixture(scope="module")
def zoo(tmp_path_factory):
    return build_zoo(CONFIG, out=tmp_path_factory.mktemp("keys") / "zoo", progress=False)


@pytest.fixture(scope="module")
def wrapped(zoo, tmp_path_factory):
    """The zoo's two models as training checkpoints holding the model and an EMA-like copy of it."""
    folder = tmp_path_factory.mktemp("wrapped")
    weights, table = zoo.load()
    paths = []
    for i, w in enumerate(weights):
        sd = zoo.space.unflatten(w)
        paths.append(folder / f"run{i}.pt")
        torch.save({"epoch": 2, "model_state": sd, "ema_state": {k: v * 0.9 for k, v in sd.items()},
                    "optimizer_state": {"state": {}, "param_groups": [{"lr": 0.05, "params": [0, 1, 2, 3]}]}},
                   paths[-1])
    return paths, weights, table


def one_line_error(capsys, argv, *needles) -> str:
    assert main([str(a) for a in argv]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and err.count("\n") == 1, err
    assert all(n in err for n in needles), err
    return err


def test_analyze_asks_which_and_reads_the_one_chosen(zoo, wrapped, tmp_path, capsys):
    path = wrapped[0][0]
    one_line_error(capsys, ["analyze", path, "--quiet"], "'model_state' (4 tensors, 610 parameters)",
                   "'ema_state' (4 tensors, 610 parameters)", "--key model_state")
    assert main(["analyze", str(path), "--quiet", "--key", "ema_state", "--out", str(tmp_path / "a")]) == 0
    err = capsys.readouterr().err
    assert err == f"note: {path}: read the state dict under --key 'ema_state' (4 tensors, 610 parameters)\n"
    assert yaml.safe_load((tmp_path / "a" / "config.json").read_text())["key"] == "ema_state"
    one_line_error(capsys, ["analyze", zoo.root, "--key", "model"], "is a zoo")


def test_merge_reads_the_key_of_every_training_checkpoint(zoo, wrapped, tmp_path, capsys):
    paths, weights, _ = wrapped
    config = tmp_path / "merge.yaml"
    config.write_text(yaml.safe_dump({"merge_method": "linear", "models": [{"model": str(p)} for p in paths]}))
    out = tmp_path / "merged.safetensors"
    assert main(["merge", str(config), str(out), "--key", "ema_state"]) == 0
    err = capsys.readouterr().err
    assert err.startswith(f"note: {paths[0]}: read the state dict under --key 'ema_state'")
    assert "note: the same for 1 more files" in err
    expected = zoo.space.unflatten(weights.mean(0) * 0.9)
    for name, tensor in load_file(str(out)).items():
        torch.testing.assert_close(tensor, expected[name])
    assert yaml.safe_load(out.with_suffix(".yaml").read_text())["key"] == "ema_state"
    plain = tmp_path / "plain.yaml"
    save_checkpoint(tmp_path / "m.safetensors", zoo.space.unflatten(weights[0]))
    plain.write_text(yaml.safe_dump({"merge_method": "linear", "models": [{"model": str(tmp_path / "m.safetensors")}]}))
    one_line_error(capsys, ["merge", plain, tmp_path / "x.safetensors", "--key", "ema_state"],
                   "none of the models is a training checkpoint file")


def test_align_and_barrier_read_training_checkpoints_by_key(zoo, wrapped, tmp_path, capsys):
    paths, _, table = wrapped
    ids = [f"{zoo.root}::{m}" for m in table["model_id"]]
    assert main(["align", *ids, "--out", str(tmp_path / "ref.safetensors")]) == 0
    assert main(["align", *map(str, paths), "--zoo", str(zoo.root), "--key", "model_state",
                 "--out", str(tmp_path / "pt.safetensors")]) == 0
    for name, tensor in load_file(str(tmp_path / "ref.safetensors")).items():
        assert torch.equal(load_file(str(tmp_path / "pt.safetensors"))[name], tensor), name
    capsys.readouterr()
    assert main(["barrier", *ids, "--points", "3"]) == 0
    reference = capsys.readouterr().out
    assert main(["barrier", *map(str, paths), "--zoo", str(zoo.root), "--key", "model_state", "--points", "3"]) == 0
    out, err = capsys.readouterr()
    assert out == reference and "--key 'model_state'" in err
    one_line_error(capsys, ["barrier", *ids, "--key", "model_state"], "none of the models is a training checkpoint")


def test_predict_accuracy_scores_training_checkpoints_by_key(tmp_path, capsys):
    from weightspace.analysis.predictors import load_predictor

    from .test_analysis_cli import ZOO

    population = build_zoo(ZOO, out=tmp_path / "zoo", progress=False)
    assert main(["predict-accuracy", str(population.root), "--predictors", "gbt-statistics", "--save",
                 str(tmp_path / "p"), "--quiet"]) == 0
    weights, _ = population.load()
    file = tmp_path / "train.ckpt"
    torch.save({"state_dict": population.space.unflatten(weights[3]), "epoch": 1, "loops": {"a": [1]}}, file)
    capsys.readouterr()
    assert main(["predict-accuracy", "--model", str(tmp_path / "p"), str(file), "--key", "state_dict"]) == 0
    scored = float(capsys.readouterr().out.strip().splitlines()[-1].split()[-1])
    assert scored == pytest.approx(load_predictor(tmp_path / "p").predict(weights[3:4])[0], abs=1e-4)
    one_line_error(capsys, ["predict-accuracy", "--model", tmp_path / "p", population.root, "--key", "state_dict"],
                   "none of the paths is a training checkpoint file")


def test_audit_reads_a_folder_of_training_checkpoints_by_key(zoo, wrapped, tmp_path, capsys):
    from weightspace.audit.external import load_generated

    paths, weights, _ = wrapped
    got, _, _ = load_generated(paths[0].parent, zoo, key="ema_state")
    torch.testing.assert_close(got, weights * 0.9)
    with pytest.raises(AmbiguousCheckpointError):
        load_generated(paths[0].parent, zoo)
    with pytest.raises(ConfigError, match="is not such a folder"):
        load_generated(zoo.root, zoo, key="ema_state")
    one_line_error(capsys, ["audit", "--train", zoo.root, "--generated", paths[0].parent, "--out", tmp_path / "a"],
                   "--key")
    assert not (tmp_path / "a").exists()


def test_zoo_train_init_from_a_training_checkpoint(zoo, wrapped, tmp_path):
    paths, weights, _ = wrapped
    save_checkpoint(tmp_path / "init.safetensors", zoo.space.unflatten(weights[1]))
    base = {**CONFIG, "population": {**CONFIG["population"], "runs": 1}, "training": {"max_steps": 2}}
    a = build_zoo({**base, "init_from": str(tmp_path / "init.safetensors")}, out=tmp_path / "a", progress=False)
    b = build_zoo({**base, "init_from": {"path": str(paths[1]), "key": "model_state"}}, out=tmp_path / "b",
                  progress=False)
    assert torch.equal(a.load()[0], b.load()[0])
    assert b.info["config"]["init_from"] == {"path": str(paths[1]), "key": "model_state"}
    with pytest.raises(ConfigError, match=r"init_from: expected a checkpoint path or \{path: FILE, key: ENTRY\}"):
        build_zoo({**base, "init_from": {"path": str(paths[1])}}, out=tmp_path / "c", progress=False)
