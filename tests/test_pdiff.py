import pytest
import torch

from weightspace.errors import ConfigError
from weightspace.generative import pdiff
from weightspace.generative.pdiff import PDiff
from weightspace.generator import GENERATORS, load_generator

# small enough for a test, large enough to memorise three checkpoints
SMALL = {"ae_channels": (16, 32), "latent_channels": 2, "ae_steps": 500, "ae_lr": 5e-3, "batch_size": 16,
         "denoiser_width": 64, "denoiser_depth": 2, "diffusion_steps": 100, "ddpm_steps": 600, "ddpm_lr": 2e-3,
         "ema_decay": 0.99}


def _l2(a, b):
    return torch.cdist(a.double(), b.double(), compute_mode="donot_use_mm_for_euclid_dist")


@pytest.fixture(scope="module")
def zoo(pdiff_tiny_zoo):
    return pdiff_tiny_zoo


@pytest.fixture(scope="module")
def fitted(zoo):
    w = pdiff.SETTING.training(zoo)[[0, 10, 19]]  # three checkpoints along the fine-tune
    return PDiff(**SMALL).fit(w, progress=False, **pdiff.SETTING.fit_context(zoo)), w


def test_build_data_tiny(zoo, tmp_path):
    w = pdiff.SETTING.training(zoo)
    _, df = zoo.load("run_id = 'finetune' AND step > 0")
    assert w.shape == (20, zoo.space.num_params)
    assert df["step"].tolist() == list(range(1, 21))
    mask = pdiff.SETTING.fit_context(zoo)["mask"]
    assert int(mask.sum()) == 2 * (32 + 32)  # affine weight + bias of the last two BatchNorm layers
    base = pdiff.base_weights(zoo)
    assert torch.equal(w[:, ~mask], base[~mask].expand(20, -1))  # only the BN affine parameters moved
    assert (w[:, mask] != base[mask]).any(dim=1).all()
    acc = pdiff.SETTING.quality(zoo, w)
    assert torch.allclose(acc, torch.tensor(df["test_acc"].values, dtype=acc.dtype), atol=1e-6)
    assert acc.min() > 0.5
    assert pdiff.SETTING.predictions(zoo, w[:2]).shape == (2, 359)
    n = len(zoo)
    assert len(pdiff.SETTING.build(zoo.root, preset="tiny", progress=False)) == n  # resumes: nothing new
    with pytest.raises(ConfigError, match="preset"):
        pdiff.SETTING.build(zoo.root, preset="default", progress=False)
    with pytest.raises(ConfigError, match="preset"):
        pdiff.SETTING.build(tmp_path, preset="huge", progress=False)


def test_samples_reproduce_training_checkpoints(zoo, fitted):
    gen, w = fitted
    assert GENERATORS["pdiff"] is PDiff
    s = gen.sample(16, seed=0)
    assert s.shape == (16, w.shape[1])
    mask = pdiff.SETTING.fit_context(zoo)["mask"]
    gap = _l2(w[:, mask], w[:, mask])
    gap = gap[gap > 0].min()
    dist = _l2(s[:, mask], w[:, mask]).sort(dim=1).values
    nearest = dist[:, 0]
    # samples sit on training checkpoints (up to the autoencoder's reconstruction error), far
    # closer to one than the checkpoints are to each other or to the next nearest one; a few may
    # fall between them
    on_checkpoint = (nearest < 0.25 * gap) & (nearest < 0.3 * dist[:, 1])
    assert nearest.median() < 0.2 * gap and on_checkpoint.float().mean() >= 0.75
    assert nearest.median() < 0.01 * w[:, mask].norm(dim=1).min()
    assert len(set(_l2(s[:, mask], w[:, mask]).argmin(dim=1).tolist())) >= 2  # not a single mode
    acc = pdiff.SETTING.quality(zoo, s)
    assert acc.mean() > 0.9 * pdiff.SETTING.quality(zoo, w).mean()


def test_only_modelled_coordinates_differ(zoo, fitted):
    gen, w = fitted
    s = gen.sample(4, seed=1)
    mask = pdiff.SETTING.fit_context(zoo)["mask"]
    assert torch.equal(s[:, ~mask], w[0, ~mask].expand(4, -1))
    assert torch.equal(gen.index, torch.nonzero(mask).flatten())


def test_seeded_and_round_trip(fitted, tmp_path):
    gen, _ = fitted
    a = gen.sample(5, seed=3)
    assert torch.equal(a, gen.sample(5, seed=3))
    assert not torch.equal(a, gen.sample(5, seed=4))
    loaded = load_generator(gen.save(tmp_path / "g"))
    assert isinstance(loaded, PDiff) and loaded.config() == gen.config()
    assert torch.equal(loaded.sample(5, seed=3), a)


def test_fit_is_seeded_and_mask_defaults_to_varying(zoo):
    w = pdiff.SETTING.training(zoo)[[0, 19]]
    quick = {**SMALL, "ae_steps": 20, "ddpm_steps": 20}
    a = PDiff(**quick).fit(w, progress=False)
    b = PDiff(**quick).fit(w, progress=False)
    assert torch.equal(a.sample(3, seed=0), b.sample(3, seed=0))
    assert torch.equal(a.index, torch.nonzero(w[0] != w[1]).flatten())


def test_bad_config():
    with pytest.raises(ConfigError, match="latent_noise"):
        PDiff(latent_noise=1.5)
    with pytest.raises(ConfigError, match="ae_steps"):
        PDiff(ae_steps=0)
    with pytest.raises(ConfigError, match="kernel_size"):
        PDiff(kernel_size=4)
    with pytest.raises(ConfigError, match="not fitted"):
        PDiff().sample(1)


def test_built_zoo_matches_what_the_method_records(zoo):
    """Both lookups check the zoo against the method's ZOO_RECORD; the zoo build_data wrote passes."""
    from weightspace.generative import pdiff as module
    from weightspace.zoo.setting import setting_for_zoo

    assert setting_for_zoo(zoo) is module.SETTING
