"""Fashion-MNIST from local IDX files (e.g. Debian's ``dataset-fashion-mnist``), never downloaded."""

from __future__ import annotations

import functools
import os
from pathlib import Path

import numpy as np

from ..errors import ConfigError, DataNotFoundError, IdxFormatError
from ..safe_input import check_bool, check_float, check_int, read_idx
from .dataset import Dataset, make_dataset, split_indices, standardise


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
    _, taken, strat = split_indices(y, cap, seed)
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
    seed = check_int(seed, "seed", 0, 2**32 - 1)
    val_fraction = check_float(val_fraction, "val_fraction", 0.0, 1.0, open_lo=True, open_hi=True)
    image = check_bool(image, "image")
    max_train = check_int(max_train, "max_train", 1, none=True)
    max_test = check_int(max_test, "max_test", 1, none=True)
    image_size = check_int(image_size, "image_size", 1, none=True)

    arrays, files = _load_fashion_raw(root)
    x_pool, y_pool = arrays["train_images"], arrays["train_labels"].astype(np.int64)
    x_test_all, y_test_all = arrays["test_images"], arrays["test_labels"].astype(np.int64)
    n_train_file, n_test_file = len(y_pool), len(y_test_all)

    pool_idx, strat_pool = _subset(y_pool, max_train, seed)
    test_idx, strat_test = _subset(y_test_all, max_test, seed)
    y_sub = y_pool[pool_idx]
    n_val = round(val_fraction * len(y_sub))
    tr_rel, va_rel, strat_val = split_indices(y_sub, n_val, seed)
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

    xs, norm = standardise(
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
    return make_dataset("fashion-mnist", xs, ys, len(FASHION_CLASSES), shape, info)
