"""The Generator interface: anything that learns from a zoo and produces new weight vectors.

The paper's four methods (``weightspace.generative``) and its baselines (``weightspace.baselines``)
all implement it, so the audit treats them alike. It sits in the core because the baselines are the
audit's measuring sticks and the audit must not depend on the generative methods.
A generator works on flat weight vectors ``Tensor[N, P]`` of one layout; what it models may be a
subset of the coordinates (P-diff models only the last BatchNorm layers): ``fit`` then receives
the full vectors, and ``sample`` returns full vectors whose other coordinates come from a
reference model of the training set.
"""

from __future__ import annotations

import contextlib
import inspect
import math
from abc import ABC, abstractmethod
from pathlib import Path
from typing import ClassVar

import torch
from torch import Tensor

from .errors import CheckpointError, ConfigError
from .io import load_checkpoint, save_checkpoint
from .registry import GENERATORS, generator_class, generator_names
from .saved import read_description, write_description

__all__ = ["GENERATORS", "Generator", "generator_names", "load_generator", "make_generator", "seeded",
           "seeded_global_rng"]

GENERATOR_JSON, STATE_FILE = "generator.json", "state.safetensors"


class Generator(ABC):
    """Abstract. Subclasses set ``name``, keep hyper-parameters as plain attributes listed in
    ``config()``, and keep everything learned in ``state()`` (a flat dict of tensors)."""

    name: ClassVar[str]

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        if "name" in cls.__dict__:
            GENERATORS[cls.name] = cls

    @abstractmethod
    def fit(self, weights: Tensor, *, progress: bool = True, **context) -> Generator:
        """Learn from ``weights: Tensor[N, P]``; returns self. ``context`` carries what a method
        needs beyond the weights (e.g. ``losses``/``pairs`` for G.pt, ``space`` for layouts)."""

    @abstractmethod
    def sample(self, n: int, seed: int = 0) -> Tensor:
        """``Tensor[n, P]`` of new weight vectors; the same seed gives the same samples."""

    @abstractmethod
    def config(self) -> dict:
        """JSON-serialisable constructor arguments: ``type(self)(**config())`` rebuilds it unfitted."""

    @abstractmethod
    def state(self) -> dict[str, Tensor]:
        """Everything ``fit`` learned, as named tensors."""

    @abstractmethod
    def load_state(self, state: dict[str, Tensor]) -> None:
        """Restore what ``state()`` returned."""

    def save(self, directory: str | Path) -> Path:
        """``generator.json`` (name + config) and ``state.safetensors``, written atomically."""
        d = Path(directory)
        d.mkdir(parents=True, exist_ok=True)
        save_checkpoint(d / STATE_FILE, {k: v.contiguous() for k, v in self.state().items()},
                        {"generator": self.name})
        write_description(d, GENERATOR_JSON, {"generator": self.name, "config": self.config()})
        return d


def make_generator(name: str, **config) -> Generator:
    """A generator by registered name; each option must be one of its constructor's and of the
    type of its default (an int where the default is a float is fine)."""
    cls = generator_class(name)
    params = inspect.signature(cls).parameters
    for key, value in config.items():
        if key not in params:
            raise ConfigError(f"generator {name!r}: unknown option {key!r}; options: {sorted(params)}")
        default = params[key].default
        optional = value is None and "None" in str(params[key].annotation)  # ``rank: int | None = 16``
        if not optional and not _same_kind(value, default):
            raise ConfigError(f"generator {name!r}: option {key!r} expects a {type(default).__name__} like its "
                              f"default {default!r}, got {value!r}")
    try:
        return cls(**config)
    except (TypeError, ValueError) as e:
        raise ConfigError(f"generator {name!r}: {e}") from None


def _same_kind(value, default) -> bool:
    """Whether ``value`` may stand where ``default`` does (no check where the default says nothing)."""
    if default is inspect.Parameter.empty or default is None:
        return True
    if isinstance(default, bool) or isinstance(value, bool):
        return isinstance(value, bool) and isinstance(default, bool)
    if isinstance(default, float):
        return isinstance(value, (int, float)) and math.isfinite(value)
    if isinstance(default, (int, str)):
        return isinstance(value, type(default))
    if isinstance(default, (tuple, list)):
        return isinstance(value, (tuple, list))
    return True


def load_generator(directory: str | Path) -> Generator:
    """A fitted generator from a directory written by :meth:`Generator.save`."""
    d = Path(directory)
    meta = read_description(d, GENERATOR_JSON, "generator", {"generator": str, "config": dict})
    gen = make_generator(meta["generator"], **meta["config"])
    state, _ = load_checkpoint(d / STATE_FILE)
    try:
        gen.load_state(state)
    except (KeyError, ValueError, TypeError, RuntimeError, IndexError) as e:
        raise CheckpointError(f"{d / STATE_FILE}: not the state of a {meta['generator']!r} generator with "
                              f"this config ({type(e).__name__}: {str(e)[:200]})") from None
    return gen


def seeded(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(int(seed))


@contextlib.contextmanager
def seeded_global_rng(seed: int):
    """Run with torch's global RNG seeded (module inits and dropout draw from it), then restore the
    caller's random state."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(int(seed))
        yield
