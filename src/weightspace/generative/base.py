"""Building generators by name and loading saved ones. The interface itself (``Generator``) and its
registry live in the core (:mod:`weightspace.generator`); they are re-exported here."""

from __future__ import annotations

import importlib
import json
from pathlib import Path

from ..errors import ConfigError
from ..generator import GENERATORS, Generator, seeded
from ..io import load_checkpoint

__all__ = ["GENERATORS", "Generator", "load_generator", "make_generator", "seeded"]


def load_generator(directory: str | Path) -> Generator:
    """A fitted generator from a directory written by :meth:`Generator.save`."""
    d = Path(directory)
    meta_file = d / "generator.json"
    if not meta_file.exists():
        raise ConfigError(f"{d}: not a saved generator (no generator.json)")
    meta = json.loads(meta_file.read_text())
    gen = make_generator(meta["generator"], **meta["config"])
    state, _ = load_checkpoint(d / "state.safetensors")
    gen.load_state(state)
    return gen


# Where each built-in generator lives, so it registers on first use.
_MODULES = {"noise": "weightspace.baselines", "average": "weightspace.baselines",
            "gaussian": "weightspace.baselines", "aligned-interpolation": "weightspace.baselines",
            "pdiff": "weightspace.generative.pdiff",
            "hyperrep": "weightspace.generative.hyperrep", "gpt": "weightspace.generative.gpt",
            "hyperdiffusion": "weightspace.generative.hyperdiffusion",
            "aligned": "weightspace.generative.aligned"}


def make_generator(name: str, **config) -> Generator:
    if name not in GENERATORS and name in _MODULES:
        importlib.import_module(_MODULES[name])
    if name not in GENERATORS:
        raise ConfigError(f"generator: expected one of {sorted(GENERATORS)}, got {name!r}")
    try:
        return GENERATORS[name](**config)
    except TypeError as e:
        raise ConfigError(f"generator {name!r}: {e}") from None
