"""The memorization study end to end: for each of the four methods, build its data setting, fit its
generator, sample, draw the baselines, audit everything, and write one report."""

from __future__ import annotations

import json
import multiprocessing
import os
import time
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor, as_completed
from pathlib import Path

import pandas as pd
import torch
from torch import Tensor
from tqdm.auto import tqdm

from ..align import l2_distances
from ..audit.figures import min_distance_histogram, png_bytes
from ..audit.novelty import ModelSet
from ..audit.report import Report, write_report
from ..audit.run import (
    TRAINING,
    ZooEvaluator,
    audit_figures,
    audit_groups,
    baseline_sets,
)
from ..audit.similarity import min_distance_to_training
from ..audit.verdict import pooled_verdict, rule_text
from ..errors import ConfigError
from ..generative import methods
from ..generative.base import make_generator
from .ablation import ablation_figure, run_ablation
from .frontiers import aligned_interpolation_sets, beyond_every_table
from .presets import PAPER_NAMES, PRESETS
from .symmetry_check import symmetry_check, symmetry_figure

SYMMETRY_MODELS = 32  # training checkpoints passed through an autoencoder for the symmetry check


HELDOUT = "held-out runs"  # trained like the training runs, never shown to a generator: the novelty ceiling
RAW_VIEW = "raw checkpoints"


class _Stages:
    """Progress inside one method: data, then fit, sample and audit per seed. A bar when
    ``progress``; otherwise, with ``lines``, one printed line per finished stage (worker processes
    run methods side by side, where bars would overwrite each other)."""

    def __init__(self, name: str, seeds: int, progress: bool, lines: bool):
        self.name, self.lines, self.t = name, lines, time.perf_counter()
        self.bar = tqdm(total=1 + 3 * seeds, desc=name, disable=not progress)
        self.bar.set_postfix_str("data")

    def done(self, stage: str, following: str) -> None:
        seconds, self.t = time.perf_counter() - self.t, time.perf_counter()
        self.bar.set_postfix_str(following)
        self.bar.update()
        if self.lines:
            print(f"{self.name}: {stage} done ({seconds:.0f} s)", flush=True)
        if self.bar.n == self.bar.total:
            self.bar.close()


def _reference_set(module, zoo, evaluator: ZooEvaluator, gen, train: Tensor, raw: ModelSet) -> ModelSet:
    """What the paper compares a method's samples with: Hyper-Representations' reconstructions of
    the training checkpoints, HyperDiffusion's ground-truth training shapes, otherwise the training
    checkpoints themselves (G.pt: each run's final checkpoint)."""
    if hasattr(module, "reference_weights"):
        return evaluator.model_set(TRAINING, module.reference_weights(zoo, gen), is_training=True)
    if hasattr(module, "training_shapes"):
        points = module.training_shapes(zoo)
        return ModelSet(TRAINING, module.shape_quality(zoo, points), weights=train, points=points, is_training=True)
    return raw


def _final_epoch_histogram(module, zoo, reference: ModelSet, generated: ModelSet, name: str) -> pd.DataFrame | None:
    """Min L2 to the final-epoch reference models only (the paper's histogram for
    Hyper-Representations: neighbouring epochs of one run would be each other's nearest)."""
    if not hasattr(module, "final_epoch"):
        return None
    final = module.final_epoch(zoo)
    ref = reference.weights[final]
    rows = []
    for group, w, exclude in ((f"{TRAINING} (final epoch)", ref, True), (name, generated.weights, False)):
        d = l2_distances(w, ref)
        values, _ = min_distance_to_training(d, exclude_self=exclude)
        rows += [{"group": group, "model": i, "min_l2": float(v)} for i, v in enumerate(values)]
    return pd.DataFrame(rows)


def run_method(name: str, out: Path, preset: dict, *, seed: int = 0, seeds: int = 1, progress: bool = True,
               stage_lines: bool = False) -> dict:
    """Data (built once, from ``seed``), then for each of ``seeds`` seeds ``seed``, ``seed + 1``, …:
    generator fit, samples, baselines and their audit against the paper's reference, with the
    held-out runs audited alike. Weight distances are aligned where the layout has permutation
    groups; the noise σ sweep reaches past the generated models and includes the paper's two σ.
    Timings in seconds."""
    module = methods.method_module(name)
    label = PAPER_NAMES[name]
    paper_sigmas = tuple(preset.get("paper_sigmas", {}).get(name, ()))
    stages = _Stages(label, seeds, progress, stage_lines)
    timings = {}
    t = time.perf_counter()
    zoo = module.build_data(out / name / "zoo", preset=preset["data"], progress=progress, seed=seed)
    train = module.training_weights(zoo)
    evaluator = ZooEvaluator(zoo)
    raw = evaluator.model_set(TRAINING, train, is_training=True)
    heldout = (evaluator.model_set(HELDOUT, module.heldout_weights(zoo))
               if hasattr(module, "heldout_weights") else None)
    timings["data"] = time.perf_counter() - t
    stages.done("data", f"fit, seed {seed}")
    n = preset["samples"] or module.n_samples(zoo)
    runs = []
    for s in range(seed, seed + seeds):
        timing = {}
        t = time.perf_counter()
        config = {**methods.generator_config(zoo, name), **preset["generators"].get(name, {}), "seed": s}
        gen = make_generator(name, **config)
        gen.fit(train, progress=progress, **module.fit_context(zoo))
        gen.save(out / name / f"generator-seed{s}")
        timing["fit"] = time.perf_counter() - t
        stages.done(f"fit, seed {s}", f"sample, seed {s}")

        t = time.perf_counter()
        generated = gen.sample(n, s)
        timing["sample"] = time.perf_counter() - t
        stages.done(f"sample, seed {s}", f"audit, seed {s}")

        t = time.perf_counter()
        reference = _reference_set(module, zoo, evaluator, gen, train, raw)
        noise_from = module.noise_source(zoo, gen) if hasattr(module, "noise_source") else None
        sets = {TRAINING: reference, label: evaluator.model_set(label, generated)}
        interpolation, noise = baseline_sets(evaluator, reference.weights, n, seed=s, generated=generated,
                                             paper_sigmas=paper_sigmas, noise_from=noise_from)
        sets.update({m.name: m for m in [*interpolation, *noise.values()]})
        # methods that ask for it (weightspace's own) also face interpolation between aligned runs
        aligned = (aligned_interpolation_sets(evaluator, reference.weights, zoo.space, n, seed=s)
                   if getattr(module, "ALIGNED_INTERPOLATION", False) else [])
        groups = [sets[label]] + ([heldout] if heldout is not None else []) + aligned
        if heldout is not None:
            sets[HELDOUT] = heldout
        sets.update({m.name: m for m in aligned})
        audit = audit_groups(label, reference, groups, noise, interpolation, labels=evaluator.labels,
                             space=zoo.space, seed=s)
        beyond = (beyond_every_table(audit, [g.name for g in groups[: len(groups) - len(aligned)]],
                                     {float(m.name.rsplit("=", 1)[1]): m.name for m in aligned}, seed=s)
                  if aligned else None)
        views = {}
        if reference is not raw:  # the other view: the same groups against the raw training checkpoints
            views[RAW_VIEW] = audit_groups(f"{label} against {RAW_VIEW}", raw, groups, noise, interpolation,
                                           labels=evaluator.labels, space=zoo.space, seed=s)
        timing["audit"] = time.perf_counter() - t
        stages.done(f"audit, seed {s}", f"fit, seed {s + 1}" if s + 1 < seed + seeds else "done")
        runs.append({"seed": s, "audit": audit, "views": views, "sets": sets, "timings": timing, "beyond_every": beyond,
                     "generator": {"name": name, "config": gen.config()}, "gen": gen,
                     "final_epoch": _final_epoch_histogram(module, zoo, reference, sets[label], label)})
    first = runs[0]
    symmetry = None
    if hasattr(first["gen"], "encode") and hasattr(first["gen"], "decode"):  # did the autoencoder learn the symmetries?
        symmetry = symmetry_check(first["gen"], zoo.space, train[:SYMMETRY_MODELS], evaluator, seed=seed)
    for r in runs:
        del r["gen"]
    return {"name": name, "label": label, "paper_sigmas": paper_sigmas, "module": module, "zoo": zoo, "runs": runs,
            "audit": first["audit"], "sets": first["sets"],
            "timings": {**timings, "seeds": [r["timings"] for r in runs]}, "generator": first["generator"],
            "samples": n, "data_config": zoo.info.get("config", {}), "evaluator": evaluator, "symmetry": symmetry,
            "pooled": {g: pooled_verdict([r["audit"].verdicts[g] for r in runs]) for g in first["audit"].verdicts}}


def _figures(report: Report, result: dict, seed: int) -> None:
    label = result["label"]
    audit_figures(report, result["audit"], result["sets"], label, result["evaluator"], seed=seed,
                  paper_sigmas=result["paper_sigmas"])
    first = result["runs"][0]
    for view, audit in first["views"].items():
        report.tables[f"{label}: against {view}"] = pd.DataFrame(audit.summary_rows())
    hist = first["final_epoch"]
    if hist is not None:
        sec = label
        report.add_figure(sec, png_bytes(min_distance_histogram(hist, title=f"{sec}: final-epoch reference")),
                          f"{sec}: L2 distance to the nearest final-epoch reconstruction (the paper's histogram; "
                          "neighbouring epochs of one run would otherwise be each other's nearest). Generated models "
                          "far left of the training models' own spacing are replicas.", f"{sec}-final-epoch-hist")
    table = result["symmetry"]
    if table is not None:
        name = f"{label}: symmetry check"
        report.tables[name] = table  # shown under the figure's heading of the same name
        report.add_figure(name, png_bytes(symmetry_figure(table)),
                          f"{label}: the autoencoder's reconstructions of a model and of a function-preserving "
                          "transform of it (neuron permutation, positive scaling). Agreement 1 would mean it treats "
                          "both as the same function, i.e. it learned the symmetry.", f"{result['name']}-symmetry")


def seed_rows(result: dict) -> list[dict]:
    """Summary rows: every audited group of every seed, then the pooled verdict per group."""
    rows = []
    for r in result["runs"]:
        audit = r["audit"]
        for row, group in zip(audit.summary_rows(list(audit.verdicts)), audit.verdicts, strict=True):
            rows.append({"method": result["label"], "group": group, "seed": r["seed"],
                         **{k: v for k, v in row.items() if k != "method"}})
    for group, v in result["pooled"].items():
        ci = v.get("fraction_ci", (float("nan"), float("nan")))
        rows.append({"method": result["label"], "group": group, "seed": "pooled", "verdict": v["label"],
                     "distance / spacing": v.get("distance_ratio", float("nan")),
                     "beyond noise frontier": v.get("fraction_beyond_frontier", float("nan")),
                     "CI low": ci[0], "CI high": ci[1], "quality (generated)": v.get("median_quality", float("nan")),
                     "median test errors": v.get("median_errors", float("nan")), "warnings": "; ".join(v["warnings"])})
    return rows


def method_part(name: str, out: Path, preset: dict, seed: int = 0, progress: bool = True, seeds: int = 1,
                stage_lines: bool = False) -> dict:
    """:func:`run_method` plus its report figures and tables, keeping only what pickles (a study
    worker process returns this)."""
    r = run_method(name, out, preset, seed=seed, seeds=seeds, progress=progress, stage_lines=stage_lines)
    part = Report(name, pd.DataFrame())
    _figures(part, r, seed)
    keep = ("name", "label", "paper_sigmas", "audit", "timings", "generator", "samples", "data_config", "pooled")
    runs = [{"seed": x["seed"], "verdicts": x["audit"].verdicts, "generator": x["generator"],
             "views": {k: a.verdicts for k, a in x["views"].items()},
             **({"beyond_every": x["beyond_every"].to_dict("records")} if x["beyond_every"] is not None else {})}
            for x in r["runs"]]
    beyond = [x["beyond_every"].assign(seed=x["seed"]) for x in r["runs"] if x["beyond_every"] is not None]
    if beyond:
        part.tables[f"{r['label']}: beyond every baseline frontier"] = pd.concat(beyond, ignore_index=True)
    return {**{k: r[k] for k in keep}, "runs": runs, "rows": seed_rows(r), "figures": part.figures,
            "tables": part.tables, "per_model": {x["seed"]: x["audit"].table for x in r["runs"]}}


def _one_thread() -> None:
    # Workers split the cores between them; the small per-step ops of these fits lose more to
    # thread hand-offs than they gain once two processes share two cores.
    torch.set_num_threads(1)


def _method_parts(names: Sequence[str], out: Path, preset: dict, seed: int, workers: int, progress: bool,
                  seeds: int = 1) -> list[dict]:
    """One part per method, in ``names`` order; ``workers > 1`` runs methods in that many processes
    at once (one torch thread each), each method's own progress bars then silenced."""
    if workers <= 1 or len(names) <= 1:
        return [method_part(m, out, preset, seed, progress, seeds) for m in names]
    ctx = multiprocessing.get_context("spawn")  # fork would copy this process's torch thread pools
    with ProcessPoolExecutor(min(workers, len(names)), mp_context=ctx, initializer=_one_thread) as pool:
        futures = {pool.submit(method_part, m, out, preset, seed, False, seeds, progress): m for m in names}
        done = {}
        bar = tqdm(total=len(names), desc=f"study ({min(workers, len(names))} workers)", disable=not progress)
        for f in as_completed(futures):
            done[futures[f]] = f.result()
            bar.set_postfix_str(f"{futures[f]} done")
            bar.update()
        bar.close()
    return [done[m] for m in names]


def run_study(out: str | Path = "runs/study", *, preset: str = "quick", methods_: Sequence[str] = methods.METHODS,
              seed: int = 0, seeds: int | None = None, workers: int | None = None, progress: bool = True) -> Path:
    """Run the study and write ``report.html``, ``results.json`` and CSV tables under ``out``.
    ``seed`` seeds everything: the data (zoos, built once) and the first of ``seeds`` generator
    fits (seeds ``seed``, ``seed + 1``, …, each with its own samples, baselines and bootstrap;
    default: the preset's). ``workers``: methods run at once in separate processes (default: one
    per core, at most one per method); results do not depend on it."""
    if preset not in PRESETS:
        raise ConfigError(f"--preset: expected one of {sorted(PRESETS)}, got {preset!r}")
    for m in methods_:
        methods.method_module(m)
    if workers is None:
        workers = min(len(methods_), os.cpu_count() or 1)
    if int(workers) != workers or workers < 1:
        raise ConfigError(f"--workers: expected a positive integer, got {workers!r}")
    p = PRESETS[preset]
    seeds = p.get("seeds", 1) if seeds is None else seeds
    if int(seeds) != seeds or seeds < 1:
        raise ConfigError(f"--seeds: expected a positive integer, got {seeds!r}")
    if int(seed) != seed or seed < 0:
        raise ConfigError(f"--seed: expected a non-negative integer, got {seed!r}")
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    results = _method_parts(list(methods_), out, p, int(seed), int(workers), progress, int(seeds))
    summary = pd.DataFrame([{**row, "pooled over seeds": r["pooled"][g]["label"]}
                            for r in results for g, row in zip(r["audit"].generated, r["audit"].summary_rows())])
    report = Report(
        "Generative models of weights: generalization or memorization?", summary,
        intro=("For each method: its generated models, and held-out runs trained like the training runs but never "
               "shown to the generator, against the paper's reference for the method (its training checkpoints; "
               "Hyper-Representations: the autoencoder's reconstructions of them; HyperDiffusion: the ground-truth "
               "training shapes) and against baselines that learn nothing: noise added to a reference model over a "
               "σ sweep, the average of k reference models for k = 2 to 16, a per-parameter Gaussian. Similarity is "
               "the intersection over union of test errors with the most similar reference model; for "
               "HyperDiffusion's shapes it is minus the Chamfer distance to the nearest reference shape, so that "
               "larger means closer there too. The summary shows the first seed's numbers and the verdict pooled "
               "over seeds; the table of verdicts per seed shows every seed."),
        rule=rule_text(),
        configs={"preset": preset, "seed": int(seed), "seeds": list(range(int(seed), int(seed) + int(seeds))),
                 "methods": {r["name"]: {"data": r["data_config"], "generators": [x["generator"] for x in r["runs"]],
                                         "samples": r["samples"], "noise_sigmas": r["audit"].sigmas,
                                         "paper_sigmas": list(r["paper_sigmas"])}
                             for r in results}},
    )
    report.tables["Verdicts per seed and pooled"] = pd.DataFrame([row for r in results for row in r["rows"]])
    for r in results:
        report.figures += r["figures"]
        report.tables.update(r["tables"])
        for s, table in r["per_model"].items():
            report.data[f"{r['name']} per model seed {s}"] = table
    report.results = {r["name"]: {"seeds": r["runs"], "pooled": r["pooled"], "timings_s": r["timings"]}
                      for r in results}
    report.results["total_seconds"] = time.perf_counter() - start
    path = write_report(report, out)
    study = {"preset": preset, "seed": int(seed), "seeds": int(seeds), "methods": list(methods_), "workers": int(workers)}
    (out / "study.json").write_text(json.dumps(study))
    return path


def run_ablation_study(out: str | Path = "runs/ablation", *, method: str = "hyperrep", preset: str = "quick",
                       seed: int = 0, progress: bool = True) -> Path:
    """The ablation table: generator size, training length, dropout, augmentations and number of
    training checkpoints → quality and novelty of the samples, one row per variant."""
    if preset not in PRESETS:
        raise ConfigError(f"--preset: expected one of {sorted(PRESETS)}, got {preset!r}")
    p = PRESETS[preset]
    module = methods.method_module(method)
    out = Path(out)
    zoo = module.build_data(out / method / "zoo", preset=p["data"], progress=progress)
    table = run_ablation(zoo, method, base_config=p["generators"].get(method, {}), n_samples=p["samples"] or 100,
                         seed=seed, progress=progress)
    report = Report(f"Ablation of {method}", table,
                    intro=("Each row refits the generator with one change and measures its samples against the full "
                           "training set: does any change raise novelty (min L2 over the training spacing) without "
                           "losing quality?"),
                    configs={"method": method, "preset": preset, "seed": seed, "data": zoo.info.get("config", {}),
                             "training": table.attrs.get("training", {})})
    report.add_figure("Novelty against quality", png_bytes(ablation_figure(table)),
                      f"{method}: one point per variant. A variant that generalised would sit further right "
                      "(more novel) at the same height (quality).", f"{method}-ablation")
    return write_report(report, out)


def verdict_lines(out: str | Path) -> list[str]:
    """One readable line per method from a finished study's results.json (with several seeds: the
    pooled verdict of each audited group and the verdict of every seed)."""
    res = json.loads((Path(out) / "results.json").read_text())
    lines = [f"{r['method']:<22} {r['group']:<14} {r['verdict']:<21} replicates: {r['replicates']:<3} "
             f"beats noise: {r['beats noise']:<3} interpolates: {r['interpolates']}" for r in res["summary"]]
    for method, result in res.get("results", {}).items():
        for group, v in (result.get("pooled", {}) if isinstance(result, dict) else {}).items():
            if len(v["per_seed"]) > 1:
                lines.append(f"{method + ': ' + group:<40} pooled {v['label']}")
    return lines
