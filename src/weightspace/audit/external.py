"""Audit a user's own generator: its checkpoints (or its models' test predictions) against a
training zoo, with the same baselines, verdict and report as the study."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from torch import Tensor
from tqdm.auto import tqdm

from ..errors import ConfigError, LayoutError
from ..io import SUPPORTED_SUFFIXES, checkpoint_files, is_training_checkpoint_file, load_weights
from ..zoo import Zoo
from ..zoo.setting import setting_for_zoo
from .controls import HELDOUT
from .groups import TRAINING, ZooEvaluator, audit_figures, audit_with_controls
from .novelty import ModelSet
from .report import Report, write_report
from .verdict import rule_text

GENERATED = "generated"


MAX_NPY_BYTES = 1 << 32


def load_generated(path: str | Path, zoo: Zoo, key: str | None = None
                   ) -> tuple[Tensor | None, Tensor | None, list[str]]:
    """``(weights [n, P], None, names)`` from a zoo or a folder of checkpoint files, or ``(None,
    predictions [n, examples], names)`` from a ``.npy`` array of predicted labels; ``names``: each
    model's id (zoo), file name (folder) or row number (predictions). Suffixes are matched in any
    case, as the checkpoint loader does; an empty set or non-finite weights are refused. ``key``: the
    entry of each training checkpoint file (.pt, ...) in the folder that holds the model."""
    p = Path(path)
    if key is not None and not (p.is_dir() and not (p / "zoo.json").exists()):
        raise ConfigError(f"--key {key!r}: picks an entry of the training checkpoints in a folder; {p} is not "
                          "such a folder")
    if p.suffix.lower() == ".npy":
        predictions = _load_predictions(p)
        return None, predictions, [f"row {i}" for i in range(len(predictions))]
    if (p / "zoo.json").exists():
        weights, rows = Zoo.open(p).load()
        names = rows["model_id"].tolist()
    elif p.is_dir():
        files = checkpoint_files(p)
        if not files:
            raise ConfigError(f"{p}: no zoo.json and no checkpoint files ({', '.join(SUPPORTED_SUFFIXES)})")
        if key is not None and not any(is_training_checkpoint_file(f) for f in files):
            raise ConfigError(f"--key {key!r}: {p} holds no training checkpoint files (.pt, .pth, .bin, .ckpt)")
        weights = torch.stack([_flatten(zoo, f, key if is_training_checkpoint_file(f) else None) for f in files])
        names = [f.name for f in files]
    else:
        raise ConfigError(f"{p}: expected a zoo directory, a directory of checkpoints, or a .npy of predictions")
    if len(weights) == 0:
        raise ConfigError(f"{p}: holds no generated models")
    if not bool(torch.isfinite(weights).all()):
        bad = int((~torch.isfinite(weights).all(1)).sum())
        raise ConfigError(f"{p}: {bad} of {len(weights)} generated models have non-finite weights (NaN or inf)")
    return weights, None, names


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


def final_checkpoints(rows: pd.DataFrame) -> pd.Series:
    """``bool`` per index row: the last checkpoint (highest step) of its run."""
    return rows["step"] == rows.groupby("run_id")["step"].transform("max")


def reference_selection(zoo: Zoo, where: str | None = None, held_out: str | None = None
                        ) -> tuple[Tensor, Tensor | None, dict]:
    """The audit's reference, the held-out runs, and what they are: ``where`` selects the reference
    checkpoints; by default, the training selection of the method that built the zoo, else the final
    checkpoint of every run, as the paper compares with (neighbouring checkpoints of one run are each
    other's nearest neighbours, so a reference holding several per run has a smaller spacing and
    calls noisy copies new). ``held_out``: the rows of runs trained like the others and never shown
    to the generator (their final checkpoints, unless ``where`` is given), left out of the
    reference; by default the method's held-out runs, else none."""
    method = setting_for_zoo(zoo)
    held_rows = zoo.index(held_out) if held_out is not None else None
    if held_rows is not None and held_rows.empty:
        raise ConfigError(f"--held-out {held_out!r}: selects no model of {zoo.root}")
    held_ids = set(held_rows["model_id"]) if held_rows is not None else set()
    if where is not None or method is None:
        rows = zoo.index(where)
        if where is None:
            rows = rows[~rows["run_id"].isin(set(held_rows["run_id"]) if held_rows is not None else set())]
            rows = rows[final_checkpoints(rows)]
            said = "the final checkpoint of every run"
        else:
            rows = rows[~rows["model_id"].isin(held_ids)]
            said = f"the checkpoints where {where}"
        if rows.empty:
            raise ConfigError(f"--where {where!r}: selects no reference model of {zoo.root}" if where else
                              f"{zoo.root}: no reference models besides the held-out runs")
        reference = zoo.load_rows(rows)
        runs = int(rows["run_id"].nunique())
    else:
        reference, runs = method.training(zoo), None
        said = f"the training checkpoints of the {method.label} setting"
    heldout = None
    if held_rows is not None:
        heldout = zoo.load_rows(held_rows if where is not None else held_rows[final_checkpoints(held_rows)])
    elif method is not None and held_out is None:
        heldout = method.heldout(zoo)
    info = {"reference": said, "reference models": len(reference), "reference runs": runs,
            "where": where, "held-out": held_out, "held-out models": 0 if heldout is None else len(heldout)}
    return reference, heldout, info


def audit_generated(train: str | Path, generated: str | Path, out: str | Path, *, task: str | None = None,
                    seed: int = 0, backend=None, key: str | None = None, where: str | None = None,
                    held_out: str | None = None, progress: bool = False) -> Path:
    """Write the audit report of ``generated`` against the training zoo ``train``; returns report.html.

    The reference is :func:`reference_selection`'s (``where``, ``held_out``); the same controls as the
    study's are drawn from it, so the report says whether the rule gets their known answers on this
    zoo, and calls a verdict that rests on an axis it does not "inconclusive on this zoo". With
    predictions only, the distances to the reference cannot be measured: the replica axis says "not
    measured" and the verdict rests on the other axes. ``backend`` (``None``, or a
    :class:`~weightspace.parallel.RayBackend`): where model evaluation and the pairwise similarity
    blocks run.
    """
    zoo = Zoo.open(train)
    evaluator = ZooEvaluator(zoo, task, backend=backend)
    weights, predictions, names = load_generated(generated, zoo, key)
    reference, held, info = reference_selection(zoo, where, held_out)
    stages = tqdm(total=4, desc="audit", disable=not progress)  # after the inputs are read and checked
    stages.set_postfix_str("evaluating")
    sets = {TRAINING: evaluator.model_set(TRAINING, reference, is_training=True)}
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
    heldout = evaluator.model_set(HELDOUT, held) if held is not None and len(held) else None
    stages.update()
    stages.set_postfix_str("baselines and controls")
    n = len(sets[GENERATED])
    method = setting_for_zoo(zoo)
    audit = audit_with_controls(GENERATED, evaluator, sets[TRAINING], [sets[GENERATED]], n, space=zoo.space,
                                seed=seed, generated=weights, heldout=heldout, backend=backend,
                                align=method.aligned if method is not None else True)
    stages.update(2)
    stages.set_postfix_str("report")
    table = audit.table.copy()
    generated_rows = table["group"] == GENERATED
    table.insert(2, "model_id", None)
    table.loc[generated_rows, "model_id"] = [names[i] for i in table.loc[generated_rows, "model"]]
    summary = pd.DataFrame(audit.summary_rows())
    measured = "weights" if weights is not None else "test predictions only (the replica axis is not measured)"
    report = Report(f"Memorization audit of {Path(generated).name}", summary,
                    intro=(f"{n} generated models ({measured}) against {info['reference models']} reference models "
                           f"of {zoo.root}: {info['reference']}"
                           + (f", {info['reference runs']} runs" if info["reference runs"] else "")
                           + (f"; {info['held-out models']} held-out runs" if info["held-out models"] else
                              "; no held-out runs (--held-out WHERE names them): the rule's check that new "
                              "models beat noise here has no control") + "."),
                    configs={"train": str(Path(train).resolve()), "generated": str(Path(generated).resolve()),
                             "task": task, "seed": seed, "noise_sigmas": audit.sigmas, **info,
                             **({"key": key} if key else {})},
                    rule=rule_text())
    report.tables["Controls"] = pd.DataFrame(audit.control_rows()).drop(columns="reason")
    report.notes["Controls"] = [f"{r['control']}: {r['reason']}" for r in audit.control_rows() if r["reason"]]
    report.tables["The rule's axes on the controls"] = pd.DataFrame(
        [{"axis": axis, "status": check["status"]} for axis, check in audit.axes.items()])
    report.notes["The rule's axes on the controls"] = [f"{axis}: {check['reason']}" for axis, check in audit.axes.items()]
    report.notes["summary"] = [f"{r['group']}: {r['reason']}" for r in audit.summary_rows() if r["reason"]]
    report.notes["summary"] += audit.notes
    audit_figures(report, audit, sets, GENERATED, evaluator, seed=seed)
    report.data["per model"] = table
    report.results = {"verdicts": audit.verdicts, "controls": audit.control_rows(), "axes": audit.axes,
                      "notes": audit.notes, "reference": info}
    path = write_report(report, out)
    (Path(out) / "audit.json").write_text(json.dumps(report.configs, indent=2))
    stages.update()
    stages.close()
    return path


def verdict_lines(out: str | Path) -> list[str]:
    """One readable line per audited group from a finished audit's results.json."""
    res = json.loads((Path(out) / "results.json").read_text())
    return [f"{r['group']:<14} {r['verdict']:<21} replicates: {r['replicates']:<3} beats noise: {r['beats noise']:<3} "
            f"interpolates: {r['interpolates']}" for r in res["summary"]]
