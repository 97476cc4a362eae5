"""Parity with mergekit 0.1.5's in-memory API (test-only reference): every method both have, same
inputs and parameters, outputs equal to 1e-6 in float32, and bit for bit in bfloat16 and float16
(computed in that dtype, as mergekit does) for all but Karcher and Model Stock, which compute in
float32. Random draws are seeded the same way (mergekit draws from the global generator, model
after model, tensor after tensor)."""

import pytest
import torch

from weightspace.merge import merge_state_dicts, merge_weights
from weightspace.space import WeightSpace

mergekit_api = pytest.importorskip("mergekit.merge_methods.api")

SHAPES = {"conv.weight": (6, 3, 3, 3), "fc.weight": (5, 7), "fc.bias": (5,), "scale": (2,)}


def _models(n, seed=0, base_scale=1.0, shapes=SHAPES):
    g = torch.Generator().manual_seed(seed)
    base = {k: base_scale * torch.randn(s, generator=g) for k, s in shapes.items()}
    models = [{k: v + 0.3 * torch.randn(v.shape, generator=g) for k, v in base.items()} for _ in range(n)]
    return base, models


CASES = [
    ("linear", {"weight": [0.2, 0.5, 1.3]}),
    ("passthrough", {"scale": 0.5}),
    ("nuslerp", {"weight": [0.3, 0.7]}),
    ("nuslerp", {"weight": [0.3, 0.7], "nuslerp_flatten": False, "nuslerp_row_wise": True}),
    ("multislerp", {"weight": [0.2, 0.5, 1.3]}),
    ("sce", {"select_topk": 0.5}),
    ("nearswap", {"t": 0.3}),
    ("arcee_fusion", {}),
    ("linear", {"weight": [1.0, 2.0, 3.0], "normalize": False}),
    ("slerp", {"t": 0.3}),
    ("karcher", {}),
    ("karcher", {"max_iter": 3}),
    ("model_stock", {}),
    ("model_stock", {"filter_wise": True}),
    ("task_arithmetic", {"weight": [0.5, 0.7, -0.2], "lambda": 0.8}),
    ("ties", {"weight": [0.5, 0.7, 1.0], "density": [0.5, 0.3, 0.9]}),
    ("ties", {"weight": [1.0, 1.0, 1.0], "density": 0.2, "normalize": False, "rescale": True}),
    ("dare_linear", {"weight": [0.5, 0.7, 1.0], "density": 0.6}),
    ("dare_ties", {"weight": [0.5, 0.7, 1.0], "density": [0.4, 0.6, 0.8]}),
    ("breadcrumbs", {"weight": [0.5, 0.7, 1.0], "density": 0.6, "gamma": 0.1}),
    ("breadcrumbs_ties", {"weight": [0.5, 0.7, 1.0], "density": 0.7, "gamma": 0.05}),
    ("della", {"weight": [0.5, 0.7, 1.0], "density": 0.5, "epsilon": 0.2}),
    ("della_linear", {"weight": [0.5, 0.7, 1.0], "density": 0.6, "epsilon": 0.1}),
]
NO_BASE = {"linear", "karcher", "passthrough"}
COUNT = {"slerp": 1, "passthrough": 1, "nearswap": 1, "arcee_fusion": 1, "nuslerp": 2}
FLOAT32_INSIDE = {"karcher", "model_stock"}


def _both(method, params, dtype=None, shapes=SHAPES, count=None):
    base, models = _models(count or COUNT.get(method, 3), shapes=shapes)
    seed = 1234
    if method in NO_BASE:
        ours = merge_state_dicts(models, method, parameters=params, seed=seed, dtype=dtype)
        torch.manual_seed(seed)
        theirs = mergekit_api.merge_state_dicts(models, method, parameters=params, dtype=dtype)
    else:
        ours = merge_state_dicts(models, method, base=base, parameters=params, seed=seed, dtype=dtype)
        torch.manual_seed(seed)
        theirs = mergekit_api.merge_state_dicts([base, *models], method, parameters=params, base=0, dtype=dtype)
    assert list(ours) == list(theirs)
    return ours, theirs


@pytest.mark.parametrize("method,params", CASES, ids=[f"{m}-{i}" for i, (m, _) in enumerate(CASES)])
def test_outputs_equal_mergekit(method, params):
    ours, theirs = _both(method, params)
    for name in ours:
        assert ours[name].dtype == theirs[name].dtype == torch.float32
        torch.testing.assert_close(ours[name], theirs[name], rtol=0, atol=1e-6, msg=f"{method}: {name}")


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16], ids=["bf16", "fp16"])
@pytest.mark.parametrize("method,params", [c for c in CASES if c[0] not in FLOAT32_INSIDE],
                         ids=[f"{m}-{i}" for i, (m, _) in enumerate(CASES) if m not in FLOAT32_INSIDE])
def test_half_precision_outputs_equal_mergekit_bit_for_bit(method, params, dtype):
    ours, theirs = _both(method, params, dtype)
    for name in ours:
        assert ours[name].dtype == theirs[name].dtype, name
        assert torch.equal(ours[name], theirs[name]), f"{method}: {name}"


@pytest.mark.parametrize("method,params", [("slerp", {"t": 0.3}), ("arcee_fusion", {}), ("linear", {"weight": [0.2, 0.5]}),
                                           ("ties", {"weight": [0.5, 0.7], "density": 0.5})], ids=lambda v: str(v)[:12])
def test_tensors_of_more_than_a_million_entries_equal_mergekit(method, params):
    """Where blocks (SLERP's norms, 2²⁰ entries), samples (Arcee Fusion's quartiles, 10⁶ entries) or
    chunks (the second pass of TIES, 2²² entries) begin to matter."""
    shapes = {"big": (4500, 1000), "small": (30, 20)}
    for dtype in (torch.float16, torch.bfloat16):
        ours, theirs = _both(method, params, dtype, shapes=shapes, count=COUNT.get(method, 2))
        assert all(torch.equal(ours[k], theirs[k]) for k in ours), dtype


@pytest.mark.parametrize("method,params", CASES, ids=lambda v: str(v)[:20])
def test_zoo_path_equals_state_dict_path(method, params):
    base, models = _models(COUNT.get(method, 3), seed=3)
    space = WeightSpace.from_state_dict(base)
    w = space.stack(models)
    b = None if method in NO_BASE else base
    ours = merge_weights(space, w, method, base=None if b is None else space.flatten(b), parameters=params, seed=9)
    ref = merge_state_dicts(models, method, base=b, parameters=params, seed=9)
    torch.testing.assert_close(ours, space.flatten(ref), rtol=0, atol=0)
