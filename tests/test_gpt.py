import pytest
import torch

from weightspace.data import load_dataset
from weightspace.errors import ConfigError, LayoutError
from weightspace.generative.gpt import (
    PRESETS,
    SETTING,
    Gpt,
    checkpoint_pairs,
    permute_pairs,
)
from weightspace.generator import load_generator, make_generator
from weightspace.nets import build_architecture
from weightspace.symmetry import permutation_pool

build_data, training_weights, heldout_weights = SETTING.build, SETTING.training, SETTING.heldout
fit_context, quality, predictions = SETTING.fit_context, SETTING.quality, SETTING.predictions

# the tiny preset's digits MLP 64→10→10 (the default is the paper's 784→10→10)
SMALL = {"d_model": 32, "n_layers": 1, "n_heads": 2, "ddim_steps": 20, "architecture": PRESETS["tiny"]["architecture"]}


@pytest.fixture(scope="module")
def zoo(gpt_tiny_zoo):
    return gpt_tiny_zoo


def _runs(zoo, keep):
    """Final checkpoints and fit context restricted to the runs ``keep``."""
    ctx = fit_context(zoo)
    rows = [i for i, r in enumerate(ctx["run_ids"]) if r in keep]
    ctx = {"checkpoints": ctx["checkpoints"][rows], "run_ids": [ctx["run_ids"][i] for i in rows],
           "steps": ctx["steps"][rows], "losses": ctx["losses"][rows]}
    _, df = zoo.load()
    finals = df[df["run_id"].isin(keep)].groupby("run_id")["step"].idxmax().sort_index()
    return zoo.load(ids=df.loc[finals, "model_id"].tolist())[0], ctx


@pytest.fixture(scope="module")
def memorizer(zoo):
    """Fit on three runs: G.pt should reproduce their final checkpoints."""
    finals, ctx = _runs(zoo, {"run0000", "run0001", "run0002"})
    gen = Gpt(**SMALL, train_steps=600, seed=0)
    final_loss = float(ctx["losses"][ctx["steps"] == ctx["steps"].max()].mean())
    return gen.fit(finals, progress=False, **ctx), finals, final_loss


def test_data_and_context(zoo):
    weights, df = zoo.load()
    assert df["run_id"].nunique() == 6 + 2 and len(df) == 32  # 6 training runs, 2 held out
    assert sorted(df["step"].unique().tolist()) == [0, 34, 68, 102]
    finals = training_weights(zoo)
    held_out = df["run_id"].str.startswith("heldout").to_numpy()
    assert finals.shape == (6, 760)
    assert torch.equal(finals, weights[torch.as_tensor((df["step"] == 102).to_numpy() & ~held_out)])
    assert torch.equal(heldout_weights(zoo), weights[torch.as_tensor((df["step"] == 102).to_numpy() & held_out)])
    assert heldout_weights(zoo).shape == (2, 760)
    ctx = fit_context(zoo)
    assert not any(r.startswith("heldout") for r in ctx["run_ids"])  # never shown to the generator
    assert ctx["checkpoints"].shape == (24, 760) and len(ctx["run_ids"]) == len(ctx["steps"]) == len(ctx["losses"]) == 24
    # the init's loss is near log(10); training lowers it
    assert ctx["losses"][ctx["steps"] == 0].mean() > ctx["losses"][ctx["steps"] == 102].mean() + 1.0
    pairs = checkpoint_pairs(ctx["run_ids"], ctx["steps"])
    assert len(pairs) == 6 * 6  # C(4, 2) per run
    for i, j in pairs.tolist():
        assert ctx["run_ids"][i] == ctx["run_ids"][j] and ctx["steps"][j] > ctx["steps"][i]
    with pytest.raises(ConfigError, match="metric"):
        fit_context(zoo, metric="test_acc")


def test_permutation_augmentation_keeps_functions(zoo):
    ctx = fit_context(zoo)
    pairs = checkpoint_pairs(ctx["run_ids"], ctx["steps"])
    start, target = ctx["checkpoints"][pairs[:, 0]], ctx["checkpoints"][pairs[:, 1]]
    p_start, p_target = permute_pairs(zoo.space, start, target, torch.Generator().manual_seed(0))
    assert not torch.equal(p_start, start) and not torch.equal(p_target, target)
    assert torch.equal(start, ctx["checkpoints"][pairs[:, 0]])  # inputs untouched
    arch = build_architecture(zoo.info["architecture"])
    x = torch.randn(16, 64)
    for before, after in ((start, p_start), (target, p_target)):
        torch.testing.assert_close(arch.logits(after, x), arch.logits(before, x), rtol=1e-5, atol=1e-5)
        # a permutation only moves coordinates
        assert torch.equal(after.sort(dim=1).values, before.sort(dim=1).values)
    # both members of a pair get the same permutation
    same, _ = permute_pairs(zoo.space, start, start, torch.Generator().manual_seed(0))
    assert torch.equal(same, p_start)
    _, same_target = permute_pairs(zoo.space, target, target, torch.Generator().manual_seed(0))
    assert torch.equal(same_target, p_target)


def test_permutation_pool_starts_with_the_identity(zoo):
    finals = training_weights(zoo)
    pool = permutation_pool(zoo.space, 3, torch.Generator().manual_seed(0))
    assert pool.shape == (3, 760) and torch.equal(pool[0], torch.arange(760))
    arch = build_architecture(zoo.info["architecture"])
    x = torch.randn(16, 64)
    for p in pool[1:]:
        assert not torch.equal(p, pool[0]) and torch.equal(p.sort().values, pool[0])
        torch.testing.assert_close(arch.logits(finals[:, p], x), arch.logits(finals, x), rtol=1e-5, atol=1e-5)
    for off in (0, 1, -1):  # no pool: identity only
        assert torch.equal(permutation_pool(zoo.space, off, torch.Generator()), pool[:1])


def test_prompted_samples_reproduce_final_checkpoints(zoo, memorizer):
    gen, finals, final_loss = memorizer
    spacing = torch.pdist(finals).min()
    # fresh inits, none of them a training run's init
    inits = gen.initial_weights(16, seed=0)
    assert torch.cdist(inits, build_architecture(zoo.info["architecture"]).init(range(6))).min() > 1.0
    # prompted with the loss the runs ended at, each sample is a near-replica of a final checkpoint
    replicas = gen.prompt(inits, target_loss=final_loss, seed=0)
    assert torch.cdist(replicas, finals).min(1).values.max() < 0.3 * spacing
    # the default prompt (target loss 0, beyond the data) still gives working models
    samples = gen.sample(16, seed=0)
    assert samples.shape == (16, 760) and torch.isfinite(samples).all()
    assert torch.cdist(samples, finals).min(1).values.max() < 0.6 * spacing
    assert quality(zoo, samples).mean() > 0.75  # the runs reach 0.94; chance is 0.1


def test_seeded_and_save_load_round_trip(zoo, memorizer, tmp_path):
    gen, finals, _ = memorizer
    a, b, c = gen.sample(4, seed=1), gen.sample(4, seed=1), gen.sample(4, seed=2)
    assert torch.equal(a, b) and not torch.equal(a, c)
    loaded = load_generator(gen.save(tmp_path / "g"))
    assert isinstance(loaded, Gpt) and loaded.config() == gen.config()
    assert torch.equal(loaded.sample(4, seed=1), a)
    # a fit is a function of its seed, and leaves the global RNG alone
    _, ctx = _runs(zoo, {"run0000", "run0001"})
    rng = torch.get_rng_state()
    fits = [make_generator("gpt", **SMALL, train_steps=5, seed=s).fit(finals, progress=False, **ctx) for s in (3, 3, 4)]
    assert torch.equal(torch.get_rng_state(), rng)
    s0, s1, s2 = (f.sample(3, seed=0) for f in fits)
    assert torch.equal(s0, s1) and not torch.equal(s0, s2)


def test_quality_and_predictions_agree(zoo):
    finals = training_weights(zoo)
    preds = predictions(zoo, finals)
    assert preds.shape == (6, 359) and preds.dtype == torch.long
    y_test = load_dataset(zoo.info["task"]["name"], **zoo.info["task"]["options"]).y_test
    acc = quality(zoo, finals)
    torch.testing.assert_close(acc, (preds == y_test).float().mean(1))
    _, df = zoo.load()
    finals_df = df[(df["step"] == 102) & ~df["run_id"].str.startswith("heldout")]
    torch.testing.assert_close(acc, torch.tensor(finals_df["test_acc"].to_numpy(), dtype=torch.float32))
    assert acc.mean() > 0.85  # six epochs of SGD learn digits


def test_options_fit_and_sample(zoo):
    """The original's residual and permutation augmentation, the DDPM sampler, no fresh inits."""
    finals, ctx = training_weights(zoo), fit_context(zoo)
    gen = Gpt(**SMALL, train_steps=3, global_residual=True, permutations=-1, fresh_init_prob=0.0,
              sampler="ddpm", diffusion_steps=50).fit(finals, progress=False, **ctx)
    starts = gen.initial_weights(3)
    out = gen.prompt(starts, start_loss=2.3, target_loss=0.5)
    assert out.shape == (3, 760) and torch.isfinite(out).all()
    # zero-initialised decoders: before learning much, the residual model stays near its start
    assert (out - starts).norm(dim=1).max() < (out - finals[:3]).norm(dim=1).max() + 10


def test_errors(zoo):
    finals, ctx = training_weights(zoo), fit_context(zoo)
    with pytest.raises(ConfigError, match="checkpoints="):
        Gpt(**SMALL).fit(finals, progress=False)
    with pytest.raises(ConfigError, match="no run has two checkpoints"):
        checkpoint_pairs(["a", "b"], torch.tensor([0, 0]))
    with pytest.raises(ConfigError, match="sampler"):
        Gpt(sampler="euler")
    with pytest.raises(ConfigError, match="fit"):
        Gpt(**SMALL).sample(2)
    with pytest.raises(LayoutError, match="starts"):
        Gpt(**SMALL, train_steps=2).fit(finals, progress=False, **ctx).prompt(finals[:, :10])
    with pytest.raises(ConfigError, match="permutations"):
        Gpt(permutations=-2)
    with pytest.raises(ConfigError, match="fresh_init_prob"):
        Gpt(fresh_init_prob=1.5)
    with pytest.raises(ConfigError, match="preset"):
        build_data("unused", preset="huge")
    with pytest.raises(LayoutError, match="checkpoints"):
        Gpt(**SMALL).fit(finals, progress=False, **{**ctx, "checkpoints": ctx["checkpoints"][:, :-1]})


def test_built_zoo_matches_what_the_method_records(zoo):
    """Both lookups check the zoo against the method's ZOO_RECORD; the zoo build_data wrote passes."""
    from weightspace.generative import gpt as module
    from weightspace.zoo.setting import setting_for_zoo

    assert setting_for_zoo(zoo) is module.SETTING
