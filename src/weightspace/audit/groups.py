"""One audit: reference models, generated models, baselines and controls, measured alike.

``baseline_sets`` and :func:`~weightspace.audit.controls.control_sets` make the groups that learn
nothing; ``audit_groups`` turns evaluated model sets into the per-model novelty table, the noise
frontier, the rule's checks on the controls and a verdict per group; ``audit_figures`` draws the
paper's figures from those results. Both serve the study (every method) and ``weightspace audit``
(a user's own generator).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
import torch
from torch import Tensor

from ..align import l2_distances
from ..baselines import (
    AlignedInterpolation,
    AverageOfK,
    NoiseAddition,
    PerParameterGaussian,
)
from ..space import WeightSpace
from .controls import HELDOUT, control_sets
from .figures import (
    decision_boundaries,
    min_distance_histogram,
    novelty_quality_scatter,
    parameter_heatmap,
    parameter_kde,
    png_bytes,
    shapes_side_by_side,
    weight_tsne,
)
from .fresh_runs import against_fresh_runs, judged, split_half_control
from .frontiers import beyond_every_table
from .novelty import (
    ModelSet,
    NoiseFrontier,
    frontier_from_table,
    novelty_table,
)
from .report import Report
from .similarity import min_distance_to_training, nearest_spacing
from .two_sample import group_auc
from .verdict import check_axes, control_rows, verdict, with_axes

TRAINING = "training"
NOISE_PREFIX = "noise σ="
SCATTER_MODELS = 100  # the paper plots 100 models per group
NOISE_POINTS = 8  # σ values in the sweep (see noise_sigmas)
AVERAGE_KS = (2, 4, 8, 16)  # the average-of-k sweep of the interpolation baselines
ALIGNED_LAMBDAS = (0.1, 0.2, 0.3, 0.4, 0.5)  # the aligned-interpolation sweep (0.5: the midpoint)
ALIGNED_PREFIX = "aligned interpolation λ="
GAUSSIAN = "per-parameter Gaussian"
AVERAGES_FAMILY, MIDPOINTS_FAMILY = "averages of k and per-parameter Gaussian", "aligned midpoints"
PAPER = " (paper)"  # suffix of the noise groups at the paper's own σ values
DISTANCE_NAMES = {"aligned_min_l2": "aligned L2", "min_l2": "L2", "min_chamfer": "Chamfer",
                  "max_similarity": "error IoU"}


class ZooEvaluator:
    """Scores models of a zoo's layout: test accuracy and test predictions of the zoo's task (or of
    ``task``, another data set with the same inputs), or, for a zoo of implicit shapes built by a
    method's data setting, that method's shape quality and decoded shapes."""

    def __init__(self, zoo, task: str | None = None, backend=None):
        from ..data import load_dataset
        from ..task import Task
        from ..zoo.build import task_for_zoo
        from ..zoo.setting import SHAPES, setting_for_zoo

        self.zoo, self.backend = zoo, backend
        method = setting_for_zoo(zoo)
        self.shape_method = method if method is not None and method.kind == SHAPES else None
        self.task = None
        if self.shape_method is None:
            self.task = task_for_zoo(zoo)
            if task:
                self.task = Task(load_dataset(task), self.task.arch)

    @property
    def classifier(self) -> bool:
        return self.task is not None

    @property
    def labels(self) -> Tensor | None:
        return self.task.dataset.y_test if self.classifier else None

    @property
    def quality_label(self) -> str:
        return "test accuracy" if self.classifier else "shape quality"

    def shapes(self, weights: Tensor) -> list[Tensor]:
        return self.shape_method.shapes(self.zoo, weights)

    def predict(self, weights: Tensor, x: Tensor) -> Tensor:
        """Labels ``[n, m]`` of models on arbitrary inputs (for decision-boundary plots)."""
        return self.task.arch.logits(weights, x).argmax(-1)

    def chance_quality(self, models: int = 32) -> float:
        """The quality of a model that learned nothing: for a classifier, the accuracy of always
        predicting the test set's most frequent label; for shapes, the median (finite) quality of
        freshly initialised models of the zoo's architecture (NaN when none has a shape)."""
        if self.classifier:
            counts = torch.bincount(self.labels.long())
            return float(counts.max()) / float(counts.sum())
        from ..nets import build_architecture

        arch = build_architecture(self.zoo.info["architecture"])
        with torch.random.fork_rng(devices=[]):
            q = self.shape_method.quality(self.zoo, arch.init(range(10**6, 10**6 + models)))
        q = q[torch.isfinite(q)]
        return float(q.median()) if len(q) else float("nan")

    def model_set(self, name: str, weights: Tensor, *, is_training: bool = False) -> ModelSet:
        if not self.classifier:
            return ModelSet(name, self.shape_method.quality(self.zoo, weights), weights=weights,
                            points=self.shapes(weights), is_training=is_training)
        predictions = self.task.predictions(weights, backend=self.backend)
        quality = (predictions == self.labels).float().mean(1)
        return ModelSet(name, quality, weights=weights, predictions=predictions, is_training=is_training)


@dataclass
class Audit:
    """What one audit found: the per-model table, the noise frontier, one verdict per group, and the
    controls behind the rule's trust in this setting (``expected`` verdicts, ``axes`` checks, ``notes``
    on controls that could not be made). Where there are held-out runs, each generated group and
    control carries the test against them (``verdicts[g]["fresh_runs"]``) and ``fresh_control`` is
    that test on one half of the held-out runs against the other, the test's own positive control."""

    name: str
    table: pd.DataFrame
    similarity: str
    frontier: NoiseFrontier | None
    verdicts: dict[str, dict]
    sigmas: dict[str, float] = field(default_factory=dict)
    generated: list[str] = field(default_factory=list)
    expected: dict[str, str] = field(default_factory=dict)
    axes: dict[str, dict] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    sweeps: dict[str, dict[float, str]] = field(default_factory=dict)
    beyond_every: pd.DataFrame | None = None
    fresh_control: dict | None = None

    def summary_rows(self, generated: Sequence[str] | None = None) -> list[dict]:
        """One row per generated group (default: all of them): the verdict and, per axis, its numbers."""
        rows = []
        for i, g in enumerate(self.generated if generated is None else generated):
            v = self.verdicts[g]
            ci = v.get("fraction_ci", (np.nan, np.nan))
            rows.append({
                "method": self.name,
                "group": "generated" if i == 0 else g,
                "verdict": v["verdict"],
                "replicates": ("yes" if v["replicates"] else "no") if v.get("replica_measured", True) else "not measured",
                "distance / spacing": v.get("distance_ratio", np.nan),
                "replica below": v.get("replica_threshold_ratio", np.nan),
                "distance": DISTANCE_NAMES.get(v["replica_measure"], v["replica_measure"]),
                "beats noise": "yes" if v["beats_noise"] else "no",
                "beyond noise frontier": v.get("fraction_beyond_frontier", np.nan),
                "CI low": ci[0],
                "CI high": ci[1],
                "interpolates": "yes" if v["matches_interpolation"] else "no",
                "quality (generated)": v["median_quality"],
                "quality (reference)": v["training_median_quality"],
                "quality floor": v["quality_floor"],
                "two-sample AUC": v.get("two_sample", {}).get("auc", np.nan),
                "similarity to reference": v.get("median_similarity", np.nan),
                "similarity among reference": v.get("training_nn_similarity", np.nan),
                "median test errors": v.get("median_errors", np.nan),
                "reason": v.get("reason", ""),
                "warnings": "; ".join(v.get("warnings", [])),
            })
        return rows

    def control_rows(self) -> list[dict]:
        return control_rows(self.verdicts, self.expected)


def noise_sigmas(training: Tensor, generated: Tensor | None = None, *, points: int = NOISE_POINTS) -> list[float]:
    """A σ sweep that spans the decision region: noise whose norm runs geometrically from 0.05 × the
    training set's nearest-neighbour spacing (near copies) to 2 × the spacing or 1.5 × the
    generated models' median distance to the training set, whichever is further. On the coordinates
    that vary across the training checkpoints, a noise of σ has norm ``σ · sqrt(P_varying)``."""
    mask = training.std(0) > 0 if len(training) > 1 else torch.ones(training.shape[1], dtype=torch.bool)
    varying = training[:, mask]
    spacing = nearest_spacing(varying)
    far = 2 * spacing
    if generated is not None and len(generated):
        far = max(far, 1.5 * float(min_distance_to_training(l2_distances(generated[:, mask], varying))[0]
                                   .double().median()))
    norms = np.geomspace(0.05 * spacing, far, int(points))
    return [float(v / max(varying.shape[1], 1) ** 0.5) for v in norms]


@dataclass
class Baselines:
    """The baselines of one audit, evaluated: the interpolation baselines (average of k over a k
    sweep, per-parameter Gaussian), aligned interpolation over a λ sweep, noise over a σ sweep."""

    averages: dict[int, ModelSet]
    gaussian: ModelSet
    aligned: dict[float, ModelSet]
    noise: dict[float, ModelSet]

    def sets(self) -> list[ModelSet]:
        return [*self.averages.values(), self.gaussian, *self.aligned.values(), *self.noise.values()]

    def families(self) -> dict[str, list[str]]:
        """The interpolation test's families of baselines."""
        out = {AVERAGES_FAMILY: [m.name for m in self.averages.values()] + [self.gaussian.name]}
        if 0.5 in self.aligned:
            out[MIDPOINTS_FAMILY] = [self.aligned[0.5].name]
        return out

    def sweeps(self) -> dict[str, dict[float, str]]:
        """Every baseline as a frontier: sweep value → group."""
        out = {"noise": {s: m.name for s, m in self.noise.items()},
               "average of k": {float(k): m.name for k, m in self.averages.items()},
               GAUSSIAN: {0.0: self.gaussian.name}}
        if self.aligned:
            out["aligned interpolation"] = {lam: m.name for lam, m in self.aligned.items()}
        return out


def baseline_sets(evaluator: ZooEvaluator, train: Tensor, n: int, *, seed: int = 0, generated: Tensor | None = None,
                  paper_sigmas: Sequence[float] = (), noise_source: Tensor | None = None,
                  space: WeightSpace | None = None, align: bool = True, ks: Sequence[int] = AVERAGE_KS,
                  lambdas: Sequence[float] = ALIGNED_LAMBDAS) -> Baselines:
    """``n`` models from each baseline, evaluated: the average of k checkpoints for each of ``ks``,
    the per-parameter Gaussian, aligned interpolation for each of ``lambdas`` (with a ``space`` that
    has permutation groups; ``align=False``: in the models' own neuron order) and noise addition
    over the σ sweep of :func:`noise_sigmas` plus the
    paper's own σ values (groups named with ``PAPER``). Noise is added to ``noise_source`` (default:
    the training checkpoints; Hyper-Representations: the reconstructed top 30%). All perturb only the
    coordinates that vary across the training checkpoints (P-diff's fine-tuned layers)."""
    context = {"mask": train.std(0) > 0} if len(train) > 1 else {}
    source = train if noise_source is None else noise_source
    averages = {k: evaluator.model_set(f"average of {k}", AverageOfK(k=k).fit(train, **context).sample(n, seed + k))
                for k in sorted({min(k, len(train)) for k in ks})}
    gaussian = evaluator.model_set(GAUSSIAN, PerParameterGaussian().fit(train, **context).sample(n, seed + 1))
    aligned = {}
    if space is not None and space.groups and len(train) >= 2:
        for i, lam in enumerate(lambdas):
            gen = AlignedInterpolation(lam=float(lam), space=space, align=align).fit(train)
            aligned[float(lam)] = evaluator.model_set(f"{ALIGNED_PREFIX}{lam:g}", gen.sample(n, seed + 200 + i))
    sweep = [(s, "") for s in noise_sigmas(train, generated)] + [(float(s), PAPER) for s in paper_sigmas]
    noise = {s: evaluator.model_set(f"{NOISE_PREFIX}{s:.2g}{tag}",
                                    NoiseAddition(sigma=s).fit(source, **context).sample(n, seed + 100 + i))
             for i, (s, tag) in enumerate(sweep)}
    return Baselines(averages, gaussian, aligned, noise)


def audit_groups(
    name: str,
    training: ModelSet,
    generated: Sequence[ModelSet],
    baselines: Baselines,
    *,
    controls: Sequence[ModelSet] = (),
    expected: Mapping[str, str] | None = None,
    notes: Sequence[str] = (),
    labels: Tensor | None = None,
    space: WeightSpace | None = None,
    seed: int = 0,
    progress: bool = False,
    backend=None,
) -> Audit:
    """Measure every set against the training set (the reference), check the rule's axes on the
    ``controls`` (their ``expected`` verdicts), and classify every generated set and control with
    those checks applied. With a ``space`` that has permutation groups, weight distances are aligned
    (exact matching with each model's nearest candidates, :func:`~weightspace.align.refine_nearest`);
    shapes use Chamfer. With a :class:`~weightspace.parallel.RayBackend` the pairwise blocks are Ray
    tasks. The held-out runs, when among the controls, are the replica axis's null."""
    expected = dict(expected or {})
    noise = baselines.noise
    interpolation = [*baselines.averages.values(), baselines.gaussian, *baselines.aligned.values()]
    groups = [training, *generated, *controls, *interpolation, *noise.values()]
    aligned = "nearest" if space is not None and space.groups and training.points is None else None
    # Aligned distances where the verdict reads them (replica axis, interpolation region); the noise
    # groups are read by similarity only, and matching them would double the cost.
    table = novelty_table(groups, labels, space=space if aligned else None, aligned=aligned, progress=progress,
                          aligned_groups=[m.name for m in [*generated, *controls, *interpolation]], backend=backend)
    if "max_similarity" in table:
        similarity = "max_similarity"
    else:  # shapes: closer = smaller Chamfer distance
        table["chamfer_similarity"] = -table["min_chamfer"]
        similarity = "chamfer_similarity"
    distance = "min_chamfer" if "min_chamfer" in table else None  # None: aligned L2 if present, else L2
    frontier = frontier_from_table(table, {s: m.name for s, m in noise.items()}, similarity=similarity) \
        if noise else None
    null = HELDOUT if HELDOUT in expected else None

    def classify(group: str) -> dict:
        return verdict(table, group, training=training.name, frontier=frontier, interpolation=baselines.families(),
                       similarity=similarity, distance=distance, null=null, seed=seed)

    measured = {m.name: classify(m.name) for m in [*generated, *controls, *interpolation]}
    axes = check_axes({c: measured[c] for c in expected}, expected)
    verdicts = {g: with_axes(v, axes) for g, v in measured.items()}
    sweeps = baselines.sweeps()
    # can each group be told from fresh runs? (the test's targets are in accuracy and error-IoU
    # units: classifier settings only; its own control first, every group read against it)
    fresh_test = HELDOUT in expected and similarity == "max_similarity"
    fresh_control = split_half_control(
        table, similarity, sweeps, HELDOUT, lambda t, g: verdict(
            t, g, training=training.name, frontier=frontier, similarity=similarity, distance=distance,
            null=None, seed=seed), seed=seed) if fresh_test else None
    if HELDOUT in expected:
        for m in [*generated, *controls]:
            if m.name != HELDOUT and len(m) >= 2:
                verdicts[m.name]["two_sample"] = group_auc(table, m.name, HELDOUT, seed=seed)
                if fresh_test:
                    verdicts[m.name]["fresh_runs"] = judged(against_fresh_runs(
                        table, similarity, sweeps, verdicts, m.name, HELDOUT, seed=seed), fresh_control)
    beyond = beyond_every_table(table, similarity, sweeps, [m.name for m in [*generated, *controls]], seed=seed)
    return Audit(name, table, similarity, frontier, verdicts, {m.name: s for s, m in noise.items()},
                 [m.name for m in generated], expected, axes, list(notes), sweeps, beyond, fresh_control)


def audit_with_controls(label: str, evaluator: ZooEvaluator, reference: ModelSet, groups: Sequence[ModelSet],
                        n: int, *, space: WeightSpace | None, seed: int, generated: Tensor | None = None,
                        paper_sigmas: Sequence[float] = (), noise_source: Tensor | None = None,
                        heldout: ModelSet | None = None, align: bool = True, progress: bool = False,
                        backend=None) -> Audit:
    """Baselines and controls drawn from ``reference`` with ``seed``, then ``groups`` and all of them
    audited alike (:func:`audit_groups`); ``generated`` (weights, optional) extends the noise sweep
    to where the generated models lie; ``align=False``: distances and blends in the models' own neuron
    order (models that descend from one base)."""
    baselines = baseline_sets(evaluator, reference.weights, n, seed=seed, generated=generated,
                              paper_sigmas=paper_sigmas, noise_source=noise_source, space=space, align=align)
    controls, expected, notes = control_sets(evaluator, reference, n, space=space, align=align, seed=seed,
                                             sweep=baselines.noise, noise_source=noise_source, heldout=heldout)
    return audit_groups(label, reference, groups, baselines, controls=controls, expected=expected, notes=notes,
                        labels=evaluator.labels, space=space if align else None, seed=seed, progress=progress,
                        backend=backend)


def _scatter_sample(table: pd.DataFrame, seed: int) -> pd.DataFrame:
    return pd.concat([d.sample(min(len(d), SCATTER_MODELS), random_state=seed)
                      for _, d in table.groupby("group", sort=False)])


def audit_figures(
    report: Report,
    audit: Audit,
    sets: Mapping[str, ModelSet],
    generated: str,
    evaluator: ZooEvaluator,
    *,
    seed: int = 0,
    paper_sigmas: Sequence[float] = (),
) -> None:
    """Add the paper's figures for one generated group to ``report`` (section = the audit's name);
    ``paper_sigmas``: the paper's noise σ values, marked on the scatter."""
    quality_label = evaluator.quality_label
    sec, t = audit.name, audit.table
    train = sets[TRAINING]
    gen = sets[generated]
    frontier = audit.frontier.to_frame(audit.similarity) if audit.frontier is not None else None
    shown = _scatter_sample(t[~t["group"].str.startswith(NOISE_PREFIX)], seed)
    shapes = audit.similarity != "max_similarity"
    sim_label = "− min Chamfer distance to reference shapes" if shapes else "max error-IoU similarity to reference"
    scatter = novelty_quality_scatter(shown, frontier, x=audit.similarity, ylabel=quality_label, xlabel=sim_label,
                                      title=sec, emphasis=audit.generated, paper_sigmas=paper_sigmas)
    report.add_figure(sec, png_bytes(scatter),
                      f"{sec}: quality against similarity to the nearest reference model, up to 100 models per "
                      "group; the dashed line is noise addition over a σ sweep from far below the reference's "
                      "own spacing to beyond the generated models' distance, stars the paper's two σ. A generator "
                      "beats noise only with points up and to the left of the line."
                      + (" For shapes the similarity is minus the Chamfer distance (mean squared nearest-point "
                         "distance both ways, on clouds normalised to zero mean and unit std), so closer is "
                         "further right, as for error IoU." if shapes else ""), f"{sec}-scatter")
    column = next((c for c in ("aligned_min_l2", "min_l2") if c in t), None)
    if column and t.loc[t["group"] == generated, column].notna().any():
        hist = t[t["group"].isin([TRAINING, *audit.generated])]
        name = "aligned L2 (neurons matched per pair)" if column == "aligned_min_l2" else "L2"
        report.add_figure(sec, png_bytes(min_distance_histogram(hist, column=column, title=sec,
                                                                xlabel=f"{name} to the nearest reference model")),
                          f"{sec}: {name} distance to the nearest reference model (reference models: to the nearest "
                          "other one). Generated models far left of the reference's own spacing are replicas.",
                          f"{sec}-l2-hist")
    if gen.weights is not None and train.weights is not None:
        rows = t[t["group"] == generated]
        first = rows.iloc[0]
        d = l2_distances(gen.weights[int(first["model"])][None], train.weights)[0]
        nearest3 = d.argsort()[:3]
        varying = train.weights.std(0) > 0
        report.add_figure(sec, png_bytes(parameter_heatmap(gen.weights[int(first["model"])][varying],
                                                           train.weights[nearest3][:, varying], seed=seed, title=sec)),
                          f"{sec}: random parameters of one generated model (top) and of its 3 nearest training "
                          "models. Columns of one colour mean a copy.", f"{sec}-heatmap")
        if evaluator.classifier:
            i = int(first["model"])
            j = int(first["nearest_training_l2"])
            models = {"generated": gen.weights[i], "nearest training": train.weights[j]}
            data = evaluator.task.dataset
            report.add_figure(sec, png_bytes(decision_boundaries(evaluator.predict, data.x_test, data.y_test, models,
                                                                 title=sec)),
                              f"{sec}: decision regions in the inputs' first two principal components, a generated "
                              "model beside its nearest training model. Identical regions mean the same function.",
                              f"{sec}-boundaries")
        groups = {k: v.weights[:, varying] for k, v in sets.items()
                  if v.weights is not None and not k.startswith(NOISE_PREFIX)}
        report.add_figure(sec, png_bytes(weight_tsne(groups, seed=seed, title=sec)),
                          f"{sec}: t-SNE of the weights (varying coordinates). Generated points sitting on training "
                          "points are copies; a separate cloud would be new.", f"{sec}-tsne")
        idx = torch.randperm(int(varying.sum()), generator=torch.Generator().manual_seed(seed))[:3].tolist()
        report.add_figure(sec, png_bytes(parameter_kde(groups, idx, title=sec)),
                          f"{sec}: density of three single parameters per group. Generated densities that trace the "
                          "training spikes reproduce memorised values.", f"{sec}-kde")
    if not evaluator.classifier and gen.weights is not None:
        rows = t[t["group"] == generated].head(6)
        pairs = []
        for _, r in rows.iterrows():
            g_pts = evaluator.shapes(gen.weights[int(r["model"])][None])[0]
            t_pts = evaluator.shapes(train.weights[int(r["nearest_training_chamfer"])][None])[0]
            pairs.append((g_pts, t_pts))
        report.add_figure(sec, png_bytes(shapes_side_by_side(pairs, title=sec)),
                          f"{sec}: generated shapes (top) above their nearest training shapes. Identical outlines "
                          "mean memorised shapes.", f"{sec}-shapes")
