"""The public API: every name in ``weightspace.__all__`` resolves, is the object its module defines,
and importing the package loads none of the heavy layers until a name is used."""

import importlib
import subprocess
import sys

import pytest

import weightspace


@pytest.mark.parametrize("name", weightspace.__all__)
def test_every_public_name_is_its_modules_object(name):
    module = importlib.import_module(weightspace._PUBLIC[name])
    assert getattr(weightspace, name) is getattr(module, name)


def test_the_quickstart_needs_one_import(tmp_path):
    from weightspace import Task, Zoo, build_architecture, load_dataset

    data = load_dataset("digits", seed=0)
    arch = build_architecture({"kind": "mlp", "in_features": 64, "widths": [4], "out_features": 10})
    zoo = Zoo.create(tmp_path / "z", arch.space, architecture=arch.config, task=data.describe(), config={})
    weights = arch.init([0, 1])
    accuracy = Task(data, arch).accuracy(weights)
    assert accuracy.shape == (2,) and zoo.space == arch.space


def test_unknown_names_and_a_light_import():
    with pytest.raises(AttributeError, match="no attribute 'nope'"):
        weightspace.nope  # noqa: B018
    code = "import sys, weightspace; print(any(m.startswith(('weightspace.study', 'weightspace.audit', 'torch')) for m in sys.modules))"
    assert subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip() == "False"
