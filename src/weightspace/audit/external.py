"""Audit a user's own generator: its checkpoints (or its models' test predictions) against a
training zoo, with the same baselines, verdict and report as the study."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from torch import Tensor

from ..errors import ConfigError, LayoutError
from ..io import SUPPORTED_SUFFIXES, is_training_checkpoint_file, load_weights
from ..zoo import Zoo
from ..zoo.setting import training_weights
from .novelty import ModelSet
from .report import Report, write_report
from .run import TRAINING, ZooEvaluator, audit_figures, audit_with_controls
from .verdict import rule_text

GENERATED = "generated"


MAX_NPY_BYTES = 1 << 32


def load_generated(path: str | Path, zoo: Zoo, key: str | None = None) -> tuple[Tensor | None, Tensor | None]:
    """``(weights [n, P], None)`` from a zoo or a folder of checkpoint files, or ``(None,
    predictions [n, examples])`` from a ``.npy`` array of predicted labels. Suffixes are matched
    in any case, as the checkpoint loader does; an empty set or non-finite weights are refused.
    ``key``: the entry of each training checkpoint file (.pt, ...) in the folder that holds the model."""
    p = Path(path)
    if key is not None and not (p.is_dir() and not (p / "zoo.json").exists()):
        raise ConfigError(f"--key {key!r}: picks an entry of the training checkpoints in a folder; {p} is not "
                          "such a folder")
    if p.suffix.lower() == ".npy":
        return None, _load_predictions(p)
    if (p / "zoo.json").exists():
        weights = Zoo.open(p).load()[0]
    elif p.is_dir():
        files = sorted(f for f in p.iterdir() if f.suffix.lower() in SUPPORTED_SUFFIXES and f.is_file())
        if not files:
            raise ConfigError(f"{p}: no zoo.json and no checkpoint files ({', '.join(SUPPORTED_SUFFIXES)})")
        if key is not None and not any(is_training_checkpoint_file(f) for f in files):
            raise ConfigError(f"--key {key!r}: {p} holds no training checkpoint files (.pt, .pth, .bin, .ckpt)")
        weights = torch.stack([_flatten(zoo, f, key if is_training_checkpoint_file(f) else None) for f in files])
    else:
        raise ConfigError(f"{p}: expected a zoo directory, a directory of checkpoints, or a .npy of predictions")
    if len(weights) == 0:
        raise ConfigError(f"{p}: holds no generated models")
    if not bool(torch.isfinite(weights).all()):
        bad = int((~torch.isfinite(weights).all(1)).sum())
        raise ConfigError(f"{p}: {bad} of {len(weights)} generated models have non-finite weights (NaN or inf)")
    return weights, None


def _flatten(zoo: Zoo, file: Path, key: str | None) -> Tensor:
    try:
        return zoo.space.flatten(load_weights(file, key)[0])
    except LayoutError as e:
        raise LayoutError(f"{file}: {e}") from None


def _load_predictions(p: Path) -> Tensor:
    try:
        arr = np.load(p, allow_pickle=False, mmap_mode="r")
    except FileNotFoundError:
        raise ConfigError(f"{p}: no such file") from None
    except (ValueError, OSError, EOFError) as e:  # pickled object arrays, bad headers, truncation
        raise ConfigError(f"{p}: not a readable .npy array of predicted labels ({str(e)[:200]})") from None
    if not isinstance(arr, np.ndarray) or arr.ndim != 2 or not np.issubdtype(arr.dtype, np.integer) or arr.size == 0:
        raise LayoutError(f"{p}: expected integer predicted labels of shape [models, examples] with at least one "
                          f"model, got {getattr(arr, 'dtype', '?')} {getattr(arr, 'shape', '?')}")
    if arr.nbytes > MAX_NPY_BYTES:
        raise LayoutError(f"{p}: {arr.nbytes} bytes of predictions, more than the {MAX_NPY_BYTES} allowed")
    return torch.from_numpy(np.array(arr, dtype=np.int64))


def audit_generated(train: str | Path, generated: str | Path, out: str | Path, *, task: str | None = None,
                    seed: int = 0, backend=None, key: str | None = None) -> Path:
    """Write the audit report of ``generated`` against the training zoo ``train``; returns report.html.

    ``backend`` (``None``, or a :class:`~weightspace.parallel.RayBackend`): where model evaluation
    and the pairwise similarity blocks run.
    """
    zoo = Zoo.open(train)
    evaluator = ZooEvaluator(zoo, task, backend=backend)
    weights, predictions = load_generated(generated, zoo, key)
    train_w = training_weights(zoo)
    sets = {TRAINING: evaluator.model_set(TRAINING, train_w, is_training=True)}
    if weights is not None:
        sets[GENERATED] = evaluator.model_set(GENERATED, weights)
    else:
        if not evaluator.classifier:
            raise ConfigError(f"{generated}: predictions can only be audited against a classifier zoo")
        if predictions.shape[1] != len(evaluator.labels):
            raise LayoutError(f"{generated}: predictions cover {predictions.shape[1]} examples; the test split of "
                              f"'{evaluator.task.dataset.name}' has {len(evaluator.labels)}")
        sets[GENERATED] = ModelSet(GENERATED, (predictions == evaluator.labels).float().mean(1),
                                   predictions=predictions)
    n = len(sets[GENERATED])
    audit = audit_with_controls(GENERATED, evaluator, sets[TRAINING], [sets[GENERATED]], n, space=zoo.space,
                                seed=seed, generated=weights, backend=backend)
    summary = pd.DataFrame(audit.summary_rows())
    report = Report(f"Memorization audit of {Path(generated).name}", summary,
                    intro=f"{n} generated models against {len(train_w)} training checkpoints of {zoo.root}.",
                    configs={"train": str(Path(train).resolve()), "generated": str(Path(generated).resolve()),
                             "task": task, "seed": seed, "noise_sigmas": audit.sigmas,
                             **({"key": key} if key else {})},
                    rule=rule_text())
    report.tables["Controls"] = pd.DataFrame(audit.control_rows())
    report.tables["The rule's axes on the controls"] = pd.DataFrame(
        [{"axis": axis, **check} for axis, check in audit.axes.items()])
    audit_figures(report, audit, sets, GENERATED, evaluator, seed=seed)
    report.data["per model"] = audit.table
    report.results = {"verdicts": audit.verdicts, "controls": audit.control_rows(), "axes": audit.axes,
                      "notes": audit.notes}
    path = write_report(report, out)
    (Path(out) / "audit.json").write_text(json.dumps(report.configs, indent=2))
    return path


def verdict_lines(out: str | Path) -> list[str]:
    """One readable line per audited group from a finished audit's results.json."""
    res = json.loads((Path(out) / "results.json").read_text())
    return [f"{r['group']:<14} {r['verdict']:<21} replicates: {r['replicates']:<3} beats noise: {r['beats noise']:<3} "
            f"interpolates: {r['interpolates']}" for r in res["summary"]]
