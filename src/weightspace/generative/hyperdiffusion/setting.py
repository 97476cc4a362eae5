"""HyperDiffusion's data setting, CPU-sized in 2-D: one occupancy MLP per training silhouette
(:mod:`weightspace.shapes`), every fit starting from the MLP fitted to the first shape (so all weights
live near one point and neurons stay aligned), as the original does for 3-D shapes. Shapes are rebuilt
from weights by marching squares and compared as point clouds (Chamfer distance); a model's quality is
minus its Chamfer distance to the nearest held-out test shape.
"""

from __future__ import annotations

import functools
import json
import math
from collections.abc import Sequence
from pathlib import Path
from typing import ClassVar

import torch
from torch import Tensor
from tqdm.auto import tqdm

from ...errors import ConfigError, LayoutError, ZooError
from ...generator import seeded
from ...jsonable import jsonable
from ...nets import OccupancyMLP, build_architecture
from ...safe_input import check_float, check_int, check_list, check_str
from ...shapes import (
    ShapeSet,
    Silhouettes,
    boundary_points,
    grid_points,
    iou,
    load_silhouettes,
    normalise_points,
    occupancy_samples,
    pairwise_chamfer,
)
from ...zoo import Zoo
from ...zoo.method_record import Fields, Record
from ...zoo.setting import SHAPES, DataSetting, PaperCall, Reference, register_method

PRESETS = {
    # ~300 ankle-boot silhouettes, 100 held out; 2,625 weights per MLP. Each MLP overfits its shape,
    # as in the paper: a looser fit left the replica axis unable to call a copy a replica
    # (docs/generators.md has the measurements).
    "default": {
        "shapes": {"source": "auto", "n_train": 300, "n_test": 100, "classes": None, "seed": 0},
        "architecture": {"widths": [32, 32, 32], "n_frequencies": 3},
        "fit": {"points": 8192, "near_fraction": 0.5, "first_steps": 1000, "steps": 1000, "batch_size": 256,
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
# sample count, and every checkpoint carries its shape's ``shape_index`` in its ``split`` (train,
# or test for the held-out fits; train when absent).
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
    extra=Fields({"shape_index": lambda v, k: check_int(v, k, 0)},
                 {"split": lambda v, k: check_str(v, k, ("train", "test"))}),
)

def _check_preset(preset: str) -> dict:
    if preset not in PRESETS:
        raise ConfigError(f"preset: expected one of {sorted(PRESETS)}, got {preset!r}")
    return jsonable(PRESETS[preset])


def _fit_metrics(arch, w, points, labels, shapes: ShapeSet, rows, resolution) -> list[dict]:
    logits = arch.logits(w, points)
    loss = arch.loss(logits, labels)
    acc = ((logits[..., 0] > 0).to(labels.dtype) == labels).float().mean(1)
    occ = arch.logits(w, grid_points(resolution, w.device))[..., 0] > 0
    gt = shapes.occupancy(resolution)[list(rows)]
    own = iou(occ, gt).diagonal()
    return [{"train_loss": float(loss[i]), "train_acc": float(acc[i]), "iou": float(own[i])} for i in range(len(rows))]


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


def _as_list(points: Tensor) -> list[Tensor]:
    """NaN-padded ``[n, K, 2]`` → list of ``[k, 2]`` (an empty boundary becomes ``[0, 2]``)."""
    return [p[~p.isnan().any(-1)] for p in points]


class HyperDiffusionSetting(DataSetting):
    name = "hyperdiffusion"
    label = "HyperDiffusion"
    kind = SHAPES
    record = ZOO_RECORD
    paper = PaperCall("replicates", replicates=True, beats_noise=False, interpolates=False)
    paper_sigmas = (0.02, 0.04)
    options: ClassVar[dict] = {"tiny": {"train_steps": 150}}

    def build(self, out: str | Path, *, preset: str = "default", progress: bool = True, seed: int | None = None) -> Zoo:
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
                                  f"{made.get('preset')!r}; use another directory to build hyperdiffusion preset "
                                  f"{preset!r}")
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
                              f"{zoo.info['config'].get('preset')!r}); use another directory to build preset "
                              f"{preset!r}")
        fit, seed = cfg["fit"], int(cfg["shapes"]["seed"])
        points, labels = occupancy_samples(sil.train.fields, fit["points"], near_fraction=fit["near_fraction"],
                                           resolution=cfg["decode"]["resolution"], generator=seeded(seed))
        ids = [f"shape-{k:05d}" for k in range(len(sil.train))]
        have = zoo.ids()
        hp = {k: fit[k] for k in ("points", "near_fraction", "batch_size", "lr")}

        def add(rows: Sequence[int], w: Tensor, steps: int, init: str) -> None:
            metrics = _fit_metrics(arch, w, points[rows], labels[rows], sil.train, rows, cfg["decode"]["resolution"])
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
            w = fit_occupancy(arch, points[rows], labels[rows], first, steps=fit["steps"],
                              batch_size=fit["batch_size"], lr=fit["lr"], generator=seeded(seed * 100003 + rows[0]),
                              progress=progress, desc=f"fitting shapes {rows[0]}..{rows[-1]}")
            add(rows, w, fit["steps"], "first-shape")
        # held-out runs: the test shapes fitted alike from the first shape's MLP, never shown to a generator
        held = [k for k in range(len(sil.test)) if f"heldout-{k:05d}" not in have]
        if held:
            tp, tl = occupancy_samples(sil.test.fields[held], fit["points"], near_fraction=fit["near_fraction"],
                                       resolution=cfg["decode"]["resolution"], generator=seeded(seed + 7))
            w = fit_occupancy(arch, tp, tl, first, steps=fit["steps"], batch_size=fit["batch_size"], lr=fit["lr"],
                              generator=seeded(seed * 100003 + 50_000 + held[0]), progress=progress,
                              desc="fitting the held-out shapes")
            metrics = _fit_metrics(arch, w, tp, tl, sil.test, held, cfg["decode"]["resolution"])
            zoo.add_many([(f"heldout-{k:05d}", w[i],
                           {"run_id": sil.test.ids[k], "seed": seed, "step": fit["steps"],
                            "hparams": {**hp, "steps": fit["steps"], "init": "first-shape"}, **metrics[i],
                            "shape_index": k, "split": "test"}) for i, k in enumerate(held)])
        return zoo

    def training(self, zoo: Zoo) -> Tensor:
        """``Tensor[N, P]``: every training shape's MLP (the original trains on all of them), in shape order."""
        return _split(zoo, "train")

    def heldout(self, zoo: Zoo) -> Tensor | None:
        """MLPs fitted alike to the held-out test shapes, in shape order: new models of the category
        that no generator saw (None for a zoo built without them)."""
        held = _split(zoo, "test")
        return held if len(held) else None

    def fit_context(self, zoo: Zoo) -> dict:
        """The layout, so the denoiser makes one token per layer (chunks of large layers)."""
        return {"space": zoo.space}

    def n_samples(self, zoo: Zoo) -> int:
        """As the paper, 1.1 x the number of held-out test shapes, capped to stay CPU-sized."""
        cfg = _check_zoo(zoo)
        wanted = math.ceil(cfg["samples"]["factor"] * cfg["shapes"]["n_test"] - 1e-9)  # 1.1 * 100 is 110.00000000000001
        return min(wanted, int(cfg["samples"]["cap"]))

    def reference(self, zoo: Zoo, generator) -> Reference:
        """The paper's reference: the ground-truth training shapes (not the fitted MLPs)."""
        return Reference("ground-truth training shapes", points=training_shapes(zoo))

    def quality(self, zoo: Zoo, weights: Tensor) -> Tensor:
        """``Tensor[n]``, higher is better: minus each MLP's Chamfer distance to its nearest held-out test
        shape (both clouds normalised, as the paper's evaluation). An MLP with no boundary scores
        ``-inf`` (no shape matches it)."""
        return self.shape_quality(zoo, self.shapes(zoo, weights))

    def shape_quality(self, zoo: Zoo, points: Sequence[Tensor]) -> Tensor:
        return -pairwise_chamfer(list(points), test_shapes(zoo)).min(1).values

    def shapes(self, zoo: Zoo, weights: Tensor) -> list[Tensor]:
        """Each MLP's shape as a boundary point set ``[K, 2]`` (marching squares at logit 0, K points evenly
        spaced by arc length), normalised to zero mean and unit std as the paper's evaluation; an MLP
        whose field has no boundary gives ``[0, 2]``."""
        dec = _check_zoo(zoo)["decode"]
        return normalise_points(_as_list(boundary_points(_grid_logits(zoo, weights), dec["n_points"], 0.0)))


def _split(zoo: Zoo, split: str) -> Tensor:
    """The MLPs of one split (train or test), in shape order."""
    _check_zoo(zoo)
    w, df = zoo.load()
    extra = df["extra"].map(json.loads)
    rows = extra.map(lambda e: e.get("split", "train") == split).to_numpy()
    order = extra[rows].map(lambda e: e["shape_index"]).to_numpy().argsort()
    return w[torch.tensor(rows)][torch.as_tensor(order, dtype=torch.long)]


def training_shapes(zoo: Zoo) -> list[Tensor]:
    """The training silhouettes (ground truth, not the fitted MLPs) as normalised point sets, in
    shape order: the paper's reference for HyperDiffusion's samples."""
    dec = _check_zoo(zoo)["decode"]
    return normalise_points(_as_list(_silhouettes(zoo).train.boundary(dec["n_points"], dec["resolution"])))


def test_shapes(zoo: Zoo) -> list[Tensor]:
    """The held-out test silhouettes as normalised point sets (what generated shapes are scored against)."""
    dec = _check_zoo(zoo)["decode"]
    return normalise_points(_as_list(_silhouettes(zoo).test.boundary(dec["n_points"], dec["resolution"])))


SETTING = register_method(HyperDiffusionSetting())
