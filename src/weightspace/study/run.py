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
from tqdm.auto import tqdm

from ..audit.figures import png_bytes
from ..audit.report import Report, write_report
from ..audit.run import (
    TRAINING,
    ZooEvaluator,
    audit_figures,
    audit_groups,
    baseline_sets,
)
from ..errors import ConfigError
from ..generative import methods
from ..generative.base import make_generator
from .ablation import ablation_figure, run_ablation
from .presets import PRESETS
from .symmetry_check import symmetry_check, symmetry_figure

SYMMETRY_MODELS = 32  # training checkpoints passed through an autoencoder for the symmetry check


def run_method(name: str, out: Path, preset: dict, *, seed: int = 0, progress: bool = True) -> dict:
    """Data, generator, samples, baselines and their audit for one method; timings in seconds."""
    module = methods.method_module(name)
    timings = {}
    t = time.perf_counter()
    zoo = module.build_data(out / name / "zoo", preset=preset["data"], progress=progress)
    train = module.training_weights(zoo)
    timings["data"] = time.perf_counter() - t

    t = time.perf_counter()
    gen = make_generator(name, **preset["generators"].get(name, {}))
    gen.fit(train, progress=progress, **module.fit_context(zoo))
    gen.save(out / name / "generator")
    timings["fit"] = time.perf_counter() - t

    t = time.perf_counter()
    n = preset["samples"] or module.n_samples(zoo)
    generated = gen.sample(n, seed)
    timings["sample"] = time.perf_counter() - t

    t = time.perf_counter()
    evaluator = ZooEvaluator(zoo)
    sets = {TRAINING: evaluator.model_set(TRAINING, train, is_training=True),
            name: evaluator.model_set(name, generated)}
    interpolation, noise = baseline_sets(evaluator, train, n, seed=seed)
    sets.update({m.name: m for m in [*interpolation, *noise.values()]})
    audit = audit_groups(name, sets[TRAINING], [sets[name]], noise, interpolation, labels=evaluator.labels,
                         seed=seed)
    timings["audit"] = time.perf_counter() - t
    symmetry = None
    if hasattr(gen, "encode") and hasattr(gen, "decode"):  # an autoencoder: did it learn the symmetries?
        symmetry = symmetry_check(gen, zoo.space, train[:SYMMETRY_MODELS], evaluator, seed=seed)
    return {"name": name, "module": module, "zoo": zoo, "audit": audit, "sets": sets, "timings": timings,
            "generator": {"name": name, "config": gen.config()}, "samples": n,
            "data_config": zoo.info.get("config", {}), "evaluator": evaluator, "symmetry": symmetry}


def _figures(report: Report, result: dict, seed: int) -> None:
    audit_figures(report, result["audit"], result["sets"], result["name"], result["evaluator"], seed=seed)
    table = result["symmetry"]
    if table is not None:
        name = f"Symmetry check ({result['name']})"
        report.tables[name] = table
        report.add_figure(name, png_bytes(symmetry_figure(table)),
                          f"{result['name']}: the autoencoder's reconstructions of a model and of a function-preserving "
                          "transform of it (neuron permutation, positive scaling). Agreement 1 would mean it treats "
                          "both as the same function, i.e. it learned the symmetry.", f"{result['name']}-symmetry")


def method_part(name: str, out: Path, preset: dict, seed: int = 0, progress: bool = True) -> dict:
    """:func:`run_method` plus its report figures and tables, keeping only what pickles (a study
    worker process returns this)."""
    r = run_method(name, out, preset, seed=seed, progress=progress)
    part = Report(name, pd.DataFrame())
    _figures(part, r, seed)
    keep = ("name", "audit", "timings", "generator", "samples", "data_config")
    return {**{k: r[k] for k in keep}, "figures": part.figures, "tables": part.tables}


def _one_thread() -> None:
    # Workers split the cores between them; the small per-step ops of these fits lose more to
    # thread hand-offs than they gain once two processes share two cores.
    torch.set_num_threads(1)


def _method_parts(names: Sequence[str], out: Path, preset: dict, seed: int, workers: int, progress: bool) -> list[dict]:
    """One part per method, in ``names`` order; ``workers > 1`` runs methods in that many processes
    at once (one torch thread each), each method's own progress bars then silenced."""
    if workers <= 1 or len(names) <= 1:
        return [method_part(m, out, preset, seed, progress) for m in names]
    ctx = multiprocessing.get_context("spawn")  # fork would copy this process's torch thread pools
    with ProcessPoolExecutor(min(workers, len(names)), mp_context=ctx, initializer=_one_thread) as pool:
        futures = {pool.submit(method_part, m, out, preset, seed, False): m for m in names}
        done = {}
        bar = tqdm(total=len(names), desc=f"study ({min(workers, len(names))} workers)", disable=not progress)
        for f in as_completed(futures):
            done[futures[f]] = f.result()
            bar.set_postfix_str(f"{futures[f]} done")
            bar.update()
        bar.close()
    return [done[m] for m in names]


def run_study(out: str | Path = "runs/study", *, preset: str = "quick", methods_: Sequence[str] = methods.METHODS,
              seed: int = 0, workers: int | None = None, progress: bool = True) -> Path:
    """Run the study and write ``report.html``, ``results.json`` and CSV tables under ``out``.
    ``workers``: methods run at once in separate processes (default: one per core, at most one
    per method); results do not depend on it."""
    if preset not in PRESETS:
        raise ConfigError(f"--preset: expected one of {sorted(PRESETS)}, got {preset!r}")
    for m in methods_:
        methods.method_module(m)
    if workers is None:
        workers = min(len(methods_), os.cpu_count() or 1)
    if int(workers) != workers or workers < 1:
        raise ConfigError(f"--workers: expected a positive integer, got {workers!r}")
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    p = PRESETS[preset]
    start = time.perf_counter()
    results = _method_parts(list(methods_), out, p, seed, int(workers), progress)
    summary = pd.DataFrame([row for r in results for row in r["audit"].summary_rows([r["name"]])])
    report = Report(
        "Generative models of weights: generalization or memorization?", summary,
        intro=("For each method: its generated models against its training checkpoints and against baselines that "
               "learn nothing (noise added to a checkpoint over a σ sweep, the average of 16 checkpoints, a "
               "per-parameter Gaussian). Similarity is the intersection over union of test errors with the most "
               "similar training checkpoint (Chamfer distance for shapes). Verdicts follow the rule in "
               "weightspace.audit.novelty.verdict."),
        configs={"preset": preset, "seed": seed, "methods": {
            r["name"]: {"data": r["data_config"], "generator": r["generator"], "samples": r["samples"],
                        "noise_sigmas": r["audit"].sigmas} for r in results}},
    )
    for r in results:
        report.figures += r["figures"]
        report.tables.update(r["tables"])
        report.data[f"{r['name']} per model"] = r["audit"].table
    report.results = {r["name"]: {"verdicts": r["audit"].verdicts, "timings_s": r["timings"]} for r in results}
    report.results["total_seconds"] = time.perf_counter() - start
    path = write_report(report, out)
    study = {"preset": preset, "seed": seed, "methods": list(methods_), "workers": int(workers)}
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
    """One readable line per method from a finished study's results.json."""
    res = json.loads((Path(out) / "results.json").read_text())
    return [f"{r['method']:<16} {r['verdict']:<22} beats noise: {r['beats noise']:<4} "
            f"matches interpolation: {r['matches interpolation']}" for r in res["summary"]]
