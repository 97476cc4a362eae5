"""Every benchmark script imports, and every ``module.name`` it reads from a weightspace module
exists: a refactor that moves a name the scripts use shows here, not the next time someone
measures."""

import ast
import importlib.util
import sys
import types
from pathlib import Path

import pytest

BENCHMARKS = sorted((Path(__file__).parent.parent / "benchmarks").glob("*.py"))


@pytest.mark.parametrize("path", BENCHMARKS, ids=lambda p: p.name)
def test_benchmark_imports_and_its_names_exist(path, monkeypatch):
    monkeypatch.syspath_prepend(str(path.parent))  # the scripts share benchmarks/_training.py
    spec = importlib.util.spec_from_file_location(f"benchmark_{path.stem}", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)  # runs the imports and definitions, not main()
    sys.modules.pop(f"benchmark_{path.stem}", None)
    assert path.stem.startswith("_") or callable(getattr(module, "main", None))
    ours = {k: v for k, v in vars(module).items()
            if isinstance(v, types.ModuleType) and v.__name__.startswith("weightspace")}
    missing = [f"{node.value.id}.{node.attr} (line {node.lineno})" for node in ast.walk(ast.parse(path.read_text()))
               if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and node.value.id in ours
               and not hasattr(ours[node.value.id], node.attr)]
    assert missing == []
