"""A nonlinear generator in the aligned space: rectified flow on the top principal directions.

``AlignedGaussian`` (``aligned``) loses accuracy against fresh runs; the hypothesis tested here is
that a Gaussian spreads its draws along straight directions while the runs' low-loss region is
curved. This generator keeps its data setting and its alignment (same runs, same
barycenter) and replaces the Gaussian over the top ``dims`` principal directions with a conditional
flow-matching model (rectified flow: a small MLP velocity field trained on straight paths from
N(0, I) to the whitened runs, integrated with a few Euler steps). The directions left over keep an
isotropic Gaussian residual, as in probabilistic PCA. docs/generators.md has what it measured.

The training length is chosen on novelty, not loss: a fifth of the runs is held back from the flow
(the principal directions come from all of them); at every check the flow's samples must lie at
least as far from the runs it learns from as the held-back runs do (``novelty >= 1``, the fresh-run
ceiling), and among the checks that pass, the one whose samples are closest to the held-back runs
(energy distance) sets the number of steps. The flow is then trained again on all runs for that
many steps.
"""

from __future__ import annotations

import itertools

import torch
from torch import Tensor, nn
from tqdm.auto import tqdm

from ...errors import ConfigError, LayoutError
from ...generator import Generator, seeded, seeded_global_rng
from ...nets import build_architecture
from ...symmetry import permute, random_permutation
from ..diffusion import timestep_embedding
from .generator import barycenter_alignment

RESIDUALS = ("isotropic", "none")
TIME_FEATURES = 32


class _Velocity(nn.Module):
    """v(x, t): an MLP over the point and a sinusoidal embedding of the time."""

    def __init__(self, dims: int, hidden: int, layers: int):
        super().__init__()
        sizes = [dims + TIME_FEATURES] + [hidden] * layers
        blocks = [m for a, b in itertools.pairwise(sizes) for m in (nn.Linear(a, b), nn.SiLU())]
        self.net = nn.Sequential(*blocks, nn.Linear(sizes[-1], dims))

    def forward(self, x: Tensor, t: Tensor) -> Tensor:
        return self.net(torch.cat([x, timestep_embedding(t * 1000, TIME_FEATURES)], 1))


def _integrate(net: _Velocity, z: Tensor, steps: int) -> Tensor:
    """Euler steps of the flow from t = 0 (noise) to t = 1 (data)."""
    with torch.no_grad():
        for i in range(steps):
            z = z + net(z, torch.full((len(z),), i / steps)) / steps
    return z


def _energy_distance(a: Tensor, b: Tensor) -> float:
    return float(2 * torch.cdist(a, b).mean() - torch.cdist(a, a).mean() - torch.cdist(b, b).mean())


def _novelty(samples: Tensor, fit: Tensor, held: Tensor) -> float:
    """Median distance from the samples to their nearest fit run over the held-back runs' own."""
    return float(torch.cdist(samples, fit).min(1).values.median() / torch.cdist(held, fit).min(1).values.median())


class AlignedFlow(Generator):
    """Rectified flow over the top ``dims`` principal directions of the barycenter-aligned runs.

    ``hidden``/``layers``: the velocity MLP; ``max_steps``: the longest training considered, checked
    every ``check_every`` steps on a ``validation`` fraction of the runs (see the module notes);
    ``early_stopping=False`` trains ``max_steps`` on all runs without checks (the ablation of the
    training length); ``sample_steps``: Euler steps per draw; ``residual``: ``"isotropic"`` draws the variance outside
    the kept directions evenly over them, ``"none"`` drops it."""

    name = "aligned-flow"

    def __init__(self, architecture: dict | None = None, dims: int = 64, residual: str = "isotropic",
                 hidden: int = 256, layers: int = 2, max_steps: int = 3000, check_every: int = 250,
                 batch_size: int = 128, lr: float = 1e-3, sample_steps: int = 10, validation: float = 0.2,
                 early_stopping: bool = True, iterations: int = 10, permute_output: bool = True, seed: int = 0):
        if architecture is None:
            raise ConfigError("architecture: expected the zoo's architecture config (e.g. generator_config(zoo))")
        if residual not in RESIDUALS:
            raise ConfigError(f"residual: expected one of {list(RESIDUALS)}, got {residual!r}")
        for key, value in {"dims": dims, "hidden": hidden, "layers": layers, "max_steps": max_steps,
                           "check_every": check_every, "batch_size": batch_size, "sample_steps": sample_steps}.items():
            if int(value) < 1:
                raise ConfigError(f"{key}: expected a positive integer, got {value!r}")
        if not 0 < float(validation) < 1:
            raise ConfigError(f"validation: expected a fraction between 0 and 1, got {validation!r}")
        self.architecture = dict(architecture)
        self.space = build_architecture(self.architecture).space
        self.dims, self.residual, self.hidden, self.layers = int(dims), residual, int(hidden), int(layers)
        self.max_steps, self.check_every, self.batch_size = int(max_steps), int(check_every), int(batch_size)
        self.lr, self.sample_steps, self.validation = float(lr), int(sample_steps), float(validation)
        self.early_stopping = bool(early_stopping)
        self.iterations, self.permute_output, self.seed = int(iterations), bool(permute_output), int(seed)

    # ------------------------------------------------------------------ fit

    def _train(self, data: Tensor, steps: int, g: torch.Generator, on_check=None, progress: bool = False,
               desc: str = "flow") -> _Velocity:
        """Flow matching on ``data`` for ``steps`` Adam steps; ``on_check(step, net)`` every ``check_every``."""
        with seeded_global_rng(int(torch.randint(0, 2**31, (1,), generator=g))):
            net = _Velocity(data.shape[1], self.hidden, self.layers)
        opt = torch.optim.Adam(net.parameters(), lr=self.lr)
        for step in tqdm(range(1, steps + 1), desc=desc, disable=not progress, leave=False):
            x1 = data[torch.randint(0, len(data), (self.batch_size,), generator=g)]
            x0 = torch.randn(x1.shape, generator=g)
            t = torch.rand(len(x1), generator=g)
            xt = x0 + t[:, None] * (x1 - x0)
            loss = (net(xt, t) - (x1 - x0)).square().mean()
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            if on_check is not None and step % self.check_every == 0:
                on_check(step, net)
        return net

    def _select_steps(self, z: Tensor, g: torch.Generator, progress: bool) -> int:
        """The training length: novelty >= 1 on the held-back runs, then the closest to them."""
        order = torch.randperm(len(z), generator=g)
        n_val = max(2, round(self.validation * len(z)))
        held, fit = z[order[:n_val]], z[order[n_val:]]
        noise = torch.randn(max(256, n_val), z.shape[1], generator=g)
        scale = self.scales  # distances on the runs' own scale, not the whitened one
        history = []

        def check(step, net):
            s = _integrate(net, noise, self.sample_steps) * scale
            history.append((step, _novelty(s, fit * scale, held * scale), _energy_distance(s, held * scale)))

        self._train(fit, self.max_steps, g, check, progress, "flow (choosing its length)")
        self.history = torch.tensor(history, dtype=torch.float64)
        passing = [h for h in history if h[1] >= 1.0]
        return int(min(passing, key=lambda h: h[2])[0]) if passing else int(max(history, key=lambda h: h[1])[0])

    def fit(self, weights: Tensor, *, progress: bool = True, **context) -> AlignedFlow:
        if weights.dim() != 2 or weights.shape[1] != self.space.num_params or len(weights) < 10:
            raise LayoutError(f"weights: expected [N >= 10, {self.space.num_params}] for layout "
                              f"'{self.space.name}', got {tuple(weights.shape)}")
        w = weights.detach().to(torch.float64)
        if self.space.groups:
            w, _ = barycenter_alignment(self.space, w, iterations=self.iterations)
        mean = w.mean(0)
        _, s, vt = torch.linalg.svd(w - mean, full_matrices=False)
        variances = s**2 / len(w)
        k = min(self.dims, len(w) - 1)
        self.mean, self.components = mean.float(), vt[:k].float()
        self.scales = variances[:k].sqrt().float()
        left = float(variances[k:].sum()) / max(w.shape[1] - k, 1) if self.residual == "isotropic" else 0.0
        self.residual_std = torch.tensor(left).sqrt().float()
        z = (((w - mean) @ vt[:k].T) / variances[:k].sqrt()).float()  # whitened coordinates
        g = seeded(self.seed)
        if self.early_stopping:
            self.steps = self._select_steps(z, g, progress)
        else:
            self.steps, self.history = self.max_steps, torch.zeros(0, 3, dtype=torch.float64)
        self.net = self._train(z, self.steps, g, progress=progress)
        return self

    # ------------------------------------------------------------------ sample

    def sample(self, n: int, seed: int = 0) -> Tensor:
        if not hasattr(self, "net"):
            raise ConfigError("aligned-flow: not fitted; call fit(weights) or load_state(state) first")
        g = seeded(seed)
        z = _integrate(self.net, torch.randn(int(n), len(self.scales), generator=g), self.sample_steps)
        eps = torch.randn(int(n), len(self.mean), generator=g)
        eps = eps - (eps @ self.components.T) @ self.components  # the residual lives outside the kept directions
        w = self.mean + (z * self.scales) @ self.components + self.residual_std * eps
        if self.permute_output and self.space.groups:
            w = permute(self.space, w, random_permutation(self.space, n=int(n), generator=g))
        return w

    def config(self) -> dict:
        return {"architecture": self.architecture, "dims": self.dims, "residual": self.residual,
                "hidden": self.hidden, "layers": self.layers, "max_steps": self.max_steps,
                "check_every": self.check_every, "batch_size": self.batch_size, "lr": self.lr,
                "sample_steps": self.sample_steps, "validation": self.validation,
                "early_stopping": self.early_stopping, "iterations": self.iterations,
                "permute_output": self.permute_output, "seed": self.seed}

    def state(self) -> dict[str, Tensor]:
        """The basis, the residual, the velocity net, the chosen training length and its checks
        (``history``: step, novelty, energy distance per row)."""
        return {"mean": self.mean, "components": self.components, "scales": self.scales,
                "residual_std": self.residual_std, "steps": torch.tensor(self.steps), "history": self.history,
                **{f"net.{k}": v for k, v in self.net.state_dict().items()}}

    def load_state(self, state: dict[str, Tensor]) -> None:
        self.mean, self.components = state["mean"], state["components"]
        self.scales, self.residual_std = state["scales"], state["residual_std"]
        self.steps, self.history = int(state["steps"]), state["history"]
        net = _Velocity(len(self.scales), self.hidden, self.layers)
        net.load_state_dict({k.split(".", 1)[1]: v for k, v in state.items() if k.startswith("net.")})
        self.net = net.eval()
