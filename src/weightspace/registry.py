"""The one registry of generators and study methods.

A generator is a :class:`~weightspace.generator.Generator` subclass; it registers under its ``name``
when the class is defined. A study method is a generator plus its data setting (a
:class:`~weightspace.zoo.setting.DataSetting`, registered with
:func:`~weightspace.zoo.setting.register_method`). The generator lookup, the audit (which scores a
zoo the way the method that built it says), the study and the CLI all read this module.

Built-in generators and methods live in modules that are imported on first use (``BUILTIN``), so
importing weightspace does not import every generative network.
"""

from __future__ import annotations

import importlib
from typing import Any

from .errors import ConfigError

# name → the module that defines (and so registers) it
BUILTIN = {
    "noise": "weightspace.baselines",
    "average": "weightspace.baselines",
    "gaussian": "weightspace.baselines",
    "aligned-interpolation": "weightspace.baselines",
    "pdiff": "weightspace.generative.pdiff",
    "hyperrep": "weightspace.generative.hyperrep",
    "gpt": "weightspace.generative.gpt",
    "hyperdiffusion": "weightspace.generative.hyperdiffusion",
    "aligned": "weightspace.generative.aligned",
    "aligned-flow": "weightspace.generative.aligned",
    "aligned-mixture": "weightspace.generative.aligned",
}
BUILTIN_METHODS = ("pdiff", "hyperrep", "gpt", "hyperdiffusion", "aligned")  # the study's default methods

GENERATORS: dict[str, type] = {}
SETTINGS: dict[str, Any] = {}


def _load(name: str, table: dict) -> None:
    if name not in table and isinstance(name, str) and name in BUILTIN:
        importlib.import_module(BUILTIN[name])


def generator_names() -> list[str]:
    """Every generator that can be made by name: the built-in ones (imported or not) and any registered since."""
    return sorted(set(BUILTIN) | set(GENERATORS))


def generator_class(name: str) -> type:
    _load(name, GENERATORS)
    if not isinstance(name, str) or name not in GENERATORS:
        raise ConfigError(f"generator: expected one of {generator_names()}, got {name!r}")
    return GENERATORS[name]


def method_names() -> list[str]:
    """Every study method: the built-in ones first, then any registered since, in registration order."""
    return [*BUILTIN_METHODS, *(m for m in SETTINGS if m not in BUILTIN_METHODS)]


def setting(name: str) -> Any:
    """The data setting of study method ``name``."""
    _load(name, SETTINGS)
    if not isinstance(name, str) or name not in SETTINGS:
        raise ConfigError(f"method: expected one of {method_names()}, got {name!r}")
    return SETTINGS[name]
