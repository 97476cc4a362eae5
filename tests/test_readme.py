"""The README's code runs as written: its Python blocks in order, in a folder holding what they
name (the digits zoo its shell block builds, checkpoints, a folder of samples), and every command of
its shell blocks is one the CLI accepts."""

import re
import shlex
from pathlib import Path

import pytest
import torch

from weightspace.cli import build_parser, main
from weightspace.io import save_checkpoint
from weightspace.zoo import Zoo

README = Path(__file__).resolve().parents[1] / "README.md"


def _blocks(language: str) -> list[str]:
    return re.findall(rf"```{language}\n(.*?)```", README.read_text(), re.S)


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
    root = tmp_path_factory.mktemp("readme")
    assert main(["zoo", "train", "digits-mlp", "--out", str(root / "runs" / "digits-mlp"), "--quiet"]) == 0
    zoo = Zoo.open(root / "runs" / "digits-mlp")
    weights, _ = zoo.load("epoch = 20 AND run_id IN ('r00000', 'r00001', 'r00002')")
    for name, w in zip(("a", "b", "base"), weights):
        save_checkpoint(root / f"{name}.safetensors", zoo.space.unflatten(w))
    save_checkpoint(root / "model.safetensors", zoo.space.unflatten(weights[0]))
    samples = root / "my-samples"
    samples.mkdir()
    for i, w in enumerate(weights.repeat(4, 1)):
        save_checkpoint(samples / f"s{i:02d}.safetensors", zoo.space.unflatten(w + 0.01 * torch.randn(w.shape)))
    return root


def test_python_blocks_run_in_order(workdir, monkeypatch):
    monkeypatch.chdir(workdir)
    blocks = _blocks("python")
    assert len(blocks) >= 4
    namespace: dict = {}
    for block in blocks:
        exec(compile(block, str(README), "exec"), namespace)  # noqa: S102  (the project's own README)
    assert (workdir / "runs" / "tiny-study" / "report.html").is_file()
    assert (workdir / "runs" / "audit" / "report.html").is_file()


def test_every_shell_command_is_one_the_cli_accepts():
    parser = build_parser()
    commands = [line.split("#")[0].strip() for block in _blocks("sh") for line in block.splitlines()]
    commands = [c for c in commands if c.startswith("weightspace ")]
    assert len(commands) >= 10
    for command in commands:
        args = shlex.split(command)[1:]
        parsed = parser.parse_args(args)  # exits on an unknown command or option
        assert callable(parsed.func), command
