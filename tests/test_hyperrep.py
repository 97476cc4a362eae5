"""Hyper-Representations: exact neuron tokens, an autoencoder that reproduces what it was fit on,
seeded KDE sampling (independent or the original's shared random state), save/load, and the zoo."""

import pytest
import torch

from weightspace.errors import ConfigError, LayoutError
from weightspace.generative import hyperrep as H
from weightspace.generator import load_generator
from weightspace.nets import CNN, MLP
from weightspace.symmetry import permute, random_permutation

SMALL = {"d_model": 32, "heads": 4, "layers": 1, "ff": 64, "latent": 32, "steps": 800, "batch_size": 4,
         "lr": 3e-3, "permutations": 2, "top_fraction": 1.0}


@pytest.fixture(scope="module")
def zoo(hyperrep_tiny_zoo):
    return hyperrep_tiny_zoo


@pytest.fixture(scope="module")
def fitted(zoo):
    """Fit on 3 checkpoints of different runs (a short fit: the test only needs them memorised)."""
    weights = H.SETTING.training(zoo)
    acc = H.SETTING.fit_context(zoo)["accuracies"]
    rows = torch.tensor([1, 5, 9])
    gen = H.HyperRep(**SMALL).fit(weights[rows], accuracies=acc[rows], progress=False)
    return gen, weights[rows]


def _space():
    return H.HyperRep().space


def test_tokens_are_neurons_and_round_trip_exactly():
    space = _space()
    tok = H.Tokenizer(space)
    w = torch.randn(3, space.num_params)
    tokens = tok.tokenize(w)
    assert tokens.shape == (3, 8 + 6 + 4 + 20 + 10, 8 * 9 + 1)  # one per output neuron; widest: conv 1
    assert torch.equal(tok.detokenize(tokens), w)
    sd = space.unflatten(w[0])
    # conv 1, output channel 2: its 8x3x3 kernel slice, then its bias, then padding
    expected = torch.cat([sd["convs.1.weight"][2].reshape(-1), sd["convs.1.bias"][2:3]])
    assert torch.equal(tokens[0, 8 + 2, : len(expected)], expected)
    # fc 1 (last), neuron 7: 20 incoming weights + bias, zero padding after
    row = tokens[0, 8 + 6 + 4 + 20 + 7]
    assert torch.equal(row[:21], torch.cat([sd["fcs.1.weight"][7], sd["fcs.1.bias"][7:8]]))
    assert not row[21:].any()


@pytest.mark.parametrize("arch", [CNN(1, 8, channels=(4, 3), fc_widths=(5,)), MLP(6, (5, 4), 3)])
def test_tokens_cover_batchnorm_and_mlp_layouts(arch):
    """BatchNorm parameters and statistics join their channel's token; MLPs tokenise too."""
    tok = H.Tokenizer(arch.space)
    w = torch.randn(2, arch.space.num_params)
    assert torch.equal(tok.detokenize(tok.tokenize(w)), w)
    widths = [1 * 9 + 4, 4 * 9 + 4, 3 + 1, 5 + 1] if isinstance(arch, CNN) else [6 + 1, 5 + 1, 4 + 1]
    assert tok.valid.sum(1).unique().tolist() == sorted(set(widths))


def test_a_permuted_model_gives_a_permuted_token_set():
    space = _space()
    tok = H.Tokenizer(space)
    w = torch.randn(space.num_params)
    g = torch.Generator().manual_seed(3)
    perm = torch.randperm(20, generator=g)
    tokens, permuted = tok.tokenize(w), tok.tokenize(permute(space, w, {"fcs.0": perm}))
    fc0, fc1 = slice(18, 38), slice(38, 48)
    assert torch.equal(permuted[fc0], tokens[fc0][perm])  # the hidden FC neurons swap tokens ...
    assert torch.equal(permuted[fc1, :20], tokens[fc1, :20][:, perm])  # ... the next layer's inputs follow
    assert torch.equal(permuted[fc1, 20:], tokens[fc1, 20:])
    assert torch.equal(permuted[:18], tokens[:18])

    # every group at once: per layer, the same multiset of tokens up to the order inside each token
    perms = random_permutation(space, generator=g)
    tokens, permuted = tok.tokenize(w), tok.tokenize(permute(space, w, perms))
    assert torch.equal(permuted[:8], tokens[:8][perms["convs.0"]])  # first layer: inputs are not permuted
    def canon(t, rows):
        return sorted(map(tuple, t[rows].sort(dim=1).values.tolist()))

    for layer in tok.layer_of_token.unique():
        rows = tok.layer_of_token == layer
        assert canon(permuted, rows) == canon(tokens, rows)
    assert not torch.equal(permuted, tokens)


def test_fit_reproduces_its_models_and_samples_lie_near_them(fitted):
    gen, w = fitted
    rec = gen.decode(gen.encode(w))
    rel = (rec - w).norm(dim=1) / w.norm(dim=1)
    assert rel.max() < 0.15, rel
    spacing = torch.cdist(w, w)[~torch.eye(3, dtype=torch.bool)].min()
    for shared in (True, False):
        gen.shared_seed = shared
        s = gen.sample(20, seed=0)
        assert s.shape == (20, w.shape[1]) and torch.isfinite(s).all()
        near = torch.cdist(s, w).min(1).values / spacing
        if shared:  # one training latent + jitter: a near-replica of that model
            assert near.max() < 0.2, near
        else:  # each latent dimension from another model: between them, nearer one than they are to each other
            assert near.max() < 1.0 and near.min() > 0.2, near
    gen.shared_seed = False


def test_sampling_is_reproducible(fitted):
    gen, _ = fitted
    assert torch.equal(gen.sample(6, seed=7), gen.sample(6, seed=7))
    assert not torch.equal(gen.sample(6, seed=7), gen.sample(6, seed=8))
    assert gen.sample().shape[0] == 200


def test_save_load_gives_identical_samples(fitted, tmp_path):
    gen, _ = fitted
    loaded = load_generator(gen.save(tmp_path / "gen"))
    assert isinstance(loaded, H.HyperRep) and loaded.config() == gen.config()
    assert torch.equal(loaded.sample(5, seed=1), gen.sample(5, seed=1))


def test_shared_seed_picks_one_training_latent_in_every_dimension(fitted):
    gen, _ = fitted
    anchors = gen.stats["anchors"]  # [3, L]
    for shared in (True, False):
        gen.shared_seed = shared
        z = gen.sample_latents(40, seed=2)
        dist = (z[:, None, :] - anchors[None]).abs()  # [n, anchors, L]
        nearest = dist.argmin(1)  # per sample and dimension: the closest training latent
        # dims where two anchors are within 20 bandwidths of each other could swap under jitter
        gaps = (anchors[:, None] - anchors[None]).abs() + torch.eye(3)[..., None] * 1e9
        clear = gaps.amin((0, 1)) > 20 * gen.bandwidth
        assert clear.float().mean() > 0.9
        same = (nearest[:, clear] == nearest[:, clear][:, :1]).all(1)
        if shared:
            assert same.all()
            # exactly: one anchor plus the same jitter in every dimension
            offset = z - anchors[nearest[:, clear][:, 0]]
            assert torch.allclose(offset, offset[:, :1].expand_as(offset), atol=1e-6)
            assert offset.abs().max() < 6 * gen.bandwidth
        else:
            assert not same.any()
    gen.shared_seed = False


def test_zoo_context_quality_and_predictions(zoo, tmp_path):
    weights = H.SETTING.training(zoo)
    assert weights.shape == (8 * 2, 1048)  # 8 runs x epochs 2 and 4
    acc = H.SETTING.fit_context(zoo)["accuracies"]
    assert torch.allclose(H.SETTING.quality(zoo, weights), acc, atol=1e-6)
    assert acc.max() > 0.3  # the models learned something
    val = H.SETTING.fit_context(zoo, metric="val_acc")["accuracies"]
    assert not torch.equal(val, acc)
    pred = H.SETTING.predictions(zoo, weights[:2])
    assert pred.shape == (2, 359) and pred.dtype == torch.long
    assert H.SETTING.heldout(zoo).shape == (2 * 2, 1048)  # 2 held-out runs, never in the training set
    assert H.SETTING.final_epoch(zoo).tolist() == [False, True] * 8  # each run's epoch-4 checkpoint
    assert H.SETTING.build(zoo.root, preset="tiny", progress=False) and len(zoo) == 20  # resumes: nothing to add
    with pytest.raises(ConfigError, match="preset"):
        H.SETTING.build(zoo.root, preset="default", progress=False)
    with pytest.raises(ConfigError, match="metric"):
        H.SETTING.fit_context(zoo, metric="test_loss")


def test_bad_arguments_are_named(zoo):
    w = H.SETTING.training(zoo)[:2]
    with pytest.raises(ConfigError, match="accuracies"):
        H.HyperRep(**SMALL).fit(w, progress=False)
    with pytest.raises(ConfigError, match="accuracies"):
        H.HyperRep(**SMALL).fit(w, accuracies=torch.ones(3), progress=False)
    with pytest.raises(LayoutError, match="1048"):
        H.HyperRep(**SMALL).fit(w[:, :10], accuracies=torch.ones(2), progress=False)
    with pytest.raises(ConfigError, match="heads"):
        H.HyperRep(d_model=30, heads=4)
    with pytest.raises(ConfigError, match="fit"):
        H.HyperRep().sample(2)


def test_reference_is_the_autoencoders_reconstruction_of_every_training_checkpoint(zoo):
    """As the paper's evaluation: samples are compared with encode→decode of the training checkpoints
    (all epochs), noise starts from the reconstructed top 30%, and the published sampler's samples
    sit on those reconstructions, not on the raw checkpoints."""
    train = H.SETTING.training(zoo)
    gen = H.HyperRep(**{**SMALL, "steps": 200, "top_fraction": 0.3}).fit(train, progress=False,
                                                                        **H.SETTING.fit_context(zoo))
    reference = H.SETTING.reference(zoo, gen)
    ref = reference.weights
    assert ref.shape == train.shape
    assert reference.heldout is None  # the held-out control: fresh runs as trained, not decoded
    torch.testing.assert_close(ref, gen.decode(gen.encode(train)))
    assert (ref - train).norm(dim=1).min() > 0  # reconstructions are not the checkpoints
    top = torch.argsort(H.SETTING.fit_context(zoo)["accuracies"], descending=True, stable=True)[:5]  # ceil(0.3 x 16)
    torch.testing.assert_close(H.SETTING.noise_source(zoo, gen), ref[top])
    samples = gen.sample(20, seed=0)  # shared random state: one anchor latent + jitter per sample
    to_ref = torch.cdist(samples.double(), ref.double()).min(1).values
    to_raw = torch.cdist(samples.double(), train.double()).min(1).values
    assert (to_ref < 0.1 * to_raw).all()


def test_built_zoo_matches_what_the_method_records(zoo):
    """Both lookups check the zoo against the method's ZOO_RECORD; the zoo build_data wrote passes."""
    from weightspace.generative import hyperrep as module
    from weightspace.zoo.setting import setting_for_zoo

    assert setting_for_zoo(zoo) is module.SETTING
