"""Hyper-Representations' generator: the transformer autoencoder over neuron tokens, trained with
reconstruction and contrastive losses; samples decoded from a KDE of the best models' latents."""

from __future__ import annotations

import math

import torch
from torch import Tensor
from tqdm.auto import tqdm

from ...errors import ConfigError, LayoutError
from ...generator import Generator, seeded
from ...nets import build_architecture
from ...space import WeightSpace
from ...symmetry import permutation_pool
from .network import HyperAutoEncoder, Tokenizer, nt_xent
from .setting import ARCHITECTURE


def kde_sample(anchors: Tensor, n: int, bandwidth: float, generator: torch.Generator,
               shared_seed: bool = False) -> Tensor:
    """``n`` draws from a 1-D Gaussian KDE per column of ``anchors [M, L]`` (sklearn's sampler: a
    random anchor plus ``bandwidth`` times a standard normal). ``shared_seed`` replays one random
    state for every column, as the original did: one anchor index and one normal draw per sample,
    used in every dimension."""
    m, dim = anchors.shape
    cols = 1 if shared_seed else dim
    idx = torch.randint(m, (n, cols), generator=generator).expand(n, dim).to(anchors.device)
    eps = torch.randn(n, cols, generator=generator).expand(n, dim).to(anchors.device)
    return torch.gather(anchors, 0, idx) + bandwidth * eps


class HyperRep(Generator):
    """Transformer autoencoder over neuron tokens; KDE sampling of the best models' latents.

    ``fit(weights, accuracies=Tensor[N])``: the accuracies pick the top ``top_fraction`` models
    whose latents the KDE is fitted on. ``architecture`` is the zoo's architecture config (defines
    the tokens); it defaults to this module's digits CNN.

    The permutation pool is small by default: every permutation in it is one more version of each
    model to reconstruct, and with the original's pool of 100 a fit of a few CPU minutes does not
    get past reconstructing the mean model (docs/generators.md)."""

    name = "hyperrep"

    def __init__(self, architecture: dict | None = None, d_model: int = 64, heads: int = 4, layers: int = 1,
                 ff: int = 128, latent: int = 256, projection: int = 64, dropout: float = 0.0,
                 steps: int = 2000, batch_size: int = 32, lr: float = 3e-3, weight_decay: float = 0.0,
                 gamma: float = 0.05, temperature: float = 0.1, noise: float = 0.05, erase: float = 0.05,
                 permutations: int = 4, top_fraction: float = 0.3, bandwidth: float = 0.002,
                 shared_seed: bool = True, seed: int = 0):
        self.architecture = dict(ARCHITECTURE if architecture is None else architecture)
        self.tokenizer = Tokenizer(build_architecture(self.architecture).space)
        for key, value in (("d_model", d_model), ("heads", heads), ("layers", layers), ("ff", ff),
                           ("latent", latent), ("projection", projection), ("steps", steps),
                           ("batch_size", batch_size)):
            if int(value) != value or int(value) < 1:
                raise ConfigError(f"{key}: expected a positive integer, got {value!r}")
        if d_model % heads:
            raise ConfigError(f"d_model: expected a multiple of heads={heads}, got {d_model}")
        if not 0 < top_fraction <= 1:
            raise ConfigError(f"top_fraction: expected a number in (0, 1], got {top_fraction!r}")
        if not 0 <= gamma <= 1:
            raise ConfigError(f"gamma: expected a number in [0, 1] (loss = (1 - gamma) recon + gamma contrast), "
                              f"got {gamma!r}")
        for key, value in (("noise", noise), ("bandwidth", bandwidth), ("lr", lr),
                           ("weight_decay", weight_decay), ("temperature", temperature)):
            if not float(value) >= 0:
                raise ConfigError(f"{key}: expected a number >= 0, got {value!r}")
        if not 0 <= erase < 1 or not 0 <= dropout < 1:
            raise ConfigError(f"erase, dropout: expected numbers in [0, 1), got {erase!r}, {dropout!r}")
        if int(permutations) < 0:
            raise ConfigError(f"permutations: expected an integer >= 0 (0: no permutation), got {permutations!r}")
        self.d_model, self.heads, self.layers, self.ff = int(d_model), int(heads), int(layers), int(ff)
        self.latent, self.projection, self.dropout = int(latent), int(projection), float(dropout)
        self.steps, self.batch_size, self.lr, self.weight_decay = int(steps), int(batch_size), float(lr), float(weight_decay)
        self.gamma, self.temperature, self.noise, self.erase = float(gamma), float(temperature), float(noise), float(erase)
        self.permutations, self.top_fraction, self.bandwidth = int(permutations), float(top_fraction), float(bandwidth)
        self.shared_seed, self.seed = bool(shared_seed), int(seed)
        self.net: HyperAutoEncoder | None = None
        self.stats: dict[str, Tensor] = {}

    def config(self) -> dict:
        keys = ("architecture", "d_model", "heads", "layers", "ff", "latent", "projection", "dropout",
                "steps", "batch_size", "lr", "weight_decay", "gamma", "temperature", "noise", "erase",
                "permutations", "top_fraction", "bandwidth", "shared_seed", "seed")
        return {k: getattr(self, k) for k in keys}

    @property
    def space(self) -> WeightSpace:
        return self.tokenizer.space

    def _new_net(self) -> HyperAutoEncoder:
        # Seeded without touching the caller's global RNG: nn layers draw their init from it.
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(self.seed)
            return HyperAutoEncoder(self.tokenizer.layer_of_token, self.tokenizer.width, self.d_model, self.heads,
                                    self.layers, self.ff, self.latent, self.projection, self.dropout)

    def _scale(self) -> tuple[Tensor, Tensor]:
        """Per-coordinate (mean, std): those of the coordinate's layer over the zoo."""
        layer = self.tokenizer.layer_of_coordinate.to(self.stats["mean"].device)
        return self.stats["mean"][layer], self.stats["std"][layer]

    def _check(self, weights: Tensor, what: str = "weights") -> Tensor:
        if not isinstance(weights, Tensor) or weights.dim() != 2 or weights.shape[1] != self.space.num_params:
            shape = tuple(weights.shape) if isinstance(weights, Tensor) else type(weights).__name__
            raise LayoutError(f"{what}: expected [N, {self.space.num_params}] for layout '{self.space.name}', "
                              f"got {shape}")
        return weights.detach().float()

    # -- fit

    def fit(self, weights: Tensor, *, progress: bool = True, accuracies: Tensor | None = None,
            **context) -> HyperRep:
        w = self._check(weights)
        if accuracies is None:
            raise ConfigError("hyperrep.fit: needs accuracies=Tensor[N] (one per model; sampling keeps the "
                              "best top_fraction), as hyperrep.fit_context(zoo) returns")
        acc = torch.as_tensor(accuracies, dtype=torch.float32).reshape(-1).to(w.device)
        if acc.shape[0] != w.shape[0]:
            raise ConfigError(f"accuracies: expected one per model ({w.shape[0]}), got {acc.shape[0]}")
        device = w.device
        # Each layer (weight and bias of its neurons) standardised by its mean and std over the zoo,
        # so the plain MSE of standardised tokens is the original's layer-normalised reconstruction loss.
        layer = self.tokenizer.layer_of_coordinate.to(device)
        self.stats = {
            "mean": torch.stack([w[:, layer == i].mean() for i in range(len(self.tokenizer.layers))]),
            "std": torch.stack([w[:, layer == i].std(correction=0).clamp_min(1e-8)
                                for i in range(len(self.tokenizer.layers))]),
        }
        mean, std = self._scale()
        wn = (w - mean) / std
        gen = seeded(self.seed)
        pool = permutation_pool(self.space, self.permutations, gen).to(device)
        valid = self.tokenizer.valid.to(device)

        net = self._new_net().to(device)
        opt = torch.optim.AdamW(net.parameters(), lr=self.lr, weight_decay=self.weight_decay, fused=True)
        sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, self.steps, eta_min=self.lr * 0.05)
        net.train()
        bar = tqdm(range(self.steps), desc="hyper-representations", disable=not progress, leave=False)
        with torch.random.fork_rng(devices=[]):  # dropout draws from the global RNG
            torch.manual_seed(self.seed)
            for it in bar:
                pick = torch.randint(w.shape[0], (min(self.batch_size, w.shape[0]),), generator=gen).to(device)
                inputs, targets = self._view(wn[pick].repeat(2, 1), pool, gen)  # two views of each model
                z = net.encode(inputs)
                rec = ((net.decode(z) - targets) ** 2 * valid).sum() / (targets.shape[0] * w.shape[1])
                h = net.project(z)
                con = nt_xent(h[: len(pick)], h[len(pick) :], self.temperature)
                loss = (1 - self.gamma) * rec + self.gamma * con
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                sched.step()
                if progress and it % 50 == 0:
                    bar.set_postfix(rec=f"{float(rec):.4f}", con=f"{float(con):.3f}")
        self.net = net.eval()
        top = torch.argsort(acc, descending=True, stable=True)[: max(1, math.ceil(self.top_fraction * len(acc)))]
        self.stats["anchors"] = self.encode(w[top])
        self.stats["anchor_rows"] = top
        return self

    def _view(self, wn: Tensor, pool: Tensor, gen: torch.Generator) -> tuple[Tensor, Tensor]:
        """(augmented input tokens, clean target tokens) of standardised models ``wn [B, P]``: a
        permutation from the pool (the target is permuted too: it is the same function), then noise
        and erasing on the input only."""
        k = torch.randint(len(pool), (wn.shape[0],), generator=gen).to(wn.device)
        target = self.tokenizer.tokenize(torch.gather(wn, 1, pool[k]))
        noisy = target + self.noise * torch.randn(target.shape, generator=gen).to(wn.device)
        keep = torch.rand(target.shape, generator=gen).to(wn.device) >= self.erase
        valid = self.tokenizer.valid.to(wn.device)
        return noisy * keep * valid, target

    # -- encode / decode / sample

    def _require_fitted(self) -> HyperAutoEncoder:
        if self.net is None:
            raise ConfigError("hyperrep: call fit() or load_state() before encoding or sampling")
        return self.net

    @torch.no_grad()
    def encode(self, weights: Tensor, batch: int = 256) -> Tensor:
        """Latents ``[N, latent]`` of weight vectors (no augmentation)."""
        net = self._require_fitted()
        device = self.stats["mean"].device
        mean, std = self._scale()
        w = (self._check(weights).to(device) - mean) / std
        return torch.cat([net.encode(self.tokenizer.tokenize(w[i : i + batch])) for i in range(0, len(w), batch)])

    @torch.no_grad()
    def decode(self, latents: Tensor, batch: int = 256) -> Tensor:
        """Weight vectors ``[N, P]`` from latents."""
        net = self._require_fitted()
        mean, std = self._scale()
        out = [self.tokenizer.detokenize(net.decode(latents[i : i + batch])) for i in range(0, len(latents), batch)]
        return (torch.cat(out) * std + mean).to(self.space.dtype)

    def reconstruct(self, weights: Tensor) -> Tensor:
        """``decode(encode(weights))``: the autoencoder's version of each model."""
        return self.decode(self.encode(weights))

    def sample_latents(self, n: int = 200, seed: int = 0) -> Tensor:
        """``[n, latent]`` KDE draws around the latents of the best training models."""
        self._require_fitted()
        return kde_sample(self.stats["anchors"], int(n), self.bandwidth, seeded(seed), self.shared_seed)

    def sample(self, n: int = 200, seed: int = 0) -> Tensor:
        return self.decode(self.sample_latents(n, seed))

    # -- state

    def state(self) -> dict[str, Tensor]:
        net = self._require_fitted()
        return {**{f"stats.{k}": v.detach() for k, v in self.stats.items()},
                **{f"net.{k}": v.detach() for k, v in net.state_dict().items()}}

    def load_state(self, state: dict[str, Tensor]) -> None:
        net = self._new_net()
        net.load_state_dict({k[4:]: v for k, v in state.items() if k.startswith("net.")})
        device = state["stats.mean"].device
        self.net = net.to(device).eval()
        self.stats = {k[6:]: v for k, v in state.items() if k.startswith("stats.")}
