"""Offline data sets with fixed, seeded splits.

Every loader records how it split and normalised the data in ``Dataset.info``
so that a model zoo can be traced back to the exact examples it was trained on.
Nothing here touches the network.
"""

from __future__ import annotations

import functools
import inspect
import math
import os
import random
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
from torch import Tensor

from weightspace.errors import ConfigError, DataNotFoundError, IdxFormatError
from weightspace.safe_input import read_idx

__all__ = [
    "DATASETS",
    "Dataset",
    "IdxFormatError",
    "load_dataset",
    "load_digits",
    "load_fashion_mnist",
    "load_mnist1d",
    "read_idx",
]

SPLITS = ("train", "val", "test")


@dataclass(frozen=True, eq=False)
class Dataset:
    """Train/val/test tensors plus the record of how they were made.

    ``eq=False``: comparing tensors element-wise has no single truth value.
    """

    name: str
    x_train: Tensor
    y_train: Tensor
    x_val: Tensor
    y_val: Tensor
    x_test: Tensor
    y_test: Tensor
    num_classes: int
    input_shape: tuple[int, ...]
    info: dict = field(default_factory=dict)

    def split(self, name: str) -> tuple[Tensor, Tensor]:
        if name not in SPLITS:
            raise ConfigError(
                f"unknown split {name!r} for data set {self.name!r}; allowed: {', '.join(SPLITS)}"
            )
        return getattr(self, f"x_{name}"), getattr(self, f"y_{name}")

    @property
    def sizes(self) -> dict[str, int]:
        return {s: int(self.split(s)[1].shape[0]) for s in SPLITS}

    def describe(self) -> dict:
        """JSON-ready summary, safe to mutate (a deep copy of ``info``)."""
        out = _jsonable(self.info)
        out.update(
            name=self.name,
            num_classes=int(self.num_classes),
            input_shape=[int(d) for d in self.input_shape],
            sizes=self.sizes,
        )
        return out


# --------------------------------------------------------------------------- helpers


def _jsonable(obj: Any) -> Any:
    if isinstance(obj, dict):
        return {str(k): _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_jsonable(v) for v in obj]
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if isinstance(obj, Path):
        return str(obj)
    return obj


def _check_seed(seed: Any) -> int:
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or not 0 <= seed < 2**32:
        raise ConfigError(f"seed must be an integer in [0, 2**32), got {seed!r}")
    return int(seed)


def _check_fraction(name: str, value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0.0 < value < 1.0:
        raise ConfigError(f"{name} must be a number strictly between 0 and 1, got {value!r}")
    return float(value)


def _check_bool(name: str, value: Any) -> bool:
    if not isinstance(value, (bool, np.bool_)):
        raise ConfigError(f"{name} must be True or False, got {value!r}")
    return bool(value)


def _check_cap(name: str, value: Any) -> int | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
        raise ConfigError(f"{name} must be a positive integer or None, got {value!r}")
    return int(value)


def _split_indices(y: np.ndarray, n_take: int, seed: int) -> tuple[np.ndarray, np.ndarray, bool]:
    """Seeded split of ``arange(len(y))`` into (rest, taken), stratified when possible.

    Falls back to a plain seeded shuffle when some class is too rare to
    stratify (tiny subsets); the caller records which one happened.
    """
    from sklearn.model_selection import train_test_split

    idx = np.arange(len(y))
    if n_take <= 0 or n_take >= len(y):
        raise ConfigError(
            f"cannot take {n_take} of {len(y)} examples; every split needs at least one example"
        )
    try:
        rest, taken = train_test_split(idx, test_size=n_take, random_state=seed, stratify=y)
        stratified = True
    except ValueError:
        rest, taken = train_test_split(idx, test_size=n_take, random_state=seed, stratify=None)
        stratified = False
    return np.sort(rest), np.sort(taken), stratified


def _standardise(
    parts: dict[str, np.ndarray], scale: float, source_note: str
) -> tuple[dict[str, np.ndarray], dict]:
    """Scale, then standardise with one global mean/std fitted on train only.

    One scalar pair (not per-feature) keeps the transform trivially invertible
    and identical for flat and image layouts.
    """
    train = parts["train"].astype(np.float64) * scale
    mean = float(train.mean())
    std = float(train.std())
    if not math.isfinite(std) or std < 1e-12:
        std = 1.0
    out = {
        k: np.ascontiguousarray(((v.astype(np.float64) * scale - mean) / std).astype(np.float32))
        for k, v in parts.items()
    }
    norm = {
        "kind": "global_standardise",
        "scale": float(scale),
        "mean": mean,
        "std": std,
        "fit_on": "train",
        "formula": "x = (raw * scale - mean) / std",
        "raw": source_note,
    }
    return out, norm


def _make_dataset(
    name: str,
    xs: dict[str, np.ndarray],
    ys: dict[str, np.ndarray],
    num_classes: int,
    input_shape: tuple[int, ...],
    info: dict,
) -> Dataset:
    tensors: dict[str, Tensor] = {}
    for s in SPLITS:
        x = np.ascontiguousarray(xs[s].reshape((len(xs[s]),) + tuple(input_shape)), dtype=np.float32)
        y = np.ascontiguousarray(ys[s], dtype=np.int64)
        tensors[f"x_{s}"] = torch.from_numpy(x)
        tensors[f"y_{s}"] = torch.from_numpy(y)
    sizes = {s: int(len(ys[s])) for s in SPLITS}
    total = sum(sizes.values())
    info = dict(info)
    info["sizes"] = sizes
    info["fractions"] = {s: sizes[s] / total for s in SPLITS}
    return Dataset(
        name=name,
        num_classes=int(num_classes),
        input_shape=tuple(int(d) for d in input_shape),
        info=_jsonable(info),
        **tensors,
    )


# --------------------------------------------------------------------------- digits


def load_digits(*, seed=0, val_fraction=0.2, test_fraction=0.2, image=False) -> Dataset:
    """sklearn's bundled 8x8 digits (1797 examples): small enough for CPU zoos."""
    from sklearn.datasets import load_digits as _sk_load_digits

    seed = _check_seed(seed)
    val_fraction = _check_fraction("val_fraction", val_fraction)
    test_fraction = _check_fraction("test_fraction", test_fraction)
    image = _check_bool("image", image)
    if val_fraction + test_fraction >= 1.0:
        raise ConfigError(
            f"val_fraction + test_fraction must be below 1, got {val_fraction} + {test_fraction}"
        )

    raw = _sk_load_digits()
    x = np.asarray(raw.data, dtype=np.float64)
    y = np.asarray(raw.target, dtype=np.int64)
    n = len(y)
    n_test = int(round(test_fraction * n))
    n_val = int(round(val_fraction * n))

    rest, test_idx, strat1 = _split_indices(y, n_test, seed)
    tr_rel, val_rel, strat2 = _split_indices(y[rest], n_val, seed)
    idx = {"train": rest[tr_rel], "val": rest[val_rel], "test": test_idx}

    xs, norm = _standardise(
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
    return _make_dataset("digits", xs, ys, 10, shape, info)


# --------------------------------------------------------------------------- mnist1d


def _package_version(dist: str) -> str | None:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(dist)
    except PackageNotFoundError:
        return None


MNIST1D_SEED = 42  # mnist1d's own default generation seed (get_dataset_args().seed)


@functools.lru_cache(maxsize=4)
def _mnist1d_arrays(gen_seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Generate MNIST-1D locally (never ``get_dataset``: it downloads).

    Cached because generation takes about a second; arrays are read-only so
    the cache cannot be corrupted. The package reseeds the global ``random``
    and ``numpy`` generators, so their state is restored afterwards.
    """
    from mnist1d.data import get_dataset_args, make_dataset

    py_state, np_state = random.getstate(), np.random.get_state()
    try:
        args = get_dataset_args()
        args.seed = gen_seed
        ds = make_dataset(args)
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
    seed = _check_seed(seed)
    val_fraction = _check_fraction("val_fraction", val_fraction)

    x_all, y_all, x_test, y_test = _mnist1d_arrays(MNIST1D_SEED)
    n_val = int(round(val_fraction * len(y_all)))
    tr, va, strat = _split_indices(y_all, n_val, seed)

    xs, norm = _standardise(
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
    return _make_dataset("mnist1d", xs, ys, 10, (40,), info)


# --------------------------------------------------------------------------- IDX / fashion-mnist

@functools.lru_cache(maxsize=8)
def _read_idx_cached(path: str, mtime_ns: int, size: int) -> np.ndarray:
    """Keyed on mtime and size so a replaced file is reread; read-only to keep the cache sound."""
    arr = read_idx(path)
    arr.setflags(write=False)
    return arr


FASHION_FILES = {
    "train_images": "train-images-idx3-ubyte",
    "train_labels": "train-labels-idx1-ubyte",
    "test_images": "t10k-images-idx3-ubyte",
    "test_labels": "t10k-labels-idx1-ubyte",
}
FASHION_CLASSES = [
    "T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
    "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot",
]  # fmt: skip
DEFAULT_FASHION_ROOT = "/usr/share/datasets/fashion-mnist"


def _fashion_hint(root: Path) -> str:
    names = ", ".join(f"{n}[.gz]" for n in FASHION_FILES.values())
    return (
        f"expected the four Fashion-MNIST IDX files in {root}: {names}. "
        "Get them with `sudo apt-get install dataset-fashion-mnist` (Debian/Ubuntu; installs "
        f"them gzipped under {DEFAULT_FASHION_ROOT}), or pass root=DIR pointing to a directory "
        "that holds the four IDX files (plain or .gz)."
    )


def _find_idx(root: Path, stem: str) -> Path | None:
    # Some mirrors spell the original MNIST names with a dot (train-images.idx3-ubyte).
    dotted = stem.replace("-idx", ".idx", 1)
    for cand in (stem, stem + ".gz", dotted, dotted + ".gz"):
        p = root / cand
        if p.is_file():
            return p
    return None


def _load_fashion_raw(root: Path) -> tuple[dict[str, np.ndarray], dict[str, str]]:
    if not root.is_dir():
        raise DataNotFoundError(f"Fashion-MNIST directory {root} does not exist; " + _fashion_hint(root))
    paths: dict[str, Path] = {}
    missing = []
    for key, stem in FASHION_FILES.items():
        p = _find_idx(root, stem)
        if p is None:
            missing.append(stem)
        else:
            paths[key] = p
    if missing:
        raise DataNotFoundError(
            f"Fashion-MNIST files missing in {root}: {', '.join(missing)}; " + _fashion_hint(root)
        )
    arrays = {}
    for key, p in paths.items():
        st = p.stat()
        arrays[key] = _read_idx_cached(str(p), st.st_mtime_ns, st.st_size)

    for part in ("train", "test"):
        xi, yi = arrays[f"{part}_images"], arrays[f"{part}_labels"]
        pi, pl = paths[f"{part}_images"], paths[f"{part}_labels"]
        if xi.ndim != 3 or xi.dtype != np.uint8:
            raise IdxFormatError(f"{pi} should hold uint8 images (N, H, W), got {xi.dtype} {xi.shape}")
        if yi.ndim != 1 or yi.dtype != np.uint8:
            raise IdxFormatError(f"{pl} should hold uint8 labels (N,), got {yi.dtype} {yi.shape}")
        if len(xi) != len(yi):
            raise IdxFormatError(f"{pi} holds {len(xi)} images but {pl} holds {len(yi)} labels")
        if len(yi) and int(yi.max()) >= len(FASHION_CLASSES):
            raise IdxFormatError(f"{pl} has label {int(yi.max())}; Fashion-MNIST labels are 0..9")
    if arrays["train_images"].shape[1:] != arrays["test_images"].shape[1:]:
        raise IdxFormatError(
            f"train images are {arrays['train_images'].shape[1:]} but test images are "
            f"{arrays['test_images'].shape[1:]} in {root}"
        )
    return arrays, {k: str(p) for k, p in paths.items()}


def _subset(y: np.ndarray, cap: int | None, seed: int) -> tuple[np.ndarray, bool | None]:
    if cap is None or cap >= len(y):
        return np.arange(len(y)), None
    _, taken, strat = _split_indices(y, cap, seed)
    return taken, strat


def load_fashion_mnist(
    *,
    root=DEFAULT_FASHION_ROOT,
    seed=0,
    val_fraction=1 / 6,
    image=False,
    max_train=None,
    max_test=None,
    image_size=None,
) -> Dataset:
    """Fashion-MNIST from local IDX files (e.g. Debian's ``dataset-fashion-mnist``).

    ``max_train`` caps the official 60k training file *before* val is carved
    out of it, and ``max_test`` caps the 10k test file; both subsets are
    seeded and stratified so small CPU zoos still see every class.
    ``image_size`` (a divisor of the file's side, e.g. 14 or 7 for 28) averages
    non-overlapping pixel blocks: CNN zoos on CPU cost a quarter per halving.
    """
    if not isinstance(root, (str, os.PathLike)):
        raise ConfigError(f"root must be a directory path, got {root!r}")
    root = Path(root).expanduser()
    seed = _check_seed(seed)
    val_fraction = _check_fraction("val_fraction", val_fraction)
    image = _check_bool("image", image)
    max_train = _check_cap("max_train", max_train)
    max_test = _check_cap("max_test", max_test)
    image_size = _check_cap("image_size", image_size)

    arrays, files = _load_fashion_raw(root)
    x_pool, y_pool = arrays["train_images"], arrays["train_labels"].astype(np.int64)
    x_test_all, y_test_all = arrays["test_images"], arrays["test_labels"].astype(np.int64)
    n_train_file, n_test_file = len(y_pool), len(y_test_all)

    pool_idx, strat_pool = _subset(y_pool, max_train, seed)
    test_idx, strat_test = _subset(y_test_all, max_test, seed)
    y_sub = y_pool[pool_idx]
    n_val = int(round(val_fraction * len(y_sub)))
    tr_rel, va_rel, strat_val = _split_indices(y_sub, n_val, seed)
    tr, va = pool_idx[tr_rel], pool_idx[va_rel]

    h, w = x_pool.shape[1:]
    factor = 1
    if image_size is not None:
        if h != w or h % image_size:
            raise ConfigError(f"image_size must divide the images' side ({h}x{w} in {root}), got {image_size}")
        factor = h // image_size
        h = w = image_size

    def flat(a: np.ndarray) -> np.ndarray:
        if factor > 1:  # block means, in float64 before scaling: exact and order-free
            a = a.reshape(len(a), h, factor, w, factor).mean(axis=(2, 4))
        return a.reshape(len(a), -1)

    xs, norm = _standardise(
        {"train": flat(x_pool[tr]), "val": flat(x_pool[va]), "test": flat(x_test_all[test_idx])},
        1.0 / 255.0,
        "uint8 pixel intensities 0..255" + (f", averaged over {factor}x{factor} blocks" if factor > 1 else ""),
    )
    ys = {"train": y_pool[tr], "val": y_pool[va], "test": y_test_all[test_idx]}
    info = {
        "source": f"Fashion-MNIST IDX files in {root}",
        "files": files,
        "file_sizes": {"train": n_train_file, "test": n_test_file},
        "class_names": FASHION_CLASSES,
        "seed": seed,
        "split_method": "optional stratified subsets of the train/test files (max_train, max_test), "
        "then val carved from the train subset with sklearn.model_selection.train_test_split",
        "stratified": {
            "max_train_subset": strat_pool,
            "max_test_subset": strat_test,
            "val": bool(strat_val),
        },
        "normalisation": norm,
        "options": {
            "root": str(root),
            "seed": seed,
            "val_fraction": val_fraction,
            "image": image,
            "max_train": max_train,
            "max_test": max_test,
            "image_size": image_size,
        },
    }
    shape = (1, int(h), int(w)) if image else (int(h) * int(w),)
    return _make_dataset("fashion-mnist", xs, ys, len(FASHION_CLASSES), shape, info)


# --------------------------------------------------------------------------- registry

DATASETS: dict[str, Callable[..., Dataset]] = {
    "digits": load_digits,
    "mnist1d": load_mnist1d,
    "fashion-mnist": load_fashion_mnist,
}


def _loader_options(fn: Callable[..., Dataset]) -> list[str]:
    return [
        p.name
        for p in inspect.signature(fn).parameters.values()
        if p.kind in (p.KEYWORD_ONLY, p.POSITIONAL_OR_KEYWORD)
    ]


def load_dataset(name: str, **options) -> Dataset:
    """Look a data set up by the name used in configs; options are checked up front."""
    if not isinstance(name, str) or name not in DATASETS:
        raise ConfigError(
            f"unknown data set {name!r}; allowed: {', '.join(sorted(DATASETS))}"
        )
    fn = DATASETS[name]
    allowed = _loader_options(fn)
    unknown = sorted(set(options) - set(allowed))
    if unknown:
        raise ConfigError(
            f"unknown option(s) {', '.join(map(repr, unknown))} for data set {name!r}; "
            f"allowed: {', '.join(allowed)}"
        )
    return fn(**options)
