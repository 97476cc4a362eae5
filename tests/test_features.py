"""Weight features: the batched call equals a per-model loop with numpy."""

import numpy as np
import pandas as pd
import pytest
import torch

from weightspace.analysis.features import SPECTRAL, STATISTICS, spectral_features, weight_features
from weightspace.analysis.spectral import SpectralAnalyzer
from weightspace.errors import LayoutError
from weightspace.nets import CNN, MLP


def _per_model(w: np.ndarray, space) -> dict:
    out = {}
    for e in space.entries:
        t = w[space.slice(e.name)].astype(np.float64)
        for p in (0, 25, 50, 75, 100):
            out[f"{e.name}.q{p}"] = np.percentile(t, p)
        out[f"{e.name}.mean"], out[f"{e.name}.std"] = t.mean(), t.std()
        out[f"{e.name}.l1"], out[f"{e.name}.l2"] = np.abs(t).sum(), np.sqrt((t**2).sum())
    for e in space.entries:
        if len(e.shape) < 2 or e.shape[0] < 2:
            continue
        rows = w[space.slice(e.name)].astype(np.float64).reshape(e.shape[0], -1)
        pairs = [abs(rows[i] @ rows[j]) / (np.linalg.norm(rows[i]) * np.linalg.norm(rows[j]))
                 for i in range(len(rows)) for j in range(len(rows)) if i != j]
        out[f"{e.name}.wcorr"] = np.mean(pairs)
    return out


@pytest.mark.parametrize("arch", [CNN(1, 8, channels=(4, 6), fc_widths=(5,), batchnorm=False), MLP(7, (6, 5), 3)])
def test_features_equal_a_per_model_loop(arch):
    weights = arch.init(range(6), torch.linspace(0.5, 2.0, 6))
    weights[0] *= 1e-13  # weight decay can shrink a net this far: cosines must still be exact
    got = weight_features(weights, arch.space)
    expected = pd.DataFrame([_per_model(w, arch.space) for w in weights.numpy()])
    assert list(got.columns) == list(expected.columns)
    np.testing.assert_allclose(got.to_numpy(), expected.to_numpy(), rtol=1e-6, atol=1e-9)


def test_feature_options_and_plugins():
    arch = MLP(7, (6,), 3)
    weights = arch.init(range(4))
    plain = weight_features(weights, arch.space, norms=False, correlation=False)
    assert len(plain.columns) == len(STATISTICS) * len(arch.space.entries)
    extra = weight_features(weights, arch.space, extra=[lambda w, s: pd.DataFrame({"n": w.norm(dim=1).numpy()})])
    assert np.allclose(extra["n"], weights.norm(dim=1).numpy())
    with pytest.raises(LayoutError, match="returned 1 rows for 4 models"):
        weight_features(weights, arch.space, extra=[lambda w, s: pd.DataFrame({"n": [0.0]})])
    with pytest.raises(LayoutError, match=r"Tensor\[N, 69\]"):
        weight_features(weights[:, :10], arch.space)


def test_spectral_features_equal_each_model_analysed_alone():
    arch = MLP(40, (30,), 20)
    weights = arch.init(range(4), torch.tensor([0.5, 1.0, 2.0, 4.0]))
    got = spectral_features(weights, arch.space)
    matrices = [e.name for e in arch.space.entries if e.name.endswith("weight")]
    assert list(got.columns) == sorted(f"{m}.{k}" for m in matrices for k in SPECTRAL) and len(got) == 4
    for i, w in enumerate(weights):
        alone = SpectralAnalyzer(progress=False).fit(arch.space.unflatten(w)).details_.set_index("name")
        for m in matrices:
            for k in SPECTRAL:
                assert got.loc[i, f"{m}.{k}"] == pytest.approx(alone.loc[m, k], rel=1e-6), (i, m, k)
            # independent of the analyser: log10 of the largest eigenvalue of WᵀW
            sigma = np.linalg.svd(arch.space.unflatten(w)[m].double().numpy(), compute_uv=False)[0]
            assert got.loc[i, f"{m}.log_spectral_norm"] == pytest.approx(np.log10(sigma**2), rel=1e-4)
    assert got.filter(like=".alpha").notna().all().all()
    both = weight_features(weights, arch.space, spectral=True)
    pd.testing.assert_frame_equal(both[got.columns], got)
