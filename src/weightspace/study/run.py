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
from ..audit.verdict import rule_text
from ..errors import ConfigError
from ..generative import methods
from ..generative.base import make_generator
from .ablation import ablation_figure, run_ablation
from .presets import PAPER_NAMES, PRESETS
from .symmetry_check import symmetry_check, symmetry_figure

SYMMETRY_MODELS = 32  # training checkpoints passed through an autoencoder for the symmetry check


HELDOUT = "held-out runs"  # trained like the training runs, never shown to a generator: the novelty ceiling
RAW = " (raw checkpoints)"  # suffix of the audit against the raw checkpoints where the paper's reference differs


class _Stages:
    """Progress inside one method (data, fit, sample, audit): a bar when ``progress``, otherwise one
    line per finished stage when ``lines`` (a worker process's methods run side by side)."""

    STAGES = ("data", "fit", "sample", "audit")

    def __init__(self, name: str, progress: bool, lines: bool):
        self.name, self.lines, self.timings = name, lines, {}
        self.bar = tqdm(total=len(self.STAGES), desc=name, disable=not progress, leave=True)
        self.t = time.perf_counter()
        self.bar.set_postfix_str(self.STAGES[0])

    def done(self, stage: str) -> None:
        self.timings[stage] = time.perf_counter() - self.t
        self.t = time.perf_counter()
        following = self.STAGES[self.STAGES.index(stage) + 1:]
        self.bar.set_postfix_str(following[0] if following else "done")
        self.bar.update()
        if self.lines:
            print(f"{self.name}: {stage} done ({self.timings[stage]:.0f} s)", flush=True)
        if not following:
            self.bar.close()


def run_method(name: str, out: Path, preset: dict, *, seed: int = 0, progress: bool = True,
               stage_lines: bool = False) -> dict:
    """Data, generator, samples, baselines and their audit for one method; timings in seconds.

    The generated models are audited against the paper's reference for the method (the method
    module's ``reference_weights(zoo, generator)`` if it has one, e.g. Hyper-Representations'
    reconstructions, else its training checkpoints), with noise added to ``noise_source(zoo,
    generator)`` when given, and against the raw checkpoints as a second view; held-out runs
    (``heldout_weights(zoo)``) are audited as a group of their own."""
    module = methods.method_module(name)
    stages = _Stages(name, progress, stage_lines)
    zoo = module.build_data(out / name / "zoo", preset=preset["data"], progress=progress)
    train = module.training_weights(zoo)
    stages.done("data")

    config = {**(module.generator_config(zoo) if hasattr(module, "generator_config") else {}),
              **preset["generators"].get(name, {})}
    gen = make_generator(name, **config)
    gen.fit(train, progress=progress, **module.fit_context(zoo))
    gen.save(out / name / "generator")
    stages.done("fit")

    n = preset["samples"] or module.n_samples(zoo)
    generated = gen.sample(n, seed)
    stages.done("sample")

    evaluator = ZooEvaluator(zoo)
    reference = module.reference_weights(zoo, gen) if hasattr(module, "reference_weights") else train
    source = module.noise_source(zoo, gen) if hasattr(module, "noise_source") else None
    paper_sigmas = preset.get("paper_sigmas", {}).get(name, ())
    label = PAPER_NAMES[name]
    sets = {TRAINING: evaluator.model_set(TRAINING, reference, is_training=True),
            label: evaluator.model_set(label, generated)}
    if hasattr(module, "heldout_weights") and len(held := module.heldout_weights(zoo)):
        sets[HELDOUT] = evaluator.model_set(HELDOUT, held)
    groups = [sets[g] for g in (label, HELDOUT) if g in sets]
    interpolation, noise = baseline_sets(evaluator, reference, n, seed=seed, generated=generated,
                                         paper_sigmas=paper_sigmas, noise_source=source)
    sets.update({m.name: m for m in [*interpolation, *noise.values()]})
    audit = audit_groups(label, sets[TRAINING], groups, noise, interpolation, labels=evaluator.labels,
                         space=zoo.space, seed=seed)
    views = {"reference": "reconstructions" if reference is not train else "training checkpoints"}
    raw = None
    if reference is not train:  # the other view, shown beside the paper's; the verdict uses the paper's
        raw_sets = {TRAINING: evaluator.model_set(TRAINING, train, is_training=True)}
        raw_interp, raw_noise = baseline_sets(evaluator, train, n, seed=seed, generated=generated,
                                              paper_sigmas=paper_sigmas)
        raw = audit_groups(label + RAW, raw_sets[TRAINING], groups, raw_noise, raw_interp, labels=evaluator.labels,
                           space=zoo.space, seed=seed)
    stages.done("audit")
    symmetry = None
    if hasattr(gen, "encode") and hasattr(gen, "decode"):  # an autoencoder: did it learn the symmetries?
        symmetry = symmetry_check(gen, zoo.space, train[:SYMMETRY_MODELS], evaluator, seed=seed)
    return {"name": name, "label": label, "module": module, "zoo": zoo, "audit": audit, "raw_audit": raw, "sets": sets,
            "timings": stages.timings, "generator": {"name": name, "config": gen.config()}, "samples": n,
            "data_config": zoo.info.get("config", {}), "evaluator": evaluator, "symmetry": symmetry,
            "views": views, "paper_sigmas": list(paper_sigmas)}


def _figures(report: Report, result: dict, seed: int) -> None:
    label = result["label"]
    audit_figures(report, result["audit"], result["sets"], label, result["evaluator"], seed=seed,
                  paper_sigmas=result["paper_sigmas"])
    if result["raw_audit"] is not None:
        report.tables[f"{label}: against the raw checkpoints"] = pd.DataFrame(result["raw_audit"].summary_rows())
    table = result["symmetry"]
    if table is not None:
        name = f"{label}: symmetry check"
        report.tables[name] = table  # shown under the figure's heading of the same name
        report.add_figure(name, png_bytes(symmetry_figure(table)),
                          f"{label}: the autoencoder's reconstructions of a model and of a function-preserving "
                          "transform of it (neuron permutation, positive scaling). Agreement 1 would mean it treats "
                          "both as the same function, i.e. it learned the symmetry.", f"{result['name']}-symmetry")


def method_part(name: str, out: Path, preset: dict, seed: int = 0, progress: bool = True,
                stage_lines: bool = False) -> dict:
    """:func:`run_method` plus its report figures and tables, keeping only what pickles (a study
    worker process returns this)."""
    r = run_method(name, out, preset, seed=seed, progress=progress, stage_lines=stage_lines)
    part = Report(name, pd.DataFrame())
    _figures(part, r, seed)
    keep = ("name", "label", "audit", "raw_audit", "timings", "generator", "samples", "data_config", "views", "paper_sigmas")
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
        futures = {pool.submit(method_part, m, out, preset, seed, False, progress): m for m in names}
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
    summary = pd.DataFrame([row for r in results for row in r["audit"].summary_rows()])
    report = Report(
        "Generative models of weights: generalization or memorization?", summary,
        intro=("For each method: its generated models, and held-out runs trained like the training runs but never "
               "shown to the generator, against the method's reference set (as in the paper: the training "
               "checkpoints; for Hyper-Representations, the autoencoder's reconstructions of them) and against "
               "baselines that learn nothing: noise added to a reference model over a σ sweep, the average of k "
               "reference models for k = 2 to 16, a per-parameter Gaussian. Similarity is the intersection over "
               "union of test errors with the most similar reference model; for HyperDiffusion's shapes it is "
               "minus the Chamfer distance to the nearest reference shape, so that larger means closer there too."),
        rule=rule_text(),
        configs={"preset": preset, "seed": seed, "methods": {
            r["name"]: {"data": r["data_config"], "generator": r["generator"], "samples": r["samples"],
                        "noise_sigmas": r["audit"].sigmas, "paper_sigmas": r["paper_sigmas"]} for r in results}},
    )
    for r in results:
        report.figures += r["figures"]
        report.tables.update(r["tables"])
        report.data[f"{r['name']} per model"] = r["audit"].table
        if r["raw_audit"] is not None:
            report.data[f"{r['name']} per model, raw checkpoints"] = r["raw_audit"].table
    report.results = {r["name"]: {"verdicts": r["audit"].verdicts, "timings_s": r["timings"], "reference": r["views"],
                                  "raw_checkpoint_verdicts": r["raw_audit"].verdicts if r["raw_audit"] else None}
                      for r in results}
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
    return [f"{r['method']:<22} {r['group']:<14} {r['verdict']:<21} replicates: {r['replicates']:<3} "
            f"beats noise: {r['beats noise']:<3} interpolates: {r['interpolates']}" for r in res["summary"]]
