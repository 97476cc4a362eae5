"""The command line: zoo train / info / export, resumption after SIGKILL, one-line config errors."""

import os
import signal
import sqlite3
import subprocess
import sys
import time

import pytest
import torch
import yaml

from weightspace.cli import main
from weightspace.zoo import Zoo
from weightspace.zoo.build import build_zoo

CONFIG = {
    "name": "cli-test",
    "dataset": {"name": "digits", "seed": 1},
    "architecture": {"kind": "mlp", "widths": [16]},
    "population": {"runs": 6, "seed": 3, "hparams": {"lr": {"log_uniform": [0.02, 0.1]}, "epochs": 3,
                                                     "optimizer": ["sgd", "adam"], "dropout": [0.0, 0.2]}},
    "training": {"checkpoint_epochs": [1], "chunk_size": 4},
}


def _write(tmp_path, cfg, name="cfg.yaml"):
    path = tmp_path / name
    path.write_text(yaml.safe_dump(cfg))
    return path


def test_train_info_export(tmp_path, capsys):
    cfg = _write(tmp_path, CONFIG)
    out = tmp_path / "zoo"
    assert main(["zoo", "train", str(cfg), "--out", str(out), "--quiet"]) == 0
    zoo = Zoo.open(out, verify=True)
    assert len(zoo) == 12
    saved = yaml.safe_load((out / "config.yaml").read_text())
    assert saved["architecture"]["in_features"] == 64 and saved["out"] == str(out)
    assert zoo.info["config"]["population"]["runs"] == 6
    assert zoo.info["task"]["name"] == "digits"
    capsys.readouterr()
    assert main(["zoo", "info", str(out), "--verify"]) == 0
    text = capsys.readouterr().out
    assert "mlp-64x16x10-relu" in text and "12 checkpoints from 6 runs" in text and "optimizer (2 values)" in text
    example = max(zoo.ids())
    assert f"ids        like {example}" in text and f"{out}::{example}" in text  # the ZOO::ID form, with a real id
    where = next(line for line in text.splitlines() if line.startswith("--where"))
    assert "run_id, seed, epoch, step" in where and "test_acc" in where and "json_extract(hparams, '$.lr')" in where
    assert '"epoch = 3"' in where and "optimizer" in where
    assert main(["zoo", "export", str(out), str(tmp_path / "export"), "--where", "epoch = 3"]) == 0
    from safetensors.torch import load_file

    w = load_file(tmp_path / "export" / "weights.safetensors")["weights"]
    assert torch.equal(w, zoo.load("epoch = 3")[0])


def test_an_unknown_model_id_is_answered_with_the_right_form(tmp_path):
    from weightspace.errors import ZooError

    zoo = build_zoo({**CONFIG, "population": {**CONFIG["population"], "runs": 2}}, out=tmp_path / "z", progress=False)
    with pytest.raises(ZooError, match=r"has no models \['r0001-e0003'\]; did you mean 'r00001-e0003'\? its ids "
                                       r"look like 'r00001-e0003'"):
        zoo.load(ids=["r0001-e0003"])  # one digit short, as the README once wrote them
    with pytest.raises(ZooError, match=r"its ids look like 'r00001-e0003' \(see 'weightspace zoo info'"):
        zoo.load(ids=["final"])


def _subcommands(parser, prefix=()):
    """Every leaf command of the CLI, as its words, with its parser."""
    import argparse

    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                yield from _subcommands(sub, (*prefix, name))
            return
    yield " ".join(prefix), parser


def test_every_command_that_computes_takes_threads():
    from weightspace.cli import build_parser

    without = {name for name, p in _subcommands(build_parser())
               if not any("--threads" in a.option_strings for a in p._actions)}
    assert without == {"zoo info", "zoo export"}  # they read and copy files, nothing more


def test_threads_are_set_for_the_command_and_given_back(tmp_path, monkeypatch, capsys):
    from threadpoolctl import threadpool_info

    from weightspace.cli import merge as merge_cli

    def pools():
        return sorted((i["filepath"], i["num_threads"]) for i in threadpool_info())

    seen = []
    monkeypatch.setattr(merge_cli, "_soup", lambda args: seen.append((torch.get_num_threads(), pools())))
    monkeypatch.chdir(tmp_path)
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        outside = pools()
        assert main(["soup", "zoo"]) == 0 and main(["soup", "zoo", "--threads", "2"]) == 0
        assert torch.get_num_threads() == 2 and pools() == outside
    finally:
        torch.set_num_threads(before)
    (default, default_pools), (two, two_pools) = seen
    assert default == 1 and {n for _, n in default_pools} == {1}  # torch, and every BLAS and OpenMP loaded
    assert two == 2 and {n for _, n in two_pools} == {2}


@pytest.mark.parametrize("value", ["0", "-1", "1025", "two", "1.5", ""])
def test_a_bad_thread_count_is_one_line(value, capsys):
    with pytest.raises(SystemExit) as e:
        main(["generate", "fit", "pdiff", "--zoo", "z", "--out", "o", "--threads", value])
    err = capsys.readouterr().err
    assert e.value.code == 2 and err.count("\n") == 1
    assert "argument --threads: expected an integer in [1, 1024] (this machine has" in err and repr(value) in err


def test_zoo_train_threads_given_override_the_configs(tmp_path, monkeypatch, capsys):
    from weightspace.errors import ConfigError
    from weightspace.zoo import build

    seen = []

    def build_zoo_seen(source, out, **options):
        seen.append((source, torch.get_num_threads()))
        raise ConfigError("seen")

    monkeypatch.setattr(build, "build_zoo", build_zoo_seen)
    cfg = _write(tmp_path, {**CONFIG, "threads": 2})
    assert main(["zoo", "train", str(cfg), "--out", str(tmp_path / "a"), "--quiet"]) == 2
    assert main(["zoo", "train", str(cfg), "--out", str(tmp_path / "b"), "--quiet", "--threads", "1"]) == 2
    (as_written, threads_default), (overridden, threads_given) = seen
    assert as_written == str(cfg) and threads_default == 1  # the build then sets the config's own 2
    assert overridden["threads"] == 1 and overridden["population"] == CONFIG["population"] and threads_given == 1


@pytest.mark.parametrize(
    "patch,message",
    [
        ({"architecture": {"kind": "resnet"}}, "architecture.kind: expected one of"),
        ({"dataset": {"name": "cifar"}}, "dataset.name: expected one of"),
        ({"population": {"hparams": {"optimizer": "rmsprop"}}}, "hparams.optimizer: expected one of ['sgd', 'adam']"),
        ({"population": {"hparams": {"lr": {"normal": [0, 1]}}}}, "population.hparams.lr"),
        ({"population": {"hparams": {"momentun": 0.9}}}, "unknown keys ['momentun']"),
        ({"training": {"batch_sise": 3}}, "training: unknown keys ['batch_sise']"),
        ({"epochs": 3}, "config: unknown keys ['epochs']"),
    ],
)
def test_bad_config_is_one_line_naming_the_key(tmp_path, capsys, patch, message):
    cfg = {**CONFIG, **patch}
    assert main(["zoo", "train", str(_write(tmp_path, cfg)), "--out", str(tmp_path / "z"), "--quiet"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and message in err and "\n" not in err
    assert not (tmp_path / "z" / "models").exists() or not any((tmp_path / "z" / "models").iterdir())


def test_building_a_zoo_gives_the_callers_thread_count_back(tmp_path):
    """A config's ``threads`` sets torch's count for the build only: later work in the same process
    (a study after a zoo build) must run, and round, as before."""
    import torch

    from weightspace.errors import LayoutError
    from weightspace.zoo.build import build_zoo

    before = torch.get_num_threads()
    build_zoo({**CONFIG, "threads": before + 1}, out=tmp_path / "z", progress=False)
    assert torch.get_num_threads() == before
    with pytest.raises(LayoutError):  # a build that fails after setting the count gives it back too
        build_zoo({**CONFIG, "threads": before + 1, "training": {**CONFIG["training"], "trainable": ["nothing.*"]}},
                  out=tmp_path / "y", progress=False)
    assert torch.get_num_threads() == before


def test_shipped_example_config_resolves():
    from weightspace.zoo.config import (
        example_configs,
        population,
        read_config,
        resolve_config,
    )

    assert "digits-mlp" in example_configs()
    cfg = resolve_config(read_config("digits-mlp"))
    runs = population(cfg)
    assert len(runs) == 256 and len({r.seed for r in runs}) == 256
    assert len({r.hparams for r in runs}) > 100  # hyper-parameters are really varied
    assert runs == population(cfg)  # and reproducible
    # every shipped zoo config resolves; the CNN zoo draws each run's activation
    zoos = [n for n in example_configs() if "population" in read_config(n)]
    assert {"digits-mlp", "fashion-cnn-zoo"} <= set(zoos)
    for name in zoos:
        assert population(resolve_config(read_config(name)))
    from weightspace.analysis.regions import resolve_regions_config

    for name in set(example_configs()) - set(zoos):  # the others are knowledge-region configs
        assert resolve_regions_config(read_config(name))["tasks"]
    activations = {r.hparams.activation for r in population(resolve_config(read_config("fashion-cnn-zoo")))}
    assert activations == {"relu", "leaky_relu", "tanh", "gelu"}


def test_resume_after_sigkill_gives_the_uninterrupted_zoo(tmp_path):
    cfg = {**CONFIG, "architecture": {"kind": "mlp", "widths": [256]},
           "population": {"runs": 24, "seed": 5, "hparams": {"epochs": 40, "lr": 0.05}},
           "training": {"checkpoint_epochs": [10, 20], "chunk_size": 4}}
    path = _write(tmp_path, cfg)
    out = tmp_path / "killed"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen([sys.executable, "-m", "weightspace.cli", "zoo", "train", str(path), "--out", str(out),
                             "--quiet"], env=env)
    deadline = time.time() + 120
    rows = 0
    while time.time() < deadline and proc.poll() is None:
        time.sleep(0.05)
        try:
            with sqlite3.connect(out / "index.sqlite", timeout=5) as db:
                rows = db.execute("select count(*) from models").fetchone()[0]
        except sqlite3.Error:
            continue
        if rows >= 12:
            break
    proc.send_signal(signal.SIGKILL)
    assert proc.wait() == -signal.SIGKILL, "the run finished before it could be killed"
    assert 0 < rows < 72

    assert main(["zoo", "train", str(path), "--out", str(out), "--quiet"]) == 0
    zoo = Zoo.open(out, verify=True)
    df = zoo.index()
    assert len(df) == 72 and df["model_id"].is_unique
    reference = build_zoo(cfg, out=tmp_path / "reference", progress=False)
    w, d = zoo.load()
    w_ref, d_ref = reference.load()
    assert list(d["model_id"]) == list(d_ref["model_id"])
    assert torch.allclose(w, w_ref, atol=1e-6)
