"""The ablation table: one measured row per variant, relative overrides resolved against the base,
half the checkpoints really used, and the metrics equal to a direct computation."""

import math

import matplotlib.pyplot as plt
import numpy as np
import pytest
from matplotlib.figure import Figure

from weightspace.audit import l2_distances, min_distance_to_training
from weightspace.errors import ConfigError
from weightspace.generative import hyperrep as H
from weightspace.generator import make_generator
from weightspace.study.ablation import (
    ABLATIONS,
    Relative,
    ablation_figure,
    resolve_variant,
    run_ablation,
)

BASE = {"steps": 30, "batch_size": 8, "d_model": 16, "ff": 32, "latent": 32, "permutations": 8}
COLUMNS = ["variant", "overrides", "train_checkpoints", "fit_seconds", "quality_median", "quality_mean",
           "max_similarity_median", "min_l2_median", "min_l2_vs_spacing", "replica_fraction"]
N_SAMPLES = 20


@pytest.fixture(scope="module")
def zoo(hyperrep_tiny_zoo):
    return hyperrep_tiny_zoo


@pytest.fixture(scope="module")
def table(zoo):
    return run_ablation(zoo, "hyperrep", base_config=BASE, n_samples=N_SAMPLES, seed=0, progress=False)


def test_one_row_per_variant_with_finite_values(table, zoo):
    n = len(H.SETTING.training(zoo))
    assert table["variant"].tolist() == list(ABLATIONS["hyperrep"])
    assert list(table.columns) == COLUMNS
    numeric = table[COLUMNS[2:]].to_numpy(dtype=float)
    assert np.isfinite(numeric).all()
    rows = table.set_index("variant")
    assert rows.loc["50% of training checkpoints", "train_checkpoints"] == math.ceil(n / 2)
    assert (rows.drop(index="50% of training checkpoints")["train_checkpoints"] == n).all()
    assert table["replica_fraction"].between(0, 1).all() and table["quality_median"].between(0, 1).all()
    assert (table["min_l2_median"] > 0).all()
    ref = table.attrs["training"]
    assert ref["checkpoints"] == n and ref["spacing"] > 0 and 0 <= ref["max_similarity_median"] <= 1


def test_overrides_are_resolved_against_the_base(table):
    rows = table.set_index("variant")["overrides"]
    assert rows["default"] == "—"
    assert rows["width ×2"] == "d_model=32, ff=64"
    assert rows["width ÷2"] == "d_model=8, ff=16"
    assert rows["depth +1 layer"] == "layers=2"
    assert rows["training ×0.5"] == "steps=15" and rows["training ×2"] == "steps=60"
    assert rows["no noise augmentation"] == "noise=0.0, erase=0.0"
    assert rows["no permutation augmentation"] == "permutations=0"


def test_default_row_equals_a_direct_measurement(table, zoo):
    """Fit the default configuration by hand: same samples, so the same min L2 and quality."""
    train = H.SETTING.training(zoo)
    gen = make_generator("hyperrep", **BASE).fit(train, progress=False, **H.SETTING.fit_context(zoo))
    samples = gen.sample(N_SAMPLES, seed=0)
    min_l2 = min_distance_to_training(l2_distances(samples, train))[0].double()
    spacing = min_distance_to_training(l2_distances(train, train), exclude_self=True)[0].double().median()
    row = table.set_index("variant").loc["default"]
    assert math.isclose(row["min_l2_median"], float(min_l2.median()), rel_tol=1e-9)
    assert math.isclose(row["min_l2_vs_spacing"], float(min_l2.median() / spacing), rel_tol=1e-6)
    assert math.isclose(row["quality_median"], float(H.SETTING.quality(zoo, samples).median()), rel_tol=1e-9)
    assert math.isclose(row["replica_fraction"], float((min_l2 < 0.25 * spacing).double().mean()))


def test_relative_and_resolve_rules():
    assert Relative(2).resolve(64) == 128 and Relative(0.5).resolve(3) == 2 and Relative(plus=1).resolve(1) == 2
    assert Relative(0.5).resolve(1) == 1  # integers stay positive
    assert Relative(2).resolve([16, 32]) == [32, 64] and Relative(0.5).resolve(0.1) == 0.05
    config, fraction = resolve_variant({"steps": 100, "noise": 0.05}, {"steps": Relative(2), "_train_fraction": 0.5})
    assert config == {"steps": 200, "noise": 0.05} and fraction == 0.5
    with pytest.raises(ConfigError, match="'stepz'"):
        resolve_variant({"steps": 100}, {"stepz": 3})
    with pytest.raises(ConfigError, match="_train_fraction"):
        resolve_variant({"steps": 100}, {"_train_fraction": 0})
    with pytest.raises(ConfigError, match="_fraction"):
        resolve_variant({"steps": 100}, {"_fraction": 0.5})


def test_pdiff_ablations_build_valid_generators():
    base = make_generator("pdiff").config()
    for name, overrides in ABLATIONS["pdiff"].items():
        config, _ = resolve_variant(base, overrides)
        gen = make_generator("pdiff", **config)
        assert gen.config()["ae_channels"] == list(config["ae_channels"]), name
    config, _ = resolve_variant(base, ABLATIONS["pdiff"]["autoencoder width ×2"])
    assert config["ae_channels"] == [2 * c for c in base["ae_channels"]]


def test_gpt_ablations_build_valid_generators():
    base = make_generator("gpt").config()
    for name, overrides in ABLATIONS["gpt"].items():
        config, fraction = resolve_variant(base, overrides)
        assert make_generator("gpt", **config).config() == config and fraction == 1.0, name
    assert resolve_variant(base, ABLATIONS["gpt"]["width ×2"])[0]["d_model"] == 2 * base["d_model"]


def test_bad_calls_are_named(zoo):
    with pytest.raises(ConfigError, match="variant 'bad'"):
        run_ablation(zoo, "hyperrep", {"bad": {"nope": 1}}, base_config=BASE, progress=False)
    with pytest.raises(ConfigError, match="base_config"):
        run_ablation(zoo, "hyperrep", base_config={"heads": 3}, progress=False)
    with pytest.raises(ConfigError, match="no built-in ablations"):
        run_ablation(zoo, "hyperdiffusion", progress=False)


def test_figure_puts_each_variant_where_the_table_does(table):
    fig = ablation_figure(table)
    assert isinstance(fig, Figure)
    for ax, novelty in zip(fig.axes, ("min_l2_vs_spacing", "max_similarity_median"), strict=True):
        points = np.concatenate([c.get_offsets() for c in ax.collections])  # one scatter per variant, in order
        np.testing.assert_allclose(points, table[[novelty, "quality_median"]].to_numpy(float))
        assert ax.lines[0].get_ydata()[0] == table.attrs["training"]["quality_median"]  # the training line
    legend = [t.get_text() for t in fig.axes[-1].get_legend().get_texts()]
    assert [f"{i}: {v}" for i, v in enumerate(table["variant"])] == [s for s in legend if s[0].isdigit()]
    plt.close(fig)
