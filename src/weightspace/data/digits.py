"""scikit-learn's bundled 8x8 digits (1,797 examples): small enough for CPU zoos."""

from __future__ import annotations

import numpy as np

from ..errors import ConfigError
from ..safe_input import check_bool, check_float, check_int
from .dataset import Dataset, make_dataset, split_indices, standardise


def load_digits(*, seed=0, val_fraction=0.2, test_fraction=0.2, image=False) -> Dataset:
    """sklearn's bundled 8x8 digits (1797 examples): small enough for CPU zoos."""
    from sklearn.datasets import load_digits as sklearn_digits

    seed = check_int(seed, "seed", 0, 2**32 - 1)
    val_fraction = check_float(val_fraction, "val_fraction", 0.0, 1.0, open_lo=True, open_hi=True)
    test_fraction = check_float(test_fraction, "test_fraction", 0.0, 1.0, open_lo=True, open_hi=True)
    image = check_bool(image, "image")
    if val_fraction + test_fraction >= 1.0:
        raise ConfigError(
            f"val_fraction + test_fraction must be below 1, got {val_fraction} + {test_fraction}"
        )

    raw = sklearn_digits()
    x = np.asarray(raw.data, dtype=np.float64)
    y = np.asarray(raw.target, dtype=np.int64)
    n = len(y)
    n_test = round(test_fraction * n)
    n_val = round(val_fraction * n)

    rest, test_idx, strat1 = split_indices(y, n_test, seed)
    tr_rel, val_rel, strat2 = split_indices(y[rest], n_val, seed)
    idx = {"train": rest[tr_rel], "val": rest[val_rel], "test": test_idx}

    xs, norm = standardise(
        {s: x[i] for s, i in idx.items()}, 1.0 / 16.0, "pixel intensities 0..16"
    )
    ys = {s: y[i] for s, i in idx.items()}
    info = {
        "source": "sklearn.datasets.load_digits (bundled with scikit-learn, offline)",
        "seed": seed,
        "split_method": "sklearn.model_selection.train_test_split: test from all, then val from the rest",
        "stratified": bool(strat1 and strat2),
        "normalisation": norm,
        "options": {
            "seed": seed,
            "val_fraction": val_fraction,
            "test_fraction": test_fraction,
            "image": image,
        },
    }
    shape = (1, 8, 8) if image else (64,)
    return make_dataset("digits", xs, ys, 10, shape, info)
