"""P-diff's generator: an autoencoder over the modelled coordinates and a DDPM over its latents."""

from __future__ import annotations

import torch
from torch import Tensor
from tqdm.auto import tqdm

from ...errors import ConfigError, LayoutError
from ...generator import Generator, seeded
from ..diffusion import Diffusion, NoiseSchedule, fit_denoiser
from .network import ConvAutoencoder, LatentDenoiser, blend_noise


class PDiff(Generator):
    """Autoencoder + latent DDPM over the modelled coordinates (fit context ``mask``; without it,
    the coordinates that vary across the training checkpoints). Unmodelled coordinates come from
    the first training checkpoint.

    The DDPM predicts the clean latent (``prediction="x0"``) where the paper's predicts the noise:
    with a few hundred latents and a CPU-sized training budget, a noise-predicting MLP must learn
    a near-identity at high noise to within ``sqrt(alpha_bar_T)`` and its samples diverged in our
    tests, while x0 prediction parametrises the same posterior mean stably. ``"eps"`` is kept as
    an option. The latent is tanh-bounded, so sampling clamps each clean estimate to [-1, 1]."""

    name = "pdiff"

    def __init__(self, ae_channels: tuple[int, ...] | list[int] = (16, 32, 64), latent_channels: int = 4,
                 fold: int = 2, kernel_size: int = 3, input_noise: float = 0.001, latent_noise: float = 0.1,
                 ae_steps: int = 1500, ae_lr: float = 1e-3, batch_size: int = 32, denoiser_width: int = 256,
                 denoiser_depth: int = 3, diffusion_steps: int = 1000, ddpm_steps: int = 2000,
                 ddpm_lr: float = 1e-3, prediction: str = "x0", ema_decay: float = 0.999, seed: int = 0):
        self.ae_channels = tuple(int(c) for c in ae_channels)
        self.latent_channels = int(latent_channels)
        self.fold = int(fold)
        self.kernel_size = int(kernel_size)
        self.input_noise = float(input_noise)
        self.latent_noise = float(latent_noise)
        self.ae_steps = int(ae_steps)
        self.ae_lr = float(ae_lr)
        self.batch_size = int(batch_size)
        self.denoiser_width = int(denoiser_width)
        self.denoiser_depth = int(denoiser_depth)
        self.diffusion_steps = int(diffusion_steps)
        self.ddpm_steps = int(ddpm_steps)
        self.ddpm_lr = float(ddpm_lr)
        self.prediction = str(prediction)
        self.ema_decay = float(ema_decay)
        self.seed = int(seed)
        for key in ("latent_channels", "ae_steps", "batch_size", "denoiser_width", "denoiser_depth",
                    "diffusion_steps", "ddpm_steps"):
            if getattr(self, key) < 1:
                raise ConfigError(f"{key}: expected a positive integer, got {getattr(self, key)!r}")
        if not self.ae_channels or min(self.ae_channels) < 1:
            raise ConfigError(f"ae_channels: expected positive channel counts, got {ae_channels!r}")
        if self.fold < 2 or self.kernel_size < 1 or self.kernel_size % 2 == 0:
            raise ConfigError(f"fold, kernel_size: expected fold >= 2 and an odd kernel_size, "
                              f"got {fold!r}, {kernel_size!r}")
        for key in ("input_noise", "latent_noise"):
            if not 0 <= getattr(self, key) < 1:
                raise ConfigError(f"{key}: expected a number in [0, 1), got {getattr(self, key)!r}")
        # latents are tanh-bounded: clamp each step's clean estimate to [-1, 1]
        self.diffusion = Diffusion(NoiseSchedule.linear(self.diffusion_steps), self.prediction, clip=1.0)

    def config(self) -> dict:
        return {"ae_channels": list(self.ae_channels), "latent_channels": self.latent_channels, "fold": self.fold,
                "kernel_size": self.kernel_size, "input_noise": self.input_noise, "latent_noise": self.latent_noise,
                "ae_steps": self.ae_steps, "ae_lr": self.ae_lr, "batch_size": self.batch_size,
                "denoiser_width": self.denoiser_width, "denoiser_depth": self.denoiser_depth,
                "diffusion_steps": self.diffusion_steps, "ddpm_steps": self.ddpm_steps, "ddpm_lr": self.ddpm_lr,
                "prediction": self.prediction, "ema_decay": self.ema_decay, "seed": self.seed}

    def _build(self, length: int, device: torch.device) -> None:
        """Fresh networks, initialised from ``seed`` without touching the global RNG."""
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(self.seed)
            self.ae = ConvAutoencoder(length, self.ae_channels, self.latent_channels, self.fold,
                                      self.kernel_size).to(device)
            self.denoiser = LatentDenoiser(self.ae.latent_dim, self.denoiser_width, self.denoiser_depth).to(device)

    def fit(self, weights: Tensor, *, progress: bool = True, mask=None, **context) -> PDiff:
        if not isinstance(weights, Tensor) or weights.dim() != 2 or weights.shape[0] < 1:
            raise LayoutError(f"weights: expected a Tensor[N, P] with N >= 1, got "
                              f"{tuple(weights.shape) if isinstance(weights, Tensor) else type(weights).__name__}")
        w = weights.detach()
        if mask is None:
            index = torch.nonzero((w != w[:1]).any(dim=0)).flatten()
        else:
            mask = torch.as_tensor(mask, device=w.device)
            index = torch.nonzero(mask).flatten() if mask.dtype == torch.bool else mask.long().flatten()
        if index.numel() == 0:
            raise ConfigError("mask: expected at least one modelled coordinate (none given, or none varies)")
        self.index = index.to(w.device)
        self.reference = w[0].clone()
        x = w[:, self.index].float()
        self.mean = x.mean(dim=0)
        std = x.std(dim=0, correction=0)
        self.std = torch.where(std > 1e-12, std, torch.ones_like(std))  # constant coordinates stay put
        x = (x - self.mean) / self.std
        self._build(x.shape[1], w.device)
        g = seeded(self.seed)
        self._fit_autoencoder(x, g, progress)
        with torch.no_grad():
            latents = self.ae.encode(x)
        self.denoiser = fit_denoiser(self.denoiser, self.diffusion, latents, steps=self.ddpm_steps,
                                     batch_size=self.batch_size, lr=self.ddpm_lr, ema_decay=self.ema_decay,
                                     generator=g, progress=progress, desc="pdiff: latent DDPM")
        return self

    def _fit_autoencoder(self, x: Tensor, g: torch.Generator, progress: bool) -> None:
        """Reconstruction MSE with P-diff's input and latent noise; the latent is clamped to [-1, 1]."""
        opt = torch.optim.AdamW(self.ae.parameters(), lr=self.ae_lr, weight_decay=2e-6, fused=True)
        self.ae.train()
        bar = tqdm(range(self.ae_steps), desc="pdiff: autoencoder", disable=not progress, leave=False)
        for step in bar:
            batch = x[torch.randint(0, x.shape[0], (self.batch_size,), generator=g).to(x.device)]
            z = self.ae.encode(blend_noise(batch, self.input_noise, g))
            z = blend_noise(z, self.latent_noise, g).clamp(-1, 1)
            loss = torch.mean((self.ae.decode(z) - batch) ** 2)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            if progress and step % 100 == 0:
                bar.set_postfix(loss=f"{loss.item():.4f}")
        self.ae.eval()

    @torch.no_grad()
    def sample(self, n: int, seed: int = 0) -> Tensor:
        if not hasattr(self, "index"):
            raise ConfigError("pdiff: not fitted; call fit(weights) or load_state(state) first")
        z = self.diffusion.sample_ddpm(self.denoiser, (int(n), self.ae.latent_dim), generator=seeded(seed))
        x = self.ae.decode(z.clamp(-1, 1)) * self.std + self.mean
        out = self.reference.expand(int(n), -1).clone()
        out[:, self.index] = x.to(out.dtype)
        return out

    def state(self) -> dict[str, Tensor]:
        if not hasattr(self, "index"):
            raise ConfigError("pdiff: not fitted; call fit(weights) first")
        state = {"index": self.index, "reference": self.reference, "mean": self.mean, "std": self.std}
        state.update({f"ae.{k}": v for k, v in self.ae.state_dict().items()})
        state.update({f"denoiser.{k}": v for k, v in self.denoiser.state_dict().items()})
        return state

    def load_state(self, state: dict[str, Tensor]) -> None:
        self.index, self.reference = state["index"].long(), state["reference"]
        self.mean, self.std = state["mean"], state["std"]
        self._build(self.index.numel(), self.reference.device)
        for prefix, module in (("ae.", self.ae), ("denoiser.", self.denoiser)):
            module.load_state_dict({k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix)})
            module.eval()
