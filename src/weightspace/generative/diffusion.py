"""Shared diffusion core: DDPM training loss, DDPM ancestral and DDIM sampling, the training loop.

Every diffusion-based generator of weights (P-diff's latent DDPM, G.pt, HyperDiffusion) uses this
one implementation, so differences between methods come from their denoisers and data, not from
subtly different samplers. A denoiser is any callable ``model(x_t, t, cond) -> Tensor`` with
``x_t: [B, ...]``, ``t: LongTensor[B]`` and ``cond: [B, ...] | None``; it predicts the noise
(``prediction="eps"``) or the clean sample (``prediction="x0"``).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from functools import cached_property

import torch
from torch import Tensor, nn
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn
from tqdm.auto import tqdm

from ..errors import ConfigError

PREDICTIONS = ("eps", "x0")


@dataclass(frozen=True)
class NoiseSchedule:
    """DDPM's linear beta schedule (Ho et al. 2020). Tables are float64; they are cast to float32
    on the data's device where used."""

    steps: int = 1000
    beta_start: float = 1e-4
    beta_end: float = 2e-2

    def __post_init__(self):
        if int(self.steps) < 1:
            raise ConfigError(f"steps: expected a positive integer, got {self.steps!r}")
        if not 0 < self.beta_start <= self.beta_end < 1:
            raise ConfigError(f"beta_start, beta_end: expected 0 < beta_start <= beta_end < 1, "
                              f"got {self.beta_start!r}, {self.beta_end!r}")

    @classmethod
    def linear(cls, steps: int) -> NoiseSchedule:
        """DDPM's betas rescaled by ``1000 / steps`` (as improved DDPM does), so a short chain also
        ends near pure noise; ``linear(1000)`` is the default schedule."""
        scale = 1000 / int(steps)
        return cls(int(steps), 1e-4 * scale, min(2e-2 * scale, 0.999))

    @cached_property
    def betas(self) -> Tensor:
        return torch.linspace(self.beta_start, self.beta_end, self.steps, dtype=torch.float64)

    @cached_property
    def alphas(self) -> Tensor:
        return 1.0 - self.betas

    @cached_property
    def alphas_cumprod(self) -> Tensor:
        return torch.cumprod(self.alphas, dim=0)

    def q_sample(self, x0: Tensor, t: Tensor, noise: Tensor) -> Tensor:
        """``x_t = sqrt(ab_t) x0 + sqrt(1 - ab_t) noise`` for per-row timesteps ``t: LongTensor[B]``."""
        ab = _at(self.alphas_cumprod, t, x0)
        return ab.sqrt() * x0 + (1.0 - ab).sqrt() * noise


def _at(table: Tensor, t: Tensor, like: Tensor) -> Tensor:
    """``table[t]`` as float32 on ``like``'s device, shaped ``[B, 1, ...]`` to broadcast over ``like``."""
    vals = table[t.cpu()].to(device=like.device, dtype=like.dtype)
    return vals.reshape(-1, *([1] * (like.dim() - 1)))


def _randn(shape, generator: torch.Generator | None, device: torch.device) -> Tensor:
    """Standard normal noise drawn from ``generator`` (on its own device) and moved to ``device``, so a
    CPU generator seeds runs identically on CPU and CUDA."""
    gen_device = generator.device if generator is not None else torch.device("cpu")
    return torch.randn(tuple(shape), generator=generator, device=gen_device).to(device)


def _device_of(model, cond: Tensor | None) -> torch.device:
    if cond is not None:
        return cond.device
    if isinstance(model, nn.Module):
        for p in model.parameters():
            return p.device
    return torch.device("cpu")


class Diffusion:
    """The DDPM objective and two samplers over one :class:`NoiseSchedule`.

    ``clip``, when set, clamps each step's clean-sample estimate to ``[-clip, clip]`` while sampling
    (DDPM's ``clip_denoised``): for data known to be bounded (tanh latents) it keeps an imperfect
    noise predictor from being amplified by ``1 / sqrt(alpha_bar)`` at high noise levels."""

    def __init__(self, schedule: NoiseSchedule = NoiseSchedule(), prediction: str = "eps",
                 clip: float | None = None):
        if prediction not in PREDICTIONS:
            raise ConfigError(f"prediction: expected one of {PREDICTIONS}, got {prediction!r}")
        if clip is not None and not clip > 0:
            raise ConfigError(f"clip: expected None or a number > 0, got {clip!r}")
        self.schedule = schedule
        self.prediction = prediction
        self.clip = clip

    def loss(self, model, x0: Tensor, cond: Tensor | None = None,
             generator: torch.Generator | None = None) -> Tensor:
        """Scalar MSE between the model's output and its target (noise or x0) at uniform random t."""
        b = x0.shape[0]
        gen_device = generator.device if generator is not None else torch.device("cpu")
        t = torch.randint(0, self.schedule.steps, (b,), generator=generator, device=gen_device).to(x0.device)
        noise = _randn(x0.shape, generator, x0.device)
        x_t = self.schedule.q_sample(x0, t, noise)
        target = noise if self.prediction == "eps" else x0
        return torch.mean((model(x_t, t, cond) - target) ** 2)

    def _predict(self, model, x_t: Tensor, t: int, cond: Tensor | None) -> tuple[Tensor, Tensor]:
        """``(x0_hat, eps_hat)`` from one model call, whichever of the two it predicts."""
        tt = torch.full((x_t.shape[0],), t, dtype=torch.long, device=x_t.device)
        out = model(x_t, tt, cond)
        ab = float(self.schedule.alphas_cumprod[t])
        x0 = (x_t - math.sqrt(1 - ab) * out) / math.sqrt(ab) if self.prediction == "eps" else out
        if self.clip is None:
            return x0, (out if self.prediction == "eps" else (x_t - math.sqrt(ab) * x0) / math.sqrt(1 - ab))
        x0 = x0.clamp(-self.clip, self.clip)
        return x0, (x_t - math.sqrt(ab) * x0) / math.sqrt(1 - ab)

    @torch.no_grad()
    def sample_ddpm(self, model, shape, cond: Tensor | None = None,
                    generator: torch.Generator | None = None) -> Tensor:
        """Ancestral sampling through all ``steps`` with the posterior variance beta-tilde."""
        device = _device_of(model, cond)
        s = self.schedule
        x = _randn(shape, generator, device)
        for t in reversed(range(s.steps)):
            x0_hat, _ = self._predict(model, x, t, cond)
            ab = float(s.alphas_cumprod[t])
            ab_prev = float(s.alphas_cumprod[t - 1]) if t > 0 else 1.0
            beta = float(s.betas[t])
            # q(x_{t-1} | x_t, x0) mean and variance (Ho et al. 2020, eq. 7)
            c0 = math.sqrt(ab_prev) * beta / (1 - ab)
            ct = math.sqrt(1 - beta) * (1 - ab_prev) / (1 - ab)
            x = c0 * x0_hat + ct * x
            if t > 0:
                var = beta * (1 - ab_prev) / (1 - ab)
                x = x + math.sqrt(var) * _randn(shape, generator, device)
        return x

    @torch.no_grad()
    def sample_ddim(self, model, shape, steps: int = 50, eta: float = 0.0, cond: Tensor | None = None,
                    generator: torch.Generator | None = None) -> Tensor:
        """DDIM (Song et al. 2021) over ``steps`` evenly spaced timesteps; ``eta=0`` is deterministic
        given the starting noise, ``eta=1`` matches DDPM's variance."""
        if not 1 <= int(steps) <= self.schedule.steps:
            raise ConfigError(f"steps: expected 1..{self.schedule.steps}, got {steps!r}")
        if eta < 0:
            raise ConfigError(f"eta: expected >= 0, got {eta!r}")
        device = _device_of(model, cond)
        acp = self.schedule.alphas_cumprod
        ts = torch.linspace(0, self.schedule.steps - 1, int(steps)).round().long().unique().tolist()[::-1]
        x = _randn(shape, generator, device)
        for i, t in enumerate(ts):
            x0_hat, eps_hat = self._predict(model, x, t, cond)
            ab = float(acp[t])
            ab_prev = float(acp[ts[i + 1]]) if i + 1 < len(ts) else 1.0
            sigma = eta * math.sqrt((1 - ab_prev) / (1 - ab) * (1 - ab / ab_prev))
            x = math.sqrt(ab_prev) * x0_hat + math.sqrt(max(1 - ab_prev - sigma**2, 0.0)) * eps_hat
            if sigma > 0:
                x = x + sigma * _randn(shape, generator, device)
        return x


def ema_avg_fn(decay: float = 0.999, warmup: bool = True):
    """A ``multi_avg_fn`` for :class:`~torch.optim.swa_utils.AveragedModel`: the exponential moving
    average of ``get_ema_multi_avg_fn(decay)``, with a warm-up by default. With ``warmup`` the decay at
    the n-th update is ``min(decay, n / (n + 9))`` (1/10, 2/11, ...), so short fits (a few hundred
    steps, as on CPU) are not dominated by the random initialisation."""
    if not 0 <= decay < 1:
        raise ConfigError(f"decay: expected 0 <= decay < 1, got {decay!r}")
    if not warmup:
        return get_ema_multi_avg_fn(decay)

    @torch.no_grad()
    def update(averaged: list[Tensor], current: list[Tensor], num_averaged: Tensor | int) -> None:
        n = int(num_averaged)  # the starting copy counts as one: the first update sees n = 1
        torch._foreach_lerp_(averaged, current, 1.0 - min(decay, n / (n + 9)))

    return update


def ema_model(model: nn.Module, decay: float = 0.999, warmup: bool = True) -> AveragedModel:
    """An :class:`~torch.optim.swa_utils.AveragedModel` of ``model`` with :func:`ema_avg_fn` that
    starts at the model's current weights (its first update averages them with the trained ones);
    buffers are copied as they are. Call ``update_parameters(model)`` after each step."""
    averaged = AveragedModel(model, multi_avg_fn=ema_avg_fn(decay, warmup))
    averaged.update_parameters(model)  # AveragedModel's first update copies: the average starts here
    return averaged


def fit_denoiser(model: nn.Module, diffusion: Diffusion, data: Tensor, *, steps: int, batch_size: int = 64,
                 lr: float = 1e-3, cond: Tensor | None = None, ema_decay: float = 0.999,
                 weight_decay: float = 0.0, generator: torch.Generator | None = None,
                 progress: bool = True, desc: str = "diffusion",
                 batch: Callable[[Tensor], tuple[Tensor, Tensor | None]] | None = None,
                 lr_lambda: Callable[[int], float] | None = None) -> nn.Module:
    """Train ``model`` (in place, as an optimiser does) with AdamW on minibatches of ``data`` rows drawn
    with replacement from ``generator``; returns the EMA copy (:func:`ema_model`) in eval mode.

    ``batch(idx)`` turns the drawn row indices ``LongTensor[batch_size]`` into the minibatch
    ``(x0, cond)`` (default: ``data[idx]`` and ``cond[idx]``), for augmentation or for rows that are
    not the samples themselves (G.pt's pairs of checkpoints); it may draw from ``generator`` too.
    ``lr_lambda(step)`` scales the learning rate after each step (``LambdaLR``)."""
    if cond is not None and cond.shape[0] != data.shape[0]:
        raise ConfigError(f"cond: expected {data.shape[0]} rows to match data, got {cond.shape[0]}")
    if int(steps) < 1 or int(batch_size) < 1:
        raise ConfigError(f"steps, batch_size: expected positive integers, got {steps!r}, {batch_size!r}")
    gen_device = generator.device if generator is not None else torch.device("cpu")
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=weight_decay, fused=True)
    sched = None if lr_lambda is None else torch.optim.lr_scheduler.LambdaLR(opt, lr_lambda)
    ema = ema_model(model, ema_decay)
    model.train()
    bar = tqdm(range(int(steps)), desc=desc, disable=not progress, leave=False)
    for step in bar:
        idx = torch.randint(0, data.shape[0], (int(batch_size),), generator=generator,
                            device=gen_device).to(data.device)
        x0, c = batch(idx) if batch is not None else (data[idx], None if cond is None else cond[idx])
        loss = diffusion.loss(model, x0, c, generator)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        if sched is not None:
            sched.step()
        ema.update_parameters(model)
        if progress and step % 50 == 0:
            bar.set_postfix(loss=f"{loss.item():.4f}")
    return ema.module.eval().requires_grad_(False)


def timestep_embedding(t: Tensor, dim: int) -> Tensor:
    """Sinusoidal embedding ``[B, dim]`` of integer timesteps (as in the Transformer / DDPM)."""
    half = dim // 2
    freqs = torch.exp(-math.log(10000.0) * torch.arange(half, dtype=torch.float32, device=t.device) / max(half, 1))
    args = t.float()[:, None] * freqs[None]
    emb = torch.cat([torch.cos(args), torch.sin(args)], dim=-1)
    if dim % 2:
        emb = torch.nn.functional.pad(emb, (0, 1))
    return emb
