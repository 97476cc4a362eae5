"""HyperDiffusion on the tiny preset: occupancy MLPs fitted from one shared init, a layer-token
diffusion model that reproduces them, deterministic sampling, and save/load."""

import json

import pytest
import torch

from weightspace.errors import ConfigError, LayoutError, ZooError
from weightspace.generative import hyperdiffusion as hd
from weightspace.generative.hyperdiffusion import SETTING, HyperDiffusion
from weightspace.generator import load_generator, make_generator
from weightspace.nets import OccupancyMLP
from weightspace.shapes import pairwise_chamfer
from weightspace.zoo import Zoo

build_data, fit_context, quality, shapes = SETTING.build, SETTING.fit_context, SETTING.quality, SETTING.shapes

# small enough to fit in seconds, large enough to memorise 4 models
SMALL = {"d_model": 32, "n_layers": 1, "n_heads": 2, "chunk_size": 128, "batch_size": 32, "lr": 3e-3,
         "ema_decay": 0.99, "train_steps": 400, "seed": 0}


@pytest.fixture(scope="module")
def zoo(hyperdiffusion_tiny_zoo):
    return hyperdiffusion_tiny_zoo


@pytest.fixture(scope="module")
def weights(zoo):
    return hd.SETTING.training(zoo)


@pytest.fixture(scope="module")
def fitted(zoo, weights):
    return HyperDiffusion(**SMALL).fit(weights, progress=False, **fit_context(zoo))


def test_build_data_fits_one_mlp_per_shape_from_the_first_shapes_fit(zoo, weights):
    df = zoo.index()
    # 4 training shapes' MLPs and, held out, the 4 test shapes fitted alike
    assert len(df) == 8 and weights.shape == (4, zoo.space.num_params)
    assert hd.SETTING.heldout(zoo).shape == (4, zoo.space.num_params)
    inits = df["hparams"].map(lambda h: json.loads(h)["init"])
    extra = df["extra"].map(json.loads)
    first = df["model_id"] == "shape-00000"
    assert (inits[first] == "random").all() and (inits[~first] == "first-shape").all()
    split = extra.map(lambda e: e.get("split", "train"))
    assert sorted(e["shape_index"] for e in extra[split == "train"]) == [0, 1, 2, 3]
    assert sorted(e["shape_index"] for e in extra[split == "test"]) == [0, 1, 2, 3]
    assert df.loc[split == "test", "model_id"].str.startswith("heldout-").all()
    assert (df["train_acc"] > 0.9).all()
    assert min(e["iou"] for e in extra) > 0.85  # each MLP draws its own silhouette
    assert df["run_id"].str.contains("/").all()  # the source image's id


def test_build_data_resumes_without_refitting(zoo, weights):
    again = build_data(zoo.root, preset="tiny", progress=False)
    assert len(again) == 8 and torch.equal(hd.SETTING.training(again), weights)
    with pytest.raises(ConfigError, match="use another directory"):
        build_data(zoo.root, preset="default", progress=False)


def test_decoded_mlps_match_their_own_silhouettes(zoo, weights):
    d = pairwise_chamfer(shapes(zoo, weights), hd.training_shapes(zoo))
    own = d.diagonal()
    others = d.masked_fill(torch.eye(len(d), dtype=torch.bool), float("nan")).nanmedian(1).values
    assert (own < 0.25 * others).all()  # far closer to its own silhouette than to the others
    assert (own <= d.min(1).values + 1e-9).all()  # nearest ground-truth shape is its own
    test = hd.test_shapes(zoo)
    assert len(test) == 4
    for cloud in [*shapes(zoo, weights), *test]:  # normalised as the paper: zero mean, unit std
        torch.testing.assert_close(cloud.mean(0), torch.zeros(2), atol=1e-5, rtol=0)
        torch.testing.assert_close(cloud.std(correction=0), torch.tensor(1.0))
    q = quality(zoo, weights)
    torch.testing.assert_close(q, -pairwise_chamfer(shapes(zoo, weights), test).min(1).values)
    assert q.shape == (4,) and (q < 0).all()
    assert hd.SETTING.n_samples(zoo) == 5  # ceil(1.1 x 4 test shapes)


def test_segments_are_layers_cut_into_chunks():
    space = OccupancyMLP(widths=(16, 16), n_frequencies=3).space  # weights 224, 16, 256, 16, 16, 1
    seg = hd.segments(space.num_params, space, 128)
    assert seg[:, 1].tolist() == [112, 112, 16, 128, 128, 16, 16, 1]
    assert seg[:, 0].tolist() == [0, 112, 224, 240, 368, 496, 512, 528]
    assert hd.segments(10, None, 4)[:, 1].tolist() == [3, 4, 3]


def test_samples_reproduce_the_training_mlps(zoo, weights, fitted):
    x = fitted.sample(8, seed=0)
    assert x.shape == (8, weights.shape[1]) and torch.isfinite(x).all()
    spread = torch.cdist(weights, weights)
    spread.fill_diagonal_(float("inf"))
    nearest = torch.cdist(x, weights).min(1).values
    assert (nearest < 0.25 * spread.min()).float().mean() >= 0.75
    # decoded, most samples are one of the training shapes
    cd = pairwise_chamfer(shapes(zoo, x), shapes(zoo, weights)).min(1).values
    train_cd = pairwise_chamfer(shapes(zoo, weights), shapes(zoo, weights))
    train_cd.fill_diagonal_(float("inf"))
    assert cd.median() < 0.5 * train_cd.min()
    # copies of training MLPs are no further from the test shapes than the farthest training MLP
    assert -quality(zoo, x).median() <= -quality(zoo, weights).min() + 1e-6


def test_sampling_is_reproducible_with_a_seed(fitted):
    a, b, c = fitted.sample(3, seed=7), fitted.sample(3, seed=7), fitted.sample(3, seed=8)
    assert torch.equal(a, b) and not torch.equal(a, c)


@pytest.mark.parametrize("normalize", ["coordinate", "token"])
def test_fit_is_reproducible_and_leaves_the_global_rng_alone(zoo, weights, normalize):
    cfg = {**SMALL, "train_steps": 20, "normalize": normalize, "dropout": 0.1}
    state = torch.random.get_rng_state()
    one = HyperDiffusion(**cfg).fit(weights, progress=False, **fit_context(zoo))
    assert torch.equal(torch.random.get_rng_state(), state)
    two = HyperDiffusion(**cfg).fit(weights, progress=False, **fit_context(zoo))
    assert torch.equal(one.sample(2, seed=1), two.sample(2, seed=1))
    assert torch.isfinite(one.sample(2, seed=1)).all()


def test_save_load_round_trip_gives_identical_samples(tmp_path, fitted):
    fitted.save(tmp_path / "gen")
    loaded = load_generator(tmp_path / "gen")
    assert isinstance(loaded, HyperDiffusion) and loaded.config() == fitted.config()
    assert torch.equal(loaded.sample(4, seed=3), fitted.sample(4, seed=3))


def test_errors_name_the_problem(zoo, weights):
    with pytest.raises(ConfigError, match="prediction"):
        make_generator("hyperdiffusion", prediction="v")
    with pytest.raises(ConfigError, match="n_heads"):
        HyperDiffusion(d_model=30, n_heads=4)
    with pytest.raises(ConfigError, match="fit"):
        HyperDiffusion().sample(1)
    with pytest.raises(LayoutError, match="parameters"):
        HyperDiffusion(**SMALL).fit(weights[:, :-1], progress=False, space=zoo.space)
    with pytest.raises(LayoutError, match="weights"):
        quality(zoo, weights[:, :10])
    with pytest.raises(ConfigError, match="preset"):
        build_data(zoo.root, preset="huge")


def test_zoo_from_another_method_is_refused(tmp_path, zoo):
    other = Zoo.create(tmp_path / "other", zoo.space, architecture=zoo.info["architecture"], task={})
    with pytest.raises(ZooError, match="hyperdiffusion"):
        quality(other, torch.zeros(1, zoo.space.num_params))


def test_built_zoo_matches_what_the_method_records(zoo):
    """Both lookups check the zoo against the method's ZOO_RECORD; the zoo build_data wrote passes."""
    from weightspace.generative import hyperdiffusion as module
    from weightspace.zoo.setting import setting_for_zoo

    assert setting_for_zoo(zoo) is module.SETTING
