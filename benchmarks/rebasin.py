"""Git Re-Basin and REPAIR: loss barriers between two independently trained models, before and after
permutation alignment, with and without REPAIR.

MLPs (Fashion-MNIST: 12,000 of the official training images, 2,000 test images; 784 → w → w → w →
10, ReLU; widths 32 … 512): two seeds each, SGD with momentum, 10 epochs. (On scikit-learn's digits
the aligned barriers are 0 from width 128 on: the test loss of these overfitted models is lower
between them than at either end, so the cut says nothing.) Barrier = max over 11 λ of test loss on the straight path minus the line between the
endpoints' losses (also for test error, and for the training loss, where overfitting cannot push
the middle of the path below its ends). Weight matching (Git Re-Basin sweeps) and activation
matching (correlations of every hidden neuron's pre-activations on 1,024 training examples), timed.
A BatchNorm CNN (digits 8×8, conv 32-64-64, fc 64, 30 epochs): interpolated running statistics (naive), BatchNorm
statistics reset, and REPAIR, each before and after alignment.

What users use today for the same job is the unaligned path (a plain average); the ratios are
aligned / plain and REPAIR / aligned. Targets: weight matching cuts the barrier at width 512 by ≥ 90%;
REPAIR removes ≥ 60% of the barrier left after alignment (BatchNorm CNN). "Left after alignment" is
read both ways and both are reported: the aligned path with interpolated BatchNorm statistics, and
the aligned path with BatchNorm statistics reset (the stronger baseline). To see why REPAIR helps
or not, the neurons' output std at λ = 0.5 relative to the endpoints' is reported per layer (a
ratio below 1 is the variance collapse REPAIR undoes).

Writes ``curves.csv`` and ``curves.png`` under ``--out`` (default runs/bench-rebasin). Last line: JSON.
"""

from __future__ import annotations

import argparse
import json
import time
from functools import partial
from pathlib import Path

import pandas as pd
import torch
from _training import load, train

from weightspace.align import group_activations, match_activations, match_permutations
from weightspace.data import load_digits, load_fashion_mnist
from weightspace.merge.batchnorm import recompute_batchnorm
from weightspace.merge.figures import plot_interpolation
from weightspace.merge.interpolation import barrier, interpolate, interpolation_curve
from weightspace.nets import CNN, MLP
from weightspace.symmetry import permute
from weightspace.task import Task
from weightspace.zoo.trainer import HParams

WIDTHS = (32, 64, 128, 256, 512)
HP_MLP = HParams(lr=0.05, momentum=0.9, epochs=10)
HP_CNN = HParams(lr=0.05, momentum=0.9, epochs=30)


def timed(fn):
    t = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - t


def pair(arch, ds, hp):
    w, _ = train(arch, ds, [hp, hp], [1, 2])
    return w[0], w[1]


def aligned_variants(arch, task, a, b, x):
    perms_w, t_w = timed(lambda: match_permutations(arch.space, a, b[None]))
    perms_a, t_a = timed(lambda: match_activations(arch, a, b[None], x))
    return {"weight": permute(arch.space, b[None], perms_w)[0], "activation": permute(arch.space, b[None], perms_a)[0]}, \
        {"seconds_weight_matching": round(t_w, 3), "seconds_activation_matching": round(t_a, 3)}


def curves_for(task, a, variants: dict) -> pd.DataFrame:
    """variants: label → (model b, interpolation_curve options)"""
    return pd.concat([interpolation_curve(task, a, b, **opts).assign(variant=label)
                      for label, (b, opts) in variants.items()], ignore_index=True)


def variance_ratio(arch, a, b, x, *, reset_batchnorm: bool) -> dict:
    """Why REPAIR helps or not: per group, the mean over neurons of (std of the neuron's output at
    λ = 0.5) / (mean of its std in the two endpoints) — variance collapse is a ratio below 1."""
    mid = interpolate(a, b, torch.tensor([0.5]))
    if reset_batchnorm:
        mid = recompute_batchnorm(arch, mid, x)
    ends, got = group_activations(arch, torch.stack([a, b]), x), group_activations(arch, mid, x)
    return {g: round(float((got[g][0].std(-1) / (0.5 * (e[0].std(-1) + e[1].std(-1)) + 1e-8)).mean()), 3)
            for g, e in ends.items()}


def barriers(curves: pd.DataFrame) -> dict:
    return {v: {"loss": round(barrier(df), 4), "error": round(barrier(df, "error"), 4)}
            for v, df in curves.groupby("variant", sort=False)}


def cut(before: float, after: float) -> float | None:
    return None if before <= 0 else round(1 - after / before, 3)


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--out", default="runs/bench-rebasin")
    parser.add_argument("--widths", default=",".join(map(str, WIDTHS)))
    args = parser.parse_args()
    torch.set_num_threads(1)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    results, all_curves = {"mlp": {}}, []

    ds = load_fashion_mnist(seed=0, max_train=12000, max_test=2000)
    x = ds.split("train")[0][:1024]
    for width in map(int, args.widths.split(",")):
        arch = MLP(784, (width,) * 3, 10)
        task = Task(ds, arch)
        (a, b), t_train = timed(partial(pair, arch, ds, HP_MLP))
        aligned, times = aligned_variants(arch, task, a, b, x)
        curves = curves_for(task, a, {
            "plain": (b, {}), "weight matching": (aligned["weight"], {}),
            "activation matching": (aligned["activation"], {}),
            "plain + REPAIR": (b, {"repair_neurons": True}),
            "weight matching + REPAIR": (aligned["weight"], {"repair_neurons": True}),
        })
        bars = barriers(curves)
        train_curves = curves_for(task, a, {v: (m, {"split": "train"}) for v, m in
                                            (("plain", b), ("weight matching", aligned["weight"]),
                                             ("activation matching", aligned["activation"]))})
        train_bars = barriers(train_curves)
        row = {"barriers": bars, "train_barriers": train_bars,
               "weight_matching_cut_train_loss": cut(train_bars["plain"]["loss"], train_bars["weight matching"]["loss"]),
               "activation_matching_cut_train_loss": cut(train_bars["plain"]["loss"],
                                                         train_bars["activation matching"]["loss"]),
               "std_ratio_midpoint_weight_matching": variance_ratio(arch, a, aligned["weight"], x,
                                                                    reset_batchnorm=False),
               **times, "seconds_training_pair": round(t_train, 1),
               "test_acc_endpoints": [round(float(v), 4) for v in task.accuracy(torch.stack([a, b]))],
               "weight_matching_cut": cut(bars["plain"]["loss"], bars["weight matching"]["loss"]),
               "activation_matching_cut": cut(bars["plain"]["loss"], bars["activation matching"]["loss"]),
               "repair_cut_after_weight_matching": cut(bars["weight matching"]["loss"],
                                                       bars["weight matching + REPAIR"]["loss"])}
        results["mlp"][width] = row
        all_curves.append(curves.assign(model=f"mlp-{width}"))
        print(f"MLP width {width:4d}: loss barrier plain {bars['plain']['loss']:.4f}, weight matching "
              f"{bars['weight matching']['loss']:.4f} (cut {row['weight_matching_cut']}), activation matching "
              f"{bars['activation matching']['loss']:.4f}, +REPAIR {bars['weight matching + REPAIR']['loss']:.4f}; "
              f"matching {times['seconds_weight_matching']:.3f} s / {times['seconds_activation_matching']:.3f} s; "
              f"train-loss barrier plain {train_bars['plain']['loss']:.4f}, weight matching "
              f"{train_bars['weight matching']['loss']:.4f}",
              flush=True)

    ds_img = load_digits(seed=0, image=True)
    x_img = ds_img.split("train")[0][:1024]
    arch = CNN(1, 8, channels=(32, 64, 64), fc_widths=(64,))
    task = Task(ds_img, arch)
    (a, b), t_train = timed(partial(pair, arch, ds_img, HP_CNN))
    aligned, times = aligned_variants(arch, task, a, b, x_img)
    variants = {"plain (interpolated BN stats)": (b, {"reset_batchnorm": False}),
                "plain + BN reset": (b, {}),
                "plain + REPAIR": (b, {"repair_neurons": True})}
    for m in ("weight", "activation"):
        variants[f"{m} matching (interpolated BN stats)"] = (aligned[m], {"reset_batchnorm": False})
        variants[f"{m} matching + BN reset"] = (aligned[m], {})
        variants[f"{m} matching + REPAIR"] = (aligned[m], {"repair_neurons": True})
    curves = curves_for(task, a, variants)
    bars = barriers(curves)
    results["cnn_bn"] = {
        "barriers": bars, **times, "seconds_training_pair": round(t_train, 1),
        "std_ratio_midpoint_weight_matching_interpolated_bn": variance_ratio(arch, a, aligned["weight"], x_img,
                                                                             reset_batchnorm=False),
        "std_ratio_midpoint_weight_matching_bn_reset": variance_ratio(arch, a, aligned["weight"], x_img,
                                                                      reset_batchnorm=True),
        "test_acc_endpoints": [round(float(v), 4) for v in task.accuracy(torch.stack([a, b]))],
        "weight_matching_cut": cut(bars["plain + BN reset"]["loss"], bars["weight matching + BN reset"]["loss"]),
        "repair_cut_after_weight_matching": cut(bars["weight matching + BN reset"]["loss"],
                                                bars["weight matching + REPAIR"]["loss"]),
        "repair_cut_after_weight_matching_interpolated_bn": cut(
            bars["weight matching (interpolated BN stats)"]["loss"], bars["weight matching + REPAIR"]["loss"]),
        "repair_cut_after_activation_matching": cut(bars["activation matching + BN reset"]["loss"],
                                                    bars["activation matching + REPAIR"]["loss"]),
    }
    all_curves.append(curves.assign(model="cnn-bn"))
    for v, bb in bars.items():
        print(f"CNN+BN {v:45s} loss barrier {bb['loss']:.4f}  error barrier {bb['error']:.4f}")

    curves = pd.concat(all_curves, ignore_index=True)
    curves.to_csv(out / "curves.csv", index=False)
    widest = f"mlp-{max(map(int, args.widths.split(',')))}"
    fig = plot_interpolation(curves[curves["model"] == widest], title=f"{widest}, Fashion-MNIST")
    fig.savefig(out / "curves.png", dpi=120)
    plot_interpolation(curves[curves["model"] == "cnn-bn"], title="BatchNorm CNN, digits").savefig(
        out / "curves-cnn.png", dpi=120)
    wide = results["mlp"][max(results["mlp"])]
    summary = {
        "target_weight_matching_cut_at_widest_ge_0.9": wide["weight_matching_cut"],
        "met_weight_matching": (wide["weight_matching_cut"] or 0) >= 0.9,
        "weight_matching_cut_at_widest_train_loss": wide["weight_matching_cut_train_loss"],
        "target_repair_cut_cnn_bn_ge_0.6_vs_bn_reset": results["cnn_bn"]["repair_cut_after_weight_matching"],
        "met_repair_vs_bn_reset": (results["cnn_bn"]["repair_cut_after_weight_matching"] or 0) >= 0.6,
        "target_repair_cut_cnn_bn_ge_0.6_vs_interpolated_bn":
            results["cnn_bn"]["repair_cut_after_weight_matching_interpolated_bn"],
        "met_repair_vs_interpolated_bn":
            (results["cnn_bn"]["repair_cut_after_weight_matching_interpolated_bn"] or 0) >= 0.6,
    }
    print(json.dumps({"benchmark": "rebasin", "dataset": "fashion-mnist (MLPs), digits (CNN)", "threads": 1, "load": load(), **summary,
                      **results}))


if __name__ == "__main__":
    main()
