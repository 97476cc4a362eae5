"""Fitted objects on disk (generators, accuracy predictors): a directory holding what was learned
and one JSON description of it. The description is written last and atomically, so its presence
says the directory is complete, and it is read back through :mod:`~weightspace.safe_input`, as are
the files it names (inside the directory only)."""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path

from .errors import ConfigError, InputError, WeightspaceError
from .io import atomic_write
from .safe_input import inside_root, read_json

_JSON_TYPES = {str: "a string", dict: "an object", list: "a list", int: "an integer"}


def write_description(directory: str | Path, name: str, description: Mapping) -> Path:
    """``directory/name``: ``description`` as indented JSON, written atomically (after the state)."""
    path = Path(directory) / name
    atomic_write(path, json.dumps(description, indent=2).encode())
    return path


def read_description(directory: str | Path, name: str, what: str, fields: Mapping[str, type], *,
                     error: type[WeightspaceError] = ConfigError) -> dict:
    """The JSON object ``directory/name`` that :func:`write_description` wrote, refused unless each of
    ``fields`` is there with its type."""
    d = Path(directory)
    path = d / name
    if not path.is_file():
        raise error(f"{d}: not a saved {what} (no {name})")
    meta = read_json(path, f"{what} description", error=error)
    if not isinstance(meta, dict) or any(not isinstance(meta.get(k), t) for k, t in fields.items()):
        shape = ", ".join(f'"{k}": {_JSON_TYPES.get(t, t.__name__)}' for k, t in fields.items())
        raise error(f"{path}: expected {{{shape}, ...}}, got {meta!r:.200}")
    return meta


def described_file(directory: str | Path, description: Mapping, key: str, default: str, *,
                   error: type[WeightspaceError] = ConfigError) -> Path:
    """The file a description names under ``key`` (``default`` when it names none), refused unless it
    lies inside ``directory``."""
    try:
        return inside_root(directory, description.get(key, default), f"{Path(directory)}: {key}")
    except InputError as e:
        raise error(str(e)) from None
