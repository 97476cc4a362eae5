"""Model soups of fine-tunes of one pretrained model: best single model, uniform soup, greedy soup
(and how many ingredients it took), learned soup — test accuracy.

Fashion-MNIST (12,000 training images of the official 60k, of which 2,000 held out for validation;
the full 10k test set), an MLP 784 → 128 → 10 pretrained for 3 epochs, then 24 fine-tunes of 3
epochs from it with varied hyper-parameters (SGD or Adam, learning rate log-uniform, weight decay,
dropout, training fraction, seed). Greedy and learned soups use the validation split only; all
numbers below are test accuracy. What users do today is keep the best single model (by validation
accuracy): the ratios are against it.

Last line: one JSON object with the figures.
"""

from __future__ import annotations

import json
import time

import numpy as np
import torch
from _training import load, train

from weightspace.data import load_fashion_mnist
from weightspace.merge.soups import greedy_soup, learned_soup, uniform_soup
from weightspace.nets import MLP
from weightspace.task import Task
from weightspace.zoo.trainer import HParams

N_FINETUNES, SEED = 24, 0


def hyperparameters(n: int, seed: int) -> list[HParams]:
    rng = np.random.default_rng(seed)
    out = []
    for i in range(n):
        adam = i % 2 == 1
        lr = float(np.exp(rng.uniform(np.log(1e-4), np.log(3e-3)))) if adam else \
            float(np.exp(rng.uniform(np.log(0.01), np.log(0.1))))
        out.append(HParams(optimizer="adam" if adam else "sgd", lr=lr, epochs=3,
                           weight_decay=float(rng.choice([0.0, 1e-4, 1e-3])),
                           dropout=float(rng.choice([0.0, 0.1, 0.2])),
                           train_fraction=float(rng.choice([0.8, 1.0]))))
    return out


def main():
    torch.set_num_threads(1)
    ds = load_fashion_mnist(seed=SEED, max_train=12000)
    arch = MLP(784, (128,), 10)
    task = Task(ds, arch)
    t0 = time.perf_counter()
    pre, _ = train(arch, ds, [HParams(lr=0.05, epochs=3)], [SEED])
    hps = hyperparameters(N_FINETUNES, SEED)
    fine, _ = train(arch, ds, hps, list(range(1, N_FINETUNES + 1)), init=pre[0])
    t_train = time.perf_counter() - t0

    val = task.accuracy(fine, "val")
    test = task.accuracy(fine, "test")
    best = int(val.argmax())
    t = time.perf_counter()
    greedy, table = greedy_soup(fine, lambda w: task.accuracy(w, "val"))
    t_greedy = time.perf_counter() - t
    strict, strict_table = greedy_soup(fine, lambda w: task.accuracy(w, "val"), strict=True)
    t = time.perf_counter()
    learned, _ = learned_soup(arch, fine, *ds.split("val"), steps=100)
    t_learned = time.perf_counter() - t
    soups = {"uniform": uniform_soup(fine), "greedy": greedy, "greedy_strict": strict, "learned": learned}
    acc = {k: float(v) for k, v in zip(soups, task.accuracy(torch.stack(list(soups.values())), "test"))}
    result = {
        "pretrained_test_acc": round(float(task.accuracy(pre, "test")), 4),
        "best_single_test_acc": round(float(test[best]), 4),
        "best_single_by_test_test_acc": round(float(test.max()), 4),
        "mean_single_test_acc": round(float(test.mean()), 4),
        **{f"{k}_soup_test_acc": round(v, 4) for k, v in acc.items()},
        "greedy_ingredients": int(table["taken"].sum()),
        "greedy_strict_ingredients": int(strict_table["taken"].sum()),
        "ingredients_of": N_FINETUNES,
        **{f"{k}_minus_best_single_points": round(100 * (v - float(test[best])), 2) for k, v in acc.items()},
        **{f"{k}_to_best_single_error_ratio": round((1 - v) / (1 - float(test[best])), 3) for k, v in acc.items()},
        "greedy_ge_best_single": acc["greedy"] >= float(test[best]),
        "seconds_training": round(t_train, 1), "seconds_greedy": round(t_greedy, 2),
        "seconds_learned_100_steps": round(t_learned, 2),
    }
    print(f"best single {result['best_single_test_acc']:.4f}  uniform {acc['uniform']:.4f}  greedy {acc['greedy']:.4f} "
          f"({result['greedy_ingredients']} of {N_FINETUNES})  learned {acc['learned']:.4f}")
    print(json.dumps({"benchmark": "soups", "dataset": "fashion-mnist (12k train)", "seed": SEED, "threads": 1,
                      "load": load(), **result}))


if __name__ == "__main__":
    main()
