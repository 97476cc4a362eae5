"""The memorization study end to end: for each method, build its data setting, fit its generator,
sample, draw the baselines and the controls, audit everything alike, and write one report."""

from __future__ import annotations

import dataclasses
import json
import multiprocessing
import os
import time
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd
import torch
from torch import Tensor
from tqdm.auto import tqdm

from ..align import l2_distances
from ..audit.controls import HELDOUT
from ..audit.figures import (
    coverage_bars,
    min_distance_histogram,
    png_bytes,
    seed_spread,
    similarity_histogram,
)
from ..audit.novelty import ModelSet
from ..audit.report import Report, ReportFigure, write_report
from ..audit.groups import (
    TRAINING,
    Audit,
    ZooEvaluator,
    audit_figures,
    audit_with_controls,
)
from ..audit.similarity import min_distance_to_training
from ..audit.verdict import pooled_verdict, rule_text
from ..errors import ConfigError
from ..generator import load_generator, make_generator
from ..parallel import resolve_backend
from ..registry import method_names, setting
from ..zoo.setting import DataSetting
from ..zoo.store import Zoo
from .ablation import ablation_figure, run_ablation
from .on_ray import method_parts_on_ray
from .paper_calls import headline, paper_comparison
from .presets import PRESETS, longest_first
from .symmetry_check import symmetry_check, symmetry_figure
from .tables import (
    axes_table,
    beyond_every_rows,
    controls_table,
    fresh_runs_table,
    pooled_table,
    seed_table,
)

SYMMETRY_MODELS = 32  # training checkpoints passed through an autoencoder for the symmetry check
RAW = " (raw checkpoints)"  # suffix of the audit against the raw checkpoints where the paper's reference differs
# Where the reference is not the training models themselves (Hyper-Representations' reconstructions),
# the training models are audited as a group too: what a copy of a raw checkpoint scores there.
COPIES_OF_TRAINING = "copies of training models"
BEYOND_NOTE = ("beyond every frontier: the fraction of the group's models whose quality beats the highest of the "
               "baselines' frontiers at their similarity, with a 95% bootstrap interval; noise, average of k, "
               "Gaussian, aligned λ: the fraction beyond that baseline's frontier alone.")
SCALE = ("Scale: CPU-sized versions of the paper's settings: 7 × 7 inputs (P-diff, Hyper-Representations), the "
         "paper's 784→10→10 MLP (G.pt, weightspace's own), 2-D shapes instead of 3-D (HyperDiffusion); the quick "
         "preset draws 100 models per group.")


class _Stages:
    """Progress inside one method (data, then fit, sample and audit per seed): a bar when
    ``progress``, otherwise one line per finished stage when ``lines`` (a worker process's methods
    run side by side)."""

    def __init__(self, name: str, seeds: Sequence[int], progress: bool, lines: bool):
        self.name, self.lines = name, lines
        self.stages = ["data"] + [f"{stage} (seed {s})" for s in seeds for stage in ("fit", "sample", "audit")]
        self.timings: dict[str, float] = {}
        self.bar = tqdm(total=len(self.stages), desc=name, disable=not progress, leave=True)
        self.t = time.perf_counter()
        self.bar.set_postfix_str(self.stages[0])

    def done(self, stage: str) -> None:
        self.timings[stage] = time.perf_counter() - self.t
        self.t = time.perf_counter()
        following = self.stages[self.stages.index(stage) + 1:]
        self.bar.set_postfix_str(following[0] if following else "done")
        self.bar.update()
        if self.lines:
            print(f"{self.name}: {stage} done ({self.timings[stage]:.0f} s)", flush=True)
        if not following:
            self.bar.close()


@dataclass
class SeedRun:
    """One generator fit of a method: its audit (and, where the paper's reference is not the raw
    checkpoints, the first seed's audit against them), the evaluated groups, the generator's config."""

    seed: int
    audit: Audit
    sets: dict[str, ModelSet]
    generator: dict
    raw_audit: Audit | None = None
    final_epoch: pd.DataFrame | None = None


@dataclass
class MethodResult:
    """Everything one method's part of the study measured (in this process)."""

    setting: DataSetting
    zoo: Zoo
    evaluator: ZooEvaluator
    runs: list[SeedRun]
    pooled: dict[str, dict]
    timings: dict
    samples: int
    reference_view: str
    reference_span: float | None
    symmetry: pd.DataFrame | None = None


@dataclass
class MethodPart:
    """What a study worker process returns for one method: numbers, tables and figures, all picklable."""

    name: str
    label: str
    summary: list[dict]
    seed_rows: list[dict]
    control_rows: list[dict]
    axes: list[dict]
    pooled: dict[str, dict]
    seeds: list[dict]
    timings: dict
    samples: int
    data_config: dict
    reference_view: str
    reference_span: float | None
    paper_sigmas: list[float]
    noise_sigmas: dict[str, float]
    raw_verdicts: dict | None
    per_model: dict[int, pd.DataFrame]
    figures: list[ReportFigure] = field(default_factory=list)
    tables: dict[str, pd.DataFrame] = field(default_factory=dict)
    data: dict[str, pd.DataFrame] = field(default_factory=dict)
    notes: dict[str, list[str]] = field(default_factory=dict)


def _final_epoch_histogram(s: DataSetting, zoo: Zoo, reference: ModelSet, generated: ModelSet,
                           label: str) -> pd.DataFrame | None:
    """Min L2 to the final-epoch reference models only: the paper's histogram for
    Hyper-Representations (neighbouring epochs of one run would be each other's nearest)."""
    final = s.final_epoch(zoo)
    if final is None:
        return None
    ref = reference.weights[final]
    rows = []
    for group, w, exclude in ((f"{TRAINING} (final epoch)", ref, True), (label, generated.weights, False)):
        values, _ = min_distance_to_training(l2_distances(w, ref), exclude_self=exclude)
        rows += [{"group": group, "model": i, "min_l2": float(v)} for i, v in enumerate(values)]
    return pd.DataFrame(rows)


def _span(weights: Tensor | None) -> float | None:
    """The reference's extent in units of its own spacing (weight references only: a shape reference's
    spacing is in Chamfer units): the farthest pair's L2 over the median nearest-neighbour L2 (a
    fine-tune trajectory that drifts spans many spacings; blends of its ends then land far from every
    checkpoint)."""
    if weights is None or len(weights) < 2:
        return None
    d = l2_distances(weights, weights)
    nearest, _ = min_distance_to_training(d, exclude_self=True)
    return float(d.max() / nearest.median().clamp_min(1e-300))


def _fitted(name: str, directory: Path, train: Tensor, context: dict, config: dict, progress: bool):
    """Generator ``name`` fitted with ``config``: loaded from ``directory`` when a finished fit with the
    same configuration is there (a study run again after an interruption), else fitted and saved."""
    gen = make_generator(name, **config)
    saved = directory / "generator.json"
    wanted = json.loads(json.dumps({"generator": name, "config": gen.config()}))
    if saved.is_file() and json.loads(saved.read_text()) == wanted:
        return load_generator(directory)
    gen.fit(train, progress=progress, **context)
    gen.save(directory)
    return gen


def _reference_sets(s: DataSetting, zoo: Zoo, evaluator: ZooEvaluator, gen, raw: ModelSet,
                    heldout: ModelSet | None) -> tuple[ModelSet, ModelSet | None, str]:
    """The paper's reference for ``gen``'s samples as an evaluated set, the held-out runs as it sees
    them, and the reference's name."""
    ref = s.reference(zoo, gen)
    if ref.heldout is not None:
        heldout = evaluator.model_set(HELDOUT, ref.heldout)
    if ref.points is not None:
        weights = raw.weights if ref.weights is None else ref.weights
        return (ModelSet(TRAINING, s.shape_quality(zoo, ref.points), weights=weights, points=ref.points,
                         is_training=True), heldout, ref.view)
    if ref.weights is None:
        return raw, heldout, ref.view
    return evaluator.model_set(TRAINING, ref.weights, is_training=True), heldout, ref.view


def run_method(name: str, out: Path, preset: dict, *, seed: int = 0, seeds: int = 1, progress: bool = True,
               stage_lines: bool = False) -> MethodResult:
    """Data (built once, from ``seed``), then for each fit seed ``seed``, ``seed + 1``, … (``seeds``
    of them): generator fit, samples, baselines, controls and their audit. Timings in seconds.

    The generated models are audited against the paper's reference for the method (its setting's
    ``reference``), with noise added to its ``noise_source``; held-out runs are a control. Where the
    reference is not the raw checkpoints, the first seed is also audited against them as a second
    view; the verdict uses the paper's. The verdicts of all seeds are pooled per group."""
    s = setting(name)
    fit_seeds = list(range(seed, seed + seeds))
    stages = _Stages(name, fit_seeds, progress, stage_lines)
    zoo = s.build(out / name / "zoo", preset=preset["data"], progress=progress, seed=seed)
    train = s.training(zoo)
    evaluator = ZooEvaluator(zoo)
    raw = evaluator.model_set(TRAINING, train, is_training=True)
    held = s.heldout(zoo)
    heldout = evaluator.model_set(HELDOUT, held) if held is not None and len(held) else None
    stages.done("data")
    n = preset["samples"] or s.n_samples(zoo)
    runs, symmetry, view = [], None, ""
    companion_specs = s.companions(zoo)
    for fs in fit_seeds:
        config = {**s.generator_config(zoo), **s.generator_options(preset["data"]), "seed": fs}
        gen = _fitted(s.generator_name, out / name / f"generator-seed{fs}", train, s.fit_context(zoo), config,
                      progress)
        companions = {label: _fitted(g, out / name / f"{g}-seed{fs}", train, {}, {**c, "seed": fs}, progress)
                      for label, (g, c) in companion_specs.items()}
        stages.done(f"fit (seed {fs})")
        generated = gen.sample(n, fs)
        stages.done(f"sample (seed {fs})")
        reference, seen_heldout, view = _reference_sets(s, zoo, evaluator, gen, raw, heldout)
        sets = {TRAINING: reference, s.label: evaluator.model_set(s.label, generated)}
        sets.update({label: evaluator.model_set(label, c.sample(n, fs)) for label, c in companions.items()})
        own = reference is raw or reference.points is not None  # compared with the training models themselves
        if not own:
            sets[COPIES_OF_TRAINING] = dataclasses.replace(raw, name=COPIES_OF_TRAINING, is_training=False)
        groups = [sets[g] for g in (s.label, *companions, COPIES_OF_TRAINING) if g in sets]
        audit = audit_with_controls(s.label, evaluator, reference, groups, n, space=zoo.space, seed=fs,
                                    generated=generated, paper_sigmas=s.paper_sigmas,
                                    noise_source=s.noise_source(zoo, gen), heldout=seen_heldout, align=s.aligned)
        raw_audit = None
        if not own and fs == seed:  # the other view, shown beside the paper's
            raw_audit = audit_with_controls(s.label + RAW, evaluator, raw, [sets[s.label]], n, space=zoo.space,
                                            seed=fs, generated=generated, paper_sigmas=s.paper_sigmas, heldout=heldout,
                                            align=s.aligned)
        stages.done(f"audit (seed {fs})")
        record = {"name": s.generator_name, "config": gen.config(),
                  "companions": {label: {"name": companion_specs[label][0], "config": c.config()}
                                 for label, c in companions.items()}}
        runs.append(SeedRun(fs, audit, sets, record, raw_audit,
                            _final_epoch_histogram(s, zoo, reference, sets[s.label], s.label)))
        if fs == seed and hasattr(gen, "encode") and hasattr(gen, "decode"):  # did the autoencoder learn the symmetries?
            symmetry = symmetry_check(gen, zoo.space, train[:SYMMETRY_MODELS], evaluator, seed=seed)
    pooled = {g: pooled_verdict([r.audit.verdicts[g] for r in runs]) for g in runs[0].audit.verdicts}
    timings = {"data": stages.timings["data"],
               "seeds": [{k: stages.timings[f"{k} (seed {x})"] for k in ("fit", "sample", "audit")} for x in fit_seeds]}
    first = runs[0].sets[TRAINING]
    return MethodResult(s, zoo, evaluator, runs, pooled, timings, n, view,
                        _span(first.weights if first.points is None else None), symmetry)


def _shown_run(result: MethodResult) -> SeedRun:
    """The seed whose figures the report shows: the first seed that makes the pooled call on the
    generated group (the first seed when the seeds have no majority)."""
    call = result.pooled[result.setting.label]["verdict"]
    return next((r for r in result.runs if r.audit.verdicts[result.setting.label]["verdict"] == call), result.runs[0])


def _spread_rows(result: MethodResult) -> pd.DataFrame:
    """Per seed, the generated group's and the held-out runs' numbers for the seed-spread figure."""
    rows = []
    for r in result.runs:
        for g in (result.setting.label, HELDOUT):
            v = r.audit.verdicts.get(g)
            if v is None:
                continue
            d, f = v.get("distance_ratio_ci", (float("nan"),) * 2), v.get("fraction_ci", (float("nan"),) * 2)
            rows.append({"seed": r.seed, "group": g, "distance_ratio": v.get("distance_ratio", float("nan")),
                         "distance_lo": d[0], "distance_hi": d[1],
                         "beyond": v.get("fraction_beyond_frontier", float("nan")), "beyond_lo": f[0], "beyond_hi": f[1],
                         "quality": v["median_quality"]})
    return pd.DataFrame(rows)


def _figures(report: Report, result: MethodResult, run: SeedRun) -> None:
    label, name = result.setting.label, result.setting.name
    audit_figures(report, run.audit, run.sets, label, result.evaluator, seed=run.seed,
                  paper_sigmas=result.setting.paper_sigmas)
    t = run.audit.table
    shown = [TRAINING, label, *(g for g in run.audit.expected)]
    sim = run.audit.similarity
    report.add_figure(label, png_bytes(similarity_histogram(
        t[t["group"].isin(shown)], column=sim, title=f"{label} (seed {run.seed})",
        xlabel="max error-IoU similarity to the reference" if sim == "max_similarity"
        else "− min Chamfer distance to the reference shapes")),
        f"{label}: each group's similarity to its most similar reference model, in function space (seed "
        f"{run.seed}). Copies pile up at the right; new models sit where the reference models' own similarity "
        "to each other sits.", f"{name}-similarity-hist")
    covered = {g: run.audit.verdicts[g]["coverage"] for g in [label, *run.audit.expected]
               if "coverage" in run.audit.verdicts.get(g, {})}
    if covered:
        report.add_figure(label, png_bytes(coverage_bars(covered, title=f"{label} (seed {run.seed})")),
                          f"{label}: distinct nearest reference models per 100 models of each group (seed {run.seed}). "
                          "A generator that reproduces a few checkpoints covers few; fresh runs cover many.",
                          f"{name}-coverage")
    if len(result.runs) > 1:
        report.add_figure(label, png_bytes(seed_spread(_spread_rows(result), title=label)),
                          f"{label}: the generated models and the held-out runs per generator fit seed, with 95% "
                          "bootstrap intervals: how far a call moves from one seed to the next.", f"{name}-seeds")
    if run.raw_audit is not None:
        report.tables[f"{label}: against the raw checkpoints"] = pd.DataFrame(run.raw_audit.summary_rows())
    if run.final_epoch is not None:
        report.add_figure(label, png_bytes(min_distance_histogram(run.final_epoch,
                                                                  title=f"{label}: final-epoch reference")),
                          f"{label}: L2 distance to the nearest final-epoch reconstruction (the paper's histogram; "
                          "neighbouring epochs of one run would otherwise be each other's nearest). Generated models "
                          "far left of the reference's own spacing are replicas.", f"{result.setting.name}-final-epoch-hist")
    table = result.symmetry
    if table is not None:
        name = f"{label}: symmetry check"
        report.tables[name] = table  # shown under the figure's heading of the same name
        report.add_figure(name, png_bytes(symmetry_figure(table)),
                          f"{label}: the autoencoder's reconstructions of a model and of a function-preserving "
                          "transform of it (neuron permutation, positive scaling). Agreement 1 would mean it treats "
                          "both as the same function, i.e. it learned the symmetry.", f"{result.setting.name}-symmetry")


def _yes(flags: Sequence[bool]) -> str:
    return f"{'yes' if 2 * sum(flags) > len(flags) else 'no'} ({sum(flags)}/{len(flags)})"


def pooled_rows(result: MethodResult) -> list[dict]:
    """One summary row per audited group that is not a baseline: the pooled verdict over seeds and the axes' medians."""
    label, rows = result.setting.label, []
    shown = [label, *(g for g in result.runs[0].audit.generated if g != label), *result.runs[0].audit.expected]
    for group in shown:
        v = result.pooled[group]
        ci = v.get("fraction_ci_range", (float("nan"), float("nan")))
        rows.append({
            "method": label, "group": "generated" if group == label else group, "verdict": v["label"],
            "replicates": _yes(v["replicates"]), "distance / spacing": v.get("distance_ratio", float("nan")),
            "replica bar": v.get("replica_threshold_ratio", float("nan")),
            "beats noise": _yes(v["beats_noise"]),
            "beyond noise frontier": v.get("fraction_beyond_frontier", float("nan")),
            "range of CI low over seeds": ci[0], "range of CI high over seeds": ci[1],
            "interpolates": _yes(v["matches_interpolation"]),
            "quality": v.get("median_quality", float("nan")),
            "quality (reference)": v.get("training_median_quality", float("nan")),
            "quality floor": v.get("quality_floor", float("nan")),
            "coverage": v.get("coverage", float("nan")),
            "two-sample AUC": v.get("two_sample_auc", float("nan")),
            "median test errors": v.get("median_errors", float("nan")),
            "seeds": len(v["seed_verdicts"]), "reasons": "; ".join(v["reasons"]), "warnings": "; ".join(v["warnings"]),
        })
    return rows


def seed_rows(result: MethodResult) -> list[dict]:
    """Every seed's summary rows, with the seed."""
    return [{"seed": r.seed, **row} for r in result.runs for row in r.audit.summary_rows()]


def control_records(result: MethodResult) -> list[dict]:
    """Every seed's controls: expected, got, pass, with the reason where the rule was inconclusive."""
    return [{"method": result.setting.label, "seed": r.seed, **row} for r in result.runs for row in r.audit.control_rows()]


def axis_records(result: MethodResult) -> list[dict]:
    """Every seed's check of each axis on the controls."""
    return [{"method": result.setting.label, "seed": r.seed, "axis": axis, **check}
            for r in result.runs for axis, check in r.audit.axes.items()]


def _seed_record(r: SeedRun) -> dict:
    return {"seed": r.seed, "verdicts": r.audit.verdicts, "generator": r.generator,
            "controls": r.audit.control_rows(), "axes": r.audit.axes, "notes": r.audit.notes,
            "fresh_runs_control": r.audit.fresh_control,
            "beyond_every": r.audit.beyond_every.to_dict("records") if r.audit.beyond_every is not None else []}


def method_part(name: str, out: Path, preset: dict, seed: int = 0, progress: bool = True,
                stage_lines: bool = False, seeds: int = 1) -> MethodPart:
    """:func:`run_method` plus its report figures and tables, keeping only what pickles (a study
    worker process returns this)."""
    r = run_method(name, out, preset, seed=seed, seeds=seeds, progress=progress, stage_lines=stage_lines)
    part = MethodPart(name, r.setting.label, pooled_rows(r), seed_rows(r), control_records(r), axis_records(r),
                      r.pooled, [_seed_record(x) for x in r.runs], r.timings, r.samples,
                      r.zoo.info.get("config", {}), r.reference_view, r.reference_span, list(r.setting.paper_sigmas),
                      r.runs[0].audit.sigmas, r.runs[0].raw_audit.verdicts if r.runs[0].raw_audit else None,
                      {x.seed: x.audit.table for x in r.runs})
    # this method's numbers on disk at once: a study stopped before its last method keeps them
    (out / name / "results.json").write_text(json.dumps(
        {"pooled": part.pooled, "seeds": part.seeds, "timings_s": part.timings, "summary": part.summary},
        default=str, indent=1))
    report = Report(name, pd.DataFrame())
    _figures(report, r, _shown_run(r))
    beyond = [x.audit.beyond_every.assign(seed=x.seed) for x in r.runs if x.audit.beyond_every is not None]
    if beyond:
        every = pd.concat(beyond, ignore_index=True)
        title = f"{r.setting.label}: beyond every baseline frontier"
        report.tables[title] = beyond_every_rows(every)
        report.notes[title] = [BEYOND_NOTE]
        report.data[f"{r.setting.label}: beyond every baseline frontier, every number"] = every
    part.figures, part.tables, part.data, part.notes = report.figures, report.tables, report.data, report.notes
    return part


def _one_thread() -> None:
    # Workers split the cores between them; the small per-step ops of these fits lose more to
    # thread hand-offs than they gain once two processes share two cores.
    torch.set_num_threads(1)


def _method_parts(names: Sequence[str], out: Path, preset: dict, seed: int, workers: int, progress: bool,
                  seeds: int = 1, backend=None) -> list[MethodPart]:
    """One part per method, in ``names`` order; ``workers > 1`` runs methods in that many processes
    at once (one torch thread each), each method's own progress bars then silenced; a Ray
    ``backend`` runs each method as a Ray task instead, the same way."""
    if backend is not None:
        return method_parts_on_ray(method_part, names, out, preset, seed, seeds, progress, backend)
    if workers <= 1 or len(names) <= 1:
        return [method_part(m, out, preset, seed, progress, False, seeds) for m in names]
    ctx = multiprocessing.get_context("spawn")  # fork would copy this process's torch thread pools
    with ProcessPoolExecutor(min(workers, len(names)), mp_context=ctx, initializer=_one_thread) as pool:
        first = longest_first(names)
        futures = {pool.submit(method_part, m, out, preset, seed, False, progress, seeds): m for m in first}
        done = {}
        bar = tqdm(total=len(names), desc=f"study ({min(workers, len(names))} workers)", disable=not progress)
        for f in as_completed(futures):
            done[futures[f]] = f.result()
            bar.set_postfix_str(f"{futures[f]} done")
            bar.update()
        bar.close()
    return [done[m] for m in names]


def run_study(out: str | Path = "runs/study", *, preset: str = "quick", methods_: Sequence[str] | None = None,
              seed: int = 0, seeds: int | None = None, workers: int | None = None, progress: bool = True,
              backend="local", address: str | None = None) -> Path:
    """Run the study and write ``report.html``, ``results.json`` and CSV tables under ``out``.
    ``methods_``: registered method names (default: the built-in ones). ``seed`` seeds everything:
    the data (zoos, built once) and the first of ``seeds`` generator fits (seeds ``seed``, ``seed +
    1``, …, each with its own samples, baselines, controls and bootstrap; default: the preset's).
    ``workers``: methods run at once in separate processes (default: one per core, at most one per
    method); results do not depend on it. ``backend="ray"``: each method is a Ray task instead (a
    local Ray, or the cluster at ``address``), to the same results."""
    ray_backend = resolve_backend(backend, address)
    if ray_backend is not None and workers is not None:
        raise ConfigError("--workers: the local backend's processes; on Ray the cluster's CPUs run the methods")
    if preset not in PRESETS:
        raise ConfigError(f"--preset: expected one of {sorted(PRESETS)}, got {preset!r}")
    methods_ = list(method_names()[:5] if methods_ is None else methods_)
    for m in methods_:
        setting(m)
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
    parts = _method_parts(methods_, out, p, int(seed), int(workers), progress, int(seeds), ray_backend)
    fit_seeds = list(range(int(seed), int(seed) + int(seeds)))
    comparison = paper_comparison({r.name: r for r in parts})
    report = Report(
        "Generative models of weights: generalization or memorization?", headline(parts, comparison),
        intro=("For each method: its generated models, and held-out runs trained like the training runs but never "
               "shown to the generator, against the method's reference set (as in the paper: the training "
               "checkpoints; for Hyper-Representations, the autoencoder's reconstructions of them; for "
               "HyperDiffusion, the ground-truth training shapes) and against baselines that learn nothing: noise "
               "added to a reference model over a σ sweep, the average of k reference models for k = 2 to 16, a "
               "per-parameter Gaussian, interpolation between two aligned reference models. Controls whose answer "
               "is fixed in advance are audited alike in every setting and seed; a rule that gets one wrong is "
               "inconclusive there. Similarity is the intersection over union of test errors with the most similar "
               "reference model; for HyperDiffusion's shapes it is minus the Chamfer distance to the nearest "
               "reference shape, so that larger means closer there too. "
               f"Each generator is fitted with {len(fit_seeds)} seed(s) ({', '.join(map(str, fit_seeds))}) on data "
               "built once; a verdict is the call of more than half of the seeds, else 'no majority'."),
        rule=rule_text(),
        configs={"preset": preset, "seed": int(seed), "seeds": fit_seeds, "methods": {
            r.name: {"data": r.data_config, "generators": [x["generator"] for x in r.seeds],
                     "samples": r.samples, "noise_sigmas": r.noise_sigmas, "paper_sigmas": r.paper_sigmas}
            for r in parts}},
    )
    report.scale = SCALE
    report.notes["summary"] = [f"{r['method']}: {r['where they differ, measured']}"
                               for r in comparison.to_dict("records") if r["where they differ, measured"] != "—"]
    report.tables["Controls"], report.notes["Controls"] = controls_table(parts)
    report.tables["The rule's axes on the controls"], report.notes["The rule's axes on the controls"] = axes_table(parts)
    if len(comparison):
        report.tables["Verdicts against the paper's"] = comparison.drop(columns="where they differ, measured")
    report.tables["Pooled verdicts per group"] = pooled_table(parts)
    report.tables["Generated models per seed"] = seed_table(parts)
    fresh, fresh_notes = fresh_runs_table(parts)
    if len(fresh):
        report.tables["Against fresh runs"], report.notes["Against fresh runs"] = fresh, fresh_notes
    report.data["pooled verdicts, every number"] = pd.DataFrame([row for r in parts for row in r.summary])
    report.data["verdicts per seed, every number"] = pd.DataFrame([row for r in parts for row in r.seed_rows])
    report.data["controls per seed"] = pd.DataFrame([row for r in parts for row in r.control_rows])
    for r in parts:
        report.figures += r.figures
        report.tables.update(r.tables)
        report.data.update(r.data)
        report.notes.update(r.notes)
        for s, table in r.per_model.items():
            report.data[f"{r.name} per model seed {s}"] = table
    report.results = {r.name: {"pooled": r.pooled, "seeds": r.seeds, "timings_s": r.timings,
                               "reference": r.reference_view, "reference_span": r.reference_span,
                               "controls": r.control_rows, "axes": r.axes,
                               "raw_checkpoint_verdicts": r.raw_verdicts}
                      for r in parts}
    report.results["paper_comparison"] = comparison.to_dict("records")
    report.results["total_seconds"] = time.perf_counter() - start
    path = write_report(report, out)
    study = {"preset": preset, "seed": int(seed), "seeds": int(seeds), "methods": list(methods_),
             "workers": int(workers)}
    (out / "study.json").write_text(json.dumps(study))
    return path


def run_ablation_study(out: str | Path = "runs/ablation", *, method: str = "hyperrep", preset: str = "quick",
                       seed: int = 0, progress: bool = True) -> Path:
    """The ablation table: generator size, training length, dropout, augmentations and number of
    training checkpoints → quality and novelty of the samples, one row per variant."""
    if preset not in PRESETS:
        raise ConfigError(f"--preset: expected one of {sorted(PRESETS)}, got {preset!r}")
    p = PRESETS[preset]
    s = setting(method)
    out = Path(out)
    zoo = s.build(out / method / "zoo", preset=p["data"], progress=progress)
    table = run_ablation(zoo, method, base_config=s.generator_options(p["data"]), n_samples=p["samples"] or 100,
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
    """One readable line per method from a finished study's results.json: the headline (the paper's
    call, ours, seeds agreeing)."""
    res = json.loads((Path(out) / "results.json").read_text())
    rows = res["summary"]
    width = max([14, *(len(str(r.get("method", ""))) for r in rows)])
    return [f"{r['method']:<{width}} paper: {r.get('paper', '—'):<21} ours: {r['ours']:<40} "
            f"seeds: {r['seeds agreeing']}" for r in rows]
