"""MNIST-1D, built locally from its generator with a fixed seed, so it is identical everywhere."""

from __future__ import annotations

import functools
import random

import numpy as np

from ..safe_input import check_float, check_int
from .dataset import Dataset, make_dataset, split_indices, standardise

MNIST1D_SEED = 42  # mnist1d's own default generation seed (get_dataset_args().seed)


def _package_version(dist: str) -> str | None:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(dist)
    except PackageNotFoundError:
        return None


@functools.lru_cache(maxsize=4)
def generated_arrays(gen_seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """``(x, y, x_test, y_test)`` generated locally (never ``get_dataset``: it downloads).

    Cached because generation takes about a second; arrays are read-only so
    the cache cannot be corrupted. The package reseeds the global ``random``
    and ``numpy`` generators, so their state is restored afterwards.
    """
    from mnist1d.data import get_dataset_args
    from mnist1d.data import make_dataset as generate

    py_state, np_state = random.getstate(), np.random.get_state()
    try:
        args = get_dataset_args()
        args.seed = gen_seed
        ds = generate(args)
    finally:
        random.setstate(py_state)
        np.random.set_state(np_state)
    out = (
        np.asarray(ds["x"], dtype=np.float64),
        np.asarray(ds["y"], dtype=np.int64),
        np.asarray(ds["x_test"], dtype=np.float64),
        np.asarray(ds["y_test"], dtype=np.int64),
    )
    for a in out:
        a.setflags(write=False)
    return out


def load_mnist1d(*, seed=0, val_fraction=0.2) -> Dataset:
    """MNIST-1D built from its generator (fixed seed), so it is identical everywhere."""
    seed = check_int(seed, "seed", 0, 2**32 - 1)
    val_fraction = check_float(val_fraction, "val_fraction", 0.0, 1.0, open_lo=True, open_hi=True)

    x_all, y_all, x_test, y_test = generated_arrays(MNIST1D_SEED)
    n_val = round(val_fraction * len(y_all))
    tr, va, strat = split_indices(y_all, n_val, seed)

    xs, norm = standardise(
        {"train": x_all[tr], "val": x_all[va], "test": x_test},
        1.0,
        "mnist1d make_dataset output (already centred on all 5000 by the generator)",
    )
    ys = {"train": y_all[tr], "val": y_all[va], "test": np.array(y_test)}
    info = {
        "source": "mnist1d.data.make_dataset (generated locally, never downloaded)",
        "generator": {
            "package_version": _package_version("mnist1d"),
            "seed": MNIST1D_SEED,
            "args": "mnist1d.data.get_dataset_args() defaults",
            "num_samples": 5000,
            "train_split": 0.8,
        },
        "seed": seed,
        "split_method": "test = generator's own test set; val carved from its train set "
        "with sklearn.model_selection.train_test_split",
        "stratified": bool(strat),
        "normalisation": norm,
        "options": {"seed": seed, "val_fraction": val_fraction},
    }
    return make_dataset("mnist1d", xs, ys, 10, (40,), info)
