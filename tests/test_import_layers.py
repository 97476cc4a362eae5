"""Dependencies point one way and every module keeps its private names to itself; a study method is
one module plus one registration, and the audit scores a zoo the way its method says."""

import ast
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from weightspace.audit.groups import ZooEvaluator
from weightspace.errors import ConfigError
from weightspace.registry import SETTINGS, method_names
from weightspace.space import WeightSpace
from weightspace.zoo import Zoo
from weightspace.zoo.setting import SHAPES, DataSetting, register_method, setting_for_zoo

SRC = Path(__file__).resolve().parents[1] / "src" / "weightspace"


def _module_name(path: Path) -> str:
    parts = path.relative_to(SRC.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imports() -> dict[str, list[tuple[str, list[str], bool]]]:
    """Per module: (imported module, names taken from it, at the top level) for every weightspace import."""
    out = {}
    for path in sorted(SRC.rglob("*.py")):
        name = _module_name(path)
        package = name if path.name == "__init__.py" else name.rsplit(".", 1)[0]
        tree = ast.parse(path.read_text())
        top = set(map(id, tree.body))
        found = []
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom):
                base = package.split(".")
                if node.level:
                    base = base[: len(base) - node.level + 1]
                    target = ".".join([*base, node.module] if node.module else base)
                else:
                    target = node.module or ""
                if target.startswith("weightspace"):
                    found.append((target, [a.name for a in node.names], id(node) in top))
            elif isinstance(node, ast.Import):
                found += [(a.name, [], id(node) in top) for a in node.names if a.name.startswith("weightspace")]
        out[name] = found
    return out


def test_no_module_imports_another_modules_private_names():
    bad = [f"{m} takes {n} from {t}" for m, imports in _imports().items() for t, names, _ in imports
           for n in names if n.startswith("_") and not n.startswith("__")]
    assert not bad, bad


def test_no_import_cycle_between_modules():
    """Imports, at the top of a module or inside a function, form no cycle."""
    modules = _imports()
    graph = {m: {t for t, names, _ in imports for t in [t, *(f"{t}.{n}" for n in names)] if t in modules}
             for m, imports in modules.items()}
    # a package's __init__ re-exporting its submodules is not a dependency of those submodules on it
    graph = {m: {t for t in ts if t != m and not m.startswith(t + ".")} for m, ts in graph.items()}
    state, cycles = {}, []

    def visit(m, path):
        state[m] = 1
        for t in graph[m]:
            if state.get(t) == 1:
                cycles.append(" -> ".join([*path[path.index(t):], t]))
            elif t not in state:
                visit(t, [*path, t])
        state[m] = 2

    for m in graph:
        if m not in state:
            visit(m, [m])
    assert not cycles, cycles


def _modules_after_import(module: str) -> set[str]:
    code = f"import sys, {module}; print('\\n'.join(sorted(sys.modules)))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    return set(out.split())


@pytest.mark.parametrize("module", ["weightspace.audit", "weightspace.audit.groups", "weightspace.audit.external",
                                    "weightspace.baselines"])
def test_audit_and_baselines_import_nothing_from_generative(module):
    loaded = _modules_after_import(module)
    assert module in loaded
    assert not {m for m in loaded if m.startswith("weightspace.generative")}
    assert not {m for m in loaded if m.startswith("weightspace.study")}


def _zoo(tmp_path, method: str) -> Zoo:
    space = WeightSpace.from_state_dict({"w": torch.zeros(2, 3)})
    zoo = Zoo.create(tmp_path / method, space, architecture={"name": "toy"}, task={"name": "toy"}, config={"method": method})
    zoo.add_many([(f"m{i}", torch.full((6,), float(i)), {"run_id": f"r{i}", "seed": i, "hparams": {}})
                  for i in range(3)])
    return Zoo.open(tmp_path / method)


def test_a_zoo_of_an_unregistered_method_is_refused_by_name(tmp_path):
    zoo = _zoo(tmp_path, "not-a-method")
    with pytest.raises(ConfigError, match="method: expected one of .*'not-a-method'"):
        ZooEvaluator(zoo)


def test_a_registered_method_scores_its_zoo(tmp_path):
    class Shapes(DataSetting):  # scores its zoo as shapes: quality = first coordinate
        name, label, kind = "toy-shapes", "Toy shapes", SHAPES

        def build(self, out, *, preset="default", progress=True, seed=0):
            raise NotImplementedError

        def training(self, zoo):
            return zoo.load()[0][:2]

        def quality(self, zoo, weights):
            return weights[:, 0]

        def shapes(self, zoo, weights):
            return [w.reshape(2, 3) for w in weights]

    s = register_method(Shapes())
    try:
        zoo = _zoo(tmp_path, "toy-shapes")
        assert setting_for_zoo(zoo) is s and "toy-shapes" in method_names()
        ev = ZooEvaluator(zoo)
        assert not ev.classifier
        m = ev.model_set("g", torch.arange(12.0).reshape(2, 6))
        assert m.quality.tolist() == [0.0, 6.0] and len(m.points) == 2
    finally:
        SETTINGS.pop("toy-shapes")


def test_register_method_refuses_what_is_not_a_setting():
    with pytest.raises(ConfigError, match="DataSetting instance"):
        register_method(object())
