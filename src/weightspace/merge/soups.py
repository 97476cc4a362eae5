"""Model soups (Wortsman et al. 2022): averages of fine-tunes of one pretrained model.

Uniform: the mean of all. Greedy: models sorted by held-out score, each added to the soup only if
the soup's held-out score does not drop (strictly rises, with ``strict``); the ingredients taken are
reported, since small pools often end with a soup of one. Learned: per-tensor mixing coefficients
(a softmax over models, one per tensor) trained on held-out data by gradient descent.
"""

from __future__ import annotations

from collections.abc import Callable

import pandas as pd
import torch
import torch.nn.functional as F
from torch import Tensor
from tqdm.auto import tqdm

from ..errors import ConfigError
from ..nets import Architecture

Score = Callable[[Tensor], Tensor]  # [N, P] -> [N], higher is better (e.g. held-out accuracy)


def _check(weights: Tensor) -> None:
    if weights.dim() != 2 or weights.shape[0] == 0:
        raise ConfigError(f"weights: expected [N, P] with N ≥ 1 models, got {tuple(weights.shape)}")


def uniform_soup(weights: Tensor) -> Tensor:
    """The mean of ``weights [N, P]``."""
    _check(weights)
    return weights.mean(0)


def greedy_soup(
    weights: Tensor,
    score: Score,
    *,
    strict: bool = False,
    transform: Callable[[Tensor], Tensor] | None = None,
    progress: bool = False,
) -> tuple[Tensor, pd.DataFrame]:
    """Greedy soup of ``weights [N, P]`` by held-out ``score``: the soup ``[P]`` and one row per model
    in the order tried: ``model`` (index into weights), ``score`` (alone), ``soup_score`` (of the
    soup with it), ``taken``.

    ``transform`` maps candidate soups ``[1, P]`` before scoring and is applied to the result (e.g.
    recomputing BatchNorm statistics). The first ingredient is the best model alone, and a
    candidate is taken only if the score does not drop, so the soup is never worse on the held-out
    score than its first ingredient.
    """
    _check(weights)
    fix = transform or (lambda w: w)
    alone = score(fix(weights)).double()
    order = torch.argsort(alone, descending=True, stable=True)
    total, count = weights[order[0]].double().clone(), 1
    best = float(alone[order[0]])
    rows = [{"model": int(order[0]), "score": best, "soup_score": best, "taken": True}]
    for i in tqdm(order[1:].tolist(), desc="greedy soup", disable=not progress):
        candidate = ((total + weights[i].double()) / (count + 1)).to(weights.dtype)
        s = float(score(fix(candidate[None]))[0])
        taken = s > best if strict else s >= best
        if taken:
            total, count, best = total + weights[i].double(), count + 1, s
        rows.append({"model": i, "score": float(alone[i]), "soup_score": s, "taken": taken})
    soup = fix((total / count).to(weights.dtype)[None])[0]
    return soup, pd.DataFrame(rows)


def learned_soup(
    arch: Architecture,
    weights: Tensor,
    x: Tensor,
    y: Tensor,
    *,
    steps: int = 100,
    lr: float = 0.05,
    progress: bool = False,
) -> tuple[Tensor, pd.DataFrame]:
    """Per-tensor mixing coefficients of ``weights [N, P]`` trained with Adam to minimise the
    architecture's loss on held-out ``(x, y)`` (full batch, so nothing random): the soup ``[P]`` and
    the coefficients as rows (``tensor``, ``model``, ``coefficient``). Starts from the uniform soup."""
    _check(weights)
    space = arch.space
    stacked = space.unflatten(weights.detach(), cast=False)  # name -> [N, *shape]
    logits = torch.zeros(len(space.entries), weights.shape[0], requires_grad=True)
    opt = torch.optim.Adam([logits], lr=lr)

    def soup() -> dict[str, Tensor]:
        mix = F.softmax(logits, dim=1)
        return {e.name: torch.tensordot(mix[i], stacked[e.name], dims=1)[None] for i, e in enumerate(space.entries)}

    for _ in tqdm(range(steps), desc="learned soup", disable=not progress):
        out, _ = arch.apply(soup(), x)
        loss = arch.loss(out, y[None])[0]
        opt.zero_grad()
        loss.backward()
        opt.step()
    with torch.no_grad():
        params = soup()
        mix = F.softmax(logits, dim=1)
    vector = torch.cat([params[e.name].reshape(-1) for e in space.entries]).to(weights.dtype)
    table = pd.DataFrame([{"tensor": e.name, "model": j, "coefficient": float(mix[i, j])}
                          for i, e in enumerate(space.entries) for j in range(weights.shape[0])])
    return vector, table
