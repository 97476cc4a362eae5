"""What a method's data setting records in a zoo, checked before the method's code reads it.

A zoo whose ``zoo.json`` names a method in ``config.method`` is opened as that method's zoo, and the
method's module then reads config keys (HyperDiffusion's ``shapes``/``decode``/``samples``, P-diff's
``trainable``, G.pt's ``generator``) and per-checkpoint ``extra`` fields (HyperDiffusion's
``shape_index``) as its ``build_data`` wrote them. Each method module declares those as a
:class:`Record`; :func:`check_record` refuses a damaged or hostile zoo with a :class:`ZooError` that
names the file and the first key that differs, instead of a ``KeyError`` deep in the method.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Union

from ..errors import ConfigError, ZooError
from ..safe_input import parse_json
from .store import INDEX, ZOO_JSON

Check = Union[Callable[[Any, str], Any], "Fields"]


@dataclass(frozen=True)
class Fields:
    """A JSON object: ``required`` and ``optional`` keys, each with its check (a
    ``check(value, key)`` from :mod:`weightspace.safe_input` or nested :class:`Fields`); ``closed``
    refuses other keys (for objects whose keys become keyword arguments)."""

    required: Mapping[str, Check] = field(default_factory=dict)
    optional: Mapping[str, Check] = field(default_factory=dict)
    closed: bool = False


@dataclass(frozen=True)
class Record:
    """What a method reads from its zoos: ``config`` (``zoo.json``'s ``config``) and ``extra`` (the
    fields every checkpoint's index row carries in ``extra``)."""

    config: Fields = field(default_factory=Fields)
    extra: Fields | None = None


def check_record(zoo, record: Record) -> None:
    """Raise :class:`ZooError` naming ``zoo.json`` (or the index) and the first key ``zoo`` lacks or garbles."""
    try:
        _check(zoo.info.get("config"), record.config, "config")
    except ConfigError as e:
        raise ZooError(f"{zoo.root / ZOO_JSON}: {e}") from None
    if record.extra is None:
        return
    index = zoo.index()
    for model_id, extra in zip(index["model_id"], index["extra"]):
        try:
            key = f"models[{model_id!r}].extra"
            _check(parse_json(extra or "{}", key, ConfigError), record.extra, key)
        except ConfigError as e:
            raise ZooError(f"{zoo.root / INDEX}: {e}") from None


def _check(value, check: Check, key: str) -> None:
    if not isinstance(check, Fields):
        check(value, key)
        return
    if not isinstance(value, dict):
        raise ConfigError(f"{key}: expected an object, got {value!r:.80}")
    for name, sub in check.required.items():
        if name not in value:
            raise ConfigError(f"{key}.{name}: missing (the method's data setting records it)")
        _check(value[name], sub, f"{key}.{name}")
    for name, sub in check.optional.items():
        if name in value:
            _check(value[name], sub, f"{key}.{name}")
    unknown = sorted(set(value) - set(check.required) - set(check.optional)) if check.closed else []
    if unknown:
        raise ConfigError(f"{key}.{unknown[0]}: not a key the method records "
                          f"(expected {sorted({*check.required, *check.optional})})")
