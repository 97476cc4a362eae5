"""Rectified flow in the aligned space (``aligned-flow``): construction, early stopping, round trip."""

import pytest
import torch

from weightspace.errors import ConfigError, LayoutError
from weightspace.generative import aligned
from weightspace.generative.aligned.flow import AlignedFlow, _integrate
from weightspace.generator import load_generator, make_generator

SMALL = {"dims": 8, "hidden": 64, "max_steps": 300, "check_every": 100, "batch_size": 32}


@pytest.fixture(scope="module")
def zoo(aligned_tiny_zoo):
    return aligned_tiny_zoo


@pytest.fixture(scope="module")
def train(zoo):
    return aligned.SETTING.training(zoo)


@pytest.fixture(scope="module")
def fitted(zoo, train):
    return AlignedFlow(**aligned.SETTING.generator_config(zoo), **SMALL).fit(train)


def test_samples_are_the_flow_in_the_basis_plus_an_orthogonal_residual(zoo, fitted):
    """A draw is mean + (flow output × scales) on the kept directions, and the residual lies wholly
    outside them with the per-coordinate spread the fit left over."""
    plain = AlignedFlow(**{**fitted.config(), "permute_output": False})
    plain.load_state(fitted.state())
    w = plain.sample(500, seed=3)
    z = _integrate(plain.net, torch.randn(500, SMALL["dims"], generator=torch.Generator().manual_seed(3)),
                   plain.sample_steps)
    x = w - plain.mean
    torch.testing.assert_close(x @ plain.components.T, z * plain.scales, atol=1e-4, rtol=1e-4)
    rest = x - (x @ plain.components.T) @ plain.components
    assert float(rest.std()) == pytest.approx(float(plain.residual_std), rel=0.05)
    none = AlignedFlow(**{**plain.config(), "residual": "none"}).fit(aligned.SETTING.training(zoo))
    x = none.sample(20, seed=1) - none.mean
    torch.testing.assert_close(x, (x @ none.components.T) @ none.components, atol=1e-4, rtol=1e-4)


def test_output_permutation_keeps_the_function(zoo, fitted):
    plain = AlignedFlow(**{**fitted.config(), "permute_output": False})
    plain.load_state(fitted.state())
    w, w_plain = fitted.sample(16, seed=2), plain.sample(16, seed=2)
    assert not torch.allclose(w, w_plain)
    assert torch.equal(aligned.SETTING.predictions(zoo, w), aligned.SETTING.predictions(zoo, w_plain))


def test_training_moves_draws_towards_the_runs(zoo, train):
    """After training, the flow's draws lie nearer the whitened runs than the N(0, I) draws it starts
    from (an untrained or sign-flipped velocity field would not)."""
    gen = AlignedFlow(**aligned.SETTING.generator_config(zoo), **{**SMALL, "max_steps": 1000}, early_stopping=False,
                      residual="none", permute_output=False).fit(train)
    data, _ = aligned.barycenter_alignment(zoo.space, train.double())
    z_runs = ((data.float() - gen.mean) @ gen.components.T) / gen.scales
    noise = torch.randn(400, SMALL["dims"], generator=torch.Generator().manual_seed(0))
    z_flow = ((gen.sample(400, seed=0) - gen.mean) @ gen.components.T) / gen.scales
    def near(z):
        return float(torch.cdist(z, z_runs).min(1).values.median())

    assert near(z_flow) < 0.95 * near(noise)


def test_early_stopping_picks_a_checked_length_by_the_rule(fitted, train):
    steps, novelty, energy = fitted.history.T
    assert torch.equal(steps, torch.tensor([100.0, 200.0, 300.0], dtype=torch.float64))
    passing = novelty >= 1
    chosen = steps[passing][energy[passing].argmin()] if passing.any() else steps[novelty.argmax()]
    assert fitted.steps == int(chosen)
    fixed = AlignedFlow(**{**fitted.config(), "early_stopping": False, "max_steps": 50}).fit(train)
    assert fixed.steps == 50 and len(fixed.history) == 0


def test_round_trip_and_determinism(zoo, train, fitted, tmp_path):
    a = fitted.sample(8, seed=5)
    assert torch.equal(a, fitted.sample(8, seed=5)) and not torch.equal(a, fitted.sample(8, seed=6))
    again = make_generator("aligned-flow", **fitted.config()).fit(train)
    assert again.steps == fitted.steps and torch.equal(again.sample(8, seed=5), a)
    loaded = load_generator(fitted.save(tmp_path / "g"))
    assert loaded.config() == fitted.config()
    # the same numbers; the loaded net's buffers may sit at another memory alignment, so matmuls can
    # round differently in the last bit
    torch.testing.assert_close(loaded.sample(8, seed=5), a, rtol=1e-5, atol=1e-6)


def test_bad_arguments(zoo, train):
    config = aligned.SETTING.generator_config(zoo)
    with pytest.raises(ConfigError, match="residual"):
        AlignedFlow(**config, residual="diagonal")
    with pytest.raises(ConfigError, match="dims"):
        AlignedFlow(**config, dims=0)
    with pytest.raises(ConfigError, match="validation"):
        AlignedFlow(**config, validation=1.0)
    with pytest.raises(ConfigError, match="architecture"):
        AlignedFlow()
    with pytest.raises(LayoutError, match="760"):
        AlignedFlow(**config).fit(train[:, :100])
    with pytest.raises(ConfigError, match="not fitted"):
        AlignedFlow(**config).sample(2)
