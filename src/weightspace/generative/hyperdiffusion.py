"""HyperDiffusion (Erkoç et al. 2023, https://arxiv.org/abs/2303.17015), CPU-sized in 2-D.

The original fits one occupancy MLP per 3-D shape of a category, every fit starting from the MLP
fitted to the first shape (so all weights live near one point and neurons stay aligned), then trains
a transformer diffusion model on the flattened weights, one token per layer, and samples with DDIM.
Shapes are rebuilt from generated weights by marching cubes and compared as point clouds.

Here the shapes are 2-D silhouettes (:mod:`weightspace.shapes`), the MLPs are small
:class:`~weightspace.nets.OccupancyMLP` s, marching squares replaces marching cubes, and the
denoiser is the shared :mod:`~weightspace.generative.diffusion` core with a layer-token transformer.
"""

from __future__ import annotations

import functools
import itertools
import json
import math
from collections.abc import Sequence
from pathlib import Path

import torch
from torch import Tensor, nn
from tqdm.auto import tqdm

from ..errors import ConfigError, LayoutError, ZooError
from ..nets import OccupancyMLP, build_architecture
from ..safe_input import check_float, check_int, check_list, check_str
from ..shapes import (
    Silhouettes,
    boundary_points,
    grid_points,
    iou,
    load_silhouettes,
    normalise_points,
    occupancy_samples,
    pairwise_chamfer,
)
from ..space import WeightSpace
from ..zoo import Zoo
from ..zoo.method_record import Fields, Record
from .base import Generator, seeded, seeded_global_rng
from .diffusion import Diffusion, NoiseSchedule, fit_denoiser, timestep_embedding

__all__ = [
    "PRESETS",
    "HyperDiffusion",
    "build_data",
    "fit_context",
    "fit_occupancy",
    "n_samples",
    "quality",
    "shape_quality",
    "shapes",
    "test_shapes",
    "training_shapes",
    "training_weights",
]

# ----------------------------------------------------------------------------- data

PRESETS = {
    # ~300 ankle-boot silhouettes, 100 held out; 2,753 weights per MLP.
    "default": {
        "shapes": {"source": "auto", "n_train": 300, "n_test": 100, "classes": None, "seed": 0},
        "architecture": {"widths": [32, 32, 32], "n_frequencies": 4},
        "fit": {"points": 4096, "near_fraction": 0.5, "first_steps": 1000, "steps": 500, "batch_size": 256,
                "lr": 3e-3, "chunk_size": 512},
        "decode": {"resolution": 64, "n_points": 128},
        "samples": {"factor": 1.1, "cap": 256},
    },
    "tiny": {
        "shapes": {"source": "auto", "n_train": 4, "n_test": 4, "classes": None, "seed": 0},
        "architecture": {"widths": [16, 16], "n_frequencies": 3},
        "fit": {"points": 1024, "near_fraction": 0.5, "first_steps": 300, "steps": 400, "batch_size": 256,
                "lr": 3e-3, "chunk_size": 512},
        "decode": {"resolution": 48, "n_points": 96},
        "samples": {"factor": 1.1, "cap": 256},
    },
}


def fit_occupancy(
    arch: OccupancyMLP, points: Tensor, labels: Tensor, init: Tensor, *, steps: int, batch_size: int = 256,
    lr: float = 3e-3, generator: torch.Generator | None = None, progress: bool = True, desc: str = "fitting",
) -> Tensor:
    """Fit N occupancy MLPs at once, MLP i to its own ``points[i]`` ``[M, 2]`` and ``labels[i]`` ``[M]``.

    :func:`~weightspace.zoo.train.train_population` trains every model on one data set; here each
    model has its own shape, so this is the same batched step (``loss_and_grad`` on per-model
    inputs ``[N, B, 2]``) with Adam on ``[N, P]`` and a cosine learning-rate decay. ``init`` is
    ``[P]`` (one start for all, as HyperDiffusion) or ``[N, P]``. Returns the fitted ``[N, P]``.
    """
    n, m = labels.shape
    if points.shape != (n, m, 2):
        raise ConfigError(f"points: expected shape {(n, m, 2)} to match labels {tuple(labels.shape)}, "
                          f"got {tuple(points.shape)}")
    if int(steps) < 1 or int(batch_size) < 1:
        raise ConfigError(f"steps, batch_size: expected positive integers, got {steps!r}, {batch_size!r}")
    w = init.to(points.device, arch.space.dtype).expand(n, -1).clone()
    mom, var = torch.zeros_like(w), torch.zeros_like(w)
    gen_dev = generator.device if generator is not None else torch.device("cpu")
    b1, b2 = 0.9, 0.999
    for t in tqdm(range(1, int(steps) + 1), desc=desc, disable=not progress, leave=False):
        idx = torch.randint(0, m, (n, int(batch_size)), generator=generator, device=gen_dev).to(points.device)
        xb = points.gather(1, idx[..., None].expand(-1, -1, 2))
        yb = labels.gather(1, idx)
        _, grad, _ = arch.loss_and_grad(w, xb, yb)
        rate = lr * 0.5 * (1 + math.cos(math.pi * (t - 1) / int(steps)))
        mom.lerp_(grad, 1 - b1)
        var.mul_(b2).addcmul_(grad, grad, value=1 - b2)
        w.addcdiv_(mom / (1 - b1**t), (var / (1 - b2**t)).sqrt_().add_(1e-8), value=-rate)
    return w


# What build_data records and the code below reads (checked when a zoo is opened as HyperDiffusion's):
# ``shapes`` become load_silhouettes' arguments, ``decode`` and ``samples`` size the decoding and the
# sample count, and every checkpoint carries its training shape's ``shape_index``.
ZOO_RECORD = Record(
    Fields({
        "preset": lambda v, k: check_str(v, k, PRESETS),
        "shapes": Fields({"source": check_str, "n_train": lambda v, k: check_int(v, k, 1),
                          "n_test": lambda v, k: check_int(v, k, 1), "seed": check_int},
                         {"classes": lambda v, k: None if v is None else check_list(v, k, check_int),
                          "root": check_str}, closed=True),
        "decode": Fields({"resolution": lambda v, k: check_int(v, k, 2, 1024),
                          "n_points": lambda v, k: check_int(v, k, 1, 100_000)}),
        "samples": Fields({"factor": lambda v, k: check_float(v, k, 0.0, open_lo=True),
                           "cap": lambda v, k: check_int(v, k, 1)}),
    }),
    extra=Fields({"shape_index": lambda v, k: check_int(v, k, 0)}),
)

def _check_preset(preset: str) -> dict:
    if preset not in PRESETS:
        raise ConfigError(f"preset: expected one of {sorted(PRESETS)}, got {preset!r}")
    return json.loads(json.dumps(PRESETS[preset]))


def build_data(out: str | Path, *, preset: str = "default", progress: bool = True, seed: int | None = None) -> Zoo:
    """One occupancy MLP per training silhouette, written to a zoo at ``out``; resumable.

    As the original: the first shape's MLP is fitted from a seeded random init, then every other
    shape's MLP is fitted starting from it. Model ``shape-00000`` is that first fit. Records carry
    ``run_id`` = the source image's id, ``train_loss``/``train_acc`` on the shape's occupancy
    samples, and ``iou`` (extra key) with the shape's own occupancy grid. ``seed`` (default: the
    preset's) picks the shapes, the train/test split and the first fit's init.
    """
    cfg = _check_preset(preset)
    if seed is not None:
        cfg["shapes"]["seed"] = int(seed)
    if (Path(out) / "zoo.json").is_file():  # fail before loading data, not after
        made = Zoo.open(out).info.get("config", {})
        if (made.get("method"), made.get("preset")) != ("hyperdiffusion", preset):
            raise ConfigError(f"out: {out} holds a zoo of method {made.get('method')!r}, preset "
                              f"{made.get('preset')!r}; use another directory to build hyperdiffusion preset {preset!r}")
    sil = load_silhouettes(**cfg["shapes"])
    cfg["shapes"] = {k: sil.info[k] for k in ("source", "n_train", "n_test", "classes", "seed")}
    if "root" in sil.info:
        cfg["shapes"]["root"] = sil.info["root"]
    arch = OccupancyMLP(widths=tuple(cfg["architecture"]["widths"]),
                        n_frequencies=cfg["architecture"]["n_frequencies"])
    cfg = {"method": "hyperdiffusion", "preset": preset, **cfg}
    zoo = Zoo.create(out, arch.space, architecture=arch.config, task={"name": "silhouettes", **sil.info},
                     config=cfg)
    if zoo.info["config"] != cfg:
        raise ConfigError(f"out: {out} holds a zoo built with another configuration (preset "
                          f"{zoo.info['config'].get('preset')!r}); use another directory to build preset {preset!r}")
    fit, seed = cfg["fit"], int(cfg["shapes"]["seed"])
    points, labels = occupancy_samples(sil.train.fields, fit["points"], near_fraction=fit["near_fraction"],
                                       resolution=cfg["decode"]["resolution"], generator=seeded(seed))
    ids = [f"shape-{k:05d}" for k in range(len(sil.train))]
    have = zoo.ids()
    hp = {k: fit[k] for k in ("points", "near_fraction", "batch_size", "lr")}

    def add(rows: Sequence[int], w: Tensor, steps: int, init: str) -> None:
        metrics = _fit_metrics(arch, w, points[rows], labels[rows], sil, rows, cfg["decode"]["resolution"])
        zoo.add_many([
            (ids[k], w[i], {"run_id": sil.train.ids[k], "seed": seed, "step": steps,
                            "hparams": {**hp, "steps": steps, "init": init}, **metrics[i], "shape_index": k})
            for i, k in enumerate(rows)
        ])

    if ids[0] in have:
        first = zoo.load(ids=[ids[0]])[0][0]
    else:
        first = fit_occupancy(arch, points[:1], labels[:1], arch.init([seed])[0], steps=fit["first_steps"],
                              batch_size=fit["batch_size"], lr=fit["lr"], generator=seeded(seed + 1),
                              progress=progress, desc="fitting the first shape")[0]
        add([0], first[None], fit["first_steps"], "random")
    todo = [k for k in range(1, len(ids)) if ids[k] not in have]
    for c in range(0, len(todo), fit["chunk_size"]):
        rows = todo[c : c + fit["chunk_size"]]
        # each chunk's batches come from a generator seeded by its first shape: resumes redo the same fit
        w = fit_occupancy(arch, points[rows], labels[rows], first, steps=fit["steps"], batch_size=fit["batch_size"],
                          lr=fit["lr"], generator=seeded(seed * 100003 + rows[0]), progress=progress,
                          desc=f"fitting shapes {rows[0]}..{rows[-1]}")
        add(rows, w, fit["steps"], "first-shape")
    return zoo


def _fit_metrics(arch, w, points, labels, sil: Silhouettes, rows, resolution) -> list[dict]:
    logits = arch.logits(w, points)
    loss = arch.loss(logits, labels)
    acc = ((logits[..., 0] > 0).to(labels.dtype) == labels).float().mean(1)
    occ = arch.logits(w, grid_points(resolution, w.device))[..., 0] > 0
    gt = sil.train.occupancy(resolution)[list(rows)]
    own = iou(occ, gt).diagonal()
    return [{"train_loss": float(loss[i]), "train_acc": float(acc[i]), "iou": float(own[i])} for i in range(len(rows))]


# ----------------------------------------------------------------------------- zoo helpers


def training_weights(zoo: Zoo) -> Tensor:
    """``Tensor[N, P]``: every training shape's MLP (the original trains on all of them), in shape order."""
    _check_zoo(zoo)
    w, df = zoo.load()
    order = df["extra"].map(lambda e: json.loads(e)["shape_index"]).argsort().to_numpy()
    return w[torch.tensor(order)]


def fit_context(zoo: Zoo) -> dict:
    """The layout, so the denoiser makes one token per layer (chunks of large layers)."""
    return {"space": zoo.space}


def n_samples(zoo: Zoo) -> int:
    """As the paper, 1.1 x the number of held-out test shapes, capped to stay CPU-sized."""
    cfg = _check_zoo(zoo)
    wanted = math.ceil(cfg["samples"]["factor"] * cfg["shapes"]["n_test"] - 1e-9)  # 1.1 * 100 is 110.00000000000001
    return min(wanted, int(cfg["samples"]["cap"]))


def _check_zoo(zoo: Zoo) -> dict:
    cfg = zoo.info.get("config", {})
    if cfg.get("method") != "hyperdiffusion":
        raise ZooError(f"zoo {zoo.root} was not built by hyperdiffusion.build_data (config.method = "
                       f"{cfg.get('method')!r}, expected 'hyperdiffusion')")
    return cfg


@functools.lru_cache(maxsize=4)
def _silhouettes_cached(shapes_json: str) -> Silhouettes:
    return load_silhouettes(**json.loads(shapes_json))


def _silhouettes(zoo: Zoo) -> Silhouettes:
    return _silhouettes_cached(json.dumps(_check_zoo(zoo)["shapes"], sort_keys=True))


def _grid_logits(zoo: Zoo, weights: Tensor, chunk: int = 256) -> Tensor:
    """Occupancy logits ``[n, R, R]`` of MLPs on the decode grid (chunked over models)."""
    cfg = _check_zoo(zoo)
    if weights.dim() != 2 or weights.shape[1] != zoo.space.num_params:
        raise LayoutError(f"weights: expected a Tensor[n, {zoo.space.num_params}] for layout "
                          f"'{zoo.space.name}', got shape {tuple(weights.shape)}")
    arch = build_architecture(zoo.info["architecture"])
    r = cfg["decode"]["resolution"]
    g = grid_points(r, weights.device)
    with torch.no_grad():
        out = [arch.logits(weights[i : i + chunk], g)[..., 0] for i in range(0, weights.shape[0], chunk)]
    return torch.cat(out).reshape(-1, r, r)


def quality(zoo: Zoo, weights: Tensor) -> Tensor:
    """``Tensor[n]``, higher is better: minus each MLP's Chamfer distance to its nearest held-out test
    shape (both clouds normalised, as the paper's evaluation). An MLP with no boundary scores
    ``-inf`` (no shape matches it)."""
    return shape_quality(zoo, shapes(zoo, weights))


def shape_quality(zoo: Zoo, points: Sequence[Tensor]) -> Tensor:
    """:func:`quality` of point sets (normalised, as :func:`shapes` returns them)."""
    return -pairwise_chamfer(list(points), test_shapes(zoo)).min(1).values


def _as_list(points: Tensor) -> list[Tensor]:
    """NaN-padded ``[n, K, 2]`` → list of ``[k, 2]`` (an empty boundary becomes ``[0, 2]``)."""
    return [p[~p.isnan().any(-1)] for p in points]


def shapes(zoo: Zoo, weights: Tensor) -> list[Tensor]:
    """Each MLP's shape as a boundary point set ``[K, 2]`` (marching squares at logit 0, K points evenly
    spaced by arc length), normalised to zero mean and unit std as the paper's evaluation; an MLP
    whose field has no boundary gives ``[0, 2]``."""
    dec = _check_zoo(zoo)["decode"]
    return normalise_points(_as_list(boundary_points(_grid_logits(zoo, weights), dec["n_points"], 0.0)))


def training_shapes(zoo: Zoo) -> list[Tensor]:
    """The training silhouettes (ground truth, not the fitted MLPs) as normalised point sets, in
    shape order: the paper's reference for HyperDiffusion's samples."""
    dec = _check_zoo(zoo)["decode"]
    return normalise_points(_as_list(_silhouettes(zoo).train.boundary(dec["n_points"], dec["resolution"])))


def test_shapes(zoo: Zoo) -> list[Tensor]:
    """The held-out test silhouettes as normalised point sets (what generated shapes are scored against)."""
    dec = _check_zoo(zoo)["decode"]
    return normalise_points(_as_list(_silhouettes(zoo).test.boundary(dec["n_points"], dec["resolution"])))


# ----------------------------------------------------------------------------- generator


def _segments(num_params: int, space: WeightSpace | None, chunk_size: int) -> Tensor:
    """Token layout ``LongTensor[T, 2]`` of (start, length): one token per tensor of ``space``, large
    tensors cut into near-equal chunks of at most ``chunk_size``; without a layout, chunks of the vector."""
    spans = [(space.slice(e.name).start, e.numel) for e in space.entries] if space is not None else [(0, num_params)]
    out = []
    for start, n in spans:
        k = math.ceil(n / chunk_size)
        bounds = [start + round(i * n / k) for i in range(k + 1)]
        out += [(a, b - a) for a, b in itertools.pairwise(bounds)]
    return torch.tensor(out, dtype=torch.long)


class _LayerTransformer(nn.Module):
    """Denoiser over weight vectors: per-token linear embedding of each layer chunk, a timestep token,
    learned positions, a pre-norm transformer encoder, per-token linear read-out (as G.pt's, which
    HyperDiffusion uses)."""

    def __init__(self, segments: Tensor, d_model: int, n_layers: int, n_heads: int, dropout: float):
        super().__init__()
        starts, lengths = segments[:, 0], segments[:, 1]
        n_tok, width = len(segments), int(lengths.max())
        self.num_params = int(lengths.sum())
        pos = torch.arange(width)
        inside = pos[None] < lengths[:, None]
        # where each (token, slot) reads from; padding reads the appended zero at index num_params
        self.register_buffer("gather_index", torch.where(inside, starts[:, None] + pos, self.num_params), persistent=False)
        self.register_buffer("scatter_index", (torch.arange(n_tok)[:, None] * width + pos)[inside], persistent=False)
        self.d_model = d_model
        self.enc_w = nn.Parameter(torch.randn(n_tok, width, d_model) / lengths.float().sqrt()[:, None, None])
        self.enc_b = nn.Parameter(torch.zeros(n_tok, d_model))
        self.pos = nn.Parameter(torch.randn(n_tok + 1, d_model) * 0.02)
        self.time = nn.Sequential(nn.Linear(d_model, d_model), nn.SiLU(), nn.Linear(d_model, d_model))
        layer = nn.TransformerEncoderLayer(d_model, n_heads, 4 * d_model, dropout, activation="gelu",
                                           batch_first=True, norm_first=True)
        self.blocks = nn.TransformerEncoder(layer, n_layers, enable_nested_tensor=False)
        self.norm = nn.LayerNorm(d_model)
        self.dec_w = nn.Parameter(torch.randn(n_tok, d_model, width) / math.sqrt(d_model))
        self.dec_b = nn.Parameter(torch.zeros(n_tok, width))

    def forward(self, x: Tensor, t: Tensor, cond: Tensor | None = None) -> Tensor:
        padded = torch.cat([x, x.new_zeros(x.shape[0], 1)], 1)[:, self.gather_index]  # [B, T, C]
        h = torch.einsum("btc,tcd->btd", padded, self.enc_w) + self.enc_b
        temb = self.time(timestep_embedding(t, self.d_model))[:, None]
        h = self.norm(self.blocks(torch.cat([temb, h], 1) + self.pos))[:, 1:]
        out = torch.einsum("btd,tdc->btc", h, self.dec_w) + self.dec_b
        return out.flatten(1)[:, self.scatter_index]


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
        self.model: _LayerTransformer | None = None
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
        self.segments = _segments(weights.shape[1], space, self.chunk_size)
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
            model = _LayerTransformer(self.segments, self.d_model, self.n_layers, self.n_heads, self.dropout)
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
            model = _LayerTransformer(self.segments, self.d_model, self.n_layers, self.n_heads, self.dropout)
        model = model.to(self.mean.device)
        model.load_state_dict({k[len("denoiser."):]: v for k, v in state.items() if k.startswith("denoiser.")})
        self.model = model.eval()
