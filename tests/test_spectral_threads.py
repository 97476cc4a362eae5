"""Spectral analysis on several threads: the same numbers as on one, and the caller's settings kept."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch
from threadpoolctl import threadpool_info, threadpool_limits

from weightspace.analysis import SpectralAnalyzer
from weightspace.analysis.eigen import (
    LOOP_FROM,
    eigenvalues_as_ready,
    matrix_eigenvalues,
    workers,
)
from weightspace.errors import ConfigError


def _heavy(*shape, seed):
    g = torch.Generator().manual_seed(seed)
    w = torch.randn(*shape, generator=g) / shape[1] ** 0.5
    return w + torch.randn(*shape, generator=g) ** 3 / (4 * shape[1] ** 0.5)


def _models(n):
    """Every path of the decomposition: large matrices one by one (two of one shape), a batch of small
    ones big enough to be split over the workers (conv slices), FARMS blocks and a tall matrix."""
    return [{"big1.weight": _heavy(LOOP_FROM + 40, LOOP_FROM, seed=s), "big2.weight": _heavy(LOOP_FROM, LOOP_FROM + 40, seed=s + 1),
             "conv.weight": _heavy(80, 64, 3, 3, seed=s + 2), "tall.weight": _heavy(24, 400, seed=s + 3),
             "head.weight": _heavy(10, 24, seed=s + 4)} for s in range(0, 10 * n, 10)]


def _zoo(n):
    """Many small models: the robust fit's bootstrap rows are spread over the workers."""
    return [{"l1.weight": _heavy(48, 32, seed=s), "l2.weight": _heavy(10, 48, seed=s + 1)} for s in range(0, 2 * n, 2)]


@pytest.mark.parametrize("kw", [{}, {"fit": "ww"}, {"mp_fit": True, "randomize": True, "precision": "float64"}])
@pytest.mark.parametrize("models", [_models(3), _zoo(64)], ids=["mixed", "zoo"])
def test_threads_give_the_one_thread_result_bit_for_bit(kw, models):
    from weightspace.space import WeightSpace

    space = WeightSpace.from_state_dict(models[0], name="mixed")
    source = (space.stack(models), space)
    one = SpectralAnalyzer(progress=False, threads=1, **kw).fit(source)
    for threads in (2, 3):
        many = SpectralAnalyzer(progress=False, threads=threads, **kw).fit(source)
        pd.testing.assert_frame_equal(many.details_, one.details_, check_exact=True)
        pd.testing.assert_frame_equal(many.summary_, one.summary_, check_exact=True)
        for name, rec in one.spectra_.items():
            np.testing.assert_array_equal(many.spectra_[name]["evals"], rec["evals"])


def test_eigenvalues_as_ready_equal_one_batched_call():
    g = torch.Generator().manual_seed(0)
    small = [torch.randn(7, 40, 32, generator=g), torch.randn(30, 40, 32, generator=g)]  # split over workers
    large = [torch.randn(2, LOOP_FROM + 8, LOOP_FROM, generator=g), torch.randn(1, LOOP_FROM + 8, LOOP_FROM, generator=g)]
    for threads in (1, 2):
        with workers(threads) as on:
            got = dict(eigenvalues_as_ready([small, large], dtype=np.float32, on=on))
        assert sorted(got) == [0, 1]  # each group once
        for g_, parts in enumerate((small, large)):
            want = matrix_eigenvalues(torch.cat(parts), dtype=np.float32)
            np.testing.assert_array_equal(got[g_], want)


def test_the_callers_thread_settings_are_given_back():
    def blas():
        return [(i["filepath"], i["num_threads"]) for i in threadpool_info() if i["user_api"] == "blas"]

    before = torch.get_num_threads()
    try:
        torch.set_num_threads(2)
        with threadpool_limits(limits=2, user_api="blas"):
            caller = blas()
            assert {n for _, n in caller} == {2}
            SpectralAnalyzer(progress=False, threads=2).fit(_models(1)[0])
            assert torch.get_num_threads() == 2
            assert blas() == caller
    finally:
        torch.set_num_threads(before)
    with pytest.raises(ConfigError, match="threads=0: expected at least 1"):
        SpectralAnalyzer(threads=0)


def test_cli_threads(tmp_path, capsys):
    from weightspace.cli import main
    from weightspace.io import save_checkpoint

    path = tmp_path / "m.safetensors"
    save_checkpoint(path, _models(1)[0])
    for threads in ("1", "2"):
        args = ["analyze", str(path), "--out", str(tmp_path / threads), "--threads", threads, "--quiet"]
        assert main(args) == 0
    assert (tmp_path / "1" / "details.csv").read_text() == (tmp_path / "2" / "details.csv").read_text()
    capsys.readouterr()
    with pytest.raises(SystemExit) as e:
        main(["analyze", str(path), "--threads", "0", "--quiet"])
    err = capsys.readouterr().err.strip()
    assert e.value.code == 2 and len(err.splitlines()) == 1 and "--threads: expected an integer in [1, 1024]" in err


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_symmetric_eigenvalues_equal_scipy_and_let_the_gil_go(dtype):
    import threading
    import time

    import scipy.linalg

    from weightspace.analysis.eigen import _lapacke_syevd, symmetric_eigenvalues

    rng = np.random.default_rng(0)
    for n in (9, 64, 300):
        w = rng.standard_normal((n + 5, n)).astype(dtype)
        gram = (w + w**3 / 4).T @ (w + w**3 / 4)
        want = scipy.linalg.eigh(gram, eigvals_only=True, driver="evd", check_finite=False)
        before = gram.copy()
        np.testing.assert_array_equal(symmetric_eigenvalues(gram), want)
        np.testing.assert_array_equal(gram, before)  # the caller's matrix is left alone
    if not _lapacke_syevd():
        pytest.skip("this SciPy has no bundled OpenBLAS: its own wrapper is used")
    big = rng.standard_normal((1500, 1500)).astype(np.float32)
    big = big.T @ big
    start = time.perf_counter()
    symmetric_eigenvalues(big)
    alone = time.perf_counter() - start
    worker = threading.Thread(target=symmetric_eigenvalues, args=(big,))
    gaps, last = [], time.perf_counter()
    worker.start()
    while worker.is_alive():  # pure Python: stalls for a whole call if the worker holds the GIL
        now = time.perf_counter()
        gaps.append(now - last)
        last = now
    assert max(gaps) < alone / 2, (max(gaps), alone)
