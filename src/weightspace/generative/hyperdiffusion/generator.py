"""HyperDiffusion's generator: DDPM over flattened occupancy-MLP weights with a layer-token
transformer, sampled with DDIM."""

from __future__ import annotations

import torch
from torch import Tensor

from ...errors import ConfigError, LayoutError
from ...generator import Generator, seeded, seeded_global_rng
from ...space import WeightSpace
from ..diffusion import Diffusion, NoiseSchedule, fit_denoiser
from .network import LayerTransformer, segments


class HyperDiffusion(Generator):
    """Transformer diffusion over flattened MLP weights, tokens = layers, DDIM sampling.

    The denoiser predicts ``prediction`` (``"x0"``, which the original also predicts; ``"eps"``
    learns far slower here) under a linear-beta schedule of ``diffusion_steps`` (the original
    uses 500). ``normalize="coordinate"`` standardises each weight by its mean and std over the
    training MLPs: they all start from one init, so what tells shapes apart is a small spread around
    a shared vector, and at CPU budgets a denoiser of raw-scale weights (``"token"``: one mean and
    std per token) spends its capacity on the shared vector and collapses to a few modes.
    """

    name = "hyperdiffusion"

    def __init__(self, *, d_model: int = 64, n_layers: int = 2, n_heads: int = 4, chunk_size: int = 512,
                 dropout: float = 0.0, diffusion_steps: int = 500, beta_start: float = 1e-4, beta_end: float = 2e-2,
                 prediction: str = "x0", train_steps: int = 2000, batch_size: int = 64, lr: float = 1e-3,
                 weight_decay: float = 0.0, ema_decay: float = 0.999, ddim_steps: int = 50, eta: float = 0.0,
                 normalize: str = "coordinate", seed: int = 0):
        if d_model % n_heads:
            raise ConfigError(f"d_model: expected a multiple of n_heads={n_heads}, got {d_model}")
        if int(chunk_size) < 1:
            raise ConfigError(f"chunk_size: expected a positive integer, got {chunk_size!r}")
        self.d_model, self.n_layers, self.n_heads = int(d_model), int(n_layers), int(n_heads)
        self.chunk_size, self.dropout = int(chunk_size), float(dropout)
        self.diffusion_steps, self.beta_start, self.beta_end = int(diffusion_steps), float(beta_start), float(beta_end)
        self.prediction = prediction
        self.train_steps, self.batch_size, self.lr = int(train_steps), int(batch_size), float(lr)
        self.weight_decay, self.ema_decay = float(weight_decay), float(ema_decay)
        self.ddim_steps, self.eta, self.seed = int(ddim_steps), float(eta), int(seed)
        if normalize not in ("coordinate", "token"):
            raise ConfigError(f"normalize: expected 'coordinate' or 'token', got {normalize!r}")
        self.normalize = normalize
        self.diffusion = Diffusion(NoiseSchedule(self.diffusion_steps, self.beta_start, self.beta_end), prediction)
        self.model: LayerTransformer | None = None
        self.segments = self.mean = self.std = None

    def config(self) -> dict:
        keys = ("d_model", "n_layers", "n_heads", "chunk_size", "dropout", "diffusion_steps", "beta_start",
                "beta_end", "prediction", "train_steps", "batch_size", "lr", "weight_decay", "ema_decay",
                "ddim_steps", "eta", "normalize", "seed")
        return {k: getattr(self, k) for k in keys}

    def fit(self, weights: Tensor, *, progress: bool = True, space: WeightSpace | None = None, **context):
        """Fit on ``weights [N, P]``; ``space`` (from :func:`fit_context`) gives the layer tokens. Other
        context keys are ignored (one context may serve every generator)."""
        if weights.dim() != 2 or weights.shape[0] < 1:
            raise ConfigError(f"weights: expected a Tensor[N, P] with N >= 1, got shape {tuple(weights.shape)}")
        if space is not None and space.num_params != weights.shape[1]:
            raise LayoutError(f"weights: expected {space.num_params} parameters for layout '{space.name}', "
                              f"got {weights.shape[1]}")
        self.segments = segments(weights.shape[1], space, self.chunk_size)
        w = weights.float()
        if self.normalize == "coordinate":
            mean, std = w.mean(0), w.std(0, unbiased=False)
        else:
            token = torch.repeat_interleave(torch.arange(len(self.segments)), self.segments[:, 1]).to(w.device)
            mean = torch.stack([w[:, token == k].mean() for k in range(len(self.segments))])[token]
            std = torch.stack([(w - mean)[:, token == k].pow(2).mean().sqrt() for k in range(len(self.segments))])[token]
        self.mean, self.std = mean, std.clamp(min=1e-8)  # a coordinate no fit moved stays at its mean
        data = (w - self.mean) / self.std
        with seeded_global_rng(self.seed):  # module init and dropout draw from the global RNG
            model = LayerTransformer(self.segments, self.d_model, self.n_layers, self.n_heads, self.dropout)
            self.model = fit_denoiser(model.to(w.device), self.diffusion, data, steps=self.train_steps,
                                      batch_size=self.batch_size, lr=self.lr, ema_decay=self.ema_decay,
                                      weight_decay=self.weight_decay, generator=seeded(self.seed),
                                      progress=progress, desc="hyperdiffusion")
        return self

    def sample(self, n: int, seed: int = 0) -> Tensor:
        if self.model is None:
            raise ConfigError("hyperdiffusion: call fit() or load_state() before sample()")
        x = self.diffusion.sample_ddim(self.model, (int(n), self.model.num_params), steps=self.ddim_steps,
                                       eta=self.eta, generator=seeded(seed))
        return x * self.std + self.mean

    def state(self) -> dict[str, Tensor]:
        if self.model is None:
            raise ConfigError("hyperdiffusion: nothing to save before fit()")
        return {"segments": self.segments, "mean": self.mean, "std": self.std,
                **{f"denoiser.{k}": v for k, v in self.model.state_dict().items()}}

    def load_state(self, state: dict[str, Tensor]) -> None:
        self.segments = state["segments"].long().cpu()
        self.mean, self.std = state["mean"], state["std"]
        with seeded_global_rng(self.seed):  # its random init is overwritten; keep the caller's RNG as it is
            model = LayerTransformer(self.segments, self.d_model, self.n_layers, self.n_heads, self.dropout)
        model = model.to(self.mean.device)
        model.load_state_dict({k[len("denoiser."):]: v for k, v in state.items() if k.startswith("denoiser.")})
        self.model = model.eval()
