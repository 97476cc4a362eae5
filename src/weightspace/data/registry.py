"""The data sets by the names configs use, each loader's options checked before it runs."""

from __future__ import annotations

import inspect
from collections.abc import Callable

from ..errors import ConfigError
from .dataset import Dataset
from .digits import load_digits
from .fashion_mnist import load_fashion_mnist
from .mnist1d import load_mnist1d

DATASETS: dict[str, Callable[..., Dataset]] = {
    "digits": load_digits,
    "mnist1d": load_mnist1d,
    "fashion-mnist": load_fashion_mnist,
}


def _loader_options(fn: Callable[..., Dataset]) -> list[str]:
    return [
        p.name
        for p in inspect.signature(fn).parameters.values()
        if p.kind in (p.KEYWORD_ONLY, p.POSITIONAL_OR_KEYWORD)
    ]


def load_dataset(name: str, **options) -> Dataset:
    """Look a data set up by the name used in configs; options are checked up front."""
    if not isinstance(name, str) or name not in DATASETS:
        raise ConfigError(
            f"unknown data set {name!r}; allowed: {', '.join(sorted(DATASETS))}"
        )
    fn = DATASETS[name]
    allowed = _loader_options(fn)
    unknown = sorted(set(options) - set(allowed))
    if unknown:
        raise ConfigError(
            f"unknown option(s) {', '.join(map(repr, unknown))} for data set {name!r}; "
            f"allowed: {', '.join(allowed)}"
        )
    return fn(**options)
