"""The one JSON fallback for the values results and records hold besides JSON's own: NumPy and torch
scalars and arrays (metric values often are), and paths."""

from __future__ import annotations

import json
import os


def json_default(value):
    """``json.dumps(..., default=json_default)``: scalars as numbers, arrays and tensors as (nested)
    lists, paths as strings; anything else is refused with its type named."""
    if hasattr(value, "item") and getattr(value, "ndim", None) == 0:
        return value.item()
    if hasattr(value, "tolist"):
        return value.tolist()
    if isinstance(value, os.PathLike):
        return os.fspath(value)
    raise TypeError(f"{type(value).__name__} is not JSON serialisable")


def jsonable(value):
    """A JSON-ready deep copy of ``value``: what ``json.loads(json.dumps(value))`` gives, with
    :func:`json_default` for what JSON lacks (tuples become lists, keys strings)."""
    return json.loads(json.dumps(value, default=json_default))
