"""G.pt's generator: loss-conditioned diffusion over checkpoints, trained on pairs of checkpoints of
one run, sampled by one-step prompting from fresh random inits."""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import Tensor

from ...errors import ConfigError, LayoutError
from ...generator import Generator, seeded
from ...nets import build_architecture
from ...space import WeightSpace
from ...symmetry import permutation_pool, random_permutation
from ..diffusion import Diffusion, NoiseSchedule, fit_denoiser
from .network import GptDenoiser, chunk_splits
from .setting import ARCHITECTURE

SAMPLERS = ("ddpm", "ddim")


def checkpoint_pairs(run_ids: Sequence[str], steps: Tensor) -> Tensor:
    """``LongTensor[M, 2]`` of (start, target) row indices: same run, target step later than start."""
    if len(run_ids) != len(steps):
        raise ConfigError(f"run_ids, steps: expected equal lengths, got {len(run_ids)} and {len(steps)}")
    by_run: dict[str, list[int]] = {}
    for i, r in enumerate(run_ids):
        by_run.setdefault(r, []).append(i)
    steps = steps.tolist()
    pairs = [(i, j) for rows in by_run.values() for i in rows for j in rows if steps[j] > steps[i]]
    if not pairs:
        raise ConfigError("checkpoints: no run has two checkpoints at different steps; G.pt trains on "
                          "pairs from one run (build the zoo in trajectory mode, e.g. TrainConfig(every_steps=k))")
    return torch.tensor(pairs, dtype=torch.long)


def permute_pairs(space: WeightSpace, start: Tensor, target: Tensor,
                  generator: torch.Generator | None = None) -> tuple[Tensor, Tensor]:
    """One random neuron permutation per row, applied to both members of each pair (new tensors)."""
    if start.shape != target.shape or start.dim() != 2:
        raise LayoutError(f"start, target: expected two [N, P] tensors of one shape, got "
                          f"{tuple(start.shape)} and {tuple(target.shape)}")
    perms = random_permutation(space, n=start.shape[0], generator=generator)
    idx = space.coordinate_permutation(perms).to(start.device)
    return torch.gather(start, 1, idx), torch.gather(target, 1, idx)


class Gpt(Generator):
    """Loss-conditioned diffusion over checkpoints; samples by one-step prompting from fresh inits.

    ``fit(weights, checkpoints=, run_ids=, steps=, losses=)`` takes what the setting's ``fit_context``
    returns; ``weights`` (the final checkpoints) only fixes the layout, G.pt learns from the pairs.

    ``fresh_init_prob``: the probability that a pair starting at a run's init gets a fresh random
    init as its start instead (same loss, same target). With a few dozen runs the network otherwise
    learns the shortcut "this exact init → that run's checkpoints" and has nothing to say about an
    unseen init, which is all one-step prompting gives it; G.pt's 10k runs made that shortcut
    useless. ``fresh_init_prob=0`` is the original training.

    ``permutations``: neuron permutations applied to both members of a pair. The original drew a
    fresh one per pair (``-1``): that multiplies every target by 10! orderings, more than a denoiser
    this small learns. Here the default draws from a pool of 2 (the identity and one random
    permutation, fixed per fit); pairs with a swapped init keep their target unpermuted.

    Also differs from the original: no global residual (θ' predicted from scratch; with
    ``θ' = θ_start + decoder(...)`` the output stays tied to a random init coordinate by coordinate);
    ``global_residual=True`` restores it. docs/generators.md has the measurements behind each choice.
    """

    name = "gpt"

    def __init__(
        self,
        architecture: dict | None = None,
        *,
        chunk_size: int = 64,
        d_model: int = 64,
        n_layers: int = 2,
        n_heads: int = 4,
        num_frequencies: int = 32,
        max_freq_log2: float = 6.0,
        global_residual: bool = False,
        permutations: int = 2,
        fresh_init_prob: float = 0.5,
        train_steps: int = 9000,
        batch_size: int = 32,
        lr: float = 3e-3,
        weight_decay: float = 0.0,
        ema_decay: float = 0.999,
        diffusion_steps: int = 1000,
        beta_start: float = 1e-4,
        beta_end: float = 2e-2,
        sampler: str = "ddim",
        ddim_steps: int = 50,
        target_loss: float = 0.0,
        start_loss: float | None = None,
        init_seed_offset: int = 1_000_000,
        seed: int = 0,
    ):
        self.arch = build_architecture(ARCHITECTURE if architecture is None else architecture)
        # JSON-shaped (lists, not tuples), so config() survives save/load unchanged.
        self.architecture = {k: list(v) if isinstance(v, tuple) else v for k, v in self.arch.config.items()}
        # The layout comes from an nn.Module, whose construction draws from the global RNG.
        with torch.random.fork_rng(devices=[]):
            self.space = self.arch.space
        for key, value in (("chunk_size", chunk_size), ("d_model", d_model), ("n_layers", n_layers),
                           ("n_heads", n_heads), ("num_frequencies", num_frequencies),
                           ("train_steps", train_steps), ("batch_size", batch_size)):
            if int(value) < 1:
                raise ConfigError(f"{key}: expected a positive integer, got {value!r}")
        if d_model % n_heads:
            raise ConfigError(f"d_model: expected a multiple of n_heads={n_heads}, got {d_model}")
        if sampler not in SAMPLERS:
            raise ConfigError(f"sampler: expected one of {SAMPLERS}, got {sampler!r}")
        if int(permutations) != permutations or permutations < -1:
            raise ConfigError(f"permutations: expected -1 (a fresh one per pair), 0 (none) or a pool size >= 1, "
                              f"got {permutations!r}")
        if not 0.0 <= fresh_init_prob <= 1.0:
            raise ConfigError(f"fresh_init_prob: expected a probability in [0, 1], got {fresh_init_prob!r}")
        self.chunk_size, self.d_model, self.n_layers, self.n_heads = chunk_size, d_model, n_layers, n_heads
        self.num_frequencies, self.max_freq_log2 = num_frequencies, max_freq_log2
        self.global_residual, self.permutations = global_residual, int(permutations)
        self.fresh_init_prob = fresh_init_prob
        self.train_steps, self.batch_size, self.lr = train_steps, batch_size, lr
        self.weight_decay, self.ema_decay = weight_decay, ema_decay
        self.diffusion_steps, self.beta_start, self.beta_end = diffusion_steps, beta_start, beta_end
        self.sampler, self.ddim_steps = sampler, ddim_steps
        self.target_loss, self.start_loss = target_loss, start_loss
        self.init_seed_offset, self.seed = init_seed_offset, seed
        self.diffusion = Diffusion(NoiseSchedule(diffusion_steps, beta_start, beta_end), prediction="x0")
        self.net: GptDenoiser | None = None
        self.stats: dict[str, Tensor] = {}

    def config(self) -> dict:
        keys = ("architecture", "chunk_size", "d_model", "n_layers", "n_heads", "num_frequencies",
                "max_freq_log2", "global_residual", "permutations", "fresh_init_prob", "train_steps",
                "batch_size", "lr", "weight_decay", "ema_decay", "diffusion_steps", "beta_start", "beta_end",
                "sampler", "ddim_steps", "target_loss", "start_loss", "init_seed_offset", "seed")
        return {k: getattr(self, k) for k in keys}

    # -- pieces

    def _new_net(self) -> GptDenoiser:
        # Seeded without touching the caller's global RNG: nn layers draw their init from it.
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(self.seed)
            return GptDenoiser(chunk_splits(self.space, self.chunk_size), diffusion_steps=self.diffusion_steps,
                               d_model=self.d_model, n_layers=self.n_layers, n_heads=self.n_heads,
                               num_frequencies=self.num_frequencies, max_freq_log2=self.max_freq_log2,
                               global_residual=self.global_residual)

    def _scale(self) -> tuple[Tensor, Tensor]:
        """Per-coordinate (mean, std), expanded from the per-tensor statistics."""
        counts = torch.tensor([e.numel for e in self.space.entries], device=self.stats["mean"].device)
        return (torch.repeat_interleave(self.stats["mean"], counts),
                torch.repeat_interleave(self.stats["std"], counts))

    def _normalise(self, w: Tensor) -> Tensor:
        mean, std = self._scale()
        return (w - mean) / std

    def _loss_in(self, loss: Tensor) -> Tensor:
        return (loss - self.stats["loss_mean"]) / self.stats["loss_std"]

    def _init(self, seeds: Sequence[int]) -> Tensor:
        # Architecture.init builds an nn.Module (for its init rules), which draws from the global RNG.
        with torch.random.fork_rng(devices=[]):
            return self.arch.init(seeds)

    def initial_weights(self, n: int, seed: int = 0) -> Tensor:
        """``n`` fresh inits of the architecture, with seeds disjoint from the training runs'."""
        return self._init([self.init_seed_offset + seed * n + i for i in range(n)])

    # -- fit / sample

    def fit(self, weights: Tensor, *, progress: bool = True, checkpoints: Tensor | None = None,
            run_ids: Sequence[str] | None = None, steps: Tensor | None = None, losses: Tensor | None = None,
            **context) -> Gpt:
        space = self.space
        if any(v is None for v in (checkpoints, run_ids, steps, losses)):
            raise ConfigError("gpt.fit: needs checkpoints=, run_ids=, steps= and losses= (all checkpoints of "
                              "every run, as the G.pt setting's fit_context(zoo) returns)")
        for name, w in (("weights", weights), ("checkpoints", checkpoints)):
            if w.dim() != 2 or w.shape[1] != space.num_params:
                raise LayoutError(f"{name}: expected [N, {space.num_params}] for layout '{space.name}', "
                                  f"got {tuple(w.shape)}")
        if not len(run_ids) == len(steps) == len(losses) == checkpoints.shape[0]:
            raise ConfigError(f"checkpoints, run_ids, steps, losses: expected one entry per checkpoint, got "
                              f"{checkpoints.shape[0]}, {len(run_ids)}, {len(steps)}, {len(losses)}")
        device = checkpoints.device
        steps = torch.as_tensor(steps).to(device)
        losses = torch.as_tensor(losses, dtype=torch.float32).to(device)
        pairs = checkpoint_pairs(run_ids, steps.cpu()).to(device)
        from_init = steps[pairs[:, 0]] == steps.min()
        w = checkpoints.float()
        self.stats = {
            "mean": torch.stack([w[:, space.slice(e.name)].mean() for e in space.entries]),
            "std": torch.stack([w[:, space.slice(e.name)].std().clamp_min(1e-8) for e in space.entries]),
            "loss_mean": losses.mean(), "loss_std": losses.std().clamp_min(1e-8),
            "init_loss": losses[steps == steps.min()].mean(),
        }
        wn, ln = self._normalise(w), self._loss_in(losses)
        gen = seeded(self.seed)
        fresh = None
        if self.fresh_init_prob > 0:
            # A pool of inits whose seeds come from the fit's generator, far from run and sample seeds.
            pool_seeds = torch.randint(2**40, 2**41, (min(4096, self.train_steps * self.batch_size),), generator=gen)
            fresh = self._normalise(self._init(pool_seeds.tolist()).to(device))

        # nn.Dropout(p=0) still draws from the global RNG in training mode; keep the caller's stream.
        with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
            net = self._train(wn, ln, pairs, from_init, fresh, gen, progress)
        self.net = net
        return self

    def _train(self, wn: Tensor, ln: Tensor, pairs: Tensor, from_init: Tensor, fresh: Tensor | None,
               gen: torch.Generator, progress: bool) -> GptDenoiser:
        """The diffusion loss on random pairs (start, later target), permuted and with fresh inits
        swapped in as the batch transform of :func:`fit_denoiser`; returns the EMA copy."""
        device, space = wn.device, self.space
        net = self._new_net().to(device)
        pool = permutation_pool(space, self.permutations, gen).to(device)  # -1 (per pair): identity only

        def batch(pick: Tensor) -> tuple[Tensor, Tensor]:
            i, j = pairs[pick, 0], pairs[pick, 1]
            start, target = wn[i], wn[j]
            clean_target = target
            if self.permutations == -1:
                start, target = permute_pairs(space, start, target, gen)
            elif len(pool) > 1:
                k = pool[torch.randint(len(pool), (self.batch_size,), generator=gen).to(device)]
                start, target = torch.gather(start, 1, k), torch.gather(target, 1, k)
            if fresh is not None:
                # A swapped pair keeps its target unpermuted: an unrelated init carries no ordering
                # to follow, and a target ordered at random has nothing to be learned from.
                swap = from_init[pick] & (torch.rand(self.batch_size, generator=gen).to(device) < self.fresh_init_prob)
                other = fresh[torch.randint(len(fresh), (self.batch_size,), generator=gen).to(device)]
                start = torch.where(swap[:, None], other, start)
                target = torch.where(swap[:, None], clean_target, target)
            return target, torch.cat([start, ln[i, None], ln[j, None]], dim=1)

        # Cosine decay to 0: the last steps at a small rate sharpen what the denoiser memorised.
        return fit_denoiser(net, self.diffusion, pairs, steps=self.train_steps, batch_size=self.batch_size,
                            lr=self.lr, weight_decay=self.weight_decay, ema_decay=self.ema_decay, generator=gen,
                            progress=progress, desc="G.pt", batch=batch,
                            lr_lambda=lambda i: 0.5 * (1 + math.cos(math.pi * i / self.train_steps)))

    def prompt(self, starts: Tensor, start_loss: Tensor | float | None = None,
               target_loss: Tensor | float | None = None, seed: int = 0) -> Tensor:
        """θ' for each start ``Tensor[n, P]``, prompted with its loss and a target loss, by one
        reverse diffusion. ``start_loss`` defaults to the config's, else the training inits' mean."""
        if self.net is None:
            raise ConfigError("gpt: call fit() or load_state() before sampling")
        if starts.dim() != 2 or starts.shape[1] != self.space.num_params:
            raise LayoutError(f"starts: expected [n, {self.space.num_params}] for layout '{self.space.name}', "
                              f"got {tuple(starts.shape)}")
        device = next(self.net.parameters()).device
        n = starts.shape[0]
        start_loss = self.start_loss if start_loss is None else start_loss
        start_loss = self.stats["init_loss"] if start_loss is None else start_loss
        target_loss = self.target_loss if target_loss is None else target_loss
        ls = torch.as_tensor(start_loss, dtype=torch.float32, device=device).expand(n)
        lt = torch.as_tensor(target_loss, dtype=torch.float32, device=device).expand(n)
        cond = torch.cat([self._normalise(starts.to(device).float()), self._loss_in(ls)[:, None],
                          self._loss_in(lt)[:, None]], dim=1)
        shape = (n, self.space.num_params)
        gen = seeded(seed)
        if self.sampler == "ddpm":
            x = self.diffusion.sample_ddpm(self.net, shape, cond=cond, generator=gen)
        else:
            x = self.diffusion.sample_ddim(self.net, shape, steps=self.ddim_steps, cond=cond, generator=gen)
        mean, std = self._scale()
        return (x * std + mean).to(self.space.dtype)

    def sample(self, n: int = 128, seed: int = 0) -> Tensor:
        """One-step prompting: ``n`` fresh random inits, their loss, target loss ``target_loss``."""
        return self.prompt(self.initial_weights(n, seed), seed=seed)

    # -- persistence

    def state(self) -> dict[str, Tensor]:
        if self.net is None:
            raise ConfigError("gpt: nothing to save before fit()")
        return {**{f"net.{k}": v for k, v in self.net.state_dict().items()},
                **{f"stats.{k}": v.reshape(-1) for k, v in self.stats.items()}}

    def load_state(self, state: dict[str, Tensor]) -> None:
        net = self._new_net()
        net.load_state_dict({k[4:]: v for k, v in state.items() if k.startswith("net.")})
        self.net = net.eval()
        for p in self.net.parameters():
            p.requires_grad_(False)
        stats = {k[6:]: v for k, v in state.items() if k.startswith("stats.")}
        self.stats = {k: v if k in ("mean", "std") else v.reshape(()) for k, v in stats.items()}
