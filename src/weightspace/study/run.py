"""The memorization study end to end: for each of the four methods, build its data setting, fit its
generator, sample, draw the baselines, audit everything, and write one report."""

from __future__ import annotations

import dataclasses
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
from ..generative.base import load_generator, make_generator
from ..parallel import resolve_backend
from .ablation import ablation_figure, run_ablation
from .frontiers import aligned_interpolation_sets, beyond_every_table
from .on_ray import method_parts_on_ray
from .paper_calls import paper_comparison
from .presets import COPIES, HELDOUT, PAPER_NAMES, PRESETS, longest_first
from .symmetry_check import symmetry_check, symmetry_figure

SYMMETRY_MODELS = 32  # training checkpoints passed through an autoencoder for the symmetry check


RAW = " (raw checkpoints)"  # suffix of the audit against the raw checkpoints where the paper's reference differs


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


def _reference(module, zoo, evaluator: ZooEvaluator, gen, train: Tensor, raw: ModelSet) -> tuple[ModelSet, str]:
    """The paper's reference for a method's samples, and its name: Hyper-Representations' autoencoder
    reconstructions of the training checkpoints, HyperDiffusion's ground-truth training shapes,
    otherwise the training checkpoints (G.pt: every training run's final checkpoint)."""
    if hasattr(module, "reference_weights"):
        return evaluator.model_set(TRAINING, module.reference_weights(zoo, gen), is_training=True), "reconstructions"
    if hasattr(module, "training_shapes"):
        points = module.training_shapes(zoo)
        return (ModelSet(TRAINING, module.shape_quality(zoo, points), weights=train, points=points, is_training=True),
                "ground-truth training shapes")
    return raw, "training checkpoints"


def _final_epoch_histogram(module, zoo, reference: ModelSet, generated: ModelSet, label: str) -> pd.DataFrame | None:
    """Min L2 to the final-epoch reference models only: the paper's histogram for
    Hyper-Representations (neighbouring epochs of one run would be each other's nearest)."""
    if not hasattr(module, "final_epoch"):
        return None
    ref = reference.weights[module.final_epoch(zoo)]
    rows = []
    for group, w, exclude in ((f"{TRAINING} (final epoch)", ref, True), (label, generated.weights, False)):
        values, _ = min_distance_to_training(l2_distances(w, ref), exclude_self=exclude)
        rows += [{"group": group, "model": i, "min_l2": float(v)} for i, v in enumerate(values)]
    return pd.DataFrame(rows)


def _span(weights: Tensor | None) -> float | None:
    """The reference's extent in units of its own spacing (weight references only: a shape reference's
    spacing is in Chamfer units): the farthest pair's L2 over the median nearest-neighbour L2 (a fine-tune trajectory that drifts spans many spacings; blends of its ends
    then land far from every checkpoint)."""
    if weights is None or len(weights) < 2:
        return None
    d = l2_distances(weights, weights)
    nearest, _ = min_distance_to_training(d, exclude_self=True)
    return float(d.max() / nearest.median().clamp_min(1e-300))


def _fitted(name: str, directory: Path, train: Tensor, module, zoo, config: dict, progress: bool):
    """The generator fitted with ``config``: loaded from ``directory`` when a finished fit with the
    same configuration is there (a study run again after an interruption), else fitted and saved."""
    gen = make_generator(name, **config)
    saved = directory / "generator.json"
    wanted = json.loads(json.dumps({"generator": name, "config": gen.config()}))
    if saved.is_file() and json.loads(saved.read_text()) == wanted:
        return load_generator(directory)
    gen.fit(train, progress=progress, **module.fit_context(zoo))
    gen.save(directory)
    return gen


def run_method(name: str, out: Path, preset: dict, *, seed: int = 0, seeds: int = 1, progress: bool = True,
               stage_lines: bool = False) -> dict:
    """Data (built once, from ``seed``), then for each fit seed ``seed``, ``seed + 1``, … (``seeds``
    of them): generator fit, samples, baselines and their audit. Timings in seconds.

    The generated models are audited against the paper's reference for the method (see
    :func:`_reference`), with noise added to ``noise_source(zoo, generator)`` when the module has
    one; held-out runs (``heldout_weights(zoo)``) are audited as a group of their own. Where the
    reference is not the raw checkpoints, the first seed is also audited against them as a second
    view; the verdict uses the paper's. The verdicts of all seeds are pooled per group."""
    module = methods.method_module(name)
    fit_seeds = list(range(seed, seed + seeds))
    stages = _Stages(name, fit_seeds, progress, stage_lines)
    zoo = module.build_data(out / name / "zoo", preset=preset["data"], progress=progress, seed=seed)
    train = module.training_weights(zoo)
    evaluator = ZooEvaluator(zoo)
    raw = evaluator.model_set(TRAINING, train, is_training=True)
    label = PAPER_NAMES[name]
    heldout = None
    if hasattr(module, "heldout_weights") and len(held := module.heldout_weights(zoo)):
        heldout = evaluator.model_set(HELDOUT, held)
    stages.done("data")
    n = preset["samples"] or module.n_samples(zoo)
    paper_sigmas = preset.get("paper_sigmas", {}).get(name, ())
    runs = []
    for s in fit_seeds:
        gen = _fitted(name, out / name / f"generator-seed{s}", train, module, zoo,
                      {**methods.generator_config(zoo, name), **preset["generators"].get(name, {}), "seed": s},
                      progress)
        stages.done(f"fit (seed {s})")
        generated = gen.sample(n, s)
        stages.done(f"sample (seed {s})")

        reference, view = _reference(module, zoo, evaluator, gen, train, raw)
        source = module.noise_source(zoo, gen) if hasattr(module, "noise_source") else None
        sets = {TRAINING: reference, label: evaluator.model_set(label, generated)}
        if heldout is not None:
            sets[HELDOUT] = heldout
        if reference is not raw:
            sets[COPIES] = dataclasses.replace(raw, name=COPIES, is_training=False)
        groups = [sets[g] for g in (label, HELDOUT, COPIES) if g in sets]
        interpolation, noise = baseline_sets(evaluator, reference.weights, n, seed=s, generated=generated,
                                             paper_sigmas=paper_sigmas, noise_source=source)
        sets.update({m.name: m for m in [*interpolation, *noise.values()]})
        # methods that ask for it (weightspace's own) also face interpolation between aligned runs
        aligned = (aligned_interpolation_sets(evaluator, reference.weights, zoo.space, n, seed=s)
                   if getattr(module, "ALIGNED_INTERPOLATION", False) else [])
        sets.update({m.name: m for m in aligned})
        audit = audit_groups(label, reference, groups + aligned, noise, interpolation, labels=evaluator.labels,
                             space=zoo.space, seed=s)
        beyond = (beyond_every_table(audit, [g.name for g in groups],
                                     {float(m.name.rsplit("=", 1)[1]): m.name for m in aligned}, seed=s)
                  if aligned else None)
        raw_audit = None
        if reference.weights is not train and s == seed:  # the other view, shown beside the paper's
            raw_interp, raw_noise = baseline_sets(evaluator, train, n, seed=s, generated=generated,
                                                  paper_sigmas=paper_sigmas)
            raw_audit = audit_groups(label + RAW, raw, [g for g in groups if g.name != COPIES], raw_noise, raw_interp,
                                     labels=evaluator.labels, space=zoo.space, seed=s)
        stages.done(f"audit (seed {s})")
        runs.append({"seed": s, "audit": audit, "raw_audit": raw_audit, "sets": sets, "view": view, "beyond_every": beyond,
                     "generator": {"name": name, "config": gen.config()}, "gen": gen,
                     "final_epoch": _final_epoch_histogram(module, zoo, reference, sets[label], label)})
    first = runs[0]
    symmetry = None
    if hasattr(first["gen"], "encode") and hasattr(first["gen"], "decode"):  # did the autoencoder learn the symmetries?
        symmetry = symmetry_check(first["gen"], zoo.space, train[:SYMMETRY_MODELS], evaluator, seed=seed)
    pooled = {g: pooled_verdict([r["audit"].verdicts[g] for r in runs]) for g in first["audit"].generated}
    timings = {"data": stages.timings["data"],
               "seeds": [{k: stages.timings[f"{k} (seed {s})"] for k in ("fit", "sample", "audit")} for s in fit_seeds]}
    return {"name": name, "label": label, "module": module, "zoo": zoo, "runs": runs, "audit": first["audit"],
            "raw_audit": first["raw_audit"], "sets": first["sets"], "timings": timings, "samples": n,
            "data_config": zoo.info.get("config", {}), "evaluator": evaluator, "symmetry": symmetry,
            "views": {"reference": first["view"]}, "paper_sigmas": list(paper_sigmas), "pooled": pooled,
            "reference_span": _span(first["sets"][TRAINING].weights if first["sets"][TRAINING].points is None else None)}


def _figures(report: Report, result: dict, seed: int) -> None:
    label = result["label"]
    audit_figures(report, result["audit"], result["sets"], label, result["evaluator"], seed=seed,
                  paper_sigmas=result["paper_sigmas"])
    if result["raw_audit"] is not None:
        report.tables[f"{label}: against the raw checkpoints"] = pd.DataFrame(result["raw_audit"].summary_rows())
    hist = result["runs"][0]["final_epoch"]
    if hist is not None:
        report.add_figure(label, png_bytes(min_distance_histogram(hist, title=f"{label}: final-epoch reference")),
                          f"{label}: L2 distance to the nearest final-epoch reconstruction (the paper's histogram; "
                          "neighbouring epochs of one run would otherwise be each other's nearest). Generated models "
                          "far left of the reference's own spacing are replicas.", f"{result['name']}-final-epoch-hist")
    table = result["symmetry"]
    if table is not None:
        name = f"{label}: symmetry check"
        report.tables[name] = table  # shown under the figure's heading of the same name
        report.add_figure(name, png_bytes(symmetry_figure(table)),
                          f"{label}: the autoencoder's reconstructions of a model and of a function-preserving "
                          "transform of it (neuron permutation, positive scaling). Agreement 1 would mean it treats "
                          "both as the same function, i.e. it learned the symmetry.", f"{result['name']}-symmetry")


def _yes(flags: Sequence[bool]) -> str:
    return f"{'yes' if 2 * sum(flags) > len(flags) else 'no'} ({sum(flags)}/{len(flags)})"


def pooled_rows(result: dict) -> list[dict]:
    """One summary row per audited group: the pooled verdict over seeds and the axes' medians."""
    rows = []
    for i, (group, v) in enumerate(result["pooled"].items()):
        ci = v.get("fraction_ci", (float("nan"), float("nan")))
        rows.append({
            "method": result["label"], "group": "generated" if i == 0 else group, "verdict": v["label"],
            "replicates": _yes(v["replicates"]), "distance / spacing": v.get("distance_ratio", float("nan")),
            "beats noise": _yes(v["beats_noise"]),
            "beyond noise frontier": v.get("fraction_beyond_frontier", float("nan")),
            "CI low": ci[0], "CI high": ci[1], "interpolates": _yes(v["matches_interpolation"]),
            "quality (generated)": v.get("median_quality", float("nan")),
            "quality (reference)": v.get("training_median_quality", float("nan")),
            "median test errors": v.get("median_errors", float("nan")),
            "seeds": len(v["seed_verdicts"]), "warnings": "; ".join(v["warnings"]),
        })
    return rows


def seed_rows(result: dict) -> list[dict]:
    """Every seed's summary rows, with the seed."""
    return [{"seed": r["seed"], **row} for r in result["runs"] for row in r["audit"].summary_rows()]


def method_part(name: str, out: Path, preset: dict, seed: int = 0, progress: bool = True,
                stage_lines: bool = False, seeds: int = 1) -> dict:
    """:func:`run_method` plus its report figures and tables, keeping only what pickles (a study
    worker process returns this)."""
    r = run_method(name, out, preset, seed=seed, seeds=seeds, progress=progress, stage_lines=stage_lines)
    # this method's numbers on disk at once: a study stopped before its last method keeps them
    (out / name / "results.json").write_text(json.dumps(
        {"pooled": r["pooled"], "seeds": [{"seed": x["seed"], "verdicts": x["audit"].verdicts,
                                           **({"beyond_every": x["beyond_every"].to_dict("records")}
                                              if x["beyond_every"] is not None else {})} for x in r["runs"]],
         "timings_s": r["timings"], "summary": pooled_rows(r)}, default=str, indent=1))
    part = Report(name, pd.DataFrame())
    _figures(part, r, seed)
    keep = ("name", "label", "audit", "raw_audit", "timings", "samples", "data_config", "views", "paper_sigmas",
            "pooled", "reference_span")
    runs = [{"seed": x["seed"], "verdicts": x["audit"].verdicts, "generator": x["generator"],
             **({"beyond_every": x["beyond_every"].to_dict("records")} if x["beyond_every"] is not None else {})}
            for x in r["runs"]]
    beyond = [x["beyond_every"].assign(seed=x["seed"]) for x in r["runs"] if x["beyond_every"] is not None]
    if beyond:
        part.tables[f"{r['label']}: beyond every baseline frontier"] = pd.concat(beyond, ignore_index=True)
    return {**{k: r[k] for k in keep}, "runs": runs, "summary": pooled_rows(r), "seed_rows": seed_rows(r),
            "per_model": {x["seed"]: x["audit"].table for x in r["runs"]}, "figures": part.figures,
            "tables": part.tables}


def _one_thread() -> None:
    # Workers split the cores between them; the small per-step ops of these fits lose more to
    # thread hand-offs than they gain once two processes share two cores.
    torch.set_num_threads(1)


def _method_parts(names: Sequence[str], out: Path, preset: dict, seed: int, workers: int, progress: bool,
                  seeds: int = 1, backend=None) -> list[dict]:
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


def run_study(out: str | Path = "runs/study", *, preset: str = "quick", methods_: Sequence[str] = methods.METHODS,
              seed: int = 0, seeds: int | None = None, workers: int | None = None, progress: bool = True,
              backend="local", address: str | None = None) -> Path:
    """Run the study and write ``report.html``, ``results.json`` and CSV tables under ``out``.
    ``seed`` seeds everything: the data (zoos, built once) and the first of ``seeds`` generator fits
    (seeds ``seed``, ``seed + 1``, …, each with its own samples, baselines and bootstrap; default:
    the preset's). ``workers``: methods run at once in separate processes (default: one per core,
    at most one per method); results do not depend on it. ``backend="ray"``: each method is a Ray
    task instead (a local Ray, or the cluster at ``address``), to the same results."""
    ray_backend = resolve_backend(backend, address)
    if ray_backend is not None and workers is not None:
        raise ConfigError("--workers: the local backend's processes; on Ray the cluster's CPUs run the methods")
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
    results = _method_parts(list(methods_), out, p, int(seed), int(workers), progress, int(seeds), ray_backend)
    summary = pd.DataFrame([row for r in results for row in r["summary"]])
    fit_seeds = list(range(int(seed), int(seed) + int(seeds)))
    report = Report(
        "Generative models of weights: generalization or memorization?", summary,
        intro=("For each method: its generated models, and held-out runs trained like the training runs but never "
               "shown to the generator, against the method's reference set (as in the paper: the training "
               "checkpoints; for Hyper-Representations, the autoencoder's reconstructions of them; for "
               "HyperDiffusion, the ground-truth training shapes) and against baselines that learn nothing: noise "
               "added to a reference model over a σ sweep, the average of k reference models for k = 2 to 16, a "
               "per-parameter Gaussian. Where the reference is not the training models themselves, the training "
               f"models are audited as a group too ('{COPIES}'): what an exact copy of one scores on the replica "
               "axis, the floor of what that axis can call a replica in this setting. Similarity is the intersection over union of test errors with the most "
               "similar reference model; for HyperDiffusion's shapes it is minus the Chamfer distance to the "
               "nearest reference shape, so that larger means closer there too. "
               f"Each generator is fitted with {len(fit_seeds)} seed(s) ({', '.join(map(str, fit_seeds))}) on data "
               "built once; the summary pools their verdicts (the most frequent, marked unstable when they "
               "disagree; numbers are medians over seeds, the interval spans the seeds' intervals), the table "
               "'Verdicts per seed' has each seed's, the figures show the first seed's."),
        rule=rule_text(),
        configs={"preset": preset, "seed": int(seed), "seeds": fit_seeds, "methods": {
            r["name"]: {"data": r["data_config"], "generators": [x["generator"] for x in r["runs"]],
                        "samples": r["samples"], "noise_sigmas": r["audit"].sigmas, "paper_sigmas": r["paper_sigmas"]}
            for r in results}},
    )
    comparison = paper_comparison({r["name"]: {"pooled": r["pooled"], "first": r["runs"][0]["verdicts"],
                                               "span": r["reference_span"]} for r in results})
    if len(comparison):
        report.tables["Verdicts against the paper's"] = comparison
    report.tables["Verdicts per seed"] = pd.DataFrame([row for r in results for row in r["seed_rows"]])
    for r in results:
        report.figures += r["figures"]
        report.tables.update(r["tables"])
        for s, table in r["per_model"].items():
            report.data[f"{r['name']} per model seed {s}"] = table
        if r["raw_audit"] is not None:
            report.data[f"{r['name']} per model, raw checkpoints"] = r["raw_audit"].table
    report.results = {r["name"]: {"pooled": r["pooled"], "seeds": r["runs"], "timings_s": r["timings"],
                                  "reference": r["views"], "reference_span": r["reference_span"],
                                  "raw_checkpoint_verdicts": r["raw_audit"].verdicts if r["raw_audit"] else None}
                      for r in results}
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
    """One readable line per method and group from a finished study's results.json (the pooled
    verdict over seeds; "(k/n)": seeds that say yes)."""
    res = json.loads((Path(out) / "results.json").read_text())
    width = max([14, *(len(r["group"]) for r in res["summary"])])
    return [f"{r['method']:<22} {r['group']:<{width}} {r['verdict']:<21} replicates: {r['replicates']:<3} "
            f"beats noise: {r['beats noise']:<3} interpolates: {r['interpolates']}" for r in res["summary"]]
