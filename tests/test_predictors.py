"""Accuracy predictors: run-level splits, save/load round trips, permutation invariance, real learning."""

import numpy as np
import pandas as pd
import pytest
import torch

from weightspace.analysis.predictors import (
    GBTPredictor,
    NeuronSetPredictor,
    ProbePredictor,
    evaluate_predictors,
    load_predictor,
    run_split,
)
from weightspace.data import load_digits
from weightspace.errors import ConfigError, LayoutError
from weightspace.nets import MLP
from weightspace.symmetry import permute, random_permutation
from weightspace.zoo import Zoo
from weightspace.zoo.train import train_population
from weightspace.zoo.trainer import HParams, Run, TrainConfig

ARCH = MLP(64, (12,), 10)


@pytest.fixture(scope="module")
def small_zoo(tmp_path_factory):
    """48 MLP runs on digits with learning rates from useless to good, checkpoints at epochs 1, 2, 4."""
    ds = load_digits(seed=0)
    arch = MLP(64, (12,), 10)
    zoo = Zoo.create(tmp_path_factory.mktemp("zoo"), arch.space, architecture=arch.config, task=ds.describe())
    lrs = np.geomspace(1e-4, 0.3, 48)
    runs = [Run(f"r{i:02d}", i, HParams(lr=float(lr), epochs=4, init_scale=0.5 + (i % 3) * 0.5))
            for i, lr in enumerate(lrs)]
    train_population(arch, ds, runs, zoo, TrainConfig(batch_size=64, checkpoint_epochs=(1, 2)), progress=False)
    return zoo.load()


def test_run_split_never_puts_one_run_on_both_sides():
    runs = np.repeat([f"run{i}" for i in range(50)], 4)
    rng = np.random.default_rng(0)
    runs = runs[rng.permutation(len(runs))]
    for seed in range(5):
        test = run_split(runs, 0.2, seed)
        assert not set(runs[test]) & set(runs[~test])
        assert len(set(runs[test])) == 10 and test.sum() == 40
    assert not np.array_equal(run_split(runs, 0.2, 0), run_split(runs, 0.2, 1))
    assert np.array_equal(run_split(runs, 0.2, 3), run_split(runs, 0.2, 3))
    with pytest.raises(ConfigError, match="test_fraction"):
        run_split(runs, 1.5)
    with pytest.raises(ConfigError, match="at least 2 runs"):
        run_split(["a", "a"], 0.5)


@pytest.mark.parametrize("predictor", [
    lambda s: GBTPredictor(s, n_estimators=50),
    lambda s: GBTPredictor(s, features="statistics", n_estimators=50),
    lambda s: GBTPredictor(s, features="spectral", n_estimators=50),
    lambda s: NeuronSetPredictor(s, epochs=5, hidden=16),
    lambda s: ProbePredictor(s, architecture=ARCH.config, epochs=3, probes=8, hidden=32),
])
def test_predictors_save_and_load_to_identical_predictions(tmp_path, small_zoo, predictor):
    weights, table = small_zoo
    space = ARCH.space
    fitted = predictor(space).fit(weights, table["test_acc"])
    loaded = load_predictor(fitted.save(tmp_path / "p"))
    assert type(loaded) is type(fitted) and loaded.config() == fitted.config()
    np.testing.assert_array_equal(loaded.predict(weights), fitted.predict(weights))
    with pytest.raises(LayoutError, match="Tensor\\[N, 910\\]"):
        loaded.predict(weights[:, :100])


def test_neuron_set_predictor_ignores_neuron_order(small_zoo):
    weights, table = small_zoo
    space = ARCH.space
    pred = NeuronSetPredictor(space, epochs=3, hidden=16).fit(weights, table["test_acc"])
    shuffled = permute(space, weights, random_permutation(space, len(weights), torch.Generator().manual_seed(1)))
    assert not torch.allclose(shuffled, weights)
    np.testing.assert_allclose(pred.predict(shuffled), pred.predict(weights), atol=1e-5)


def test_probe_predictor_reads_the_function_each_model_computes(small_zoo):
    weights, table = small_zoo
    pred = ProbePredictor(ARCH.space, architecture=ARCH.config, epochs=3, probes=8, hidden=32).fit(
        weights, table["test_acc"])
    # the same function, other weights: neuron permutations change nothing
    shuffled = permute(ARCH.space, weights, random_permutation(ARCH.space, len(weights), torch.Generator().manual_seed(1)))
    np.testing.assert_allclose(pred.predict(shuffled), pred.predict(weights), atol=1e-5)
    # another activation is another function: models are run with the one given for each
    relu, tanh = pred.predict(weights), pred.predict(weights, activations=["tanh"] * len(weights))
    assert np.abs(relu - tanh).max() > 1e-3
    mixed = pred.predict(weights, activations=["tanh", None] * (len(weights) // 2))
    np.testing.assert_allclose(mixed[0::2], tanh[0::2], atol=1e-6)
    np.testing.assert_allclose(mixed[1::2], relu[1::2], atol=1e-6)
    with pytest.raises(ConfigError, match="activation: expected one of"):
        pred.predict(weights[:2], activations=["swish", None])
    with pytest.raises(ConfigError, match="one per model"):
        pred.predict(weights[:2], activations=["tanh"])


def test_predictors_rank_held_out_runs(small_zoo):
    weights, table = small_zoo
    res, _ = evaluate_predictors(weights, table, ARCH.space, names=("gbt", "neuron-set", "probe"),
                                 architecture=ARCH.config)
    assert set(res["predictor"]) == {"gbt", "neuron-set", "probe"} and (res["test_runs"] == 10).all()
    # lr spans useless to good: accuracy is learnable (a constant prediction has R² ≤ 0, τ undefined)
    assert (res["r2"] > 0.5).all() and (res["kendall_tau"] > 0.3).all(), res


def test_loading_something_else_is_refused(tmp_path):
    with pytest.raises(ConfigError, match="not a saved accuracy predictor"):
        load_predictor(tmp_path)
    with pytest.raises(ConfigError, match="features"):
        GBTPredictor(MLP(4, (3,), 2).space, features="everything")
    with pytest.raises(LayoutError, match="does not have the layout"):
        ProbePredictor(MLP(4, (3,), 2).space, architecture=ARCH.config)
    with pytest.raises(ConfigError, match="needs the architecture"):
        evaluate_predictors(torch.zeros(4, 910), pd.DataFrame({"run_id": list("abcd"), "test_acc": [0.1] * 4}),
                            ARCH.space, names=("probe",))


def test_a_damaged_saved_predictor_is_refused_by_file(tmp_path, small_zoo):
    """predictor.json is read through the bounded JSON reader, and the files it names stay inside."""
    import json

    weights, table = small_zoo
    d = NeuronSetPredictor(ARCH.space, epochs=1, hidden=8).fit(weights[:40], table["test_acc"][:40]).save(tmp_path / "p")
    meta = json.loads((d / "predictor.json").read_text())
    for damage, message in ((lambda: "[1, 2]", "predictor.json: expected"),
                            (lambda: "{", "predictor.json: .*not valid JSON"),
                            (lambda: json.dumps({**meta, "net_file": "../x.safetensors"}), "points outside"),
                            (lambda: json.dumps({**meta, "config": {**meta["config"], "bogus": 1}}), "bogus"),
                            (lambda: json.dumps({**meta, "kind": "oracle"}), "kind 'oracle'")):
        (d / "predictor.json").write_text(damage())
        with pytest.raises(ConfigError, match=message):
            load_predictor(d)
