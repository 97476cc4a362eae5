"""Spectral diagnostics of weight matrices (Martin & Mahoney's heavy-tailed self-regularisation).

For every weight matrix W of a model — or of every model of a zoo at once — the eigenvalues λ of WᵀW
(squared singular values, no 1/N), a power-law fit of their tail, norm metrics, optionally a
Marchenko–Pastur fit and a comparison with the spectrum of W with its entries shuffled. Column names
are WeightWatcher's where they mean the same thing.

    analyzer = SpectralAnalyzer(fit="robust").fit("model.safetensors")   # or a state dict, HF folder, Zoo
    analyzer.details_    # one row per model and layer
    analyzer.summary_    # one row per model: means over layers, alpha_hat (mean of α·log10 λmax)
    analyzer.spectra_    # per layer: its models and their eigenvalues [models, n] (for figures)

Batching: matrices of one shape — the slices of a conv layer, q/k/v, the same layer of every model of
a zoo, different layers of equal shape — are decomposed in one call, and the power-law fits of one
layer across all models run as one array program (:mod:`weightspace.analysis.powerlaw`).

``fit="ww"`` reproduces WeightWatcher 0.7.7's ``analyze()`` defaults: Conv2d slices scaled by √(1/2)
(its ``conv2d_norm``), layers with fewer than 8 or more than 15,000 eigenvalues or a side over 50,000
skipped, its power-law fit. ``fit="robust"`` (default): no conv rescaling, the robust fit, FARMS's
fixed-aspect-ratio correction (α of a very rectangular W, N/M ≥ 8, fitted on the pooled spectra of
square submatrices, so that α does not drift with N/M), and a ``status`` for layers whose α means nothing.

Statuses: ``ok``; ``random-like`` (λmax within the MP bulk edge of an i.i.d. matrix of the same
variance: α describes noise); ``too-few-evals``; ``too-many-evals``/``too-large`` (ww limits);
``non-finite``; ``all-zero``; ``fit-failed``; ``skipped: <reason>`` (vectors, norm layers, buffers).
"""

from __future__ import annotations

import dataclasses
import math
import os
import zlib
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

import numpy as np
import pandas as pd
import torch
from torch import Tensor
from tqdm.auto import tqdm

from ..errors import ConfigError, WeightspaceError
from ..space import WeightSpace
from .eigen import Workers, eigenvalues_as_ready, workers
from .layers import LayerMatrices, layer_matrices
from .mp import mp_fit, rand_distance, random_like
from .powerlaw import fit_robust, fit_ww
from .spectral_input import STREAM_BYTES, analysable, as_batched, describe_source, open_model, stream_groups

FITS = ("robust", "ww")
EIGEN_METHODS = ("gram", "svd")  # eigenvalues of WᵀW, or squared singular values of W
PRECISIONS = ("float64", "float32")
FLOAT32_FLOOR = 1e-6  # relative to λmax: below it float32 Gram eigenvalues are rounding noise
WW_MIN_EVALS, WW_MAX_EVALS, WW_MAX_N = 8, 15000, 50000
OVER_TRAINED, UNDER_TRAINED = 2.0, 6.0
SUMMARY_METRICS = ("log_norm", "alpha", "alpha_weighted", "log_alpha_norm", "log_spectral_norm", "stable_rank",
                   "mp_softrank")


class SpectralAnalyzer:
    """Per-layer spectral metrics of a model, a checkpoint, an HF folder or a whole zoo.

    fit: ``"robust"`` or ``"ww"`` (WeightWatcher 0.7.7's default fit and conventions).
    mp_fit: also fit the Marchenko–Pastur density (sigma_mp, bulk_max, num_spikes, mp_softrank).
    randomize: also analyse W with its entries shuffled (seeded): rand_distance, ww_softrank, ...
    conv: ``"pool"`` (one matrix per kernel position, spectra pooled), ``"slices"`` (each kernel position
        its own row, WeightWatcher's ``pool=False``) or ``"flatten"`` (out × in·k·k).
    conv_norm: scale Conv2d eigenvalues by 1/2 as WeightWatcher does (default: only with fit="ww").
    farms: fit α on square submatrices of very rectangular W, N/M ≥ ``farms_min_q`` (default: only with
        fit="robust").
    method: ``"gram"`` (eigenvalues of the smaller Gram matrix) or ``"svd"`` (squared singular values).
    precision: ``"float64"`` or ``"float32"`` arithmetic for the eigenvalues (default: float64 with
        fit="ww", as WeightWatcher's SciPy SVD; float32 with fit="robust", about 3× faster — its fit
        ignores eigenvalues below 1e-6·λmax, under which float32 Gram eigenvalues are rounding noise).
    threads: how many matrices are decomposed at once, each by one thread (default: torch's thread
        count, the caller's budget). Results do not depend on it, bit for bit (see
        :mod:`weightspace.analysis.eigen`).
    """

    def __init__(
        self,
        fit: str = "robust",
        *,
        mp_fit: bool = False,
        randomize: bool = False,
        conv: str = "pool",
        conv_norm: bool | None = None,
        farms: bool | None = None,
        farms_min_q: float = 8.0,
        method: str = "gram",
        precision: str | None = None,
        min_tail: int = 10,
        n_boot: int = 200,
        seed: int = 0,
        threads: int | None = None,
        progress: bool = True,
    ):
        if fit not in FITS:
            raise ConfigError(f"fit={fit!r}: expected one of {', '.join(FITS)}")
        if method not in EIGEN_METHODS:
            raise ConfigError(f"method={method!r}: expected one of {', '.join(EIGEN_METHODS)}")
        self.fit_kind = fit
        self.mp_fit = mp_fit
        self.randomize = randomize
        self.conv = conv
        self.conv_norm = (fit == "ww") if conv_norm is None else conv_norm
        self.farms = (fit == "robust") if farms is None else farms
        self.farms_min_q = farms_min_q
        self.method = method
        self.precision = precision or ("float64" if fit == "ww" else "float32")
        if self.precision not in PRECISIONS:
            raise ConfigError(f"precision={precision!r}: expected one of {', '.join(PRECISIONS)}")
        self.min_tail = min_tail
        self.n_boot = n_boot
        self.seed = seed
        if threads is not None and threads < 1:
            raise ConfigError(f"threads={threads}: expected at least 1 (or None: torch's thread count)")
        self.threads = threads
        self.progress = progress

    # ------------------------------------------------------------------ public
    def fit(self, source, *, where: str | None = None, backend=None, block_size: int = 256,
            key: str | None = None) -> SpectralAnalyzer:
        """Analyse ``source``: a state dict, a checkpoint path, an HF folder, a zoo directory, a Zoo, or
        ``(weights [N, P], WeightSpace)`` (models named 0..N-1). ``key``: the entry of a training
        checkpoint file that holds the model (see :func:`weightspace.io.load_checkpoint`).

        ``backend`` (``"ray"`` or a :class:`~weightspace.parallel.RayBackend`; zoos only): the zoo is
        analysed in blocks of ``block_size`` models, one Ray task each (:func:`~weightspace.zoo.blocks.map_zoo`),
        and the tables and spectra are joined in the zoo's order: equal to the local result (the
        robust fit's bootstrap is seeded per model and layer, and ``randomize``'s permutations are
        drawn per layer, shared by the models: see :func:`shuffle_entries`). The shuffles differ only
        if some block has a layer with no analysable matrix (all its models non-finite or all-zero).
        """
        from ..parallel import resolve_backend

        backend = resolve_backend(backend)
        if backend is not None:
            if key is not None:
                raise ConfigError(f"--key {key!r}: only a zoo is analysed on Ray, and --key picks an entry of a "
                                  "training checkpoint file")
            return self._fit_blocks(source, where, backend, block_size)
        if isinstance(source, (str, os.PathLike)) and not (Path(source) / "zoo.json").is_file():
            return self._fit_path(Path(source), key)
        batched, models, table = as_batched(source, where=where, key=key)
        layers = layer_matrices(batched, conv=self.conv)
        details, spectra = self._analyse([layers], models, total=sum(layer.kind != "skipped" for layer in layers))
        return self._finish(details, spectra, models, table)

    def _fit_path(self, path: Path, key: str | None = None) -> SpectralAnalyzer:
        """One checkpoint or Hugging Face folder, read a few tensors at a time (at most
        ``STREAM_BYTES`` of float32 matrices, or one tensor) so a model larger than memory is
        analysed one layer after another; results as if it had been read whole."""
        reader = open_model(path, key)
        meta = {n: torch.empty((1, *s.shape), dtype=s.dtype, device="meta") for n, s in reader.specs.items()}

        def parts():
            for names in stream_groups(reader.specs, STREAM_BYTES):
                tensors = {n: analysable(t).unsqueeze(0) for n, t in reader.read(names).items()}
                yield layer_matrices(tensors, conv=self.conv, context=meta)

        total = sum(layer.kind != "skipped" for layer in layer_matrices(meta, conv=self.conv))
        details, spectra = self._analyse(parts(), [path.name], total=total)
        return self._finish(details, spectra, [path.name], None)

    def _fit_blocks(self, source, where, backend, block_size: int) -> SpectralAnalyzer:
        from ..zoo import Zoo
        from ..zoo.blocks import map_zoo

        if isinstance(source, (str, os.PathLike)) and (Path(source) / "zoo.json").is_file():
            source = Zoo.open(source)
        if not isinstance(source, Zoo):
            raise ConfigError(f"backend: only a zoo is analysed on Ray, got {describe_source(source)}; leave the "
                              "backend out (or --backend local) for a single model")
        table = source.index(where)
        if len(table) == 0:
            raise WeightspaceError(f"zoo {source.root}: no models" + (f" match {where!r}" if where else ""))
        params = {**self.get_params(), "progress": False}
        parts = map_zoo(_analyse_block, source, where=where, block_size=block_size, backend=backend,
                        progress=self.progress, space=source.space, settings=params)
        details = pd.concat([d for d, _ in parts], ignore_index=True)
        for col in _TEXT:  # a column absent from one block is empty text there, as in a local run
            if col in details:
                details[col] = details[col].fillna("")
        return self._finish(details, _merge_spectra([s for _, s in parts]), [str(m) for m in table["model_id"]], table)

    def _finish(self, details, spectra, models, table) -> SpectralAnalyzer:
        if len(details):
            lead = ["model", "layer_id", "name", "kind", "status"]
            details = details[lead + [c for c in details.columns if c not in lead]]
        self.details_ = details
        self.summary_ = summarize(details, models, table)
        self.spectra_ = spectra
        self.params_ = self.get_params()
        return self

    def get_params(self) -> dict:
        return {"fit": self.fit_kind, "mp_fit": self.mp_fit, "randomize": self.randomize, "conv": self.conv,
                "conv_norm": self.conv_norm, "farms": self.farms, "farms_min_q": self.farms_min_q,
                "method": self.method, "precision": self.precision, "min_tail": self.min_tail, "n_boot": self.n_boot,
                "seed": self.seed}

    # ------------------------------------------------------------------ work
    def _threads(self) -> int:
        return torch.get_num_threads() if self.threads is None else self.threads

    def _analyse(self, parts: Iterable[list[LayerMatrices]], models: list[str], total: int | None = None):
        """The details table and spectra of the layers of ``parts`` (lists of layers, analysed one list
        at a time, numbered on across them), as one call on all of them would give."""
        frames: list[dict] = []  # columns of rows, one dict per layer (or per status of a layer)
        spectra: dict[str, dict] = {}
        state = _Draws(torch.Generator().manual_seed(self.seed), {})
        lid = 0
        bar = tqdm(total=total, desc="spectral", unit="layer", disable=not self.progress)
        with bar, workers(self._threads()) as on:
            for layers in parts:
                part_frames, part_spectra = self._analyse_part(layers, lid, models, state, bar, on)
                frames += part_frames
                spectra.update(part_spectra)
                lid += len(layers)
        return _combine(frames, models), spectra

    def _analyse_part(self, layers: list[LayerMatrices], first_lid: int, models: list[str], state, bar, on: Workers):
        frames: list[dict] = []
        spectra: dict[str, dict] = {}
        todo = []  # (layer_id, layer, indices of the models whose matrices can be decomposed)
        for lid, layer in enumerate(layers, start=first_lid):
            if layer.kind == "skipped":
                frames.append(_frame(models, lid, layer, f"skipped: {layer.reason}"))
                continue
            if layer.mats.dtype == torch.bfloat16:  # exact in float32, which numpy and LAPACK take
                layer = dataclasses.replace(layer, mats=layer.mats.float())
            status = self._static_status(layer)
            if status:
                frames.append(_frame(models, lid, layer, status))
                bar.update(1)
                continue
            lo, hi = torch.aminmax(_per_model(layer.mats), dim=1)  # one pass, no |W| copy
            top = torch.maximum(hi, -lo).float().numpy()  # NaN and Inf survive; all-zero gives 0
            bad = np.where(~np.isfinite(top), "non-finite", np.where(top == 0, "all-zero", ""))
            if (bad != "").any():
                frames.append(_frame([models[i] for i in np.nonzero(bad != "")[0]], lid, layer, bad[bad != ""]))
            good = torch.from_numpy(np.nonzero(bad == "")[0])
            if len(good):
                todo.append((lid, layer, good))
            else:
                bar.update(1)

        # Each layer is fitted here as soon as its decompositions are done, while the pool goes on
        # with the others' (LAPACK releases the GIL), and the frames are put back in layer order.
        done: dict[int, dict] = {}
        for k, ev in self._eigenvalues(todo, on, state):
            lid, layer, good = todo[k]
            names = [models[i] for i in good.tolist()]
            done[k], spectra[layer.name] = self._layer_frame(lid, layer, names, ev, on)
            bar.update(1)
        frames += [done[k] for k in sorted(done)]
        spectra = {todo[k][1].name: spectra[todo[k][1].name] for k in sorted(done)}
        return frames, spectra

    def _static_status(self, layer: LayerMatrices) -> str:
        n = layer.M * layer.rf
        if n < WW_MIN_EVALS:
            return "too-few-evals"
        if self.fit_kind == "ww" and n > WW_MAX_EVALS:
            return "too-many-evals"
        if self.fit_kind == "ww" and layer.N > WW_MAX_N:
            return "too-large"
        return ""

    def _eigenvalues(self, todo, on: Workers, state: _Draws):
        """Per entry k of ``todo``, as it is ready: ``(k, {"full": [b, n] (all slices pooled), and
        "farms"/"rand" when asked})``, each sorted.

        Every matrix of every kind and layer is put in one list; matrices of one shape go through one
        batched decomposition (small ones) or one task each (large ones).
        """
        gen, perms = state
        jobs: list[tuple[int, str, Tensor | Shuffled]] = []  # (todo index, what, [b, S', r, c])
        for k, (_, layer, good) in enumerate(todo):
            m = layer.mats if len(good) == layer.mats.shape[0] else layer.mats[good]  # no copy when all are good
            jobs.append((k, "full", m))
            if self.farms and layer.N >= self.farms_min_q * layer.M:
                jobs.append((k, "farms", farms_blocks(m)))
            if self.randomize:
                reps = 5 if layer.M * layer.rf < 100 else 1  # WeightWatcher's replicas for small layers
                jobs.append((k, "rand", shuffle_entries(m, reps, gen, perms)))
        by_shape: dict[tuple[int, int], list[int]] = {}
        for j, (_, _, m) in enumerate(jobs):
            by_shape.setdefault(tuple(m.shape[-2:]), []).append(j)
        groups = list(by_shape.values())
        waiting = [0] * len(todo)  # groups each layer still waits for
        for idx in groups:
            for k in {jobs[j][0] for j in idx}:
                waiting[k] += 1
        out: list[dict[str, np.ndarray]] = [{} for _ in todo]
        parts = [[_flat(jobs[j][2]) for j in idx] for idx in groups]
        for g, ev in eigenvalues_as_ready(parts, self.method, np.dtype(self.precision), on):
            start = 0
            for j in groups[g]:
                k, what, m = jobs[j]
                b, s = m.shape[:2]
                e = ev[start:start + b * s].reshape(b, -1)
                start += b * s
                if self.conv_norm and todo[k][1].kind == "conv2d":
                    e = e * 0.5  # WeightWatcher multiplies W by sqrt(1/2): conv2d_norm with conv2d_count = 1
                out[k][what] = np.sort(e, axis=1)
            for k in {jobs[j][0] for j in groups[g]}:
                waiting[k] -= 1
                if waiting[k] == 0:
                    yield k, out[k]
                    out[k] = {}

    def _layer_frame(self, lid, layer: LayerMatrices, models: list[str], ev, on: Workers) -> tuple[dict, dict]:
        """The rows of one layer for all its models (one array per column), and its spectra for figures."""
        full = ev["full"]  # [b, n], sorted
        n = full.shape[1]
        N, M = layer.N, layer.M
        fit_on = ev.get("farms", full)
        if self.fit_kind == "ww":
            pl = fit_ww(list(fit_on))
        else:
            floor = FLOAT32_FLOOR if self.precision == "float32" else 0.0
            seeds = [[self.seed, lid, zlib.crc32(m.encode())] for m in models]  # per model: blocks do not matter
            pl = fit_robust(list(fit_on), min_tail=self.min_tail, n_boot=self.n_boot, rel_floor=floor,
                            row_seeds=seeds, on=on)
        norm = full.sum(1)
        lam_max = full[:, -1]
        alpha = pl["alpha"]
        with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
            log_alpha_norm = np.log10(np.sum(full ** alpha[:, None], axis=1))
            if self.precision == "float64":  # WeightWatcher's rule (numpy.linalg.matrix_rank's)
                sv = np.sqrt(full)
                rank = (sv > sv[:, -1:] * N * np.finfo(np.float64).eps).sum(1)
            else:  # the Gram's own rounding: eigenvalues below λmax·M·eps32 are not resolved
                rank = (full > full[:, -1:] * M * np.finfo(np.float32).eps).sum(1)
            p = full / norm[:, None] + 1e-10
            entropy = -np.sum(p * np.log(p), axis=1) / np.log(rank + 1e-10)
        status = np.where(~pl["fit_ok"], "fit-failed", np.where(random_like(full, N / M, M), "random-like", "ok"))
        cols = {
            "N": N, "M": M, "Q": N / M, "rf": layer.rf, "num_evals": n, "lambda_max": lam_max,
            "alpha": alpha, "xmin": pl["xmin"], "xmax": pl["xmax"], "D": pl["D"], "sigma": pl["sigma"],
            "num_pl_spikes": pl["num_pl_spikes"],
            "norm": norm, "log_norm": np.log10(norm), "spectral_norm": lam_max, "log_spectral_norm": np.log10(lam_max),
            "alpha_weighted": alpha * np.log10(lam_max), "log_alpha_norm": log_alpha_norm,
            "stable_rank": norm / lam_max, "matrix_rank": rank, "entropy": entropy,
            "warning": np.where(alpha < OVER_TRAINED, "over-trained", np.where(alpha > UNDER_TRAINED, "under-trained", "")),
        }
        cols.update({k: pl[k] for k in ("alpha_lo", "alpha_hi", "alpha_xmax") if k in pl})
        if "farms" in ev:
            cols["farms_blocks"] = ev["farms"].shape[1] // (M * layer.rf)
        rec = {"models": models, "evals": full, "fit_evals": fit_on, "xmin": pl["xmin"], "alpha": alpha, "N": N, "M": M}
        if self.mp_fit:
            cols.update(mp_fit(full, N / M, M))
            rec["sigma_mp"] = cols["sigma_mp"]
        if self.randomize:
            rand = ev["rand"]  # [b, reps·n]: all replicas pooled, one density
            rand_max = rand[:, -1]
            rmp = mp_fit(rand, N / M, M)
            cols.update(max_rand_eval=rand_max, rand_distance=rand_distance(full, rand),
                        ww_softrank=rand_max / lam_max, ww_maxdist=lam_max - rand_max,
                        rand_sigma_mp=rmp["sigma_mp"], rand_num_spikes=rmp["num_spikes"],
                        rand_bulk_max=rmp["bulk_max"])
            rec["rand_evals"] = rand
        frame = {"model": models, "layer_id": lid, "name": layer.name, "kind": layer.kind, "status": status, **cols}
        return frame, rec


# ---------------------------------------------------------------------- helpers
_TEXT = ("model", "name", "kind", "status", "warning")


def _analyse_block(weights: Tensor, rows: pd.DataFrame, *, space: WeightSpace, settings: dict):
    """One block of a zoo (a Ray task): its details table and spectra, models named by ``model_id``."""
    analyzer = SpectralAnalyzer(**settings)
    batched, _, _ = as_batched((weights, space))
    return analyzer._analyse([layer_matrices(batched, conv=analyzer.conv)], [str(m) for m in rows["model_id"]])


class _Draws(NamedTuple):
    """The generator and permutation pool of ``randomize``, carried from one part of a model to the next."""

    generator: torch.Generator
    perms: dict[int, list[Tensor]]


def _merge_spectra(parts: list[dict[str, dict]]) -> dict[str, dict]:
    """Per layer, the blocks' spectra records joined: model lists and per-model arrays concatenated."""
    out: dict[str, dict] = {}
    for part in parts:
        for name, rec in part.items():
            if name not in out:
                out[name] = dict(rec)
                continue
            merged = out[name]
            for key, value in rec.items():
                if key == "models":
                    merged[key] = merged[key] + value
                elif isinstance(value, np.ndarray) and value.ndim:
                    merged[key] = np.concatenate([merged[key], value])
    return out


def _frame(models: list[str], lid: int, layer: LayerMatrices, status) -> dict:
    """Rows of a layer that was not decomposed: who, which layer, and why."""
    frame = {"model": models, "layer_id": lid, "name": layer.name, "kind": layer.kind, "status": status}
    if layer.mats is not None:
        frame.update(N=layer.N, M=layer.M, Q=layer.N / layer.M, rf=layer.rf)
    return frame


def _per_model(mats: Tensor) -> Tensor:
    """``[B, -1]``: each model's entries in some order — a view when each model's entries are one dense
    block (conv slices and transposed Linear weights are permuted views of one; a zoo's models are
    blocks of its [N, P] weights), where ``flatten`` would copy."""
    order = [0] + sorted(range(1, mats.dim()), key=lambda d: -mats.stride(d))
    try:
        return mats.permute(order).view(mats.shape[0], -1)
    except RuntimeError:  # not one dense block per model
        return mats.flatten(1)


def _combine(frames: list[dict], models: list[str]) -> pd.DataFrame:
    """One DataFrame from per-layer column dicts (scalars broadcast, missing columns empty), rows
    ordered by model then layer — built once, since pandas' per-frame overhead dominates small models."""
    if not frames:
        return pd.DataFrame()
    sizes = [len(f["model"]) for f in frames]
    columns = {}
    for key in dict.fromkeys(k for f in frames for k in f):
        fill, dtype = ("", object) if key in _TEXT else (np.nan, None)
        values = [f.get(key, fill) for f in frames]
        if all(np.ndim(v) == 0 for v in values):  # one value per layer (name, N, ...): one repeat
            columns[key] = np.repeat(np.array(values, dtype=dtype), sizes)
        else:
            columns[key] = np.concatenate([np.broadcast_to(np.asarray(v, dtype=dtype), (n,)) for v, n in zip(values, sizes)])
    rank = {m: i for i, m in enumerate(models)}
    order = np.lexsort((columns["layer_id"], np.array([rank[m] for m in columns["model"]])))
    return pd.DataFrame({k: v[order] for k, v in columns.items()})


def farms_blocks(mats: Tensor, max_blocks: int = 8) -> Tensor:
    """Square c × c row blocks of ``[b, S, r, c]`` matrices (r > c), evenly spaced over the rows.

    FARMS (arXiv 2506.06280): the ESD of a rectangular matrix depends on its aspect ratio; pooling
    the ESDs of fixed-aspect-ratio submatrices removes that bias. k = min(ceil(r/c), max_blocks)
    blocks, overlapping when c does not divide r; with k < ceil(r/c) (very tall matrices such as
    embeddings) the blocks are a spread-out sample of the rows: ``[b, S·k, c, c]``.
    """
    b, S, r, c = mats.shape
    k = min(math.ceil(r / c), max_blocks)
    starts = torch.linspace(0, r - c, k).round().long()
    idx = starts[:, None] + torch.arange(c)[None, :]  # [k, c]
    blocks = mats[:, :, idx, :]  # [b, S, k, c, c]
    return blocks.reshape(b, S * k, c, c)


def shuffle_entries(mats: Tensor, reps: int, gen: torch.Generator, pool: dict[int, list[Tensor]] | None = None) -> Shuffled:
    """Each matrix with its entries uniformly permuted, ``reps`` times: ``[b, S·reps, r, c]``, made on
    demand (:class:`Shuffled`).

    Every matrix of one spectrum (a layer's S slices × ``reps`` replicas) gets its own
    ``torch.randperm``; the b models of a zoo, and other layers with as many entries when the same
    ``pool`` is passed, reuse those permutations. Each shuffled matrix is still a uniform
    permutation of its own entries, which is all a layer's randomised spectrum depends on; drawing
    the permutation is the costly part (cache misses of Fisher–Yates), applying it one ``gather``.
    The permutations are drawn here, in order (seeded); the gathers run where the matrices are used.
    """
    _, S, r, c = mats.shape
    n, k = r * c, S * reps
    perms = [] if pool is None else pool.setdefault(n, [])
    while len(perms) < k:
        perms.append(torch.randperm(n, generator=gen))
    return Shuffled(mats, perms[:k], reps)


@dataclass(frozen=True)
class Shuffled:
    """``[b, S·reps, r, c]``: matrix (i, j) is ``mats[i, j // reps]`` with its entries permuted by ``perms[j]``."""

    mats: Tensor  # [b, S, r, c]
    perms: list[Tensor]  # S·reps permutations of r·c entries
    reps: int

    @property
    def shape(self) -> tuple[int, int, int, int]:
        b, S, r, c = self.mats.shape
        return b, S * self.reps, r, c

    @property
    def count(self) -> int:
        return self.shape[0] * self.shape[1]

    def rows(self, a: int, z: int) -> Tensor:
        """Matrices a..z of the flat ``[b·S·reps, r, c]`` stack, and only those."""
        _, k, r, c = self.shape
        if z - a == 1:  # one (large) matrix: no copy of its permutation
            i, j = divmod(a, k)
            return self.mats[i, j // self.reps].reshape(-1)[self.perms[j]].reshape(1, r, c)
        flat = torch.arange(a, z)
        i, j = flat // k, flat % k
        src = self.mats[i, j // self.reps].reshape(z - a, r * c)
        idx = self.perms[0].expand(z - a, -1) if k == 1 else torch.stack(self.perms)[j]
        return torch.gather(src, 1, idx).reshape(z - a, r, c)

    def materialise(self) -> Tensor:
        b, k, r, c = self.shape
        return self.rows(0, b * k).reshape(b, k, r, c)


def _flat(m: Tensor | Shuffled):
    """A job's matrices as one ``[K, r, c]`` stack (a view where possible; a Shuffled stays lazy)."""
    return m if isinstance(m, Shuffled) else m.reshape(-1, *m.shape[-2:])


def summarize(details: pd.DataFrame, models: list[str], table: pd.DataFrame | None) -> pd.DataFrame:
    """One row per model: means over its fitted layers (status ``ok`` or ``random-like``) of
    WeightWatcher's summary metrics, ``alpha_hat`` (mean α·log10 λmax), and ``alpha_hat_ok`` (the
    same mean over ``ok`` layers only, NaN when there is none); ``layers``/``layers_ok`` count them.

    α̂ keeps random-like layers: the ok-only mean is undefined for models whose every layer is
    random-like, and it jumps when a layer's λmax crosses the MP edge (docs/spectral.md).
    """
    if "status" not in details.columns:  # nothing analysable at all (an empty state dict)
        details = pd.DataFrame(columns=["model", "status", *SUMMARY_METRICS])
    status = details["status"].to_numpy()
    fitted = np.isin(status, ["ok", "random-like"])
    ok = status == "ok"
    code = pd.Index(models).get_indexer(details["model"].to_numpy())  # each row's model, as a position
    n = len(models)

    def mean(rows: np.ndarray, col: str) -> np.ndarray:  # per model, over its rows with a value (pandas' skipna)
        if col not in details.columns:
            return np.full(n, np.nan)
        x = details[col].to_numpy(float)
        keep = rows & ~np.isnan(x)
        with np.errstate(invalid="ignore", divide="ignore"):
            return np.bincount(code[keep], x[keep], n) / np.bincount(code[keep], minlength=n)

    out = pd.DataFrame({"model": models, "layers": np.bincount(code[fitted], minlength=n),
                        "layers_ok": np.bincount(code[ok], minlength=n)})
    for m in SUMMARY_METRICS:
        out[m] = mean(fitted, m)
    out = out.assign(alpha_hat=out["alpha_weighted"], alpha_hat_ok=mean(ok, "alpha_weighted"))
    if table is not None:
        keep = [c for c in table.columns if c not in ("hparams", "file", "sha256", "created", "extra")]
        out = out.merge(table[keep].rename(columns={"model_id": "model"}).astype({"model": str}), on="model", how="left")
    return out
