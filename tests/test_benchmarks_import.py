"""Every benchmark script imports: a refactor that moves a name the scripts use shows here, not the
next time someone measures."""

import importlib.util
import sys
from pathlib import Path

import pytest

BENCHMARKS = sorted((Path(__file__).parent.parent / "benchmarks").glob("*.py"))


@pytest.mark.parametrize("path", BENCHMARKS, ids=lambda p: p.name)
def test_benchmark_imports(path, monkeypatch):
    monkeypatch.syspath_prepend(str(path.parent))  # the scripts share benchmarks/_training.py
    spec = importlib.util.spec_from_file_location(f"benchmark_{path.stem}", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)  # runs the imports and definitions, not main()
    assert path.stem.startswith("_") or callable(getattr(module, "main", None))
    sys.modules.pop(f"benchmark_{path.stem}", None)
