"""Architectures by the ``kind`` their configs (as saved in a zoo) name."""

from __future__ import annotations

from collections.abc import Mapping

from ..errors import ConfigError
from .base import Architecture
from .cnn import CNN
from .mlp import MLP
from .occupancy import OccupancyMLP

ARCHITECTURES: dict[str, type[Architecture]] = {a.kind: a for a in (MLP, CNN, OccupancyMLP)}


def build_architecture(config: Mapping) -> Architecture:
    """An architecture from its config dict (as saved in a zoo), with errors naming the bad key."""
    config = dict(config)
    kind = config.pop("kind", None)
    if kind not in ARCHITECTURES:
        raise ConfigError(f"architecture.kind: expected one of {sorted(ARCHITECTURES)}, got {kind!r}")
    cls = ARCHITECTURES[kind]
    fields = {f for f in cls.__dataclass_fields__}
    unknown = set(config) - fields
    if unknown:
        raise ConfigError(f"architecture: unknown keys {sorted(unknown)} for kind {kind!r}; allowed: {sorted(fields)}")
    try:
        return cls(**config)
    except (TypeError, ValueError, OverflowError) as e:  # e.g. int() of a width that is not a number
        raise ConfigError(f"architecture ({kind}): {e}") from None
