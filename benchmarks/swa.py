"""SWA against the final SGD model of the same run (same budget): a BatchNorm CNN on Fashion-MNIST.

4 seeds of a CNN (28×28, conv 8-16-16 with BatchNorm, fc 32; 6,000 training images of the official
60k, 2,000 test images), SGD with momentum at a constant learning rate for 16 epochs, a checkpoint
after every epoch. SWA (``torch.optim.swa_utils.get_swa_avg_fn`` folded over the checkpoints of
epochs 9–16, then BatchNorm statistics recomputed on the training split as ``update_bn`` does)
against the epoch-16 SGD model — what users have without averaging. Also: SWA with the averaged
running statistics left as they are, and EMA (decay 0.7 per epoch) with BatchNorm recomputed.

Last line: one JSON object with the figures.
"""

from __future__ import annotations

import json
import time

import torch
from _training import load, train

from weightspace.data import load_fashion_mnist
from weightspace.merge.averaging import ema, swa
from weightspace.merge.batchnorm import recompute_batchnorm
from weightspace.nets import CNN
from weightspace.task import Task
from weightspace.zoo.trainer import HParams

SEEDS, EPOCHS, SWA_START = (1, 2, 3, 4), 16, 9


def main():
    torch.set_num_threads(1)
    ds = load_fashion_mnist(seed=0, image=True, max_train=6000, max_test=2000)
    arch = CNN(1, 28, channels=(8, 16, 16), fc_widths=(32,))
    task = Task(ds, arch)
    hp = HParams(lr=0.05, momentum=0.9, epochs=EPOCHS)
    t = time.perf_counter()
    w, records = train(arch, ds, [hp] * len(SEEDS), list(SEEDS), checkpoint_epochs=range(1, EPOCHS + 1))
    t_train = time.perf_counter() - t
    traj = w.reshape(len(SEEDS), EPOCHS, -1).transpose(0, 1)  # [epochs, seeds, P]
    assert [r["epoch"] for r in records[:EPOCHS]] == list(range(1, EPOCHS + 1))
    x_train = ds.split("train")[0]
    t = time.perf_counter()
    swa_w = recompute_batchnorm(arch, swa(traj, start=SWA_START - 1), x_train)
    t_swa = time.perf_counter() - t
    models = {"sgd_final": traj[-1], "swa": swa_w, "swa_without_bn_recompute": swa(traj, start=SWA_START - 1),
              "ema": recompute_batchnorm(arch, ema(traj, decay=0.7), x_train)}
    acc = {k: task.accuracy(v, "test") for k, v in models.items()}
    loss = {k: task.loss(v, "test") for k, v in models.items()}
    gain = 100 * (acc["swa"] - acc["sgd_final"])
    result = {
        **{f"{k}_test_acc_mean": round(float(v.mean()), 4) for k, v in acc.items()},
        **{f"{k}_test_loss_mean": round(float(v.mean()), 4) for k, v in loss.items()},
        "sgd_final_test_acc_per_seed": [round(float(v), 4) for v in acc["sgd_final"]],
        "swa_test_acc_per_seed": [round(float(v), 4) for v in acc["swa"]],
        "swa_minus_sgd_points_mean": round(float(gain.mean()), 2),
        "swa_better_on_seeds": int((gain > 0).sum()), "seeds": len(SEEDS),
        "swa_to_sgd_error_ratio": round(float((1 - acc["swa"]).mean() / (1 - acc["sgd_final"]).mean()), 3),
        "seconds_training": round(t_train, 1), "seconds_swa_and_bn_recompute": round(t_swa, 3),
    }
    print(f"test acc: SGD final {result['sgd_final_test_acc_mean']:.4f}, SWA {result['swa_test_acc_mean']:.4f} "
          f"(without BN recompute {result['swa_without_bn_recompute_test_acc_mean']:.4f}), EMA {result['ema_test_acc_mean']:.4f}")
    print(json.dumps({"benchmark": "swa", "dataset": "fashion-mnist (6k train, 2k test)", "epochs": EPOCHS,
                      "swa_epochs": [SWA_START, EPOCHS], "threads": 1, "load": load(), **result}))


if __name__ == "__main__":
    main()
