"""Averaging (SWA, EMA, BatchNorm recompute), soups, interpolation, barriers and REPAIR on small
real models (digits)."""

import pandas as pd
import pytest
import torch
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn, update_bn

from weightspace.align import group_activations, match_permutations
from weightspace.data import load_dataset
from weightspace.merge.averaging import ema, swa
from weightspace.merge.batchnorm import recompute_batchnorm
from weightspace.merge.interpolation import (
    barrier,
    interpolate,
    interpolation_curve,
    repair,
)
from weightspace.merge.soups import greedy_soup, learned_soup, uniform_soup
from weightspace.nets import CNN, MLP
from weightspace.symmetry import permute
from weightspace.task import Task


def _gen(seed):
    return torch.Generator().manual_seed(seed)


@pytest.fixture(scope="module")
def digits():
    return load_dataset("digits", seed=0)


def _train(arch, x, y, seeds, steps=150, lr=0.05):
    """A few Adam steps of N models at once (full batch): small, deterministic, real."""
    w = arch.init(seeds).requires_grad_(True)
    opt = torch.optim.Adam([w], lr=lr)
    for _ in range(steps):
        out, _ = arch.apply(arch.space.unflatten(w, cast=False), x, train=False)
        loss = arch.loss(out, y.expand(len(seeds), -1)).sum()
        opt.zero_grad()
        loss.backward()
        opt.step()
    return w.detach()


def test_swa_and_ema_match_swa_utils():
    arch = MLP(6, (5,), 3)
    ckpts = torch.randn(7, arch.space.num_params, generator=_gen(0))
    torch.testing.assert_close(swa(ckpts, start=2), ckpts[2:].mean(0))
    module = arch.module()
    avg = AveragedModel(module, multi_avg_fn=get_ema_multi_avg_fn(0.9))
    for c in ckpts:
        module.load_state_dict(arch.space.unflatten(c))
        avg.update_parameters(module)
    expected = arch.space.flatten(avg.module.state_dict())
    torch.testing.assert_close(ema(ckpts, 0.9), expected)


def test_recompute_batchnorm_matches_update_bn(digits):
    arch = CNN(1, 8, channels=(4, 5), fc_widths=(6,))
    x = load_dataset("digits", seed=0, image=True).split("train")[0][:200]
    w = arch.init([0, 1]) + 0.1 * torch.randn(2, arch.space.num_params, generator=_gen(1))
    ours = recompute_batchnorm(arch, w, x)
    for i in range(2):
        module = arch.module()
        module.load_state_dict(arch.space.unflatten(w[i]), strict=False)
        update_bn([x], module)
        torch.testing.assert_close(ours[i], arch.space.flatten(module.state_dict()), atol=1e-5, rtol=1e-5)
    stats = torch.tensor([e.name.endswith(("running_mean", "running_var")) for e in arch.space.entries
                          for _ in range(e.numel)])
    assert torch.equal(ours[:, ~stats], w[:, ~stats]) and not torch.equal(ours[:, stats], w[:, stats])
    torch.testing.assert_close(recompute_batchnorm(arch, w[1], x), ours[1])  # one model as [P]
    mlp = MLP(6, (5,), 3)
    w_mlp = w[:, :mlp.space.num_params]
    assert torch.equal(recompute_batchnorm(mlp, w_mlp, x), w_mlp)  # no BatchNorm: nothing to recompute


@pytest.fixture(scope="module")
def finetunes(digits):
    """8 fine-tunes of one pretrained digits MLP with different learning rates and data orders."""
    arch = MLP(64, (32,), 10)
    x, y = digits.split("train")
    pre = _train(arch, x, y, [0], steps=40)
    lrs = torch.linspace(0.005, 0.05, 8)
    w = pre.repeat(8, 1).requires_grad_(True)
    opt = torch.optim.SGD([w], lr=1.0)
    for step in range(60):
        idx = torch.randint(0, len(x), (8, 64), generator=_gen(step))
        out, _ = arch.apply(arch.space.unflatten(w * 1.0, cast=False), x[idx])
        loss = (arch.loss(out, y[idx]) * lrs).sum()
        opt.zero_grad()
        loss.backward()
        opt.step()
    return arch, Task(digits, arch), w.detach()


@pytest.mark.parametrize("strict", [False, True])
def test_greedy_soup_never_worse_than_its_first_ingredient(finetunes, strict):
    _, task, w = finetunes
    soup, table = greedy_soup(w, lambda v: task.accuracy(v, "val"), strict=strict)
    first = table.iloc[0]
    assert first["score"] == task.accuracy(w, "val").max()
    assert float(task.accuracy(soup, "val")) >= first["score"]
    taken = table[table["taken"]]["model"].tolist()
    torch.testing.assert_close(soup, w[taken].mean(0))
    assert list(table.columns) == ["model", "score", "soup_score", "taken"] and len(table) == len(w)
    assert (table["soup_score"][table["taken"]].cummax() == table["soup_score"][table["taken"]]).all()


def test_strict_greedy_soup_takes_no_more_than_non_strict(finetunes):
    _, task, w = finetunes
    score = lambda v: task.accuracy(v, "val")
    assert greedy_soup(w, score, strict=True)[1]["taken"].sum() <= greedy_soup(w, score)[1]["taken"].sum()


def test_learned_soup_lowers_held_out_loss(finetunes, digits):
    arch, task, w = finetunes
    x, y = digits.split("val")
    soup, coefs = learned_soup(arch, w, x, y, steps=30)
    assert float(task.loss(soup, "val")) < float(task.loss(uniform_soup(w), "val"))
    sums = coefs.groupby("tensor")["coefficient"].sum()
    torch.testing.assert_close(torch.tensor(sums.to_numpy()), torch.ones(len(sums), dtype=torch.float64))


def test_interpolation_and_barrier_by_hand():
    a, b = torch.zeros(3), torch.ones(3)
    torch.testing.assert_close(interpolate(a, b, torch.tensor([0.0, 0.25, 1.0]))[1], torch.full((3,), 0.25))
    curve = pd.DataFrame({"lam": [0.0, 0.5, 1.0], "loss": [1.0, 4.0, 3.0]})
    assert barrier(curve) == 2.0


@pytest.fixture(scope="module")
def pair(digits):
    arch = MLP(64, (48,), 10)
    x, y = digits.split("train")
    w = _train(arch, x, y, [1, 2])
    return arch, Task(digits, arch), w[0], w[1]


def test_alignment_lowers_the_barrier_and_repair_keeps_the_endpoints(pair):
    arch, task, a, b = pair
    plain = barrier(interpolation_curve(task, a, b))
    aligned_b = permute(arch.space, b[None], match_permutations(arch.space, a, b[None]))[0]
    curve = interpolation_curve(task, a, aligned_b)
    assert barrier(curve) < plain
    repaired = interpolation_curve(task, a, aligned_b, repair_neurons=True)
    ends = [0, len(curve) - 1]
    torch.testing.assert_close(torch.tensor(repaired["loss"].to_numpy()[ends]),
                               torch.tensor(curve["loss"].to_numpy()[ends]), atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize("arch", [MLP(64, (12, 9), 10), CNN(1, 8, channels=(4, 5), fc_widths=(6,)),
                                  CNN(1, 8, channels=(4, 5), fc_widths=(6,), batchnorm=False)])
def test_repair_sets_each_neurons_statistics_to_the_interpolation(arch):
    w = arch.init([0, 1]) + 0.1 * torch.randn(2, arch.space.num_params, generator=_gen(2))
    x = torch.randn(300, *arch.input_shape, generator=_gen(3))
    if isinstance(arch, CNN):
        w = recompute_batchnorm(arch, w, x)
    lam = torch.tensor([0.0, 0.3, 0.5, 1.0])
    fixed = repair(arch, w[0], w[1], interpolate(w[0], w[1], lam), lam, x)
    ends = group_activations(arch, w, x)
    got = group_activations(arch, fixed, x)
    for g, a in ends.items():
        for stat in (lambda t: t.double().mean(-1), lambda t: t.double().std(-1, unbiased=False)):
            target = (1 - lam[:, None].double()) * stat(a[0]) + lam[:, None].double() * stat(a[1])
            torch.testing.assert_close(stat(got[g]), target, atol=1e-3, rtol=1e-3)
