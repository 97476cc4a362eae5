"""The contract of a study method's data setting, and how a method is registered.

A study method is a generator plus a data setting: how its training checkpoints are built, which of
them the generator learns from, what its samples are compared with (the paper's reference), which
models were trained alike but never shown to the generator (held-out runs), and how a model is
scored. A new method is one module that defines its :class:`~weightspace.generator.Generator`
subclass and a :class:`DataSetting` subclass and calls ``register_method(MySetting())``; from then on
the study, the audit (which scores a zoo the way the method that built it says), ``weightspace
generate`` and ``make_generator`` find it by name.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

import pandas as pd
import torch
from torch import Tensor

from ..errors import ConfigError
from ..registry import SETTINGS, setting
from .build import accuracy_on_test, predictions_on_test
from .method_record import Record, check_record
from .store import Zoo

CLASSIFIER, SHAPES = "classifier", "shapes"
HELDOUT_PREFIX = "heldout"  # the run ids of held-out runs start with it


def held_out_rows(index: pd.DataFrame) -> Tensor:
    """``bool[N]`` over the rows of a zoo's index (:meth:`Zoo.index`): those of held-out runs, whose
    run ids start with :data:`HELDOUT_PREFIX`."""
    return torch.tensor(index["run_id"].str.startswith(HELDOUT_PREFIX).to_numpy(dtype=bool))


@dataclass(frozen=True)
class PaperCall:
    """What the paper (Zeng et al. 2025) found for a method at its original scale: the verdict and
    the three axes behind it."""

    verdict: str
    replicates: bool
    beats_noise: bool
    interpolates: bool


@dataclass(frozen=True)
class Reference:
    """What a method's samples are compared with, as the paper does. ``weights``: the reference
    models (None: the training models themselves); for shapes, ``points``: ground-truth shapes, one
    per training model. ``heldout``: the held-out runs as this reference sees them (e.g. passed
    through the same autoencoder; None: the held-out runs themselves). ``view`` names the reference
    in reports ("training checkpoints", "reconstructions", ...)."""

    view: str
    weights: Tensor | None = None
    points: Sequence[Tensor] | None = None
    heldout: Tensor | None = None


class DataSetting(ABC):
    """Abstract. A method's data setting; subclasses set the class attributes and implement
    :meth:`build` and :meth:`training`, and override what differs from the defaults (a classifier
    scored by test accuracy on its zoo's task, compared with its training checkpoints, no held-out
    runs)."""

    name: ClassVar[str]  # the method's name; also its generator's registered name unless ``generator`` says otherwise
    label: ClassVar[str]  # the name reports use (the paper's name for the method)
    generator: ClassVar[str] = ""
    kind: ClassVar[str] = CLASSIFIER  # or SHAPES: models are implicit shapes, scored by Chamfer distance
    presets: ClassVar[tuple[str, ...]] = ("default", "tiny")
    record: ClassVar[Record | None] = None  # what build records in zoo.json and the index (checked on open)
    paper: ClassVar[PaperCall | None] = None  # the paper's call; None for methods the paper did not audit
    paper_sigmas: ClassVar[tuple[float, ...]] = ()  # the paper's noise σ (raw weights), marked beside the sweep
    samples: ClassVar[int] = 200  # samples per generated group in the paper
    options: ClassVar[Mapping[str, Mapping]] = {}  # per data preset, generator options the study fits with
    # neuron-permutation-aligned distances and blends; False where every model descends from one base
    # and keeps its neuron order (fine-tunes): matching would find the identity, at a large cost
    aligned: ClassVar[bool] = True

    @property
    def generator_name(self) -> str:
        return self.generator or self.name

    # ---------------------------------------------------------------- data
    @abstractmethod
    def build(self, out: str | Path, *, preset: str = "default", progress: bool = True, seed: int = 0) -> Zoo:
        """Build (or resume) the method's zoo at ``out``; ``seed`` seeds every run in it."""

    @abstractmethod
    def training(self, zoo: Zoo) -> Tensor:
        """``Tensor[N, P]``: what the generator learns from."""

    def heldout(self, zoo: Zoo) -> Tensor | None:
        """Models trained like the training models but never shown to the generator (fresh runs:
        what a generator that generalises should look like), or None."""
        return None

    def n_samples(self, zoo: Zoo) -> int:
        """How many models the paper generates in this setting."""
        return self.samples

    def generator_config(self, zoo: Zoo) -> dict:
        """Constructor arguments the method's generator takes from the zoo (e.g. its architecture)."""
        return {}

    def fit_context(self, zoo: Zoo) -> dict:
        """Extra ``fit`` arguments the method's generator needs beyond the training weights."""
        return {}

    def companions(self, zoo: Zoo) -> dict[str, tuple[str, dict]]:
        """Other generators the study fits on this setting's training models beside the method's own,
        audited in the same audit (same reference, baselines, controls and held-out runs): ``{group
        label: (registered generator name, constructor arguments)}``. None by default."""
        return {}

    def generator_options(self, preset: str) -> dict:
        """Options the study fits the generator with for data ``preset``."""
        return dict(self.options.get(preset, {}))

    # ---------------------------------------------------------------- reference
    def reference(self, zoo: Zoo, generator) -> Reference:
        """What the samples of ``generator`` (fitted on this zoo) are compared with: by default the
        training models themselves."""
        return Reference("training checkpoints")

    def noise_source(self, zoo: Zoo, generator) -> Tensor | None:
        """What the noise baseline perturbs (default, None: the reference models)."""
        return None

    def final_epoch(self, zoo: Zoo) -> Tensor | None:
        """``bool[N]`` over the training rows: each run's last checkpoint, where the training set holds
        several checkpoints per run (the paper's min-L2 histogram uses only those); else None."""
        return None

    # ---------------------------------------------------------------- scoring
    def quality(self, zoo: Zoo, weights: Tensor) -> Tensor:
        """``Tensor[n]``, higher is better (a classifier: test accuracy)."""
        return accuracy_on_test(zoo, weights)

    def predictions(self, zoo: Zoo, weights: Tensor) -> Tensor:
        """Predicted test labels ``LongTensor[n, examples]`` (classifiers)."""
        return predictions_on_test(zoo, weights)

    def shapes(self, zoo: Zoo, weights: Tensor) -> list[Tensor]:
        """Each model's shape as a normalised point set (``kind == SHAPES``)."""
        raise ConfigError(f"method {self.name!r}: its models are classifiers, not shapes")

    def shape_quality(self, zoo: Zoo, points: Sequence[Tensor]) -> Tensor:
        """:meth:`quality` of point sets (``kind == SHAPES``)."""
        raise ConfigError(f"method {self.name!r}: its models are classifiers, not shapes")

    def check(self, zoo: Zoo) -> None:
        """Refuse a zoo whose records this setting's code would misread (see :attr:`record`)."""
        if self.record is not None:
            check_record(zoo, self.record)


def register_method(s: DataSetting) -> DataSetting:
    """Make ``s`` a study method under ``s.name`` (its generator must be registered under
    ``s.generator_name`` by the time it is fitted); returns ``s``."""
    if not isinstance(s, DataSetting):
        raise ConfigError(f"register_method: expected a DataSetting instance, got {type(s).__name__}")
    if not isinstance(getattr(s, "name", None), str) or not s.name or not isinstance(getattr(s, "label", None), str):
        raise ConfigError(f"register_method: {type(s).__name__} must set the class attributes 'name' and 'label'")
    if s.kind not in (CLASSIFIER, SHAPES):
        raise ConfigError(f"{type(s).__name__}.kind: expected {CLASSIFIER!r} or {SHAPES!r}, got {s.kind!r}")
    SETTINGS[s.name] = s
    return s


def setting_for_zoo(zoo: Zoo) -> DataSetting | None:
    """The data setting that built ``zoo`` (its ``config.method``), its records checked; None for a
    zoo no method built."""
    name = zoo.info.get("config", {}).get("method")
    if name is None:
        return None
    if not isinstance(name, str):
        raise ConfigError(f"{zoo.root}: config.method must be a method name, got {name!r:.80}")
    s = setting(name)
    s.check(zoo)
    return s


def training_weights(zoo: Zoo) -> Tensor:
    """What a generator of ``zoo`` learns from: its method's selection, else every checkpoint."""
    s = setting_for_zoo(zoo)
    return s.training(zoo) if s is not None else zoo.load()[0]


MASKED_BASELINES = ("noise", "average", "gaussian")  # baselines that perturb only the varying coordinates


def fit_inputs(zoo: Zoo, generator: str, where: str | None = None) -> tuple[Tensor, dict, dict]:
    """What fitting ``generator`` on ``zoo`` takes: the training weights (``where``: the index rows
    that match it; default the method's selection, else every checkpoint), the constructor arguments
    and the ``fit`` context. The method that built the zoo gives its own generator its config and
    context (with its own selection only); the masked baselines get the coordinates that vary across
    the training checkpoints (P-diff's fine-tuned layers), so noise and sampling touch only what the
    generators model."""
    s = setting_for_zoo(zoo)
    if where is not None:
        weights = zoo.load(where)[0]
        if not len(weights):
            raise ConfigError(f"--where {where!r}: selects no model of {zoo.root}")
        if s is not None and generator == s.generator_name:
            raise ConfigError(f"--where: the {s.label} generator learns from its setting's own selection "
                              f"(its fit context describes those checkpoints); fit it without --where")
    else:
        weights = s.training(zoo) if s is not None else zoo.load()[0]
    if generator in MASKED_BASELINES:
        return weights, {}, ({"mask": weights.std(0) > 0} if len(weights) > 1 else {})
    if s is None or generator != s.generator_name:
        return weights, {}, {}
    return weights, s.generator_config(zoo), s.fit_context(zoo)
