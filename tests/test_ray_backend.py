"""Scale-out on Ray: the same zoo as the local backend, bit for bit; a killed worker retried; clear errors.

One local Ray for the module, capped for a 2-core machine (no deprecated local_mode). Starting it
takes 8-12 s here and the Ray tests 40-75 s in all, so they are slow (pytest -m slow); the error
paths (unreachable address, Ray missing) start no Ray and run by default.
"""

import json
import os
import re
import subprocess
import sys

import pytest
import torch

from weightspace.cli import main
from weightspace.errors import BackendError
from weightspace.parallel import RayBackend, map_blocks, resolve_backend
from weightspace.zoo import Zoo
from weightspace.zoo.build import build_zoo

from .ray_helpers import (
    BLOCK,
    InBackground,
    assert_same_zoo,
    audit_blocks_equal_local,
    config,
    indexed,
    kill,
    long_config,
    processes,
    wait_for,
)

ray = pytest.importorskip("ray")


@pytest.fixture(scope="module")
def local_ray():
    ray.init(num_cpus=2, object_store_memory=150 * 2**20, include_dashboard=False, logging_level="warning")
    yield RayBackend()
    ray.shutdown()


@pytest.mark.slow
def test_ray_backend_trains_the_local_weights_bit_for_bit(tmp_path, local_ray):
    local = build_zoo(config(), out=tmp_path / "local", progress=False)
    on_ray = build_zoo(config(), out=tmp_path / "ray", progress=False, backend=local_ray)
    assert len(on_ray) == 24 and on_ray.verify() == []
    assert_same_zoo(local, on_ray)
    # The chunking matters, so it is the local one: other chunks give other dropout masks.
    other = build_zoo(config(chunk_size=3), out=tmp_path / "other", progress=False)
    assert not torch.equal(other.load()[0], local.load()[0])


def _kill_blocks_after_first_write(root):
    """SIGKILL the workers running blocks once the zoo at ``root`` has indexed a chunk's first write
    (as the OOM killer or an operator would); returns (workers killed, checkpoints then)."""
    n = wait_for(lambda: indexed(root), f"the first checkpoints in {root}")
    return kill(processes(os.getpid(), BLOCK)), n


@pytest.mark.slow
def test_a_worker_killed_mid_shard_is_retried_and_the_zoo_ends_complete(tmp_path, local_ray):
    cfg = long_config()
    local = build_zoo(cfg, out=tmp_path / "local", progress=False)
    build = InBackground(lambda: build_zoo(cfg, out=tmp_path / "ray", progress=False, backend=local_ray))
    killed, at_kill = _kill_blocks_after_first_write(tmp_path / "ray")
    on_ray = build.result()
    assert killed >= 1 and 256 <= at_kill < 1024  # killed mid-build, after a first write
    assert len(on_ray) == 1024 and on_ray.verify() == []  # complete; no orphans, no leftovers; checksums hold
    assert_same_zoo(local, on_ray)


@pytest.mark.slow
def test_without_retries_a_killed_worker_stops_the_build_and_a_rerun_resumes(tmp_path, local_ray):
    cfg = long_config()
    build = InBackground(lambda: build_zoo(cfg, out=tmp_path / "ray", progress=False,
                                           backend=RayBackend(max_retries=0)))
    killed, _ = _kill_blocks_after_first_write(tmp_path / "ray")
    with pytest.raises(BackendError, match="block [01]: its Ray worker died .* 0 retries are used up"):
        build.result()
    assert killed >= 1 and 256 <= len(Zoo.open(tmp_path / "ray")) < 1024  # the first writes survived the kill
    resumed = build_zoo(cfg, out=tmp_path / "ray", progress=False, backend=local_ray)
    assert len(resumed) == 1024 and resumed.verify() == []
    assert_same_zoo(build_zoo(cfg, out=tmp_path / "local", progress=False), resumed)


@pytest.mark.slow
def test_progress_counts_units_reported_inside_tasks(local_ray, capsys):
    assert map_blocks(_square, [1, 2, 3], 10, backend=local_ray, total=6, progress=True, desc="sq") == [11, 14, 19]
    err = capsys.readouterr().err
    assert "sq (ray): 100%" in err and "6/6" in err  # units reported by the tasks, not 3 blocks
    assert map_blocks(_square, [1, 2, 3], 10, total=6) == [11, 14, 19]


def _square(block, offset, *, tick):
    tick.update(block)
    return block * block + offset


@pytest.mark.slow
def test_an_error_inside_a_task_is_the_weightspace_error(local_ray):
    from weightspace.errors import LayoutError

    with pytest.raises(LayoutError, match="block 2 is bad"):
        map_blocks(_fails_on_two, [1, 2], backend=local_ray)


def _fails_on_two(block):
    from weightspace.errors import LayoutError

    if block == 2:
        raise LayoutError("block 2 is bad")
    return block


@pytest.mark.parametrize("command", [["zoo", "train", "digits-mlp", "--out"], ["audit", "--train", "nowhere", "--out"],
                                     ["analyze"], ["study", "--preset", "tiny", "--out"]])
def test_an_unreachable_address_is_one_line(tmp_path, capsys, command):
    rc = main([*command, str(tmp_path / "z"), "--backend", "ray", "--address", "127.0.0.1:9"]
              + (["--generated", "nothing"] if command[0] == "audit" else []))
    err = capsys.readouterr().err
    assert rc == 2 and err.count("\n") == 1
    assert "127.0.0.1:9" in err and "ray start --head" in err
    assert not (tmp_path / "z").exists()  # nothing started


def test_address_without_ray_backend_is_an_error(tmp_path, capsys):
    rc = main(["zoo", "train", "digits-mlp", "--out", str(tmp_path / "z"), "--address", "127.0.0.1:9"])
    assert rc == 2 and "only used with --backend ray" in capsys.readouterr().err


def test_without_ray_installed_the_error_says_how_to_install_it(tmp_path, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "ray", None)  # import ray raises ImportError
    with pytest.raises(BackendError, match=r"pip install 'weightspace\[ray\]'"):
        resolve_backend("ray")
    rc = main(["zoo", "train", "digits-mlp", "--out", str(tmp_path / "z"), "--backend", "ray"])
    assert rc == 2 and "pip install 'weightspace[ray]'" in capsys.readouterr().err


@pytest.mark.slow
def test_audit_evaluation_and_zoo_blocks_on_ray_equal_local(tmp_path, local_ray):
    """Pairwise similarity blocks, aligned distances, evaluation of many models and a map over a
    zoo's blocks give on Ray what they give here."""
    audit_blocks_equal_local(build_zoo(config(), out=tmp_path / "zoo", progress=False), local_ray)


@pytest.mark.slow
def test_spectral_analysis_of_a_zoo_on_ray_equals_local(tmp_path, local_ray):
    """The details, summary and spectra of a zoo analysed in blocks of 5 on Ray are the local ones:
    exactly in ww mode, and in robust mode too (its bootstrap is seeded per model)."""
    import numpy as np
    import pandas as pd

    from weightspace.analysis import SpectralAnalyzer

    zoo = build_zoo(config(), out=tmp_path / "zoo", progress=False)
    here = SpectralAnalyzer(fit="ww", progress=False).fit(zoo, where="epoch = 2")
    on_ray = SpectralAnalyzer(fit="ww", progress=False).fit(zoo, where="epoch = 2", backend=local_ray, block_size=5)
    assert len(here.details_) == 12 * 4 and (here.details_["status"] == "ok").any()
    pd.testing.assert_frame_equal(on_ray.details_, here.details_)
    pd.testing.assert_frame_equal(on_ray.summary_, here.summary_)
    for name, rec in here.spectra_.items():
        assert on_ray.spectra_[name]["models"] == rec["models"]
        np.testing.assert_array_equal(on_ray.spectra_[name]["evals"], rec["evals"])
    robust = SpectralAnalyzer(progress=False).fit(zoo, backend=local_ray, block_size=5).details_
    local = SpectralAnalyzer(progress=False).fit(zoo).details_
    assert local["alpha_lo"].notna().any()
    pd.testing.assert_frame_equal(robust, local)


def test_study_on_ray_takes_no_worker_count_and_runs_no_ablation(tmp_path, capsys):
    for extra, named in ((["--workers", "2"], "--workers"), (["--ablation"], "--ablation")):
        rc = main(["study", "--preset", "tiny", "--out", str(tmp_path / "s"), "--backend", "ray", "--quiet", *extra])
        err = capsys.readouterr().err
        assert rc == 2 and err.count("\n") == 1 and named in err
        assert not (tmp_path / "s").exists()


@pytest.mark.slow
def test_lines_printed_in_tasks_are_printed_here_as_they_are(local_ray, capsys):
    assert map_blocks(_prints, ["a", "b"], 2, backend=local_ray, relay_prints=True) == ["a", "b"]
    out = capsys.readouterr().out.splitlines()
    assert sorted(out) == ["a: 1 of 2", "a: 2 of 2", "b: 1 of 2", "b: 2 of 2"]
    assert out.index("a: 1 of 2") < out.index("a: 2 of 2")  # one task's lines in order


def _prints(block, n):
    for i in range(n):
        print(f"{block}: {i + 1} of {n}", flush=True)
    return block


def _study_numbers(out) -> str:
    """results.json without its timings."""
    def strip(x):
        if isinstance(x, dict):
            return {k: strip(v) for k, v in x.items() if k not in ("timings_s", "total_seconds")}
        return [strip(v) for v in x] if isinstance(x, list) else x

    return json.dumps(strip(json.loads((out / "results.json").read_text())), sort_keys=True)  # NaN-safe


def _stage_lines(stdout: str) -> list[str]:
    """The study's per-stage lines ('pdiff: fit (seed 3) done (11 s)') without their seconds, sorted."""
    return sorted(re.sub(r" \(\d+ s\)$", "", line) for line in stdout.splitlines() if line.endswith(" s)")
                  and " done (" in line)


@pytest.mark.slow
def test_the_study_on_ray_gives_the_local_results_and_progress_lines(tmp_path, local_ray, capsys):
    args = ["study", "--preset", "tiny", "--methods", "aligned,pdiff", "--seed", "3"]
    # the local backend (two worker processes) in a fresh process, as in test_study
    here = subprocess.run([sys.executable, "-m", "weightspace.cli", *args, "--out", str(tmp_path / "local")],
                          check=True, capture_output=True, text=True, env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert main([*args, "--out", str(tmp_path / "ray"), "--backend", "ray"]) == 0
    on_ray = capsys.readouterr().out
    assert _study_numbers(tmp_path / "ray") == _study_numbers(tmp_path / "local")
    stages = _stage_lines(on_ray)
    assert len(stages) == 2 * 4 and stages == _stage_lines(here.stdout)  # data, fit, sample, audit per method
    verdicts = [line for line in on_ray.splitlines() if " ours: " in line]  # the headline, one line per method
    assert len(verdicts) == 2 and verdicts == [line for line in here.stdout.splitlines() if " ours: " in line]
