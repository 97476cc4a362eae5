"""What the CLI runs: a soup of a zoo, an alignment, a barrier — each reads its inputs, calls the
library, and writes its output with the resolved settings beside it (merges: :mod:`.from_config`)."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import torch
import yaml

from ..align import match_activations, match_permutations
from ..errors import ConfigError, LayoutError
from ..io import save_checkpoint
from ..symmetry import permute
from ..task import Task
from ..zoo import Zoo
from ..zoo.build import task_for_zoo, zoo_activation
from ..zoo.trainer import with_activation
from .batchnorm import has_batchnorm, recompute_batchnorm
from .interpolation import barrier, interpolation_curve
from .soups import greedy_soup, learned_soup, uniform_soup
from .sources import LoadedModel, check_key_applies, load_model


def _output_file(out: str | Path) -> Path:
    """``OUT.safetensors`` as is; anything else is a folder holding ``model.safetensors``."""
    out = Path(out)
    if out.suffix == ".safetensors":
        out.parent.mkdir(parents=True, exist_ok=True)
        return out
    out.mkdir(parents=True, exist_ok=True)
    return out / "model.safetensors"


def _write(out: str | Path, state_dict, settings: dict, extra_meta: dict | None = None) -> Path:
    path = _output_file(out)
    meta = {"weightspace": json.dumps(settings, default=str), **(extra_meta or {})}
    save_checkpoint(path, state_dict, meta)
    path.with_suffix(".yaml").write_text(yaml.safe_dump(settings, sort_keys=False))
    return path


def _context(a: LoadedModel, b: LoadedModel, zoo_dir: str | None, need_data: bool):
    """The architecture (and task, when data is needed) for two models: from --zoo, else A's zoo or
    file metadata; the activation is the one the zoo's models among A and B (else all of them) trained with."""
    zoo = Zoo.open(zoo_dir) if zoo_dir else a.zoo
    if zoo is not None:
        ids = [m.model_id for m in (a, b) if m.zoo is not None and m.zoo.root.resolve() == zoo.root.resolve()]
        index = zoo.index("model_id IN (SELECT value FROM json_each(?))", (json.dumps(ids),)) if ids else None
        if need_data:
            task = task_for_zoo(zoo, index)
            return task.arch, zoo.space, task
        return with_activation(_arch_of(zoo), zoo_activation(zoo, index)), zoo.space, None
    if need_data:
        raise ConfigError("this needs data: give --zoo DIR (its data set and architecture) or models as ZOO_DIR::ID")
    if a.layout is None:
        raise ConfigError(f"{a.ref}: no layout with permutation groups in its metadata; give --zoo DIR of its "
                          "architecture or the models as ZOO_DIR::ID")
    return a.architecture, a.layout, None


def _arch_of(zoo: Zoo):
    from ..nets import build_architecture

    return build_architecture(zoo.info["architecture"])


def _pair(a_ref: str, b_ref: str, zoo_dir: str | None, need_data: bool, key: str | None):
    check_key_applies(key, [a_ref, b_ref])
    a, b = load_model(a_ref, key), load_model(b_ref, key)
    arch, space, task = _context(a, b, zoo_dir, need_data)
    try:
        wa, wb = space.flatten(a.state_dict), space.flatten(b.state_dict)
    except LayoutError as e:
        raise LayoutError(f"models {a_ref} and {b_ref} do not fit layout '{space.name}': {e}") from None
    return arch, space, task, wa, wb


def _aligned(method: str, arch, space, task: Task | None, wa, wb, examples: int = 1024):
    if method == "weight":
        perms = match_permutations(space, wa, wb[None])
    elif method == "activation":
        perms = match_activations(arch, wa, wb[None], task.dataset.split("train")[0][:examples])
    else:
        raise ConfigError(f"--method: expected 'weight' or 'activation', got {method!r}")
    return permute(space, wb[None], perms)[0]


def align_models(a_ref: str, b_ref: str, out: str | Path, *, method: str = "weight",
                 zoo: str | None = None, key: str | None = None) -> tuple[Path, dict]:
    """``weightspace align A B --out``: B with its neurons reordered to match A; returns the path and
    the L2 distance to A before and after."""
    arch, space, task, wa, wb = _pair(a_ref, b_ref, zoo, need_data=method == "activation", key=key)
    aligned = _aligned(method, arch, space, task, wa, wb)
    distances = {"l2_before": float((wa.double() - wb.double()).norm()),
                 "l2_after": float((wa.double() - aligned.double()).norm())}
    settings = {"command": "align", "a": a_ref, "b": b_ref, "method": method, "zoo": zoo, **({"key": key} if key else {}),
                **distances}
    return _write(out, space.unflatten(aligned), settings), distances


def barrier_curves(a_ref: str, b_ref: str, *, align: str = "weight", repair: bool = False,
                   zoo: str | None = None, points: int = 11, split: str = "test", key: str | None = None
                   ) -> pd.DataFrame:
    """``weightspace barrier A B``: interpolation curves (rows: variant, lam, loss, acc, error) for
    the plain path, the aligned path (unless ``align='none'``) and, with ``repair``, REPAIR on it."""
    arch, space, task, wa, wb = _pair(a_ref, b_ref, zoo, need_data=True, key=key)
    curves = [interpolation_curve(task, wa, wb, lambdas=points, split=split).assign(variant="plain")]
    target = wb
    if align != "none":
        target = _aligned(align, arch, space, task, wa, wb)
        curves.append(interpolation_curve(task, wa, target, lambdas=points, split=split)
                      .assign(variant=f"{align} matching"))
    if repair:
        label = "REPAIR" if align == "none" else f"{align} matching + REPAIR"
        curves.append(interpolation_curve(task, wa, target, lambdas=points, split=split, repair_neurons=True)
                      .assign(variant=label))
    return pd.concat(curves, ignore_index=True)


def barrier_table(curves: pd.DataFrame) -> pd.DataFrame:
    """One row per variant: loss barrier and error barrier."""
    rows = [{"variant": v, "loss_barrier": barrier(df), "error_barrier": barrier(df, "error")}
            for v, df in curves.groupby("variant", sort=False)]
    return pd.DataFrame(rows)


def _checkpoint_times(index: pd.DataFrame) -> dict[str, list[int]]:
    """``{"epoch" (or "step"): the distinct values}`` of a zoo's selected rows; several mean the
    selection mixes checkpoints taken at different points of training."""
    key = next((k for k in ("epoch", "step") if index[k].notna().any()), None)
    return {} if key is None else {key: sorted(int(v) for v in index[key].dropna().unique())}


def soup_zoo(zoo_dir: str, out: str | Path, *, kind: str = "uniform", strict: bool = False, where: str | None = None,
             progress: bool = True) -> tuple[Path, pd.DataFrame, dict]:
    """``weightspace soup ZOO``: a uniform, greedy (held-out = the zoo's validation split) or learned
    soup of the zoo's models; BatchNorm statistics recomputed on the training split."""
    zoo = Zoo.open(zoo_dir)
    weights, index = zoo.load(where)
    if len(weights) == 0:
        raise ConfigError(f"zoo {zoo_dir}: no models match --where {where!r}")
    task = task_for_zoo(zoo, index)
    x_train = task.dataset.split("train")[0]
    bn = has_batchnorm(task.arch)
    fix = (lambda w: recompute_batchnorm(task.arch, w, x_train)) if bn else None
    if kind == "uniform":
        soup = uniform_soup(weights)
        table = pd.DataFrame({"model": range(len(weights)), "taken": True})
    elif kind == "greedy":
        soup, table = greedy_soup(weights, lambda w: task.accuracy(w, "val"), strict=strict, transform=fix,
                                  progress=progress)
    elif kind == "learned":
        soup, table = learned_soup(task.arch, weights, *task.dataset.split("val"), progress=progress)
    else:
        raise ConfigError(f"soup kind: expected uniform, greedy or learned, got {kind!r}")
    if fix is not None and kind != "greedy":
        soup = fix(soup)
    if "model" in table:
        table.insert(1, "model_id", index["model_id"].to_numpy()[table["model"].to_numpy()])
    scores = task.evaluate(torch.cat([soup[None], weights]), ("val", "test"))
    summary = {"soup_val_acc": float(scores["val_acc"][0]), "soup_test_acc": float(scores["test_acc"][0]),
               "best_single_val_acc": float(scores["val_acc"][1:].max()),
               "best_single_test_acc": float(scores["test_acc"][1:].iloc[scores["val_acc"][1:].argmax()])}
    if kind == "greedy":
        summary["ingredients"] = int(table["taken"].sum())
    summary["chance_acc"] = 1 / task.dataset.num_classes
    summary.update(_checkpoint_times(index))
    settings = {"command": "soup", "zoo": str(zoo_dir), "kind": kind, "strict": strict, "where": where,
                "models": len(weights), **summary}
    return _write(out, zoo.space.unflatten(soup), settings), table, summary
