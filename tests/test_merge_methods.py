"""Merge methods on hand-computed cases, identical models, tiny tensors and bad inputs."""

import pytest
import torch

from weightspace.errors import ConfigError, LayoutError
from weightspace.merge import METHODS, merge_state_dicts


def _sd(seed, scale=1.0):
    g = torch.Generator().manual_seed(seed)
    return {"w": scale * torch.randn(4, 3, generator=g), "b": torch.randn(3, generator=g),
            "one": torch.randn(1, generator=g), "steps": torch.tensor(7)}


IDENTITY_PARAMS = {
    "linear": {}, "karcher": {}, "slerp": {"t": 1.0}, "model_stock": {}, "passthrough": {},
    "nuslerp": {"weight": 1.0}, "multislerp": {"weight": 1.0}, "sce": {}, "nearswap": {"t": 1e9},
    "arcee_fusion": None,
    "task_arithmetic": {"weight": 1 / 3}, "ties": {"density": 1.0}, "dare_linear": {"density": 1.0, "weight": 1 / 3},
    "dare_ties": {"density": 1.0, "weight": 1 / 3}, "breadcrumbs": {"density": 1.0, "weight": 1 / 3},
    "breadcrumbs_ties": {"density": 1.0, "weight": 1 / 3}, "della": {"density": 1.0}, "della_linear": {"density": 1.0, "weight": 1 / 3},
}


def test_every_method_is_tested_for_identity():
    assert set(IDENTITY_PARAMS) == set(METHODS)


def _count(method):
    m = METHODS[method]
    return m.max_models if m.max_models is not None else 3


@pytest.mark.parametrize("method", sorted(m for m in METHODS if IDENTITY_PARAMS[m] is not None))
def test_identical_models_merge_to_the_model(method):
    model, base = _sd(0), _sd(1)
    out = merge_state_dicts([model] * _count(method), method, base=base if METHODS[method].needs_base else None,
                            parameters=IDENTITY_PARAMS[method])
    for k in model:
        torch.testing.assert_close(out[k], model[k], atol=1e-6, rtol=1e-6)


@pytest.mark.parametrize("method", sorted(m for m in METHODS if m not in ("nuslerp", "multislerp")))
def test_models_equal_to_the_base_give_the_base(method):
    model = _sd(0)
    params = ({"t": 0.4} if "t" in METHODS[method].parameters else
              {"density": 0.5} if "density" in METHODS[method].parameters else {})
    base = model if METHODS[method].needs_base else None
    out = merge_state_dicts([model] * _count(method), method, base=base, parameters=params)
    for k in model:
        torch.testing.assert_close(out[k], model[k], atol=1e-6, rtol=1e-6)


def test_ties_by_hand():
    base = {"x": torch.zeros(4)}
    models = [{"x": torch.tensor([3.0, -1.0, 0.5, 2.0])},
              {"x": torch.tensor([-1.5, -4.0, 0.2, 1.0])},
              {"x": torch.tensor([2.0, 1.0, -3.0, -0.1])}]
    # density 0.5: k = 2 per model → [3, 0, 0, 2], [-1.5, -4, 0, 0], [2, 0, -3, 0]
    # elected signs (of the sums 3.5, -4, -3, 2): +, -, -, +; agreeing entries averaged by their weights
    out = merge_state_dicts(models, "ties", base=base, parameters={"density": 0.5})["x"]
    torch.testing.assert_close(out, torch.tensor([2.5, -4.0, -3.0, 2.0]))
    weighted = merge_state_dicts(models, "ties", base=base, parameters={"density": 0.5, "weight": [1.0, 1.0, 3.0]})
    torch.testing.assert_close(weighted["x"], torch.tensor([(3 + 6) / 4, -4.0, -9 / 3, 2.0]))


def test_ties_keeps_exactly_k_entries_when_magnitudes_tie():
    base = {"x": torch.zeros(6)}
    model = {"x": torch.tensor([1.0, -1.0, 1.0, 2.0, -1.0, 0.5])}
    out = merge_state_dicts([model], "ties", base=base, parameters={"density": 0.5})["x"]
    assert int((out != 0).sum()) == 3 and out[3] == 2.0


def test_dare_by_hand():
    base = {"x": torch.zeros(6)}
    delta = torch.tensor([1.0, -2.0, 3.0, -4.0, 5.0, -6.0])
    seed = 5
    mask = torch.bernoulli(torch.full((1, 6), 0.5), generator=torch.Generator().manual_seed(seed))[0]
    kept = delta * mask
    expected = kept * delta.abs().sum() / kept.abs().sum()  # rescaled to the delta's L1 norm
    out = merge_state_dicts([{"x": delta}], "dare_linear", base=base, parameters={"density": 0.5}, seed=seed)["x"]
    torch.testing.assert_close(out, expected)
    plain = merge_state_dicts([{"x": delta}], "dare_linear", base=base,
                              parameters={"density": 0.5, "rescale": False}, seed=seed)["x"]
    torch.testing.assert_close(plain, kept)


def test_dare_is_unbiased_in_expectation():
    base = {"x": torch.zeros(2000)}
    delta = {"x": torch.randn(2000, generator=torch.Generator().manual_seed(0))}
    outs = torch.stack([merge_state_dicts([delta], "dare_linear", base=base,
                                          parameters={"density": 0.3, "rescale": False}, seed=s)["x"]
                        for s in range(200)])
    # each entry's mean over 200 seeds is within 5 standard errors of density · delta
    stderr = delta["x"].abs() * (0.3 * 0.7 / 200) ** 0.5
    assert bool(((outs.mean(0) - 0.3 * delta["x"]).abs() <= 5 * stderr + 1e-6).all())
    kept = (outs != 0).float().mean()
    assert abs(float(kept) - 0.3) < 0.01


def test_tiny_tensors_keep_at_least_one_entry():
    base = {"one": torch.zeros(1), "three": torch.zeros(3), "col": torch.zeros(3, 1)}
    model = {"one": torch.tensor([2.0]), "three": torch.tensor([0.5, -3.0, 1.0]), "col": torch.tensor([[1.0], [2.0], [3.0]])}
    for method in ("ties", "breadcrumbs", "breadcrumbs_ties"):
        out = merge_state_dicts([model], method, base=base, parameters={"density": 0.2, "gamma": 0.0}
                                if "bread" in method else {"density": 0.2})
        torch.testing.assert_close(out["one"], torch.tensor([2.0]))
        torch.testing.assert_close(out["three"], torch.tensor([0.0, -3.0, 0.0]))
    out = merge_state_dicts([model], "della", base=base, parameters={"density": 0.5, "epsilon": 0.1})
    assert torch.isfinite(out["col"]).all()


def test_integer_tensors_are_copied_when_equal_and_refused_when_not():
    a, b = _sd(0), _sd(1)
    assert merge_state_dicts([a, b], "linear")["steps"] == 7
    with pytest.raises(LayoutError, match="'steps'"):
        merge_state_dicts([a, {**b, "steps": torch.tensor(8)}], "linear")


def test_mismatches_name_the_tensor():
    a, b = _sd(0), _sd(1)
    with pytest.raises(LayoutError, match=r"missing \['b'\]"):
        merge_state_dicts([a, {k: v for k, v in b.items() if k != "b"}], "linear")
    with pytest.raises(LayoutError, match="tensor 'w'.*shape"):
        merge_state_dicts([a, {**b, "w": torch.zeros(3, 4)}], "linear")
    with pytest.raises(LayoutError, match="tensor 'b'.*float64"):
        merge_state_dicts([a, {**b, "b": b["b"].double()}], "linear")
    with pytest.raises(LayoutError, match="tensor 'w': the base model"):
        merge_state_dicts([a, b], "ties", base={**a, "w": torch.zeros(2)})


def test_bad_parameters_are_one_clear_error():
    a, b = _sd(0), _sd(1)
    with pytest.raises(ConfigError, match="'densty'.*takes"):
        merge_state_dicts([a], "ties", base=b, parameters={"densty": 0.5})
    with pytest.raises(ConfigError, match="needs a base"):
        merge_state_dicts([a, b], "ties")
    with pytest.raises(ConfigError, match="takes no base"):
        merge_state_dicts([a, b], "linear", base=a)
    with pytest.raises(ConfigError, match="needs parameter 't'"):
        merge_state_dicts([a], "slerp", base=b)
    with pytest.raises(ConfigError, match="one per model"):
        merge_state_dicts([a, b], "ties", base=b, parameters={"weight": [1, 2, 3]})
    with pytest.raises(ConfigError, match="epsilon"):
        merge_state_dicts([a], "della", base=b, parameters={"density": 0.1, "epsilon": 0.2})
    with pytest.raises(ConfigError, match="expected one of"):
        merge_state_dicts([a], "frankenmerge", base=b)


def test_new_methods_by_hand():
    base = {"x": torch.tensor([0.0, 1.0, 2.0, 3.0])}
    other = {"x": torch.tensor([0.05, 3.0, 2.0, -1.0])}
    # nearswap, t = 0.1: weight = min(1, t / |a - b|): 1 where they are within t, t/|a - b| elsewhere
    out = merge_state_dicts([other], "nearswap", base=base, parameters={"t": 0.1})["x"]
    torch.testing.assert_close(out, torch.tensor([0.05, 1.0 + 0.1 / 2 * 2.0, 2.0, 3.0 - 0.1 / 4 * 4.0]))
    # passthrough: the one model, scaled
    torch.testing.assert_close(merge_state_dicts([other], "passthrough", parameters={"scale": 2.0})["x"], 2 * other["x"])
    # nuslerp of orthogonal unit vectors at equal weights: their normalised sum, scaled by sin(π/4)/sin(π/2)·2
    a, b = {"x": torch.tensor([1.0, 0.0])}, {"x": torch.tensor([0.0, 1.0])}
    out = merge_state_dicts([a, b], "nuslerp", parameters={"weight": 1.0})["x"]
    torch.testing.assert_close(out, torch.tensor([1.0, 1.0]) / 2**0.5)
    out = merge_state_dicts([a, b], "multislerp", parameters={"weight": 1.0})["x"]
    torch.testing.assert_close(out, torch.tensor([1.0, 1.0]) / 2**0.5)
    # sce: weights ∝ mean δ²; only deltas agreeing with the elected sign are averaged
    zero = {"x": torch.zeros(2)}
    m1, m2 = {"x": torch.tensor([2.0, -1.0])}, {"x": torch.tensor([1.0, 1.0])}
    out = merge_state_dicts([m1, m2], "sce", base=zero)["x"]
    w1, w2 = 2.5 / 3.5, 1.0 / 3.5  # mean squares 2.5 and 1.0
    elected_second = -1.0 if (-1.0 + 1.0) < 0 else 1.0  # sum 0 → positive sign elected
    assert elected_second == 1.0
    torch.testing.assert_close(out, torch.tensor([(w1 * 2 + w2 * 1) / (w1 + w2), 1.0]))


def test_arcee_fusion_takes_the_important_changes():
    g = torch.Generator().manual_seed(0)
    base = {"w": torch.randn(64, 32, generator=g)}
    change = torch.zeros(64, 32)
    change[3, :] = 5.0  # one row changed a lot: a large KL for that row and large |difference|
    change += 1e-4 * torch.randn(64, 32, generator=g)
    out = merge_state_dicts([{"w": base["w"] + change}], "arcee_fusion", base=base)["w"]
    taken = out == base["w"] + change
    assert bool((taken | (out == base["w"])).all())  # each entry: the base's or the other model's
    assert bool(taken[3].all()) and float(taken.float().mean()) < 0.2
