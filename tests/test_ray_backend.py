"""Scale-out on Ray: the same zoo as the local backend, bit for bit; a killed worker retried; clear errors.

One local Ray for the module, capped for a 2-core machine (no deprecated local_mode). Starting it
takes 8-12 s here and the Ray tests 40-75 s in all, so they are slow (pytest -m slow); the error
paths (unreachable address, Ray missing) start no Ray and run by default.
"""

import sys

import pytest
import torch

from weightspace.cli import main
from weightspace.errors import BackendError
from weightspace.parallel import RayBackend, map_blocks, resolve_backend
from weightspace.zoo import Zoo
from weightspace.zoo.build import build_zoo
from weightspace.zoo.ray_backend import KILL_ENV

ray = pytest.importorskip("ray")


@pytest.fixture(scope="module")
def local_ray():
    ray.init(num_cpus=2, object_store_memory=150 * 2**20, include_dashboard=False, logging_level="warning")
    yield RayBackend()
    ray.shutdown()


def _config(**training):
    """12 small MLPs in 3 chunks of 4, half with dropout: dropout masks depend on the chunk."""
    return {
        "name": "t",
        "dataset": {"name": "digits", "seed": 0},
        "architecture": {"kind": "mlp", "widths": [16]},
        "population": {"runs": 12, "seed": 0,
                       "hparams": {"dropout": [0.0, 0.1], "epochs": 2, "lr": {"log_uniform": [0.01, 0.1]}}},
        "training": {"checkpoint_epochs": [1], "chunk_size": 4, **training},
    }


def _assert_same_zoo(a, b):
    wa, da = a.load()
    wb, db = b.load()
    assert list(da["model_id"]) == list(db["model_id"])
    assert torch.equal(wa, wb)
    cols = ["run_id", "seed", "epoch", "step", "hparams", "test_acc", "train_loss"]
    assert da[cols].equals(db[cols])


@pytest.mark.slow
def test_ray_backend_trains_the_local_weights_bit_for_bit(tmp_path, local_ray):
    local = build_zoo(_config(), out=tmp_path / "local", progress=False)
    on_ray = build_zoo(_config(), out=tmp_path / "ray", progress=False, backend=local_ray)
    assert len(on_ray) == 24 and on_ray.verify() == []
    _assert_same_zoo(local, on_ray)
    # The chunking matters, so it is the local one: other chunks give other dropout masks.
    other = build_zoo(_config(chunk_size=3), out=tmp_path / "other", progress=False)
    assert not torch.equal(other.load()[0], local.load()[0])


@pytest.mark.slow
def test_a_worker_killed_mid_shard_is_retried_and_the_zoo_ends_complete(tmp_path, local_ray, monkeypatch):
    # 4 models x 81 checkpoints per chunk: the trainer writes after 64 steps (256 checkpoints), then at the end.
    cfg = _config(every_steps=1, max_steps=80, checkpoint_epochs=[])
    cfg["population"]["runs"] = 8
    cfg["population"]["hparams"]["epochs"] = 5  # 85 steps, cut at 80
    local = build_zoo(cfg, out=tmp_path / "local", progress=False)
    monkeypatch.setenv(KILL_ENV, "1:1")  # chunk 1 dies right after its first write, on its first attempt
    on_ray = build_zoo(cfg, out=tmp_path / "ray", progress=False, backend=local_ray)
    marker = tmp_path / "ray" / ".staging" / "killed-shard-1"
    assert marker.exists()  # it did die once, after 256 writes
    marker.unlink()  # the test hook's own note; any other leftover would be a lost write
    assert len(on_ray) == 8 * 81 and on_ray.verify() == []  # complete, no orphans or leftovers, checksums hold
    _assert_same_zoo(local, on_ray)


@pytest.mark.slow
def test_without_retries_a_killed_worker_stops_the_build_and_a_rerun_resumes(tmp_path, local_ray, monkeypatch):
    cfg = _config(every_steps=1, max_steps=80, checkpoint_epochs=[])
    cfg["population"]["runs"] = 4
    cfg["population"]["hparams"]["epochs"] = 5
    monkeypatch.setenv(KILL_ENV, "0:1")
    with pytest.raises(BackendError, match="block 0: its Ray worker died .* 0 retries are used up"):
        build_zoo(cfg, out=tmp_path / "ray", progress=False, backend=RayBackend(max_retries=0))
    assert len(Zoo.open(tmp_path / "ray")) == 256  # the first write survived the kill
    resumed = build_zoo(cfg, out=tmp_path / "ray", progress=False, backend=local_ray)
    (tmp_path / "ray" / ".staging" / "killed-shard-0").unlink()  # the test hook's own note
    assert len(resumed) == 4 * 81 and resumed.verify() == []
    _assert_same_zoo(build_zoo(cfg, out=tmp_path / "local", progress=False), resumed)


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
                                     ["analyze"]])
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


def _mean_abs(weights, rows, *, scale):
    return rows[["model_id"]].assign(v=weights.abs().mean(1).numpy() * scale)


@pytest.mark.slow
def test_audit_evaluation_and_zoo_blocks_on_ray_equal_local(tmp_path, local_ray):
    """Pairwise similarity blocks, aligned distances, evaluation of many models and a map over a
    zoo's blocks give on Ray what they give here."""
    import pandas as pd

    from weightspace.align import aligned_l2, aligned_l2_fast
    from weightspace.audit.novelty import ModelSet, novelty_table
    from weightspace.audit.similarity import (
        chamfer_distance,
        error_iou,
        prediction_agreement,
    )
    from weightspace.zoo.blocks import map_zoo
    from weightspace.zoo.build import task_for_zoo

    zoo = build_zoo(_config(), out=tmp_path / "zoo", progress=False)
    w, _ = zoo.load()
    task = task_for_zoo(zoo)
    pred = task.predictions(w)
    assert torch.equal(task.predictions(w, backend=local_ray, block_size=7), pred)
    pd.testing.assert_frame_equal(task.evaluate(w, backend=local_ray, block_size=7), task.evaluate(w))
    labels = task.dataset.y_test
    assert torch.equal(error_iou(pred[:5], pred, labels, chunk_size=7, backend=local_ray),
                       error_iou(pred[:5], pred, labels))
    assert torch.equal(prediction_agreement(pred[:5], pred, chunk_size=7, backend=local_ray),
                       prediction_agreement(pred[:5], pred))
    space = zoo.space
    assert torch.equal(aligned_l2(space, w[:3], w[:6], chunk_pairs=5, backend=local_ray), aligned_l2(space, w[:3], w[:6]))
    torch.testing.assert_close(aligned_l2_fast(space, w[:4], w, block_size=5, backend=local_ray),
                               aligned_l2_fast(space, w[:4], w))
    points = [torch.randn(n, 2, generator=torch.Generator().manual_seed(n)) for n in (5, 9, 7, 3, 8)]
    torch.testing.assert_close(chamfer_distance(points[:2], points, block_size=2, backend=local_ray),
                               chamfer_distance(points[:2], points))
    gen = w[:3] + 0.01 * torch.randn(3, w.shape[1], generator=torch.Generator().manual_seed(0))
    sets = [ModelSet("training", task.accuracy(w), weights=w, predictions=pred, is_training=True),
            ModelSet("generated", task.accuracy(gen), weights=gen, predictions=task.predictions(gen))]
    pd.testing.assert_frame_equal(novelty_table(sets, labels, space=space, aligned="exact", backend=local_ray),
                                  novelty_table(sets, labels, space=space, aligned="exact"))
    on_ray = pd.concat(map_zoo(_mean_abs, zoo, where="epoch = ?", params=(2,), block_size=5, backend=local_ray,
                               scale=2.0), ignore_index=True)
    here = pd.concat(map_zoo(_mean_abs, zoo, where="epoch = ?", params=(2,), block_size=5, scale=2.0),
                     ignore_index=True)
    assert len(here) == 12
    pd.testing.assert_frame_equal(on_ray, here)


@pytest.mark.slow
def test_spectral_analysis_of_a_zoo_on_ray_equals_local(tmp_path, local_ray):
    """The details, summary and spectra of a zoo analysed in blocks of 5 on Ray are the local ones:
    exactly in ww mode, and in robust mode too (its bootstrap is seeded per model)."""
    import numpy as np
    import pandas as pd

    from weightspace.analysis import SpectralAnalyzer

    zoo = build_zoo(_config(), out=tmp_path / "zoo", progress=False)
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
