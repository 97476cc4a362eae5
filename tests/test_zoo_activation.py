"""A zoo whose runs drew their own activation: every evaluation uses the activation a model trained with."""

import pytest
import torch

from weightspace.cli import main
from weightspace.errors import ZooError
from weightspace.merge.sources import load_model
from weightspace.nets import build_architecture
from weightspace.task import Task
from weightspace.zoo.build import build_zoo, task_for_zoo, zoo_activation

CONFIG = {
    "name": "two-activations",
    "dataset": {"name": "digits", "seed": 0},
    "architecture": {"kind": "mlp", "widths": [16], "activation": "relu"},
    "population": {"runs": 6, "seed": 1, "hparams": {"lr": 0.05, "epochs": 2, "optimizer": "adam",
                                                       "activation": ["relu", "tanh"]}},
    "training": {},
}
WHERE_TANH = "json_extract(hparams, '$.activation') = 'tanh'"


@pytest.fixture(scope="module")
def zoo(tmp_path_factory):
    zoo = build_zoo(CONFIG, out=tmp_path_factory.mktemp("z") / "zoo", progress=False)
    assert set(zoo.index()["hp_activation"]) == {"relu", "tanh"}
    return zoo


def test_a_mixed_zoo_has_no_single_task(zoo):
    with pytest.raises(ZooError, match=r"different activations \['relu', 'tanh'\]"):
        task_for_zoo(zoo)


@pytest.mark.parametrize("activation", ["relu", "tanh"])
def test_each_activation_scores_what_training_recorded(zoo, activation):
    weights, index = zoo.load(f"json_extract(hparams, '$.activation') = '{activation}'")
    task = task_for_zoo(zoo, index)
    assert zoo_activation(zoo, index) == task.arch.activation == activation
    torch.testing.assert_close(task.accuracy(weights, "test").double(),
                               torch.tensor(index["test_acc"].to_numpy()), rtol=0, atol=1e-6)


def test_the_zoo_architecture_alone_scores_tanh_models_wrongly(zoo):
    """What evaluating with the zoo's recorded architecture (relu) did to the tanh runs."""
    weights, index = zoo.load(WHERE_TANH)
    task = task_for_zoo(zoo, index)
    plain = Task(task.dataset, build_architecture(zoo.info["architecture"]))
    assert plain.arch.activation == "relu"
    assert not torch.allclose(plain.accuracy(weights, "test").double(), torch.tensor(index["test_acc"].to_numpy()))


def test_a_zoo_model_reference_carries_its_activation(zoo):
    index = zoo.index(WHERE_TANH)
    model = load_model(f"{zoo.root}::{index['model_id'].iloc[0]}")
    assert model.architecture.activation == "tanh" and model.model_id == index["model_id"].iloc[0]


def test_soup_of_one_activation_and_the_one_line_error_for_several(zoo, tmp_path, capsys):
    assert main(["soup", str(zoo.root), "--where", WHERE_TANH, "--out", str(tmp_path / "tanh")]) == 0
    capsys.readouterr()
    assert main(["soup", str(zoo.root), "--out", str(tmp_path / "all")]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "different activations" in err and "--where" in err
