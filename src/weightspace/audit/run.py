"""One audit: training checkpoints, generated models and the baselines, measured alike.

``audit_groups`` turns evaluated model sets into the per-model novelty table, the noise frontier and
a verdict per generated group; ``audit_figures`` draws the paper's figures from those results.
Both serve the study (the four methods) and ``weightspace audit`` (a user's own generator).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
import torch
from torch import Tensor

from ..baselines import AverageOfK, NoiseAddition, PerParameterGaussian
from ..space import WeightSpace
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
from .novelty import (
    ModelSet,
    NoiseFrontier,
    frontier_from_table,
    novelty_table,
)
from .report import Report
from .verdict import verdict
from .zoo_methods import zoo_method

TRAINING = "training"
NOISE_PREFIX = "noise σ="
SCATTER_MODELS = 100  # the paper plots 100 models per group
NOISE_POINTS = 8  # σ values in the sweep (see noise_sigmas)
AVERAGE_KS = (2, 4, 8, 16)  # the average-of-k sweep of the interpolation baselines
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

        self.zoo, self.backend = zoo, backend
        module = zoo_method(zoo)
        self.shape_module = module if module is not None and hasattr(module, "shapes") else None
        self.task = None
        if self.shape_module is None:
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
        return self.shape_module.shapes(self.zoo, weights)

    def predict(self, weights: Tensor, x: Tensor) -> Tensor:
        """Labels ``[n, m]`` of models on arbitrary inputs (for decision-boundary plots)."""
        return self.task.arch.logits(weights, x).argmax(-1)

    def model_set(self, name: str, weights: Tensor, *, is_training: bool = False) -> ModelSet:
        if not self.classifier:
            return ModelSet(name, self.shape_module.quality(self.zoo, weights), weights=weights,
                            points=self.shapes(weights), is_training=is_training)
        predictions = self.task.predictions(weights, backend=self.backend)
        quality = (predictions == self.labels).float().mean(1)
        return ModelSet(name, quality, weights=weights, predictions=predictions, is_training=is_training)


@dataclass
class Audit:
    """What one audit found: the per-model table, the noise frontier and one verdict per group."""

    name: str
    table: pd.DataFrame
    similarity: str
    frontier: NoiseFrontier | None
    verdicts: dict[str, dict]
    sigmas: dict[str, float] = field(default_factory=dict)

    generated: list[str] = field(default_factory=list)

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
                "replicates": "yes" if v["replicates"] else "no",
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
                "similarity to reference": v.get("median_similarity", np.nan),
                "similarity among reference": v.get("training_nn_similarity", np.nan),
                "median test errors": v.get("median_errors", np.nan),
                "warnings": "; ".join(v.get("warnings", [])),
            })
        return rows


def _spacing(varying: Tensor) -> float:
    d = torch.cdist(varying.double(), varying.double())
    d.fill_diagonal_(float("inf"))
    return float(d.min(1).values.median()) if len(varying) > 1 else float(varying.norm(dim=1).median()) * 0.1


def noise_sigmas(training: Tensor, generated: Tensor | None = None, *, points: int = NOISE_POINTS) -> list[float]:
    """A σ sweep that spans the decision region: noise whose norm runs geometrically from 0.05 × the
    training set's nearest-neighbour spacing (near copies) to 2 × the spacing or 1.5 × the
    generated models' median distance to the training set, whichever is further. On the coordinates
    that vary across the training checkpoints, a noise of σ has norm ``σ · sqrt(P_varying)``."""
    mask = training.std(0) > 0 if len(training) > 1 else torch.ones(training.shape[1], dtype=torch.bool)
    varying = training[:, mask]
    spacing = _spacing(varying)
    far = 2 * spacing
    if generated is not None and len(generated):
        far = max(far, 1.5 * float(torch.cdist(generated[:, mask].double(), varying.double()).min(1).values.median()))
    norms = np.geomspace(0.05 * spacing, far, int(points))
    return [float(v / max(varying.shape[1], 1) ** 0.5) for v in norms]


def baseline_sets(evaluator: ZooEvaluator, train: Tensor, n: int, *, seed: int = 0, generated: Tensor | None = None,
                  paper_sigmas: Sequence[float] = (), noise_source: Tensor | None = None,
                  ks: Sequence[int] = AVERAGE_KS) -> tuple[list[ModelSet], dict[float, ModelSet]]:
    """``n`` models from each baseline, evaluated: the interpolation baselines (average of k
    checkpoints for each of ``ks``, per-parameter Gaussian) and noise addition over the σ sweep of
    :func:`noise_sigmas` plus the paper's own σ values (groups named with ``PAPER``). Noise is added
    to ``noise_source`` (default: the training checkpoints; Hyper-Representations: the reconstructed
    top 30%). All perturb only the coordinates that vary across the training checkpoints (P-diff's
    fine-tuned layers)."""
    context = {"mask": train.std(0) > 0} if len(train) > 1 else {}
    source = train if noise_source is None else noise_source
    interpolation = [evaluator.model_set(f"average of {k}", AverageOfK(k=k).fit(train, **context).sample(n, seed + k))
                     for k in sorted({min(k, len(train)) for k in ks})]
    interpolation.append(evaluator.model_set("per-parameter Gaussian",
                                             PerParameterGaussian().fit(train, **context).sample(n, seed + 1)))
    sweep = [(s, "") for s in noise_sigmas(train, generated)] + [(float(s), PAPER) for s in paper_sigmas]
    noise = {s: evaluator.model_set(f"{NOISE_PREFIX}{s:.2g}{tag}",
                                    NoiseAddition(sigma=s).fit(source, **context).sample(n, seed + 100 + i))
             for i, (s, tag) in enumerate(sweep)}
    return interpolation, noise


def audit_groups(
    name: str,
    training: ModelSet,
    generated: Sequence[ModelSet],
    noise: Mapping[float, ModelSet],
    interpolation: Sequence[ModelSet] = (),
    *,
    labels: Tensor | None = None,
    space: WeightSpace | None = None,
    seed: int = 0,
    progress: bool = False,
    backend=None,
) -> Audit:
    """Measure every set against the training set (the reference) and classify each generated set.
    With a ``space`` that has permutation groups, weight distances are aligned (exact matching with
    each model's nearest candidates, :func:`~weightspace.align.refine_nearest`); shapes use Chamfer.
    With a :class:`~weightspace.parallel.RayBackend` the pairwise blocks are Ray tasks."""
    groups = [training, *generated, *interpolation, *noise.values()]
    aligned = "nearest" if space is not None and space.groups and training.points is None else None
    # Aligned distances where the verdict reads them (replica axis, interpolation region); the noise
    # groups are read by similarity only, and matching them would double the cost.
    table = novelty_table(groups, labels, space=space if aligned else None, aligned=aligned, progress=progress,
                          aligned_groups=[m.name for m in [*generated, *interpolation]], backend=backend)
    if "max_similarity" in table:
        similarity = "max_similarity"
    else:  # shapes: closer = smaller Chamfer distance
        table["chamfer_similarity"] = -table["min_chamfer"]
        similarity = "chamfer_similarity"
    distance = "min_chamfer" if "min_chamfer" in table else None  # None: aligned L2 if present, else L2
    frontier = frontier_from_table(table, {s: m.name for s, m in noise.items()}, similarity=similarity) \
        if noise else None
    verdicts = {
        m.name: verdict(table, m.name, training=training.name, frontier=frontier,
                        interpolation=[b.name for b in interpolation], similarity=similarity, distance=distance,
                        seed=seed)
        for m in [*generated, *interpolation]
    }
    return Audit(name, table, similarity, frontier, verdicts, {m.name: s for s, m in noise.items()},
                 [m.name for m in generated])


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
        d = torch.cdist(gen.weights[int(first["model"])][None].double(), train.weights.double())[0]
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
