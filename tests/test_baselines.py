import pytest
import torch

from weightspace.baselines import (
    AverageOfK,
    NoiseAddition,
    PerParameterGaussian,
    noise_sweep,
)
from weightspace.errors import ConfigError, LayoutError
from weightspace.generator import GENERATORS, load_generator, make_generator


@pytest.fixture
def weights():
    return torch.randn(6, 40, generator=torch.Generator().manual_seed(1)) * torch.linspace(0.1, 2, 40)


def _is_row(samples, weights):
    """Every sample equals some training row exactly."""
    return bool((samples[:, None, :] == weights[None]).all(dim=-1).any(dim=-1).all())


def test_registered():
    assert GENERATORS["noise"] is NoiseAddition
    assert GENERATORS["average"] is AverageOfK
    assert GENERATORS["gaussian"] is PerParameterGaussian


def test_noise_zero_sigma_returns_training_rows(weights):
    s = NoiseAddition(sigma=0.0).fit(weights).sample(50, seed=3)
    assert s.shape == (50, 40)
    assert _is_row(s, weights)
    assert len({tuple(r.tolist()) for r in s}) == 6  # uniform choice hits every checkpoint


def test_noise_scale_and_mask(weights):
    gen = NoiseAddition(sigma=0.5).fit(weights)
    s = gen.sample(4000, seed=0)
    idx = torch.cdist(s, weights).argmin(dim=1)
    resid = s - weights[idx]
    assert resid.std().item() == pytest.approx(0.5, rel=0.02)
    assert resid.mean().abs().item() < 0.01
    rel = NoiseAddition(sigma=0.5, relative=True).fit(weights)
    assert rel.scale.item() == pytest.approx(weights.std(correction=0).item())
    mask = torch.zeros(40, dtype=torch.bool)
    mask[5:10] = True
    for m in (mask, torch.arange(5, 10)):
        s = NoiseAddition(sigma=0.5).fit(weights, mask=m).sample(20, seed=0)
        assert _is_row(s[:, ~mask], weights[:, ~mask])
        assert not _is_row(s, weights)
    with pytest.raises(ConfigError, match="mask"):
        NoiseAddition().fit(weights, mask=torch.zeros(40, dtype=torch.bool))
    with pytest.raises(LayoutError, match="mask"):
        NoiseAddition().fit(weights, mask=torch.ones(39, dtype=torch.bool))


def test_noise_sweep(weights):
    gens = noise_sweep([0.0, 0.1, 1.0], relative=True)
    assert [g.sigma for g in gens] == [0.0, 0.1, 1.0] and all(g.relative for g in gens)
    spreads = [(g.fit(weights).sample(200) - weights.mean(0)).norm(dim=1).mean().item() for g in gens]
    assert spreads[0] < spreads[1] < spreads[2]


def test_average_k1_rows_kN_mean(weights):
    assert _is_row(AverageOfK(k=1).fit(weights).sample(30), weights)
    s = AverageOfK(k=6).fit(weights).sample(5, seed=2)
    assert torch.allclose(s, weights.mean(0).expand(5, -1), atol=1e-6)


def test_average_uses_k_distinct(weights):
    # with one-hot-like checkpoints, an average of k distinct ones has exactly k entries equal to 1/k
    eye = torch.eye(6)
    s = AverageOfK(k=3).fit(eye).sample(100, seed=0)
    assert torch.equal((s > 0).sum(dim=1), torch.full((100,), 3))
    assert torch.allclose(s[s > 0], torch.full_like(s[s > 0], 1 / 3))
    # each sample is fresh: no accumulation across samples (the original code's bug)
    assert torch.allclose(s.sum(dim=1), torch.ones(100))
    assert (s > 0).float().mean(0).min() > 0.3  # all checkpoints get used


@pytest.mark.parametrize("k", [3, 8, 16])
def test_coordinates_shared_by_every_checkpoint_stay_bit_identical(k):
    """P-diff's frozen layers: a float mean of equal values need not equal them; the baselines copy them."""
    g = torch.Generator().manual_seed(4)
    frozen = torch.randn(1, 500, generator=g) * 0.37
    w = torch.cat([frozen.expand(16, -1), torch.randn(16, 8, generator=g)], dim=1)
    for gen in (AverageOfK(k=k), PerParameterGaussian()):
        s = gen.fit(w).sample(50, seed=1)
        assert torch.equal(s[:, :500], frozen.expand(50, -1))
        assert not torch.equal(s[:, 500:], w[:1, 500:].expand(50, -1))


def test_gaussian_moments(weights):
    gen = PerParameterGaussian().fit(weights)
    s = gen.sample(20000, seed=1)
    assert torch.allclose(s.mean(0), weights.mean(0), atol=0.05)
    assert torch.allclose(s.std(0), weights.std(0, correction=0), rtol=0.03)
    mask = torch.arange(40) < 10
    s = PerParameterGaussian().fit(weights, mask=mask).sample(10)
    assert torch.equal(s[:, 10:], weights.mean(0)[10:].expand(10, -1))
    const = torch.ones(5, 7)  # coordinates shared by every checkpoint stay exactly
    assert torch.equal(PerParameterGaussian().fit(const).sample(3), torch.ones(3, 7))


@pytest.mark.parametrize("name,config", [("noise", {"sigma": 0.1}), ("noise", {"sigma": 0.1, "relative": True}),
                                         ("average", {"k": 3}), ("gaussian", {})])
def test_determinism_and_round_trip(weights, tmp_path, name, config):
    gen = make_generator(name, **config).fit(weights, mask=torch.arange(40) < 30)
    a, b, c = gen.sample(8, seed=4), gen.sample(8, seed=4), gen.sample(8, seed=5)
    assert torch.equal(a, b) and not torch.equal(a, c)
    loaded = load_generator(gen.save(tmp_path / name))
    assert type(loaded) is type(gen) and loaded.config() == gen.config()
    assert torch.equal(loaded.sample(8, seed=4), a)
    assert torch.equal(weights, torch.randn(6, 40, generator=torch.Generator().manual_seed(1))
                       * torch.linspace(0.1, 2, 40))  # inputs untouched


def test_bad_arguments(weights):
    with pytest.raises(ConfigError, match="sigma"):
        NoiseAddition(sigma=-0.1)
    with pytest.raises(ConfigError, match="k"):
        AverageOfK(k=0)
    with pytest.raises(ConfigError, match="k: expected at most .*6"):
        AverageOfK(k=7).fit(weights)
    with pytest.raises(ConfigError, match="not fitted"):
        PerParameterGaussian().sample(2)
    with pytest.raises(LayoutError, match="weights"):
        NoiseAddition().fit(torch.zeros(5))
    with pytest.raises(ConfigError, match="sigma"):
        make_generator("noise", sigma=float("nan"))
