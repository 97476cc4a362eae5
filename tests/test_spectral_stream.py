"""``analyze`` of a checkpoint path reads it a few tensors at a time: the same tables as the model read
whole, every float dtype, and figures only when asked for."""

import numpy as np
import pandas as pd
import pytest
import torch
from safetensors.torch import load_file, save_file

from weightspace.analysis import SpectralAnalyzer
from weightspace.analysis import spectral as spectral_module
from weightspace.cli import main
from weightspace.io import save_checkpoint
from weightspace.shards import ShardWriter, TensorSpec


def _heavy(rows, cols, seed):
    g = torch.Generator().manual_seed(seed)
    w = torch.randn(rows, cols, generator=g) / cols**0.5
    return w + torch.randn(rows, cols, generator=g) ** 3 / (4 * cols**0.5)


def _model():
    return {"embed.weight": _heavy(300, 24, 0), "layers.0.attn.qkv.weight": _heavy(72, 24, 1),
            "layers.0.mlp.weight": _heavy(96, 24, 2), "layers.0.norm.weight": torch.ones(24),
            "rnn.weight_ih_l0": _heavy(96, 24, 3), "rnn.weight_hh_l0": _heavy(96, 24, 4),
            "conv.weight": _heavy(16 * 8, 9, 5).reshape(16, 8, 3, 3), "head.weight": _heavy(10, 24, 6),
            "zero.weight": torch.zeros(30, 30)}


def _frame(analyzer):
    return analyzer.details_.drop(columns=["model"]).reset_index(drop=True)



@pytest.mark.parametrize("fit,randomize", [("robust", True), ("ww", False)])
def test_a_folder_read_in_parts_gives_the_tables_of_the_whole_model(tmp_path, monkeypatch, fit, randomize):
    sd = _model()
    folder = tmp_path / "model"  # the name an in-memory model gets: the bootstrap is seeded by it
    folder.mkdir()
    writer = ShardWriter(folder, [(n, TensorSpec(tuple(t.shape), t.dtype)) for n, t in sd.items()],
                         max_shard_bytes=20_000)
    for n, t in sd.items():
        writer.write(n, t)
    assert len(writer.close()) > 2  # sharded, with an index
    whole = SpectralAnalyzer(fit, randomize=randomize, mp_fit=True, progress=False).fit(sd)
    monkeypatch.setattr(spectral_module, "STREAM_BYTES", 12_000)  # a few tensors per part
    parts = SpectralAnalyzer(fit, randomize=randomize, mp_fit=True, progress=False).fit(folder)
    pd.testing.assert_frame_equal(_frame(parts), _frame(whole))
    assert list(parts.spectra_) == list(whole.spectra_)
    assert "rnn.weight_ih_l0[gate3]" in set(parts.details_["name"])  # gates split by the hidden size


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16, torch.float32, torch.float64])
def test_every_float_dtype_is_analysed(tmp_path, dtype):
    sd = {k: v.to(dtype) for k, v in _model().items()}
    path = tmp_path / "m.safetensors"
    save_file(sd, str(path))
    got = SpectralAnalyzer(progress=False, n_boot=0).fit(path)
    ok = got.details_[got.details_["status"] == "ok"]
    assert len(ok) >= 5 and np.isfinite(ok["alpha"]).all()
    if dtype in (torch.bfloat16, torch.float16):  # exact in float32: the same numbers as its float32 copy
        in_file_order = load_file(str(path))
        want = SpectralAnalyzer(progress=False, n_boot=0).fit({k: v.float() for k, v in in_file_order.items()})
        pd.testing.assert_frame_equal(_frame(got), _frame(want))


def test_cli_draws_figures_only_when_asked(tmp_path, capsys):
    """(``--figures`` itself: tests/test_spectral.py.)"""
    path = tmp_path / "m.safetensors"
    save_checkpoint(path, {k: v.bfloat16() for k, v in _model().items()})
    assert main(["analyze", str(path), "--out", str(tmp_path / "plain"), "--quiet"]) == 0
    assert not (tmp_path / "plain" / "figures").exists() and (tmp_path / "plain" / "details.csv").is_file()
    assert capsys.readouterr().out.rstrip().endswith("config.json")
