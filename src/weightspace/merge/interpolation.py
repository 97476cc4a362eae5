"""Linear paths between two models and their loss barriers, with BatchNorm statistics reset and
REPAIR (Jordan et al. 2023) on the interpolated models.

Loss barrier (Frankle et al. 2020; Git Re-Basin): max over λ of L((1−λ)θa + λθb) − ((1−λ)L(θa) +
λL(θb)). Align θb to θa first (``weightspace.align``) for the barrier modulo permutations.

REPAIR: an interpolated network's neurons have collapsed variance; for each permutation group in
layer order, rescale and shift the neurons' outputs (via the producing layer's weight rows and bias,
or the BatchNorm's affine parameters) so that their mean and standard deviation on data are the
interpolation of the endpoints' — statistics measured after the earlier groups are corrected.
"""

from __future__ import annotations

import pandas as pd
import torch
from torch import Tensor

from ..align import group_activations, group_modules
from ..errors import ConfigError, LayoutError
from ..nets import Architecture
from ..task import Task
from .batchnorm import has_batchnorm, recompute_batchnorm


def interpolate(weights_a: Tensor, weights_b: Tensor, lambdas: Tensor) -> Tensor:
    """``[L, P]``: (1 − λ) a + λ b for each λ, in one broadcast."""
    if weights_a.shape != weights_b.shape or weights_a.dim() != 1:
        raise LayoutError(f"expected two models [P] of the same size, got {tuple(weights_a.shape)} "
                          f"and {tuple(weights_b.shape)}")
    lam = torch.as_tensor(lambdas, dtype=weights_a.dtype)[:, None]
    return (1 - lam) * weights_a + lam * weights_b


def _stats(acts: dict[str, Tensor]) -> dict[str, tuple[Tensor, Tensor]]:
    return {g: (a.double().mean(-1), a.double().std(-1, unbiased=False)) for g, a in acts.items()}


@torch.no_grad()
def repair(arch: Architecture, weights_a: Tensor, weights_b: Tensor, interpolated: Tensor, lambdas: Tensor,
           x: Tensor, *, eps: float = 1e-5) -> Tensor:
    """REPAIR ``interpolated [L, P]`` (the models at ``lambdas`` between ``weights_a`` and
    ``weights_b`` [P]): every neuron's output mean and std on ``x`` become (1 − λ)·endpoint a's +
    λ·endpoint b's. BatchNorm statistics are recomputed on ``x`` before each measurement."""
    space = arch.space
    modules = group_modules(space)
    for g, m in modules.items():
        if f"{m}.bias" not in space.names or f"{m}.weight" not in space.names:
            raise LayoutError(f"REPAIR rescales the outputs of '{m}' through '{m}.weight' and '{m}.bias'; "
                              f"layout '{space.name}' lacks one of them")
    ends = _stats(group_activations(arch, torch.stack([weights_a, weights_b]), x))
    lam = torch.as_tensor(lambdas, dtype=torch.float64)[:, None]
    out = interpolated.clone()
    bn = has_batchnorm(arch)
    for g, m in modules.items():  # layer order: later groups see corrected inputs
        if bn:
            out = recompute_batchnorm(arch, out, x)
        mean, std = _stats(group_activations(arch, out, x))[g]
        (mean_e, std_e) = ends[g]
        target_mean = (1 - lam) * mean_e[0] + lam * mean_e[1]
        target_std = (1 - lam) * std_e[0] + lam * std_e[1]
        scale = target_std / (std + eps)  # [L, size]
        w_sl, b_sl = space.slice(f"{m}.weight"), space.slice(f"{m}.bias")
        shape = space.spec(f"{m}.weight").shape
        w = out[:, w_sl].reshape(len(out), *shape).double()
        w = w * scale.reshape(len(out), shape[0], *([1] * (len(shape) - 1)))
        b = out[:, b_sl].double()
        out[:, w_sl] = w.reshape(len(out), -1).to(out.dtype)
        out[:, b_sl] = (scale * (b - mean) + target_mean).to(out.dtype)
    return recompute_batchnorm(arch, out, x) if bn else out


def interpolation_curve(
    task: Task,
    weights_a: Tensor,
    weights_b: Tensor,
    *,
    lambdas: Tensor | int = 11,
    split: str = "test",
    stats_split: str = "train",
    stats_examples: int = 1024,
    repair_neurons: bool = False,
    reset_batchnorm: bool = True,
) -> pd.DataFrame:
    """Loss and accuracy along the path from ``weights_a`` to ``weights_b`` ([P] each): one row per λ
    (columns ``lam``, ``loss``, ``acc``, ``error``), all λ evaluated in one batched call.

    BatchNorm statistics of every interpolated model are recomputed on the first ``stats_examples``
    of ``stats_split`` (the endpoints too, so that all points are measured alike), unless
    ``reset_batchnorm=False`` (interpolated running statistics: the naive path); with
    ``repair_neurons``, REPAIR runs on the same examples.
    """
    if isinstance(lambdas, int):
        if lambdas < 2:
            raise ConfigError(f"lambdas: expected at least 2 points, got {lambdas}")
        lambdas = torch.linspace(0, 1, lambdas)
    lambdas = torch.as_tensor(lambdas, dtype=torch.float64)
    arch = task.arch
    path = interpolate(weights_a, weights_b, lambdas)
    x = task.dataset.split(stats_split)[0][:stats_examples]
    if repair_neurons:
        path = repair(arch, weights_a, weights_b, path, lambdas, x)
    elif reset_batchnorm and has_batchnorm(arch):
        path = recompute_batchnorm(arch, path, x)
    scores = task.evaluate(path, (split,))
    return pd.DataFrame({"lam": lambdas.numpy(), "loss": scores[f"{split}_loss"].to_numpy(),
                         "acc": scores[f"{split}_acc"].to_numpy(),
                         "error": 1.0 - scores[f"{split}_acc"].to_numpy()})


def barrier(curve: pd.DataFrame, column: str = "loss") -> float:
    """max over λ of curve(λ) − the straight line between its endpoints (``loss`` or ``error``)."""
    curve = curve.sort_values("lam")
    lam, v = curve["lam"].to_numpy(), curve[column].to_numpy()
    if lam[0] != 0 or lam[-1] != 1:
        raise ConfigError("barrier: the curve must include λ = 0 and λ = 1")
    return float((v - ((1 - lam) * v[0] + lam * v[-1])).max())
