"""Building generators by name and loading saved ones. The interface itself (``Generator``) and its
registry live in the core (:mod:`weightspace.generator`); they are re-exported here."""

from __future__ import annotations

import importlib
import inspect
import math
from pathlib import Path

from ..errors import CheckpointError, ConfigError
from ..generator import GENERATORS, Generator, seeded, seeded_global_rng
from ..io import load_checkpoint
from ..safe_input import read_json

__all__ = ["GENERATORS", "Generator", "load_generator", "make_generator", "seeded", "seeded_global_rng"]


def load_generator(directory: str | Path) -> Generator:
    """A fitted generator from a directory written by :meth:`Generator.save`."""
    d = Path(directory)
    meta_file = d / "generator.json"
    if not meta_file.is_file():
        raise ConfigError(f"{d}: not a saved generator (no generator.json)")
    meta = read_json(meta_file, "generator description", error=ConfigError)
    if not isinstance(meta, dict) or not isinstance(meta.get("generator"), str) or not isinstance(
            meta.get("config"), dict):
        raise ConfigError(f"{meta_file}: expected {{\"generator\": NAME, \"config\": {{...}}}}, got {meta!r:.200}")
    gen = make_generator(meta["generator"], **meta["config"])
    state, _ = load_checkpoint(d / "state.safetensors")
    try:
        gen.load_state(state)
    except (KeyError, ValueError, TypeError, RuntimeError, IndexError) as e:
        raise CheckpointError(f"{d / 'state.safetensors'}: not the state of a {meta['generator']!r} generator with "
                              f"this config ({type(e).__name__}: {str(e)[:200]})") from None
    return gen


# Where each built-in generator lives, so it registers on first use.
_MODULES = {"noise": "weightspace.baselines", "average": "weightspace.baselines",
            "gaussian": "weightspace.baselines", "aligned-interpolation": "weightspace.baselines",
            "pdiff": "weightspace.generative.pdiff",
            "hyperrep": "weightspace.generative.hyperrep", "gpt": "weightspace.generative.gpt",
            "hyperdiffusion": "weightspace.generative.hyperdiffusion",
            "aligned": "weightspace.generative.aligned",
            "aligned-flow": "weightspace.generative.aligned_flow"}


def generator_names() -> list[str]:
    """Every generator that can be made by name: the built-in ones (imported or not) and any
    registered since."""
    return sorted(set(_MODULES) | set(GENERATORS))


def make_generator(name: str, **config) -> Generator:
    """A generator by registered name; each option must be one of its constructor's and of the
    type of its default (an int where the default is a float is fine)."""
    if not isinstance(name, str) or name not in generator_names():
        raise ConfigError(f"generator: expected one of {generator_names()}, got {name!r}")
    if name not in GENERATORS:
        importlib.import_module(_MODULES[name])
    cls = GENERATORS[name]
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
