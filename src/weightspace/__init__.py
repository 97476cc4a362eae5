"""weightspace: trained neural-network weights as data.

The public API, one import away (each name is loaded on first use, so ``import weightspace`` stays
light)::

    from weightspace import Zoo, Task, load_dataset, build_architecture
"""

from __future__ import annotations

import importlib

__version__ = "0.1.0"

# name → the module that defines it
_PUBLIC = {
    "WeightSpace": "weightspace.space",
    "Zoo": "weightspace.zoo",
    "Task": "weightspace.task",
    "load_dataset": "weightspace.data",
    "build_architecture": "weightspace.nets",
    "load_checkpoint": "weightspace.io",
    "save_checkpoint": "weightspace.io",
    "merge_state_dicts": "weightspace.merge",
    "Generator": "weightspace.generator",
    "make_generator": "weightspace.generator",
    "load_generator": "weightspace.generator",
    "DataSetting": "weightspace.zoo.setting",
    "register_method": "weightspace.zoo.setting",
    "audit_generated": "weightspace.audit.external",
    "SpectralAnalyzer": "weightspace.analysis",
    "run_study": "weightspace.study",
}
__all__ = sorted(_PUBLIC)


def __getattr__(name: str):
    if name not in _PUBLIC:
        raise AttributeError(f"module 'weightspace' has no attribute {name!r}")
    value = getattr(importlib.import_module(_PUBLIC[name]), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted([*globals(), *__all__])
