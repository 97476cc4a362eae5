"""Groups whose verdict is known before anything is measured: the controls every audit runs.

In every setting and seed the audit measures, exactly like a generated group, models made from the
reference without any learning, each with its expected answer fixed here:

- exact copies of reference models, and copies plus noise whose norm is 1% of the reference's
  nearest-neighbour spacing: **replicates**;
- aligned midpoints of two reference models, and averages of 4: **interpolates**;
- noise added to reference models at the σ where the median quality has fallen half-way to chance
  (found on the noise sweep, extended upwards if the sweep never falls that far): **no better than
  noise**;
- held-out runs, trained like the reference runs and never shown to a generator, where the setting
  has them: **novel and good**.

Each is drawn with its own seed, independent of the baselines the rule's thresholds come from.
"""

from __future__ import annotations

import itertools
from collections.abc import Mapping

import numpy as np
import torch
from torch import Tensor

from ..baselines import AlignedInterpolation, AverageOfK, NoiseAddition
from ..space import WeightSpace
from .novelty import ModelSet
from .similarity import nearest_spacing
from .verdict import INTERPOLATES, NO_BETTER, NOVEL, REPLICATES

COPIES = "control: exact copies"
NEAR_COPIES = "control: copies + 1% noise"
MIDPOINTS = "control: aligned midpoints"
AVERAGES = "control: averages of 4"
STRONG_NOISE = "control: noise, half-way to chance"
HELDOUT = "held-out runs"  # trained like the reference runs, never shown to a generator: the novelty ceiling
EXPECTED = {COPIES: REPLICATES, NEAR_COPIES: REPLICATES, MIDPOINTS: INTERPOLATES, AVERAGES: INTERPOLATES,
            STRONG_NOISE: NO_BETTER, HELDOUT: NOVEL}
NEAR_FRACTION = 0.01  # the near copies' noise norm, as a fraction of the reference's spacing
MAX_DOUBLINGS = 8  # how far past the sweep the strong-noise σ is looked for


def half_way_sigma(sweep: Mapping[float, ModelSet], reference_quality: float, chance: float) -> float | None:
    """The σ at which the median quality of noise has fallen half-way from the reference's median to
    chance, interpolated in log σ between the sweep's points; None if the sweep never falls that far."""
    target = (reference_quality + chance) / 2
    points = sorted((s, float(m.quality.median())) for s, m in sweep.items() if s > 0)
    for (s0, q0), (s1, q1) in itertools.pairwise(points):
        if q1 <= target < q0:
            t = (q0 - target) / (q0 - q1)
            return float(np.exp(np.log(s0) + t * (np.log(s1) - np.log(s0))))
    if points and points[0][1] <= target:
        return points[0][0]
    return None


def control_sets(evaluator, reference: ModelSet, n: int, *, space: WeightSpace | None, seed: int, align: bool = True,
                 sweep: Mapping[float, ModelSet], noise_source: Tensor | None = None,
                 heldout: ModelSet | None = None) -> tuple[list[ModelSet], dict[str, str], list[str]]:
    """The control groups (``n`` models each, evaluated), their expected verdicts, and notes on any
    control that could not be made here (with the reason). ``sweep``: the noise baselines by σ
    (already evaluated), where the strong-noise σ is looked for; ``noise_source``: what noise is
    added to (default: the reference models)."""
    train = reference.weights
    mask = train.std(0) > 0 if len(train) > 1 else torch.ones(train.shape[1], dtype=torch.bool)
    context = {"mask": mask}
    g = torch.Generator().manual_seed(int(seed) + 500)
    pick = torch.randperm(len(train), generator=g)[:n] if len(train) >= n else torch.randint(len(train), (n,),
                                                                                            generator=g)
    sets, notes = [], []
    if reference.points is None:  # the reference models themselves: their rows, no evaluation needed
        sets.append(ModelSet(COPIES, reference.quality[pick], weights=train[pick],
                             predictions=None if reference.predictions is None else reference.predictions[pick]))
    else:  # shapes: the models behind the reference shapes, decoded
        sets.append(evaluator.model_set(COPIES, train[pick]))
    sigma = NEAR_FRACTION * nearest_spacing(train[:, mask]) / max(int(mask.sum()), 1) ** 0.5
    near = NoiseAddition(sigma=sigma).fit(train[pick], **context).sample(n, seed + 501)
    sets.append(evaluator.model_set(NEAR_COPIES, near))
    if space is not None and space.groups and len(train) >= 2:
        mid = AlignedInterpolation(lam=0.5, space=space, align=align).fit(train).sample(n, seed + 502)
        sets.append(evaluator.model_set(MIDPOINTS, mid))
    else:
        notes.append(f"{MIDPOINTS}: the layout has no neuron permutation groups to align")
    if len(train) >= 4:
        sets.append(evaluator.model_set(AVERAGES, AverageOfK(k=4).fit(train, **context).sample(n, seed + 503)))
    else:
        notes.append(f"{AVERAGES}: fewer than 4 reference models")
    strong = _strong_noise(evaluator, reference, n, seed, sweep, noise_source, context)
    if isinstance(strong, str):
        notes.append(f"{STRONG_NOISE}: {strong}")
    else:
        sets.append(strong)
    if heldout is not None:
        sets.append(heldout)
    expected = {s.name: EXPECTED[s.name] for s in sets}
    return sets, expected, notes


def _strong_noise(evaluator, reference: ModelSet, n: int, seed: int, sweep: Mapping[float, ModelSet],
                  noise_source: Tensor | None, context: dict) -> ModelSet | str:
    chance = evaluator.chance_quality()
    q_ref = float(reference.quality.median())
    if not np.isfinite(chance) or not chance < q_ref:
        return f"no finite chance quality below the reference's ({chance:.3g} against {q_ref:.3g})"
    source = reference.weights if noise_source is None else noise_source
    sweep = dict(sweep)
    sigma = half_way_sigma(sweep, q_ref, chance)
    top = max(sweep) if sweep else 1e-3
    for i in range(MAX_DOUBLINGS):
        if sigma is not None:
            break
        top *= 2
        sweep[top] = evaluator.model_set(f"noise σ={top:.2g} (extended)",
                                         NoiseAddition(sigma=top).fit(source, **context).sample(n, seed + 520 + i))
        sigma = half_way_sigma(sweep, q_ref, chance)
    if sigma is None:
        return f"noise up to σ={top:.3g} keeps the median quality above half-way to chance ({chance:.3g})"
    weights = NoiseAddition(sigma=sigma).fit(source, **context).sample(n, seed + 540)
    return evaluator.model_set(STRONG_NOISE, weights)
