import pytest
import torch
from torch import nn

from weightspace.errors import LayoutError
from weightspace.nets import CNN, MLP
from weightspace.space import WeightSpace


def _module():
    return nn.Sequential(nn.Linear(5, 4), nn.BatchNorm1d(4), nn.ReLU(), nn.Linear(4, 3).to(torch.float16))


def test_layout_from_module_skips_integer_buffers():
    space = WeightSpace.from_module(_module())
    assert "1.num_batches_tracked" not in space.names
    assert space.names[:2] == ("0.weight", "0.bias")
    assert space.num_params == 5 * 4 + 4 + 4 * 4 + 4 * 3 + 3
    assert space.spec("3.weight").dtype == torch.float16
    assert space.dtype == torch.float32


def test_flatten_unflatten_stack_round_trip_exact():
    mods = [_module() for _ in range(3)]
    for m in mods:
        m[:2].train()(torch.randn(8, 5))  # moves BatchNorm running statistics off their init
    space = WeightSpace.from_module(mods[0])
    W = space.stack([m.state_dict() for m in mods])
    assert W.shape == (3, space.num_params)
    for m, sd in zip(mods, space.unstack(W)):
        for k, v in sd.items():
            ref = m.state_dict()[k]
            assert v.dtype == ref.dtype and torch.equal(v, ref), k
    assert torch.equal(space.flatten(space.unflatten(W[1])), W[1])


def test_unflatten_returns_views_of_a_population():
    space = MLP(4, (3,), 2).space
    W = torch.zeros(2, space.num_params)
    sd = space.unflatten(W)
    sd["layers.0.weight"][1, 0, 0] = 7.0
    assert W[1, space.slice("layers.0.weight")][0] == 7.0
    assert sd["layers.1.bias"].shape == (2, 2)


def test_layout_errors_name_the_problem():
    space = MLP(4, (3,), 2).space
    with pytest.raises(LayoutError, match=f"expected {space.num_params} parameters"):
        space.unflatten(torch.zeros(space.num_params - 1))
    sd = dict(MLP(4, (3,), 2).module().state_dict())
    sd["layers.0.weight"] = torch.zeros(3, 5)
    with pytest.raises(LayoutError, match=r"layers.0.weight.*\(3, 5\)"):
        space.flatten(sd)
    del sd["layers.1.bias"]
    with pytest.raises(LayoutError, match="lacks tensors"):
        space.flatten(sd)


def test_json_round_trip_keeps_groups():
    space = CNN(1, 8).space
    again = WeightSpace.from_json(space.to_json())
    assert again == space
    assert again.groups == space.groups


def test_mask_selects_named_tensors():
    space = CNN(1, 8).space
    m = space.mask(["norms.2.weight", "norms.2.bias"])
    assert int(m.sum()) == 2 * 8
    assert m[space.slice("norms.2.bias")].all() and not m[space.slice("norms.2.running_mean")].any()
    with pytest.raises(LayoutError, match="no tensor"):
        space.mask(["nope.*"])
