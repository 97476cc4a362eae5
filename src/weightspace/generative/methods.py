"""The paper's four generators and weightspace's own (``aligned``) and their data settings, looked up by name.

Each method module provides ``build_data(out, preset=, progress=) -> Zoo``,
``training_weights(zoo)``, ``fit_context(zoo)``, ``n_samples(zoo)`` (the paper's sample count),
``quality(zoo, weights)`` and either
``predictions(zoo, weights)`` (classifiers) or ``shapes(zoo, weights)`` (implicit shapes).
"""

from __future__ import annotations

import importlib
from types import ModuleType

from torch import Tensor

from ..errors import ConfigError
from ..zoo import Zoo
from ..zoo.method_record import check_record

METHODS = ("pdiff", "hyperrep", "gpt", "hyperdiffusion", "aligned")
BASELINES = ("noise", "average", "gaussian")


def method_module(name: str) -> ModuleType:
    if name not in METHODS:
        raise ConfigError(f"method: expected one of {list(METHODS)}, got {name!r}")
    return importlib.import_module(f"weightspace.generative.{name}")


def zoo_method(zoo: Zoo) -> ModuleType | None:
    """The method whose data setting built this zoo, if one did; its zoo.json and index are checked
    against what that method records (its ``ZOO_RECORD``) before the method reads them."""
    name = zoo.info.get("config", {}).get("method")
    if name not in METHODS:
        return None
    module = method_module(name)
    check_record(zoo, module.ZOO_RECORD)
    return module


def training_weights(zoo: Zoo) -> Tensor:
    """What a generator of this zoo learns from: the method's selection, else every checkpoint."""
    module = zoo_method(zoo)
    return module.training_weights(zoo) if module else zoo.load()[0]


def fit_context(zoo: Zoo, generator: str, weights: Tensor) -> dict:
    """Extra ``fit`` arguments: a method's own context for that method's generator; for the
    baselines, the coordinates that vary across the training checkpoints (P-diff's fine-tuned
    layers), so noise and sampling touch only what the generators model."""
    if generator in BASELINES:
        return {"mask": weights.std(0) > 0} if len(weights) > 1 else {}
    module = zoo_method(zoo)
    if module is None or generator != module.__name__.rsplit(".", 1)[-1]:
        return {}
    return module.fit_context(zoo)


def generator_config(zoo: Zoo, generator: str) -> dict:
    """Constructor arguments a method's generator takes from that method's zoo (its architecture,
    for G.pt and Hyper-Representations); nothing for other generators or zoos."""
    module = zoo_method(zoo)
    if module is None or generator != module.__name__.rsplit(".", 1)[-1]:
        return {}
    return module.generator_config(zoo) if hasattr(module, "generator_config") else {}
