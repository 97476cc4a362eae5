"""P-diff (Wang et al. 2024, "Neural Network Diffusion"), CPU-sized.

Data: one CNN with BatchNorm is trained on Fashion-MNIST (averaged to 7×7 pixels, a 5,000-image
training subset; scored on a stratified 2,000-image test subset, where it makes hundreds of errors;
the ``tiny`` preset uses scikit-learn's digits), then only the affine weight and bias of its last
two BatchNorm layers are fine-tuned for a few hundred SGD steps, saving a checkpoint after every
step. A second fine-tune from the same base, alike but with its own data order (run ``heldout``),
is never shown to the generator: what a model that generalises within the fine-tune looks like. Generator: those parameters are normalised per coordinate, a 1-D convolutional autoencoder
is trained on them with small noise added to its input (0.001) and to its latent (0.1), and a DDPM
learns the latents; sampling decodes DDPM latents and writes them into a copy of a training model.

The zoo holds the base model (run ``base``), the fine-tune trajectory (run ``finetune``) and the
held-out one (run ``heldout``); the generator is fit on the fine-tune checkpoints after step 0
(step 0 is the base model itself).
"""

from __future__ import annotations

import math
from pathlib import Path

import torch
from torch import Tensor, nn
from tqdm.auto import tqdm

from ..data import load_dataset
from ..errors import ConfigError, LayoutError
from ..nets import CNN
from ..safe_input import check_int, check_list, check_str
from ..zoo.build import accuracy_on_test, predictions_on_test
from ..zoo.method_record import Fields, Record
from ..zoo.store import Zoo
from ..zoo.train import HParams, Run, TrainConfig, train_population
from .base import Generator, seeded
from .diffusion import Diffusion, NoiseSchedule, fit_denoiser, timestep_embedding

TRAINABLE = ("norms.1.weight", "norms.1.bias", "norms.2.weight", "norms.2.bias")
BASE_RUN, FINETUNE_RUN, HELDOUT_RUN = "base", "finetune", "heldout"

PRESETS = {
    # base: Adam on digits to ~99% test accuracy; fine-tune: SGD on the BN affine parameters only
    "default": {"base_epochs": 8, "finetune_steps": 300, "dataset": {"name": "fashion-mnist", "image": True,
                "image_size": 7, "max_train": 6000, "max_test": 2000}},
    "tiny": {"base_epochs": 2, "finetune_steps": 20, "dataset": {"name": "digits", "image": True}},
}
ARCHITECTURE = {"channels": (16, 32, 32), "fc_widths": ()}
BASE_HPARAMS = {"lr": 0.01, "optimizer": "adam"}
FINETUNE_HPARAMS = {"lr": 0.2, "optimizer": "sgd", "momentum": 0.9}
# What build_data records and the code below reads (checked when a zoo is opened as P-diff's).
ZOO_RECORD = Record(Fields({"preset": lambda v, k: check_str(v, k, PRESETS), "seed": check_int,
                            "trainable": lambda v, k: check_list(v, k, check_str, min_len=1)}))


# --------------------------------------------------------------------------- data


def build_data(out: str | Path, *, preset: str = "default", progress: bool = True, seed: int = 0) -> Zoo:
    """Train the base CNN, then fine-tune its last two BatchNorm layers one checkpoint per step,
    twice: the training trajectory and the held-out one. ``seed`` shifts the runs' seeds (init and
    data order) by ``seed * 10_000``.

    Resumable: runs whose checkpoints are all in the zoo are skipped."""
    if preset not in PRESETS:
        raise ConfigError(f"preset: expected one of {sorted(PRESETS)}, got {preset!r}")
    p = PRESETS[preset]
    dataset = load_dataset(**p["dataset"])
    arch = CNN(dataset.input_shape[0], dataset.input_shape[-1], out_features=dataset.num_classes, **ARCHITECTURE)
    config = {"method": "pdiff", "preset": preset, "seed": int(seed), "dataset": p["dataset"],
              "trainable": list(TRAINABLE), "base": {**BASE_HPARAMS, "epochs": p["base_epochs"]},
              "finetune": {**FINETUNE_HPARAMS, "steps": p["finetune_steps"]}}
    zoo = Zoo.create(out, arch.space, architecture=arch.config, task=dataset.describe(), config=config)
    if (zoo.info["config"].get("preset"), zoo.info["config"].get("seed")) != (preset, int(seed)):
        raise ConfigError(f"preset: the zoo at {out} was built with preset "
                          f"{zoo.info['config'].get('preset')!r} and seed {zoo.info['config'].get('seed')!r}, "
                          f"not {preset!r} and {seed!r}; use another directory")
    evals = ("val", "test")
    first = int(seed) * 10_000
    train_population(arch, dataset, [Run(BASE_RUN, first, HParams(**BASE_HPARAMS, epochs=p["base_epochs"]))], zoo,
                     TrainConfig(eval_splits=evals), progress=progress)
    base = base_weights(zoo)
    steps_per_epoch = math.ceil(dataset.x_train.shape[0] / TrainConfig().batch_size)
    ft = HParams(**FINETUNE_HPARAMS, epochs=math.ceil(p["finetune_steps"] / steps_per_epoch))
    train_population(arch, dataset, [Run(FINETUNE_RUN, first + 1, ft), Run(HELDOUT_RUN, first + 2, ft)], zoo,
                     TrainConfig(every_steps=1, max_steps=p["finetune_steps"], trainable=TRAINABLE,
                                 eval_splits=evals),
                     init=base, progress=progress)
    return zoo


def base_weights(zoo: Zoo) -> Tensor:
    """The trained base model ``Tensor[P]`` (its last checkpoint)."""
    w, _ = zoo.load("run_id = ?", (BASE_RUN,))
    if w.shape[0] == 0:
        raise ConfigError(f"zoo {zoo.root}: no {BASE_RUN!r} run; build it with pdiff.build_data")
    return w[-1]


def _trajectory(zoo: Zoo, run: str) -> Tensor:
    w, _ = zoo.load("run_id = ? AND step > 0", (run,))
    if w.shape[0] == 0:
        raise ConfigError(f"zoo {zoo.root}: no {run!r} checkpoints; build it with pdiff.build_data")
    return w


def training_weights(zoo: Zoo) -> Tensor:
    """The fine-tune checkpoints after step 0, in step order: ``Tensor[steps, P]``."""
    return _trajectory(zoo, FINETUNE_RUN)


def heldout_weights(zoo: Zoo) -> Tensor:
    """The held-out fine-tune's checkpoints after step 0 (same schedule, own data order)."""
    return _trajectory(zoo, HELDOUT_RUN)


def fit_context(zoo: Zoo) -> dict:
    """``mask``: the fine-tuned coordinates, the only ones P-diff models."""
    return {"mask": zoo.space.mask(tuple(zoo.info["config"].get("trainable", TRAINABLE)))}


def n_samples(zoo: Zoo) -> int:
    """The paper generates 200 models per P-diff setting."""
    return 200


# a classifier method: its quality is test accuracy, its predictions are test labels
quality = accuracy_on_test
predictions = predictions_on_test


# --------------------------------------------------------------------------- networks


class ConvAutoencoder(nn.Module):
    """1-D convolutional autoencoder over a parameter vector, as in P-diff: each level folds the
    length by ``fold`` with a strided convolution; a tanh-bounded latent ``[latent_channels,
    length / fold**levels]``; the decoder mirrors it with transposed convolutions. The vector is
    zero-padded to a multiple of ``fold**levels``. (No InstanceNorm, unlike the original: it would
    discard each vector's own scale, which the decoder has to reproduce.)"""

    def __init__(self, length: int, channels: tuple[int, ...], latent_channels: int, fold: int, kernel_size: int):
        super().__init__()
        self.length = length
        unit = fold ** len(channels)
        self.padded = math.ceil(length / unit) * unit
        self.latent_shape = (latent_channels, self.padded // unit)
        pad = kernel_size // 2
        enc: list[nn.Module] = [nn.Conv1d(1, channels[0], kernel_size, padding=pad)]
        prev = channels[0]
        for c in channels:
            enc += [nn.LeakyReLU(), nn.Conv1d(prev, c, fold, stride=fold), nn.LeakyReLU(),
                    nn.Conv1d(c, c, kernel_size, padding=pad)]
            prev = c
        enc += [nn.LeakyReLU(), nn.Conv1d(prev, latent_channels, 1), nn.Tanh()]
        dec: list[nn.Module] = [nn.Conv1d(latent_channels, channels[-1], 1)]
        rev = list(reversed(channels))
        for c, nxt in zip(rev, [*rev[1:], channels[0]], strict=True):
            dec += [nn.LeakyReLU(), nn.ConvTranspose1d(c, nxt, fold, stride=fold), nn.LeakyReLU(),
                    nn.Conv1d(nxt, nxt, kernel_size, padding=pad)]
        dec += [nn.LeakyReLU(), nn.Conv1d(channels[0], 1, kernel_size, padding=pad)]
        self.encoder = nn.Sequential(*enc)
        self.decoder = nn.Sequential(*dec)

    @property
    def latent_dim(self) -> int:
        return self.latent_shape[0] * self.latent_shape[1]

    def encode(self, x: Tensor) -> Tensor:
        """``[B, length] -> [B, latent_dim]``"""
        x = nn.functional.pad(x, (0, self.padded - self.length))
        return self.encoder(x[:, None, :]).flatten(1)

    def decode(self, z: Tensor) -> Tensor:
        """``[B, latent_dim] -> [B, length]``"""
        return self.decoder(z.view(-1, *self.latent_shape))[:, 0, : self.length]


class LatentDenoiser(nn.Module):
    """An MLP denoiser over flat latents with a sinusoidal timestep embedding (unconditional)."""

    def __init__(self, dim: int, width: int, depth: int, emb: int = 64):
        super().__init__()
        self.emb = emb
        layers: list[nn.Module] = [nn.Linear(dim + emb, width), nn.SiLU()]
        for _ in range(depth - 1):
            layers += [nn.Linear(width, width), nn.SiLU()]
        layers.append(nn.Linear(width, dim))
        self.net = nn.Sequential(*layers)

    def forward(self, x: Tensor, t: Tensor, cond: Tensor | None = None) -> Tensor:
        return self.net(torch.cat([x, timestep_embedding(t, self.emb)], dim=-1))


def _blend_noise(x: Tensor, factor: float, generator: torch.Generator) -> Tensor:
    """P-diff's augmentation: ``(1 - factor) x + factor N(0, I)``."""
    noise = torch.randn(x.shape, generator=generator).to(x)
    return (1.0 - factor) * x + factor * noise


# --------------------------------------------------------------------------- generator


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
            z = self.ae.encode(_blend_noise(batch, self.input_noise, g))
            z = _blend_noise(z, self.latent_noise, g).clamp(-1, 1)
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
