"""The symmetry check: transforms preserve the function exactly, the identity control is exact, and
the metrics read 'learned' on an autoencoder that is equivariant by construction."""

import math

import matplotlib.pyplot as plt
import pytest
import torch
from matplotlib.figure import Figure

from weightspace.audit.groups import ZooEvaluator
from weightspace.errors import ConfigError, LayoutError
from weightspace.generative import hyperrep as H
from weightspace.nets import MLP
from weightspace.study.symmetry_check import symmetry_check, symmetry_figure

SMALL = {"d_model": 32, "heads": 4, "layers": 1, "ff": 64, "latent": 64, "steps": 60, "batch_size": 8,
         "permutations": 8}


@pytest.fixture(scope="module")
def setup(hyperrep_tiny_zoo):
    zoo = hyperrep_tiny_zoo
    weights = H.SETTING.training(zoo)
    gen = H.HyperRep(**SMALL).fit(weights, accuracies=H.SETTING.fit_context(zoo)["accuracies"], progress=False)
    return zoo, gen, weights


@pytest.fixture(scope="module")
def table(setup):
    zoo, gen, weights = setup
    return symmetry_check(gen, zoo.space, weights, ZooEvaluator(zoo), seed=0)


def test_rows_and_identity_control(table, setup):
    assert table["transform"].tolist() == ["identity", "permutation", "scaling"]
    assert (table["models"] == len(setup[2])).all()
    ident = table.set_index("transform").loc["identity"]
    assert ident["agreement"] == 1.0 and ident["agreement_min"] == 1.0
    assert ident["latent_distance"] == 0.0 and ident["equivariance_l2"] == 0.0 and ident["transform_l2"] == 0.0
    assert ident["accuracy_R"] == ident["accuracy_R_prime"]


def test_transforms_preserve_the_function_and_values_are_finite(table):
    # every transform keeps each model's test predictions, and its logits up to float rounding
    assert (table["function_agreement"] == 1.0).all()
    assert (table["max_logit_change"] < 1e-4).all()
    numeric = table.drop(columns="transform")
    assert numeric.notna().all().all() and torch.isfinite(torch.tensor(numeric.to_numpy(float))).all()
    moved = table.set_index("transform").loc[["permutation", "scaling"]]
    assert (moved["transform_l2"] > 0).all()
    # a 60-step autoencoder has not learned invariance: the permuted model gets another latent
    assert moved.loc["permutation", "latent_distance"] > 0
    assert ((moved["agreement"] >= 0) & (moved["agreement"] <= 1)).all()
    assert (table["latent_spacing"] > 0).all()


def test_callable_predict_matches_the_evaluator(setup, table):
    zoo, gen, weights = setup
    labels = ZooEvaluator(zoo).labels
    other = symmetry_check(gen, zoo.space, weights, lambda w: H.SETTING.predictions(zoo, w), labels=labels, seed=0)
    cols = ["function_agreement", "agreement", "agreement_min", "latent_distance", "equivariance_l2",
            "accuracy_R", "accuracy_R_prime"]
    assert other[cols].equals(table[cols])
    assert other["max_logit_change"].isna().all()  # labels only: no logits to compare


class _IdentityAutoencoder:
    """encode = decode = identity: equivariant to every transform by construction."""

    def encode(self, w):
        return w.clone()

    def decode(self, z):
        return z.clone()


def test_an_equivariant_autoencoder_reads_as_learned():
    arch = MLP(6, (8, 5), 3)
    weights = arch.init(range(5))
    x = torch.randn(40, 6, generator=torch.Generator().manual_seed(0))
    t = symmetry_check(_IdentityAutoencoder(), arch.space, weights, lambda w: arch.logits(w, x), seed=1)
    t = t.set_index("transform")
    assert (t["agreement"] == 1.0).all() and (t["function_agreement"] == 1.0).all()
    assert t["equivariance_l2"].max() < 1e-5
    # not invariant: the latent moves exactly as far as the weights
    for name in ("permutation", "scaling"):
        r = t.loc[name]
        assert r["latent_distance"] > 0
        assert math.isclose(r["latent_distance_vs_spacing"] * r["latent_spacing"], r["transform_l2"], rel_tol=1e-6)
    assert t["accuracy_R"].isna().all()  # no labels given


def test_bad_arguments_are_named(setup):
    zoo, gen, weights = setup
    with pytest.raises(LayoutError, match="n >= 2"):
        symmetry_check(gen, zoo.space, weights[:1], ZooEvaluator(zoo))
    with pytest.raises(ConfigError, match="encode"):
        symmetry_check(object(), zoo.space, weights, ZooEvaluator(zoo))
    with pytest.raises(ConfigError, match="predict"):
        symmetry_check(gen, zoo.space, weights, 3)


def test_figure_shows_the_tables_values(table):
    fig = symmetry_figure(table)
    assert isinstance(fig, Figure)
    agreement, latent, _ = fig.axes
    heights = [[p.get_height() for p in ax.patches] for ax in fig.axes]
    assert heights[0] == table["agreement"].tolist()
    assert heights[1] == table["latent_distance_vs_spacing"].tolist()
    assert heights[2] == [*table["accuracy_R"], *table["accuracy_R_prime"]]  # R, then R', per transform
    for ax in fig.axes:
        assert [t.get_text() for t in ax.get_xticklabels()] == table["transform"].tolist()
    assert latent.lines[0].get_ydata()[0] == 1.0 and agreement.get_ylim() == (0, 1.05)
    plt.close(fig)
