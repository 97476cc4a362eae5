"""Dependencies point one way: the audit measures any generator's models, so importing it must not
pull in our generative methods; the study is what joins the two (and registers the methods)."""

import subprocess
import sys

import pytest
import torch

from weightspace.audit import register_zoo_method, zoo_method
from weightspace.audit.run import ZooEvaluator
from weightspace.errors import ConfigError
from weightspace.space import WeightSpace
from weightspace.zoo import Zoo


def _modules_after_import(module: str) -> set[str]:
    code = f"import sys, {module}; print('\\n'.join(sorted(sys.modules)))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    return set(out.split())


@pytest.mark.parametrize("module", ["weightspace.audit", "weightspace.audit.run", "weightspace.audit.external",
                                    "weightspace.baselines"])
def test_audit_and_baselines_import_nothing_from_generative(module):
    loaded = _modules_after_import(module)
    assert module in loaded
    assert not {m for m in loaded if m.startswith("weightspace.generative")}
    assert not {m for m in loaded if m.startswith("weightspace.study")}


def test_the_study_registers_the_methods_with_the_audit():
    loaded = _modules_after_import("weightspace.study")
    assert "weightspace.generative.methods" in loaded


def _zoo(tmp_path, method: str) -> Zoo:
    space = WeightSpace.from_state_dict({"w": torch.zeros(2, 3)})
    zoo = Zoo.create(tmp_path / method, space, architecture={"name": "toy"}, task={"name": "toy"}, config={"method": method})
    zoo.add_many([(f"m{i}", torch.full((6,), float(i)), {"run_id": f"r{i}", "seed": i, "hparams": {}})
                  for i in range(3)])
    return Zoo.open(tmp_path / method)


def test_a_zoo_of_an_unregistered_method_is_refused_by_name(tmp_path):
    zoo = _zoo(tmp_path, "not-a-method")
    with pytest.raises(ConfigError, match="'not-a-method'.*register_zoo_method"):
        ZooEvaluator(zoo)


def test_a_registered_method_scores_its_zoo(tmp_path):
    class Shapes:  # scores its zoo as shapes: quality = first coordinate
        @staticmethod
        def training_weights(zoo):
            return zoo.load()[0][:2]

        @staticmethod
        def quality(zoo, weights):
            return weights[:, 0]

        @staticmethod
        def shapes(zoo, weights):
            return [w.reshape(2, 3) for w in weights]

    register_zoo_method("toy-shapes", lambda: Shapes)
    zoo = _zoo(tmp_path, "toy-shapes")
    assert zoo_method(zoo) is Shapes
    ev = ZooEvaluator(zoo)
    assert not ev.classifier
    s = ev.model_set("g", torch.arange(12.0).reshape(2, 6))
    assert s.quality.tolist() == [0.0, 6.0] and len(s.points) == 2
