"""How the audit scores a zoo that a method's data setting built (HyperDiffusion's shapes, P-diff's
selection of checkpoints): the method's quality, decoded shapes and training checkpoints.

The audit measures any generator's models, so it never imports the generative methods; whoever
knows them registers a loader here by the name a zoo records in ``config["method"]`` (importing
:mod:`weightspace.study` registers the four built-in methods). A registered method provides
``training_weights(zoo)``, ``quality(zoo, weights)`` and, for shapes, ``shapes(zoo, weights)``; one
that declares a ``ZOO_RECORD`` (:class:`weightspace.zoo.method_record.Record`) gets each zoo checked
against it before its functions read the zoo.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from torch import Tensor

from ..errors import ConfigError
from ..zoo.method_record import check_record

_LOADERS: dict[str, Callable[[], Any]] = {}


def register_zoo_method(name: str, load: Callable[[], Any]) -> None:
    """Score zoos whose config names ``name`` with ``load()`` (called on first use)."""
    _LOADERS[name] = load


def zoo_method(zoo) -> Any | None:
    """The registered method whose data setting built ``zoo``; None for a plain zoo."""
    name = zoo.info.get("config", {}).get("method")
    if name is None:
        return None
    if not isinstance(name, str) or name not in _LOADERS:
        raise ConfigError(f"{zoo.root}: built by method {name!r}, which is not registered with "
                          "weightspace.audit.register_zoo_method; import weightspace.study to register the "
                          f"built-in methods (registered: {sorted(_LOADERS)})")
    module = _LOADERS[name]()
    if hasattr(module, "ZOO_RECORD"):
        check_record(zoo, module.ZOO_RECORD)
    return module


def training_weights(zoo) -> Tensor:
    """What a generator of this zoo learned from: the method's selection, else every checkpoint."""
    module = zoo_method(zoo)
    return module.training_weights(zoo) if module else zoo.load()[0]
