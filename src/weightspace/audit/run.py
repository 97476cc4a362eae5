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
    verdict,
)
from .report import Report
from .zoo_methods import zoo_method

TRAINING = "training"
NOISE_PREFIX = "noise σ="
SCATTER_MODELS = 100  # the paper plots 100 models per group
# Noise σ as multiples of the training set's nearest-neighbour spacing (see noise_sigmas).
NOISE_SCALES = (0.05, 0.1, 0.2, 0.4, 0.8, 1.6)


class ZooEvaluator:
    """Scores models of a zoo's layout: test accuracy and test predictions of the zoo's task (or of
    ``task``, another data set with the same inputs), or, for a zoo of implicit shapes built by a
    method's data setting, that method's shape quality and decoded shapes."""

    def __init__(self, zoo, task: str | None = None):
        from ..data import load_dataset
        from ..task import Task
        from ..zoo.build import task_for_zoo

        self.zoo = zoo
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
        predictions = self.task.predictions(weights)
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

    def summary_rows(self, generated: Sequence[str]) -> list[dict]:
        rows = []
        for g in generated:
            v = self.verdicts[g]
            ci = v.get("fraction_ci", (np.nan, np.nan))
            rows.append({
                "method": self.name if len(generated) == 1 else f"{self.name}: {g}",
                "verdict": v["verdict"],
                "beats noise": "yes" if v["beats_noise"] else "no",
                "matches interpolation": ("yes (" + ", ".join(v["matched_baselines"]) + ")"
                                          if v["matches_interpolation"] else "no"),
                "quality (generated)": v["median_quality"],
                "quality (training)": v["training_median_quality"],
                "similarity to training (generated)": v.get("median_similarity", np.nan),
                "similarity among training": v.get("training_nn_similarity", np.nan),
                "min L2 / training spacing": v.get("distance_ratio", np.nan),
                "beyond noise frontier": v.get("fraction_beyond_frontier", np.nan),
                "CI low": ci[0],
                "CI high": ci[1],
            })
        return rows


def noise_sigmas(training: Tensor, scales: Sequence[float]) -> list[float]:
    """σ values on the scale of the training set: ``scale × spacing / sqrt(P_varying)`` makes the
    noise's norm ``scale`` times the typical distance between neighbouring checkpoints."""
    varying = training[:, training.std(0) > 0] if len(training) > 1 else training
    d = torch.cdist(varying.double(), varying.double())
    d.fill_diagonal_(float("inf"))
    spacing = float(d.min(1).values.median()) if len(varying) > 1 else float(varying.norm(dim=1).median()) * 0.1
    return [float(s * spacing / max(varying.shape[1], 1) ** 0.5) for s in scales]


def baseline_sets(evaluator: ZooEvaluator, train: Tensor, n: int, *, seed: int = 0,
                  scales: Sequence[float] = NOISE_SCALES,
                  noise_from: Tensor | None = None) -> tuple[list[ModelSet], dict[float, ModelSet]]:
    """``n`` models from each baseline, evaluated: the interpolation baselines (average of 16
    checkpoints, per-parameter Gaussian) and noise addition over a σ sweep. They perturb only the
    coordinates that vary across the training checkpoints (P-diff's fine-tuned layers). Noise is
    added to ``noise_from`` when given (Hyper-Representations: the reconstructed top 30%), with σ
    still on the scale of ``train``."""
    context = {"mask": train.std(0) > 0} if len(train) > 1 else {}
    k = min(16, len(train))
    interpolation = [
        evaluator.model_set(f"average of {k}", AverageOfK(k=k).fit(train, **context).sample(n, seed + 1)),
        evaluator.model_set("per-parameter Gaussian", PerParameterGaussian().fit(train, **context).sample(n, seed + 2)),
    ]
    noise = {s: evaluator.model_set(f"{NOISE_PREFIX}{s:.3g}",
                                    NoiseAddition(sigma=s).fit(train if noise_from is None else noise_from,
                                                               **context).sample(n, seed + 3 + i))
             for i, s in enumerate(noise_sigmas(train, scales))}
    return interpolation, noise


def audit_groups(
    name: str,
    training: ModelSet,
    generated: Sequence[ModelSet],
    noise: Mapping[float, ModelSet],
    interpolation: Sequence[ModelSet] = (),
    *,
    labels: Tensor | None = None,
    seed: int = 0,
) -> Audit:
    """Measure every set against the training set and classify each generated set."""
    groups = [training, *generated, *interpolation, *noise.values()]
    table = novelty_table(groups, labels)
    if "max_similarity" in table:
        similarity = "max_similarity"
    else:  # shapes: closer = smaller Chamfer distance
        table["chamfer_similarity"] = -table["min_chamfer"]
        similarity = "chamfer_similarity"
    distance = "min_l2" if "min_l2" in table else "min_chamfer"
    frontier = frontier_from_table(table, {s: m.name for s, m in noise.items()}, similarity=similarity) \
        if noise else None
    verdicts = {
        m.name: verdict(table, m.name, training=training.name, frontier=frontier,
                        interpolation=[b.name for b in interpolation], similarity=similarity, distance=distance,
                        seed=seed)
        for m in [*generated, *interpolation]
    }
    return Audit(name, table, similarity, frontier, verdicts, {m.name: s for s, m in noise.items()})


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
) -> None:
    """Add the paper's figures for one generated group to ``report`` (section = the audit's name)."""
    quality_label = evaluator.quality_label
    sec, t = audit.name, audit.table
    train = sets[TRAINING]
    gen = sets[generated]
    frontier = audit.frontier.to_frame(audit.similarity) if audit.frontier is not None else None
    shown = _scatter_sample(t[~t["group"].str.startswith(NOISE_PREFIX)], seed)
    sim_label = "max error-IoU similarity to training" if audit.similarity == "max_similarity" \
        else "− min Chamfer distance to training shapes"
    report.add_figure(sec, png_bytes(novelty_quality_scatter(shown, frontier, x=audit.similarity, ylabel=quality_label,
                                                             xlabel=sim_label, title=sec)),
                      f"{sec}: quality against similarity to the nearest training checkpoint, 100 models per group; "
                      "the dashed line is noise addition over a σ sweep. A generator beats it only with points up "
                      "and to the left.", f"{sec}-scatter")
    if "min_l2" in t and t.loc[t["group"] == generated, "min_l2"].notna().any():
        hist = t[t["group"].isin([TRAINING, generated])]
        report.add_figure(sec, png_bytes(min_distance_histogram(hist, title=sec)),
                          f"{sec}: L2 distance to the nearest training checkpoint. Generated models far left of the "
                          "training models' own spacing are replicas.", f"{sec}-l2-hist")
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
