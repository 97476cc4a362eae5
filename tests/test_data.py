"""Data sets: seeded splits, train-only normalisation, IDX parsing, offline errors."""

from __future__ import annotations

import gzip
import json
import struct
from pathlib import Path

import numpy as np
import pytest
import torch

from weightspace.data import (
    DATASETS,
    Dataset,
    IdxFormatError,
    load_dataset,
    load_digits,
    load_fashion_mnist,
    load_mnist1d,
    read_idx,
)
from weightspace.data.mnist1d import generated_arrays
from weightspace.errors import ConfigError, DataNotFoundError

REAL_FASHION = Path("/usr/share/datasets/fashion-mnist")


# --------------------------------------------------------------------------- helpers


def row_hashes(x: torch.Tensor) -> set[bytes]:
    flat = x.reshape(len(x), -1).numpy()
    return {r.tobytes() for r in flat}


def write_idx(path: Path, arr: np.ndarray, *, magic: int | None = None, truncate: int = 0) -> Path:
    arr = np.ascontiguousarray(arr, dtype=np.uint8)
    if magic is None:
        magic = 0x0800 | arr.ndim
    payload = struct.pack(">I", magic) + b"".join(struct.pack(">I", d) for d in arr.shape)
    payload += arr.tobytes()
    if truncate:
        payload = payload[:-truncate]
    if path.suffix == ".gz":
        with gzip.open(path, "wb") as fh:
            fh.write(payload)
    else:
        path.write_bytes(payload)
    return path


def make_fashion_dir(root: Path, *, n_train=120, n_test=40, gz=True, size=28, seed=0) -> Path:
    rng = np.random.default_rng(seed)
    root.mkdir(parents=True, exist_ok=True)
    ext = ".gz" if gz else ""
    y_tr = np.arange(n_train) % 10
    y_te = np.arange(n_test) % 10
    # Class-dependent brightness so examples differ and labels matter.
    x_tr = rng.integers(0, 200, (n_train, size, size)) + y_tr[:, None, None] * 5
    x_te = rng.integers(0, 200, (n_test, size, size)) + y_te[:, None, None] * 5
    write_idx(root / f"train-images-idx3-ubyte{ext}", x_tr)
    write_idx(root / f"train-labels-idx1-ubyte{ext}", y_tr)
    write_idx(root / f"t10k-images-idx3-ubyte{ext}", x_te)
    write_idx(root / f"t10k-labels-idx1-ubyte{ext}", y_te)
    return root


def assert_tensor_types(ds: Dataset) -> None:
    for s in ("train", "val", "test"):
        x, y = ds.split(s)
        assert x.dtype == torch.float32 and x.is_contiguous()
        assert y.dtype == torch.int64
        assert tuple(x.shape[1:]) == ds.input_shape
        assert len(x) == len(y) > 0


@pytest.fixture(scope="module")
def digits() -> Dataset:
    return load_digits(seed=0)


# --------------------------------------------------------------------------- digits


def test_digits_sizes_and_disjoint(digits):
    sizes = digits.describe()["sizes"]
    assert sum(sizes.values()) == 1797
    assert sizes["test"] == round(0.2 * 1797) and sizes["val"] == round(0.2 * 1797)
    assert_tensor_types(digits)
    assert digits.input_shape == (64,) and digits.num_classes == 10
    h = {s: row_hashes(digits.split(s)[0]) for s in ("train", "val", "test")}
    # sklearn digits has no duplicate rows, so hashes identify examples.
    assert len(h["train"]) == sizes["train"]
    assert not (h["train"] & h["val"]) and not (h["train"] & h["test"]) and not (h["val"] & h["test"])
    assert len(h["train"] | h["val"] | h["test"]) == 1797


def test_digits_stratified(digits):
    for s in ("train", "val", "test"):
        counts = torch.bincount(digits.split(s)[1], minlength=10).double()
        frac = counts / counts.sum()
        assert torch.all((frac - 0.1).abs() < 0.02), (s, counts)


def test_digits_train_only_normalisation(digits):
    x = digits.x_train
    assert abs(x.mean().item()) < 1e-5 and abs(x.std(unbiased=False).item() - 1) < 1e-4
    norm = digits.info["normalisation"]
    assert norm["kind"] == "global_standardise" and norm["fit_on"] == "train"
    assert norm["scale"] == pytest.approx(1 / 16)
    # Recompute the statistics from raw train pixels: they must match what was recorded.
    raw_train = x.double() * norm["std"] + norm["mean"]
    assert raw_train.mean().item() == pytest.approx(norm["mean"], abs=1e-6)
    assert (raw_train * 16).round().min() >= 0 and (raw_train * 16).round().max() <= 16
    # Val/test are transformed with the train numbers, so they are not exactly standardised.
    assert abs(digits.x_val.mean().item()) > 1e-7 or abs(digits.x_test.mean().item()) > 1e-7


def test_digits_determinism_and_seed(digits):
    again = load_digits(seed=0)
    for s in ("train", "val", "test"):
        assert torch.equal(again.split(s)[0], digits.split(s)[0])
        assert torch.equal(again.split(s)[1], digits.split(s)[1])
    other = load_digits(seed=1)
    assert row_hashes(other.x_test) != row_hashes(digits.x_test)
    assert other.info["seed"] == 1 and digits.info["seed"] == 0


def test_digits_image_shape_and_fractions():
    ds = load_digits(seed=3, image=True, val_fraction=0.1, test_fraction=0.3)
    assert ds.input_shape == (1, 8, 8) and ds.x_train.shape[1:] == (1, 8, 8)
    assert_tensor_types(ds)
    assert ds.describe()["sizes"]["test"] == round(0.3 * 1797)
    assert ds.info["options"] == {"seed": 3, "val_fraction": 0.1, "test_fraction": 0.3, "image": True}
    flat = load_digits(seed=3, val_fraction=0.1, test_fraction=0.3)
    assert torch.equal(ds.x_train.reshape(len(ds.x_train), -1), flat.x_train)


def test_describe_is_json_and_split_errors(digits):
    d = digits.describe()
    json.dumps(d)
    for key in ("name", "num_classes", "input_shape", "sizes", "source", "seed", "fractions", "normalisation"):
        assert key in d
    assert d["name"] == "digits" and d["input_shape"] == [64]
    assert sum(d["fractions"].values()) == pytest.approx(1.0)
    d["normalisation"]["mean"] = 123.0  # describe() must hand out a copy
    assert digits.info["normalisation"]["mean"] != 123.0
    with pytest.raises(ConfigError, match="train, val, test"):
        digits.split("validation")


def test_digits_bad_options():
    with pytest.raises(ConfigError, match="below 1"):
        load_digits(val_fraction=0.5, test_fraction=0.5)
    with pytest.raises(ConfigError, match="val_fraction"):
        load_digits(val_fraction=0)
    with pytest.raises(ConfigError, match="seed"):
        load_digits(seed=-1)


# --------------------------------------------------------------------------- mnist1d


@pytest.fixture(scope="module")
def mnist1d_ds() -> Dataset:
    return load_mnist1d(seed=0)


def test_mnist1d_never_downloads(monkeypatch):
    import mnist1d.data

    def boom(*a, **k):
        raise AssertionError("get_dataset must not be called: it downloads")

    monkeypatch.setattr(mnist1d.data, "get_dataset", boom)
    generated_arrays.cache_clear()  # force a real generation under the patch
    ds = load_mnist1d(seed=0)
    assert ds.describe()["sizes"] == {"train": 3200, "val": 800, "test": 1000}


def test_mnist1d_shapes_and_record(mnist1d_ds):
    ds = mnist1d_ds
    assert_tensor_types(ds)
    assert ds.input_shape == (40,) and ds.num_classes == 10
    sizes = ds.describe()["sizes"]
    assert sizes["train"] + sizes["val"] == 4000 and sizes["test"] == 1000
    assert ds.info["generator"]["seed"] == 42
    assert abs(ds.x_train.mean().item()) < 1e-5
    assert abs(ds.x_train.std(unbiased=False).item() - 1) < 1e-4
    assert not (row_hashes(ds.x_train) & row_hashes(ds.x_val))
    counts = torch.bincount(ds.y_val, minlength=10)
    assert counts.min() >= 70 and counts.max() <= 90  # ~80 per class when stratified


def test_mnist1d_seed_changes_only_val(mnist1d_ds):
    again = load_mnist1d(seed=0)
    assert torch.equal(again.x_val, mnist1d_ds.x_val) and torch.equal(again.y_train, mnist1d_ds.y_train)
    other = load_mnist1d(seed=5)
    assert row_hashes(other.x_val) != row_hashes(mnist1d_ds.x_val)
    # The test set is the generator's own, independent of our split seed (up to normalisation).
    a = mnist1d_ds.x_test * mnist1d_ds.info["normalisation"]["std"] + mnist1d_ds.info["normalisation"]["mean"]
    b = other.x_test * other.info["normalisation"]["std"] + other.info["normalisation"]["mean"]
    assert torch.allclose(a, b, atol=1e-4)


def test_mnist1d_keeps_global_rng_state():
    np.random.seed(1234)
    expected = np.random.rand()
    np.random.seed(1234)
    generated_arrays.cache_clear()
    load_mnist1d(seed=0)
    assert np.random.rand() == expected


# --------------------------------------------------------------------------- IDX


@pytest.mark.parametrize("suffix", ["", ".gz"])
def test_read_idx_round_trip(tmp_path, suffix):
    rng = np.random.default_rng(0)
    imgs = rng.integers(0, 256, (5, 3, 4)).astype(np.uint8)
    labels = np.array([0, 9, 3, 3, 1], dtype=np.uint8)
    p3 = write_idx(tmp_path / f"imgs-idx3-ubyte{suffix}", imgs)
    p1 = write_idx(tmp_path / f"labels-idx1-ubyte{suffix}", labels)
    raw = gzip.decompress(p3.read_bytes()) if suffix else p3.read_bytes()
    assert raw[:4] == b"\x00\x00\x08\x03"
    got3, got1 = read_idx(p3), read_idx(str(p1))
    assert got3.dtype == np.uint8 and got3.shape == (5, 3, 4) and np.array_equal(got3, imgs)
    assert got1.dtype == np.uint8 and np.array_equal(got1, labels)


def test_read_idx_big_endian_int32(tmp_path):
    arr = np.array([[1, -2], [70000, 3]], dtype=">i4")
    p = tmp_path / "ints.idx"
    p.write_bytes(struct.pack(">III", 0x00000C02, 2, 2) + arr.tobytes())
    got = read_idx(p)
    assert got.tolist() == [[1, -2], [70000, 3]]


@pytest.mark.parametrize("suffix", ["", ".gz"])
def test_read_idx_corrupt(tmp_path, suffix):
    arr = np.zeros((2, 3, 3), dtype=np.uint8)
    bad = write_idx(tmp_path / f"bad-magic{suffix}", arr, magic=0x12345678)
    with pytest.raises(IdxFormatError, match="bad-magic.*magic"):
        read_idx(bad)
    short = write_idx(tmp_path / f"short{suffix}", arr, truncate=5)
    with pytest.raises(IdxFormatError, match="short.*truncated"):
        read_idx(short)
    tiny = tmp_path / "tiny"
    tiny.write_bytes(b"\x00\x00")
    with pytest.raises(IdxFormatError, match="tiny"):
        read_idx(tiny)


def test_read_idx_broken_gzip(tmp_path):
    p = write_idx(tmp_path / "cut.gz", np.zeros((50, 28, 28), dtype=np.uint8))
    p.write_bytes(p.read_bytes()[:30])
    with pytest.raises(IdxFormatError, match="cut.gz"):
        read_idx(p)


# --------------------------------------------------------------------------- fashion-mnist (synthetic)


@pytest.mark.parametrize("gz", [True, False])
def test_fashion_loader_on_synthetic_files(tmp_path, gz):
    root = make_fashion_dir(tmp_path / "fm", gz=gz)
    ds = load_fashion_mnist(root=root, seed=0)
    assert_tensor_types(ds)
    assert ds.name == "fashion-mnist" and ds.input_shape == (784,) and ds.num_classes == 10
    assert ds.describe()["sizes"] == {"train": 100, "val": 20, "test": 40}
    assert torch.bincount(ds.y_val, minlength=10).tolist() == [2] * 10  # stratified
    assert not (row_hashes(ds.x_train) & row_hashes(ds.x_val))
    assert abs(ds.x_train.mean().item()) < 1e-5
    assert abs(ds.x_train.std(unbiased=False).item() - 1) < 1e-4
    norm = ds.info["normalisation"]
    assert norm["scale"] == pytest.approx(1 / 255) and norm["fit_on"] == "train"
    assert set(ds.info["files"]) == {"train_images", "train_labels", "test_images", "test_labels"}
    json.dumps(ds.describe())

    img = load_fashion_mnist(root=root, seed=0, image=True)
    assert img.input_shape == (1, 28, 28) and img.x_test.shape == (40, 1, 28, 28)
    assert torch.equal(img.x_train.reshape(100, -1), ds.x_train)

    again = load_fashion_mnist(root=root, seed=0)
    assert torch.equal(again.x_val, ds.x_val)
    other = load_fashion_mnist(root=root, seed=1)
    assert row_hashes(other.x_val) != row_hashes(ds.x_val)


def test_fashion_downsampled_images_are_block_means(tmp_path):
    root = make_fashion_dir(tmp_path / "fm", gz=False)
    full = load_fashion_mnist(root=root, seed=0, image=True)
    small = load_fashion_mnist(root=root, seed=0, image=True, image_size=7)
    assert small.input_shape == (1, 7, 7) and small.x_test.shape == (40, 1, 7, 7)
    assert torch.equal(small.y_test, full.y_test)
    # undo each standardisation: the 7x7 pixels are means of 4x4 blocks of the raw 28x28 ones
    def raw(ds):
        n = ds.info["normalisation"]
        return (ds.x_test.double() * n["std"] + n["mean"]) / n["scale"]
    blocks = raw(full).reshape(40, 1, 7, 4, 7, 4).mean((3, 5))
    torch.testing.assert_close(raw(small), blocks, atol=1e-3, rtol=0)
    assert small.info["options"]["image_size"] == 7 and "4x4 blocks" in small.info["normalisation"]["raw"]
    with pytest.raises(ConfigError, match="image_size must divide"):
        load_fashion_mnist(root=root, image_size=5)


def test_fashion_subsets(tmp_path):
    root = make_fashion_dir(tmp_path / "fm", n_train=300, n_test=100)
    ds = load_fashion_mnist(root=root, seed=0, max_train=60, max_test=30, val_fraction=0.5)
    assert ds.describe()["sizes"] == {"train": 30, "val": 30, "test": 30}
    assert torch.bincount(ds.y_train, minlength=10).tolist() == [3] * 10
    assert torch.bincount(ds.y_test, minlength=10).tolist() == [3] * 10
    assert ds.info["options"]["max_train"] == 60 and ds.info["file_sizes"] == {"train": 300, "test": 100}
    with pytest.raises(ConfigError, match="max_train"):
        load_fashion_mnist(root=root, max_train=0)


def test_fashion_corrupt_file_named(tmp_path):
    root = make_fashion_dir(tmp_path / "fm", gz=False)
    write_idx(root / "t10k-labels-idx1-ubyte", np.arange(40) % 10, magic=0x00000903)
    with pytest.raises(IdxFormatError, match="t10k-labels-idx1-ubyte"):
        load_fashion_mnist(root=root)
    write_idx(root / "t10k-labels-idx1-ubyte", np.arange(39) % 10)
    with pytest.raises(IdxFormatError, match="40 images.*39 labels"):
        load_fashion_mnist(root=root)


def test_fashion_missing_dir_and_files(tmp_path):
    missing = tmp_path / "nowhere"
    with pytest.raises(DataNotFoundError) as exc:
        load_fashion_mnist(root=missing)
    msg = str(exc.value)
    assert "apt-get install dataset-fashion-mnist" in msg and str(missing) in msg
    assert "train-images-idx3-ubyte" in msg and "root=" in msg

    partial = make_fashion_dir(tmp_path / "partial")
    (partial / "t10k-images-idx3-ubyte.gz").unlink()
    with pytest.raises(DataNotFoundError, match="t10k-images-idx3-ubyte"):
        load_fashion_mnist(root=partial)
    with pytest.raises(FileNotFoundError):  # DataNotFoundError is also a FileNotFoundError
        load_fashion_mnist(root=partial)


@pytest.mark.skipif(not REAL_FASHION.is_dir(), reason="dataset-fashion-mnist not installed (/usr/share/datasets/fashion-mnist)")
def test_real_fashion_mnist_subset():
    ds = load_dataset("fashion-mnist", max_train=2000, max_test=500)
    sizes = ds.describe()["sizes"]
    assert sizes["train"] + sizes["val"] == 2000 and sizes["test"] == 500
    assert sizes["val"] == round(2000 / 6)
    assert ds.info["file_sizes"] == {"train": 60000, "test": 10000}
    assert ds.input_shape == (784,)
    assert_tensor_types(ds)
    assert torch.bincount(ds.y_test, minlength=10).tolist() == [50] * 10
    assert abs(ds.x_train.mean().item()) < 1e-5


# --------------------------------------------------------------------------- registry


def test_registry():
    assert set(DATASETS) == {"digits", "mnist1d", "fashion-mnist"}
    ds = load_dataset("digits", seed=2, image=True)
    assert ds.input_shape == (1, 8, 8) and ds.info["seed"] == 2
    with pytest.raises(ConfigError) as exc:
        load_dataset("cifar10")
    assert all(n in str(exc.value) for n in ("digits", "mnist1d", "fashion-mnist"))
    with pytest.raises(ConfigError) as exc:
        load_dataset("mnist1d", test_fraction=0.1)
    assert "test_fraction" in str(exc.value) and "val_fraction" in str(exc.value)


def test_fashion_image_size_averages_pixel_blocks_like_avg_pool(tmp_path):
    """Downsampled images are 2×2 block means of the raw pixels, standardised like the full ones."""
    root = make_fashion_dir(tmp_path / "fm")
    full = load_fashion_mnist(root=root, seed=0, image=True)
    small = load_fashion_mnist(root=root, seed=0, image=True, image_size=14)
    assert small.input_shape == (1, 14, 14) and small.info["options"]["image_size"] == 14
    n_full, n_small = full.info["normalisation"], small.info["normalisation"]
    raw = full.x_train * n_full["std"] + n_full["mean"]
    pooled = torch.nn.functional.avg_pool2d(raw.double(), 2)
    expected = ((pooled - n_small["mean"]) / n_small["std"]).float()
    assert torch.allclose(small.x_train, expected, atol=1e-5)
    with pytest.raises(ConfigError, match="image_size"):
        load_fashion_mnist(root=root, image_size=5)
