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
import json
from abc import ABC, abstractmethod
from pathlib import Path
from typing import ClassVar

import torch
from torch import Tensor

from .io import save_checkpoint

GENERATORS: dict[str, type[Generator]] = {}


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
        save_checkpoint(d / "state.safetensors", {k: v.contiguous() for k, v in self.state().items()},
                        {"generator": self.name})
        tmp = d / ".generator.json.tmp"
        tmp.write_text(json.dumps({"generator": self.name, "config": self.config()}, indent=2))
        tmp.replace(d / "generator.json")
        return d


def seeded(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(int(seed))


@contextlib.contextmanager
def seeded_global_rng(seed: int):
    """Run with torch's global RNG seeded (module inits and dropout draw from it), then restore the
    caller's random state."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(int(seed))
        yield
