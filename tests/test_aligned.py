"""weightspace's own generator (aligned PPCA over many runs), the aligned-interpolation baseline and
the fraction beyond every baseline frontier."""

import numpy as np
import pytest
import torch

from weightspace.align import aligned_l2_pairs, canonical_form
from weightspace.audit.frontiers import beyond_every_frontier
from weightspace.audit.novelty import noise_frontier
from weightspace.baselines import AlignedInterpolation
from weightspace.errors import ConfigError, LayoutError, ZooError
from weightspace.generative import aligned
from weightspace.generator import load_generator, make_generator
from weightspace.symmetry import permute, random_permutation


@pytest.fixture(scope="module")
def zoo(aligned_tiny_zoo):
    return aligned_tiny_zoo


@pytest.fixture(scope="module")
def train(zoo):
    return aligned.SETTING.training(zoo)


def test_data_setting(zoo, train):
    held = aligned.SETTING.heldout(zoo)
    assert train.shape == (48, 760) and held.shape == (12, 760)
    assert float(aligned.SETTING.quality(zoo, held).median()) > 0.85  # trained digits MLPs
    assert not any(torch.equal(h, t) for h in held for t in train)


def test_fit_ignores_neuron_order(zoo, train):
    """Fitting on the runs with their hidden neurons shuffled finds the same barycenter (up to one
    relabelling): the alignment removes the permutation symmetry the generator would otherwise model."""
    shuffled = permute(zoo.space, train, random_permutation(zoo.space, n=len(train), generator=torch.Generator().manual_seed(3)))
    shuffled[0] = train[0]  # same starting reference
    a = aligned.AlignedGaussian(**aligned.SETTING.generator_config(zoo)).fit(train)
    b = aligned.AlignedGaussian(**aligned.SETTING.generator_config(zoo)).fit(shuffled)
    torch.testing.assert_close(canonical_form(zoo.space, a.mean[None]), canonical_form(zoo.space, b.mean[None]))
    unaligned = aligned.AlignedGaussian(**aligned.SETTING.generator_config(zoo), align=False).fit(shuffled)
    assert not torch.allclose(canonical_form(zoo.space, unaligned.mean[None]), canonical_form(zoo.space, a.mean[None]),
                              atol=1e-3)


def test_output_permutation_keeps_the_function(zoo, train):
    gen = aligned.AlignedGaussian(**aligned.SETTING.generator_config(zoo)).fit(train)
    plain = aligned.AlignedGaussian(**{**gen.config(), "permute_output": False})
    plain.load_state(gen.state())
    w, w_plain = gen.sample(16, seed=2), plain.sample(16, seed=2)
    assert not torch.allclose(w, w_plain)
    assert torch.equal(aligned.SETTING.predictions(zoo, w), aligned.SETTING.predictions(zoo, w_plain))


@pytest.mark.parametrize("residual", ["isotropic", "diagonal", "none"])
def test_samples_keep_the_variance(zoo, train, residual):
    """The draws' total variance is the aligned runs' (``none``: the kept directions' only)."""
    gen = aligned.AlignedGaussian(**aligned.SETTING.generator_config(zoo), rank=8, residual=residual,
                                  permute_output=False).fit(train)
    data, _ = aligned.barycenter_alignment(zoo.space, train.double())
    total = float(data.var(0, correction=0).sum())
    drawn = float(gen.sample(4000, seed=0).double().var(0).sum())
    if residual == "none":
        assert drawn == pytest.approx(float(gen.scales.double().square().sum()), rel=0.05)
        assert drawn < 0.95 * total
    else:
        assert drawn == pytest.approx(total, rel=0.05)


def test_round_trip_and_determinism(zoo, train, tmp_path):
    gen = make_generator("aligned", **aligned.SETTING.generator_config(zoo), rank=4).fit(train)
    a = gen.sample(8, seed=5)
    assert torch.equal(a, gen.sample(8, seed=5)) and not torch.equal(a, gen.sample(8, seed=6))
    loaded = load_generator(gen.save(tmp_path / "g"))
    assert loaded.config() == gen.config() and torch.equal(loaded.sample(8, seed=5), a)


def test_bad_arguments(zoo, train):
    config = aligned.SETTING.generator_config(zoo)
    with pytest.raises(ConfigError, match="residual"):
        aligned.AlignedGaussian(**config, residual="full")
    with pytest.raises(ConfigError, match="rank"):
        aligned.AlignedGaussian(**config, rank=0)
    with pytest.raises(ConfigError, match="architecture"):
        aligned.AlignedGaussian()
    with pytest.raises(LayoutError, match="760"):
        aligned.AlignedGaussian(**config).fit(train[:, :100])
    with pytest.raises(ConfigError, match="not fitted"):
        aligned.AlignedGaussian(**config).sample(2)
    with pytest.raises(ConfigError, match="preset"):
        aligned.SETTING.build("unused", preset="huge")


def test_aligned_interpolation(zoo, train):
    space = zoo.space
    ends = AlignedInterpolation(0.0, space).fit(train).sample(6, seed=1)
    assert all(any(torch.equal(e, t) for t in train) for e in ends)  # λ = 0: the first run of each pair
    far = AlignedInterpolation(1.0, space.to_json()).fit(train).sample(6, seed=1)  # λ = 1: the second, relabelled
    preds = aligned.SETTING.predictions(zoo, train)
    assert all((aligned.SETTING.predictions(zoo, f[None]) == preds).all(1).any() for f in far)
    mid = AlignedInterpolation(0.5, space).fit(train).sample(6, seed=1)
    # the midpoint sits halfway along the aligned segment: aligned distance to its first end = half of a-to-π(b)
    d_ends = aligned_l2_pairs(space, ends, far)
    d_mid = (mid - ends).norm(dim=1)
    torch.testing.assert_close(d_mid, d_ends / 2, rtol=1e-4, atol=1e-5)
    with pytest.raises(ConfigError, match="lam"):
        AlignedInterpolation(1.5, space)
    with pytest.raises(ConfigError, match="space"):
        AlignedInterpolation(0.5)


def test_beyond_every_frontier():
    rng = np.random.default_rng(0)
    low = noise_frontier([0.1, 0.2], [rng.normal(0.8, 0.01, 50), rng.normal(0.4, 0.01, 50)],
                         [rng.normal(0.9, 0.01, 50), rng.normal(0.5, 0.01, 50)])
    high = noise_frontier([1.0], [rng.normal(0.6, 0.01, 50)], [rng.normal(0.7, 0.01, 50)])
    sim = np.array([0.5, 0.5, 0.5, 0.5])
    quality = np.array([0.8, 0.8, 0.65, 0.65])  # first two above both frontiers, last two above `low` only
    res = beyond_every_frontier(sim, quality, {"low": low, "high": high}, n_boot=200, seed=1)
    assert res["fraction"] == 0.5
    assert res["per_frontier"] == {"low": 1.0, "high": 0.5}
    assert res["ci_low"] <= 0.5 <= res["ci_high"]
    with pytest.raises(ConfigError, match="frontiers"):
        beyond_every_frontier(sim, quality, {})


def test_scale_normalisation(zoo, train):
    """Scales moved to the outgoing weights for the fit, restored from the runs on output: samples
    sit on the runs' own neuron scales, and the normalised fit's mean has unit incoming norms."""
    gen = aligned.AlignedGaussian(**aligned.SETTING.generator_config(zoo), normalise_scale=True).fit(train)
    (mean_norms,) = aligned.incoming_norms(zoo.space, gen.mean[None]).values()
    assert float(mean_norms.max()) <= 1 + 1e-5
    # at temperature 0 a sample is the mean with one run's neuron norms put back
    still = aligned.AlignedGaussian(**{**gen.config(), "temperature": 0.0, "permute_output": False})
    still.load_state(gen.state())
    (sample_norms,) = aligned.incoming_norms(zoo.space, still.sample(8, seed=0)).values()
    (run_norms,) = gen.norms.values()
    ratio = sample_norms / mean_norms
    assert all(torch.isclose(r, run_norms, rtol=1e-4).all(1).any() for r in ratio)
    loaded = aligned.AlignedGaussian(**gen.config())
    loaded.load_state(gen.state())
    assert torch.equal(loaded.sample(4, seed=1), gen.sample(4, seed=1))


@pytest.mark.slow
def test_study_runs_the_method_with_every_frontier(tmp_path):
    import json

    from weightspace.study import run_study

    run_study(tmp_path, preset="tiny", methods_=["aligned"], seeds=1, progress=False)
    results = json.loads((tmp_path / "results.json").read_text())
    (run,) = results["results"]["aligned"]["seeds"]
    from weightspace.audit.controls import EXPECTED

    rows = {r["group"]: r for r in run["beyond_every"]}
    assert set(rows) == {"Aligned Gaussian (weightspace)", *EXPECTED}  # the generated group and every control
    for r in rows.values():
        assert 0 <= r["CI low"] <= r["beyond every frontier"] <= r["CI high"] <= 1
        # beyond every frontier is never more than beyond any one of them
        assert r["beyond every frontier"] <= min(v for k, v in r.items() if k.startswith("beyond ") and k != "beyond every frontier")
    assert {f"aligned interpolation λ={lam}" for lam in (0.1, 0.2, 0.3, 0.4, 0.5)} <= set(run["verdicts"])
    assert (tmp_path / "aligned_gaussian_weightspace_beyond_every_baseline_frontier.csv").exists()


def test_finetune_weights(zoo, train):
    from weightspace.zoo.build import task_for_zoo
    from weightspace.zoo.trainer import finetune_weights

    task = task_for_zoo(zoo)
    start = aligned.AlignedGaussian(**aligned.SETTING.generator_config(zoo)).fit(train).sample(6, seed=0)
    assert torch.equal(finetune_weights(task.arch, task.dataset, start, steps=0), start)
    tuned = finetune_weights(task.arch, task.dataset, start, steps=30, seed=1)
    assert torch.equal(tuned, finetune_weights(task.arch, task.dataset, start, steps=30, seed=1))
    x, y = task.dataset.split("train")
    before, _, _ = task.arch.loss_and_grad(start, x.expand(6, *x.shape), y.expand(6, -1))
    after, _, _ = task.arch.loss_and_grad(tuned, x.expand(6, *x.shape), y.expand(6, -1))
    assert bool((after < before).all())
    with pytest.raises(ConfigError, match="steps"):
        finetune_weights(task.arch, task.dataset, start, steps=-1)


def test_built_zoo_matches_what_the_method_records(zoo):
    """Both lookups check the zoo against the method's ZOO_RECORD; the zoo build_data wrote passes."""
    from weightspace.generative import aligned as module
    from weightspace.zoo.setting import setting_for_zoo

    assert setting_for_zoo(zoo) is module.SETTING


def test_width_option(tmp_path):
    """``width`` sets the hidden layer (layout, permutation group, recorded config); a zoo of one width
    is not reopened as another, and a bad width names the argument."""
    zoo = aligned.SETTING.build(tmp_path / "w6", preset="tiny", runs=4, width=6, progress=False)
    assert zoo.space.num_params == 64 * 6 + 6 + 6 * 10 + 10
    assert [g.size for g in zoo.space.groups] == [6]
    assert zoo.info["config"]["architecture"]["widths"] == [6]
    assert aligned.SETTING.training(zoo).shape == (4, zoo.space.num_params)
    assert len(aligned.SETTING.heldout(zoo)) == aligned.PRESETS["tiny"]["heldout_runs"]
    gen = aligned.AlignedGaussian(**aligned.SETTING.generator_config(zoo), rank=2).fit(aligned.SETTING.training(zoo))
    assert gen.sample(3, seed=0).shape == (3, zoo.space.num_params)
    with pytest.raises(ZooError, match="mlp-64x6x10-relu"):
        aligned.SETTING.build(tmp_path / "w6", preset="tiny", runs=4, width=8, progress=False)
    for bad in (0, 2.5, True):
        with pytest.raises(ConfigError, match="width"):
            aligned.SETTING.build(tmp_path / "bad", preset="tiny", width=bad, progress=False)


def test_full_rank_by_name(zoo, train, tmp_path):
    """``rank=None`` (all N - 1 directions) passes make_generator's option check, where the constructor
    allows None; a None where it does not is refused with the option's name."""
    gen = make_generator("aligned", **aligned.SETTING.generator_config(zoo), rank=None).fit(train)
    assert len(gen.scales) == len(train) - 1
    assert load_generator(gen.save(tmp_path / "full")).config()["rank"] is None
    with pytest.raises(ConfigError, match="residual"):
        make_generator("aligned", **aligned.SETTING.generator_config(zoo), residual=None)


def test_kmeans_finds_separated_clusters():
    from weightspace.generative.aligned.mixture import kmeans

    g = torch.Generator().manual_seed(0)
    x = torch.cat([torch.randn(20, 5, generator=g), torch.randn(12, 5, generator=g) + 20])
    labels = kmeans(x, 2, generator=torch.Generator().manual_seed(1))
    assert len(set(labels[:20].tolist())) == 1 and len(set(labels[20:].tolist())) == 1 and labels[0] != labels[-1]


def test_mixture_of_one_is_the_aligned_gaussian_and_round_trips(zoo, train, tmp_path):
    config = aligned.SETTING.generator_config(zoo)
    one = make_generator("aligned-mixture", **config, components=1, rank=4).fit(train)
    plain = make_generator("aligned", **config, rank=4).fit(train)
    torch.testing.assert_close(one.parts[0].mean, plain.mean)
    two = make_generator("aligned-mixture", **config, components=2, rank=4, seed=3).fit(train)
    assert two.proportions.sum() == pytest.approx(1.0) and len(two.parts) == 2
    a = two.sample(20, seed=1)
    assert a.shape == (20, zoo.space.num_params) and torch.equal(a, two.sample(20, seed=1))
    loaded = load_generator(two.save(tmp_path / "mix"))
    assert loaded.config() == two.config() and torch.equal(loaded.sample(20, seed=1), a)
    # each sample is drawn around one cluster's barycenter: nearer to it than to the other one's
    means = torch.stack([canonical_form(zoo.space, p.mean[None])[0] for p in two.parts])
    drawn = canonical_form(zoo.space, two.sample(200, seed=2))
    assert torch.cdist(drawn, means).argmin(1).bincount(minlength=2).min() > 0
    with pytest.raises(ConfigError, match="components"):
        make_generator("aligned-mixture", **config, components=0)
    with pytest.raises(LayoutError, match="components"):
        make_generator("aligned-mixture", **config, components=30).fit(train)
