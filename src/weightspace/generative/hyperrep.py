"""Hyper-Representations (Schürholt et al. 2022, "Hyper-Representations as Generative Models").

A transformer autoencoder over a zoo of small CNNs. Each output neuron is one token: its incoming
weights (for a conv layer, the flattened kernel slice of that output channel) followed by its bias,
zero-padded to a common width (:class:`Tokenizer`). Tokens are embedded by a linear map per layer
plus a learned position embedding, passed through a transformer encoder, flattened and mapped
linearly to one latent vector per model (the original's "linear" compression); a mirrored decoder
maps it back. Loss = ``(1 - gamma)`` × reconstruction MSE of weights standardised per layer by the
layer's mean and std over the zoo + ``gamma`` × NT-Xent between projections of the latents of two
augmented views of each model. Views: a neuron permutation from a fixed pool of ``permutations``
random ones (the identity first; exact symmetries, the reconstruction target is permuted too),
then Gaussian noise and random erasing of coordinates on the input only.

Sampling: encode the training models, keep the top ``top_fraction`` by accuracy, fit a 1-D Gaussian
KDE (``bandwidth``) per latent dimension, sample and decode. The original code draws every
dimension's KDE sample with the same random state, so a sample takes the same training latent in
every dimension (one training latent plus jitter); the default ``shared_seed=True`` reproduces
that published sampler. ``shared_seed=False`` draws each dimension independently, which mixes
coordinates of different (unaligned) models: on the digits zoo of independently trained models its
samples scored 0.10 median test accuracy (chance) against 0.72 for the published sampler; on the
default Fashion-MNIST zoo (fit seed 0, 100 samples) 0.100 against 0.671 (training checkpoints 0.692).

The original generated the 2,464 weights of a 3-conv + 2-FC LeakyReLU CNN on SVHN from 2,896
checkpoints and was audited against the autoencoder's reconstructions of its training checkpoints
(:func:`reference_weights`). Here: a CNN with conv channels 1→8→6→4, FC 4→20→10, LeakyReLU, no
BatchNorm (1,048 weights) on Fashion-MNIST averaged to 7×7 pixels (at 28×28 one model takes 2 s to
score on 10,000 test images on one core, at 7×7 0.11 s), trained on a 5,000-image subset and scored
on a stratified 2,000-image test subset, so a model makes hundreds of test errors; 100
independently trained runs × 5 checkpoints (epochs 2, 4, 6, 8, 10; Adam with varied learning rate,
init scale and dropout, so accuracies spread), plus 20 held-out runs trained alike and never shown
to the generator. The ``tiny`` preset uses 8×8 scikit-learn digits. The autoencoder is smaller
than the original (d_model 64, one transformer layer each side, latent 256) so that data, fit and
sampling take a few minutes on one CPU core.
"""

from __future__ import annotations

import math
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from tqdm.auto import tqdm

from ..data import load_dataset
from ..errors import ConfigError, LayoutError
from ..nets import build_architecture
from ..safe_input import check_int, check_str
from ..space import WeightSpace
from ..symmetry import permutation_pool
from ..zoo.build import accuracy_on_test, predictions_on_test
from ..zoo.method_record import Fields, Record
from ..zoo.store import Zoo
from ..zoo.train import HParams, Run, TrainConfig, train_population
from .base import Generator, seeded

DATASET = {"name": "fashion-mnist", "image": True, "image_size": 7, "max_train": 6000, "max_test": 2000}
ARCHITECTURE = {"kind": "cnn", "in_channels": 1, "image_size": 7, "channels": [8, 6, 4], "fc_widths": [20],
                "out_features": 10, "kernel_size": 3, "activation": "leaky_relu", "batchnorm": False}
PRESETS = {
    "default": {"runs": 100, "heldout_runs": 20, "epochs": 10, "checkpoint_epochs": [2, 4, 6, 8],
                "dataset": DATASET},
    "tiny": {"runs": 8, "heldout_runs": 2, "epochs": 4, "checkpoint_epochs": [2],
             "dataset": {"name": "digits", "seed": 0, "image": True}},
}
HELDOUT_PREFIX = "heldout"  # run ids of the held-out runs
ACCURACY_METRICS = ("test_acc", "val_acc", "train_acc")
# What build_data records (checked when a zoo is opened as Hyper-Representations').
ZOO_RECORD = Record(Fields({"preset": lambda v, k: check_str(v, k, PRESETS), "seed": check_int}))


# ----------------------------------------------------------------------------- data


def zoo_runs(n: int, epochs: int, seed: int = 0, prefix: str = "run") -> list[Run]:
    """``n`` independent runs of ``epochs`` epochs, seeds ``seed``..``seed + n - 1``, each with its own mildly
    varied hyper-parameters (Adam lr log-uniform in [0.004, 0.03], init scale in [0.7, 1.3], dropout in
    {0, 0.05, 0.1}, drawn from ``seed``): the zoo then spans a range of accuracies, as the original zoos
    varied their training."""
    g = seeded(12345 + seed)
    lrs = torch.exp(torch.empty(n).uniform_(math.log(0.004), math.log(0.03), generator=g))
    scales = torch.empty(n).uniform_(0.7, 1.3, generator=g)
    drops = torch.tensor([0.0, 0.05, 0.1])[torch.randint(3, (n,), generator=g)]
    return [Run(f"{prefix}{i:04d}", seed + i, HParams(lr=round(float(lrs[i]), 5), init_scale=round(float(scales[i]), 3),
                                                      dropout=float(drops[i]), optimizer="adam", epochs=epochs))
            for i in range(n)]


def build_data(out: str | Path, *, preset: str = "default", progress: bool = True, seed: int = 0) -> Zoo:
    """Independently trained CNNs, checkpoints at several epochs each, then the held-out runs
    (``tiny``: 8 + 2 runs × 2 checkpoints on digits, seconds; ``default``: 100 + 20 runs × 5
    checkpoints on Fashion-MNIST). ``seed`` shifts every run's seed by ``seed * 10_000``.
    Re-running skips runs already in the zoo."""
    if preset not in PRESETS:
        raise ConfigError(f"preset: expected one of {sorted(PRESETS)}, got {preset!r}")
    p = PRESETS[preset]
    dataset = load_dataset(**p["dataset"])
    arch = build_architecture({**ARCHITECTURE, "image_size": dataset.input_shape[-1]})
    train_cfg = TrainConfig(batch_size=32, checkpoint_epochs=tuple(p["checkpoint_epochs"]))
    config = {"method": "hyperrep", "preset": preset, "seed": int(seed), **p,
              "training": {"batch_size": train_cfg.batch_size, "optimizer": "adam"}}
    zoo = Zoo.create(out, arch.space, architecture=arch.config, task=dataset.describe(), config=config)
    if (zoo.info["config"].get("preset"), zoo.info["config"].get("seed")) != (preset, int(seed)):
        raise ConfigError(f"preset: the zoo at {out} was built with preset {zoo.info['config'].get('preset')!r} "
                          f"and seed {zoo.info['config'].get('seed')!r}, got {preset!r} and {seed!r}; "
                          "use another directory")
    first = int(seed) * 10_000
    runs = zoo_runs(p["runs"], p["epochs"], first) + zoo_runs(p["heldout_runs"], p["epochs"], first + p["runs"],
                                                              HELDOUT_PREFIX)
    train_population(arch, dataset, runs, zoo, train_cfg, progress=progress)
    return zoo


def generator_config(zoo: Zoo) -> dict:
    """Constructor arguments the generator takes from the zoo: its architecture (the tokens)."""
    return {"architecture": dict(zoo.info["architecture"])}


def _index(zoo: Zoo, held_out: bool):
    df = zoo.index()
    return df[df["run_id"].str.startswith(HELDOUT_PREFIX) == held_out]


def training_weights(zoo: Zoo) -> Tensor:
    """Every checkpoint of the training runs, all epochs: the original trained its autoencoder on
    all of them and selected the best models only when sampling (see :func:`fit_context`)."""
    return zoo.load(ids=_index(zoo, False)["model_id"].tolist())[0]


def heldout_weights(zoo: Zoo) -> Tensor:
    """Every checkpoint of the held-out runs (trained like the training runs, never fitted on)."""
    return zoo.load(ids=_index(zoo, True)["model_id"].tolist())[0]


def final_epoch(zoo: Zoo) -> Tensor:
    """``BoolTensor`` over the rows of :func:`training_weights`: each run's last checkpoint. The
    paper's min-L2 histogram uses these only, since neighbouring epochs of one run would otherwise
    be each other's nearest neighbours."""
    df = _index(zoo, False)
    return torch.tensor((df["step"] == df.groupby("run_id")["step"].transform("max")).to_numpy(dtype=bool))


def reference_weights(zoo: Zoo, generator: HyperRep) -> Tensor:
    """What the paper compares Hyper-Representations' samples with: the fitted autoencoder's
    reconstruction (encode, then decode) of every training checkpoint, all epochs."""
    return generator.reconstruct(training_weights(zoo))


def noise_source(zoo: Zoo, generator: HyperRep) -> Tensor:
    """The paper's noise baseline starts from the reconstructed top ``top_fraction`` (the models
    the KDE is fitted on)."""
    return generator.reconstruct(training_weights(zoo)[generator.stats["anchor_rows"]])


def fit_context(zoo: Zoo, metric: str = "test_acc") -> dict:
    """``accuracies``: one per row of :func:`training_weights` (same order). The original ranked its
    models by test accuracy; ``metric="val_acc"`` keeps the test split out of the selection."""
    if metric not in ACCURACY_METRICS:
        raise ConfigError(f"metric: expected one of {ACCURACY_METRICS}, got {metric!r}")
    df = _index(zoo, False)
    return {"accuracies": torch.as_tensor(df[metric].to_numpy(dtype="float32"))}


def n_samples(zoo: Zoo) -> int:
    """The paper samples 200 models from Hyper-Representations."""
    return 200


# a classifier method: its quality is test accuracy, its predictions are test labels
quality = accuracy_on_test
predictions = predictions_on_test


# ----------------------------------------------------------------------------- tokens


class Tokenizer:
    """One token per output neuron of every layer, in layout order.

    A layer is a tensor of two or more dimensions (``[out, in, ...]``); its neuron i owns row i of
    it and entry i of every 1-D tensor of size ``out`` with the same name prefix (the bias) or
    permuted with it by the same neuron group (BatchNorm parameters and statistics). Token i is
    those values concatenated, zero-padded to ``width``. Every coordinate sits in exactly one
    token, so ``detokenize(tokenize(w)) == w`` exactly.
    """

    def __init__(self, space: WeightSpace):
        self.space = space
        owner: dict[str, str] = {}
        layers = []
        for e in space.entries:
            if len(e.shape) < 2:
                continue
            prefix, n_out = e.name.rpartition(".")[0], e.shape[0]
            group = next((g for g in space.groups if (e.name, 0) in g.axes), None)
            members = [e.name]
            for f in space.entries:
                if len(f.shape) != 1 or f.shape[0] != n_out or f.name in owner:
                    continue
                if f.name.rpartition(".")[0] == prefix or (group is not None and (f.name, 0) in group.axes):
                    members.append(f.name)
                    owner[f.name] = e.name
            owner[e.name] = e.name
            layers.append((e.name, tuple(members)))
        left = [e.name for e in space.entries if e.name not in owner]
        if not layers or left:
            raise LayoutError(f"layout '{space.name}': cannot tokenise {left or 'it'}: every tensor must be a "
                              "layer weight [out, in, ...] or a 1-D tensor of one of those layers' neurons")
        index = torch.arange(space.num_params)
        pieces = space.unflatten(index, cast=False)
        rows = [torch.cat([pieces[m].reshape(pieces[name].shape[0], -1) for m in members], dim=1)
                for name, members in layers]
        self.layers = tuple(name for name, _ in layers)
        self.width = max(r.shape[1] for r in rows)
        self.index = torch.cat([F.pad(r, (0, self.width - r.shape[1]), value=space.num_params) for r in rows])
        self.valid = self.index < space.num_params  # [T, D]
        self.layer_of_token = torch.cat([torch.full((r.shape[0],), i) for i, r in enumerate(rows)])
        self.layer_of_coordinate = torch.empty(space.num_params, dtype=torch.long)
        for i, r in enumerate(rows):
            self.layer_of_coordinate[r.reshape(-1)] = i
        flat = self.index.reshape(-1)
        self.inverse = torch.empty(space.num_params, dtype=torch.long)
        self.inverse[flat[flat < space.num_params]] = torch.nonzero(flat < space.num_params).reshape(-1)

    @property
    def num_tokens(self) -> int:
        return self.index.shape[0]

    def tokenize(self, weights: Tensor) -> Tensor:
        """``Tensor[..., P]`` → ``Tensor[..., T, width]`` (padding is 0)."""
        if weights.shape[-1] != self.space.num_params:
            raise LayoutError(f"weights: expected {self.space.num_params} parameters for layout "
                              f"'{self.space.name}', got {weights.shape[-1]}")
        padded = torch.cat([weights, weights.new_zeros(*weights.shape[:-1], 1)], dim=-1)
        return padded[..., self.index.to(weights.device)]

    def detokenize(self, tokens: Tensor) -> Tensor:
        """``Tensor[..., T, width]`` → ``Tensor[..., P]`` (padding is dropped)."""
        if tuple(tokens.shape[-2:]) != tuple(self.index.shape):
            raise LayoutError(f"tokens: expected [..., {self.num_tokens}, {self.width}], got {tuple(tokens.shape)}")
        flat = tokens.reshape(*tokens.shape[:-2], -1)
        return flat[..., self.inverse.to(tokens.device)]


# ----------------------------------------------------------------------------- autoencoder


def _transformer(d_model: int, heads: int, layers: int, ff: int, dropout: float) -> nn.TransformerEncoder:
    # Pre-norm blocks and no final norm: the residual stream keeps each token's scale, so the
    # linear neck can pass weights straight through while the attention layers learn corrections.
    layer = nn.TransformerEncoderLayer(d_model, heads, ff, dropout, batch_first=True, norm_first=True)
    return nn.TransformerEncoder(layer, layers, enable_nested_tensor=False)


class LayerLinear(nn.Module):
    """A linear map per token whose weights are shared by the tokens of one layer (the original
    embeds each layer's neurons with that layer's own linear map): ``[B, T, in]`` → ``[B, T, out]``."""

    def __init__(self, layer_of_token: Tensor, d_in: int, d_out: int):
        super().__init__()
        n = int(layer_of_token.max()) + 1
        bound = 1.0 / math.sqrt(d_in)
        self.weight = nn.Parameter(torch.empty(n, d_in, d_out).uniform_(-bound, bound))
        self.bias = nn.Parameter(torch.empty(n, d_out).uniform_(-bound, bound))
        self.register_buffer("layer", layer_of_token.clone(), persistent=False)

    def forward(self, x: Tensor) -> Tensor:
        return torch.einsum("bti,tio->bto", x, self.weight[self.layer]) + self.bias[self.layer]


class HyperAutoEncoder(nn.Module):
    """tokens ``[B, T, D]`` → per-layer embedding + learned position embedding → transformer →
    flatten → linear neck → latent ``[B, latent]`` → linear → ``[B, T, d_model]`` + position
    embedding → transformer → per-layer linear head → tokens (the original's "linear" compression),
    plus a projection head for the contrastive loss (SimCLR-style, used in training only)."""

    def __init__(self, layer_of_token: Tensor, width: int, d_model: int = 64, heads: int = 4, layers: int = 2,
                 ff: int = 128, latent: int = 256, projection: int = 64, dropout: float = 0.0):
        super().__init__()
        self.num_tokens, self.d_model = len(layer_of_token), d_model
        self.embed = LayerLinear(layer_of_token, width, d_model)
        self.pos_enc = nn.Parameter(torch.randn(self.num_tokens, d_model) * 0.02)
        self.encoder = _transformer(d_model, heads, layers, ff, dropout)
        self.to_latent = nn.Linear(self.num_tokens * d_model, latent)
        self.from_latent = nn.Linear(latent, self.num_tokens * d_model)
        self.pos_dec = nn.Parameter(torch.randn(self.num_tokens, d_model) * 0.02)
        self.decoder = _transformer(d_model, heads, layers, ff, dropout)
        self.head = LayerLinear(layer_of_token, d_model, width)
        self.project = nn.Sequential(nn.Linear(latent, projection), nn.ReLU(), nn.Linear(projection, projection))

    def encode(self, tokens: Tensor) -> Tensor:
        return self.to_latent(self.encoder(self.embed(tokens) + self.pos_enc).flatten(1))

    def decode(self, z: Tensor) -> Tensor:
        h = self.from_latent(z).reshape(z.shape[0], self.num_tokens, self.d_model) + self.pos_dec
        return self.head(self.decoder(h))


def nt_xent(a: Tensor, b: Tensor, temperature: float) -> Tensor:
    """NT-Xent (SimCLR): row i of ``a`` and row i of ``b`` are positives, all other rows negatives."""
    z = F.normalize(torch.cat([a, b]), dim=1)
    sim = z @ z.T / temperature
    sim = sim.masked_fill(torch.eye(len(z), dtype=torch.bool, device=z.device), float("-inf"))
    n = a.shape[0]
    target = torch.cat([torch.arange(n, 2 * n), torch.arange(n)]).to(z.device)
    return F.cross_entropy(sim, target)


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
    get past reconstructing the mean model. 2,000 steps of 32 models reach a layer-normalised MSE
    of about 0.06 on the default zoo."""

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
