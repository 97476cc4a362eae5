import copy
import math

import pytest
import torch
from torch import nn

from weightspace.errors import ConfigError
from weightspace.generative.diffusion import (
    Diffusion,
    NoiseSchedule,
    ema_model,
    fit_denoiser,
    timestep_embedding,
)


def _gen(seed=0):
    return torch.Generator().manual_seed(seed)


def test_schedule_tables():
    s = NoiseSchedule(steps=10, beta_start=0.1, beta_end=0.2)
    assert s.betas.dtype == torch.float64
    assert torch.allclose(s.betas, torch.linspace(0.1, 0.2, 10, dtype=torch.float64))
    assert torch.allclose(s.alphas_cumprod, torch.cumprod(1 - s.betas, 0))
    with pytest.raises(ConfigError, match="steps"):
        NoiseSchedule(steps=0)
    with pytest.raises(ConfigError, match="beta_start"):
        NoiseSchedule(beta_start=0.5, beta_end=0.1)


def test_q_sample_statistics():
    s = NoiseSchedule()
    n = 200_000
    x0 = torch.full((n, 1), 2.0)
    for t in (0, 500, 999):
        tt = torch.full((n,), t, dtype=torch.long)
        x = s.q_sample(x0, tt, torch.randn(n, 1, generator=_gen(t)))
        ab = float(s.alphas_cumprod[t])
        assert x.mean().item() == pytest.approx(2.0 * math.sqrt(ab), abs=0.01)
        assert x.std().item() == pytest.approx(math.sqrt(1 - ab), rel=0.02, abs=1e-4)
    # per-row timesteps broadcast over trailing dimensions
    x0 = torch.ones(2, 3, 4)
    x = s.q_sample(x0, torch.tensor([0, 999]), torch.zeros_like(x0))
    assert torch.allclose(x[0], torch.full((3, 4), math.sqrt(float(s.alphas_cumprod[0]))))
    assert torch.allclose(x[1], torch.full((3, 4), math.sqrt(float(s.alphas_cumprod[999]))))


def _oracle(point: torch.Tensor, schedule: NoiseSchedule, prediction: str):
    """A perfect denoiser for data that is the single point ``point``."""
    def model(x_t, t, cond):
        ab = schedule.alphas_cumprod[t].float().reshape(-1, *([1] * (x_t.dim() - 1)))
        if prediction == "x0":
            return point.expand_as(x_t)
        return (x_t - ab.sqrt() * point) / (1 - ab).sqrt()
    return model


@pytest.mark.parametrize("prediction", ["eps", "x0"])
def test_oracle_recovers_point(prediction):
    s = NoiseSchedule(steps=200)
    d = Diffusion(s, prediction)
    point = torch.tensor([1.5, -0.5, 3.0, 0.0])
    model = _oracle(point, s, prediction)
    for out in (d.sample_ddpm(model, (5, 4), generator=_gen(1)),
                d.sample_ddim(model, (5, 4), steps=20, generator=_gen(1)),
                d.sample_ddim(model, (5, 4), steps=20, eta=1.0, generator=_gen(1))):
        assert torch.allclose(out, point.expand(5, 4), atol=1e-3)


def test_loss_targets():
    s = NoiseSchedule(steps=50)
    point = torch.randn(6)
    x0 = point.expand(32, 6)
    for prediction in ("eps", "x0"):
        d = Diffusion(s, prediction)
        assert d.loss(_oracle(point, s, prediction), x0, generator=_gen(0)).item() < 1e-8
        zero = lambda x, t, c: torch.zeros_like(x)
        loss = d.loss(zero, x0, generator=_gen(0)).item()
        expected = 1.0 if prediction == "eps" else float((point**2).mean())
        assert loss == pytest.approx(expected, rel=0.3)
    with pytest.raises(ConfigError, match="prediction"):
        Diffusion(s, "v")


def test_sampling_seeded_and_ddim_stochasticity():
    s = NoiseSchedule(steps=100)
    d = Diffusion(s)
    model = lambda x, t, c: 0.1 * x
    ddpm = d.sample_ddpm(model, (3, 5), generator=_gen(7))
    assert torch.equal(ddpm, d.sample_ddpm(model, (3, 5), generator=_gen(7)))
    assert not torch.equal(ddpm, d.sample_ddpm(model, (3, 5), generator=_gen(8)))
    a = d.sample_ddim(model, (3, 5), steps=10, eta=0.0, generator=_gen(7))
    assert torch.equal(a, d.sample_ddim(model, (3, 5), steps=10, eta=0.0, generator=_gen(7)))
    # eta > 0 draws fresh noise each step: same start noise, different result
    b = d.sample_ddim(model, (3, 5), steps=10, eta=0.5, generator=_gen(7))
    assert not torch.allclose(a, b)
    assert torch.equal(b, d.sample_ddim(model, (3, 5), steps=10, eta=0.5, generator=_gen(7)))
    with pytest.raises(ConfigError, match="steps"):
        d.sample_ddim(model, (1, 5), steps=0)


def _linear(value: float) -> nn.Linear:
    m = nn.Linear(2, 1)
    with torch.no_grad():
        m.weight.fill_(value)
        m.bias.fill_(0.0)
    return m


def test_ema_math():
    m = _linear(0.0)
    ema = ema_model(m, decay=0.9, warmup=False)
    with torch.no_grad():
        m.weight.fill_(1.0)
    ema.update_parameters(m)
    ema.update_parameters(m)
    # avg_1 = 0.9*0 + 0.1*1 = 0.1 ; avg_2 = 0.9*0.1 + 0.1*1 = 0.19
    assert torch.allclose(ema.module.weight, torch.full((1, 2), 0.19))
    assert torch.allclose(ema.module.bias, torch.zeros(1))
    assert m.weight.requires_grad  # the trained module is untouched

    m = _linear(0.0)
    w = ema_model(m, decay=0.999)  # warm-up: the n-th update uses decay n / (n + 9): 1/10, 2/11, ...
    with torch.no_grad():
        m.weight.fill_(1.0)
    w.update_parameters(m)
    assert torch.allclose(w.module.weight, torch.full((1, 2), 0.9))
    w.update_parameters(m)
    assert torch.allclose(w.module.weight, torch.full((1, 2), 2 / 11 * 0.9 + 9 / 11))
    with pytest.raises(ConfigError, match="decay"):
        ema_model(m, decay=1.0)


def test_timestep_embedding():
    e = timestep_embedding(torch.tensor([0, 1, 500]), 16)
    assert e.shape == (3, 16)
    assert torch.allclose(e[0, :8], torch.ones(8)) and torch.allclose(e[0, 8:], torch.zeros(8))
    assert not torch.allclose(e[1], e[2])
    assert timestep_embedding(torch.tensor([3]), 7).shape == (1, 7)


class TinyDenoiser(nn.Module):
    def __init__(self, dim=8, emb=32, width=128):
        super().__init__()
        self.emb = emb
        self.net = nn.Sequential(nn.Linear(dim + emb, width), nn.SiLU(), nn.Linear(width, width), nn.SiLU(),
                                 nn.Linear(width, dim))

    def forward(self, x, t, cond):
        return self.net(torch.cat([x, timestep_embedding(t, self.emb)], dim=-1))


@pytest.mark.parametrize("prediction", ["eps", "x0"])
def test_fit_denoiser_on_three_points(prediction):
    torch.manual_seed(0)
    points = torch.randn(3, 8, generator=_gen(3)) * 2
    spread = torch.cdist(points, points)[~torch.eye(3, dtype=torch.bool)].min().item()
    s = NoiseSchedule(steps=100, beta_start=1e-3, beta_end=0.2)
    d = Diffusion(s, prediction)
    model = fit_denoiser(TinyDenoiser(), d, points, steps=1000, batch_size=128, lr=2e-3, ema_decay=0.99,
                         generator=_gen(0), progress=False)
    assert not model.training
    samples = d.sample_ddpm(model, (30, 8), generator=_gen(1))
    nearest = torch.cdist(samples, points).min(dim=1).values
    assert nearest.median().item() < 0.1 * spread
    ddim = d.sample_ddim(model, (30, 8), steps=25, generator=_gen(1))
    assert torch.cdist(ddim, points).min(dim=1).values.median().item() < 0.1 * spread


def test_fit_denoiser_seeded():
    points = torch.randn(4, 8, generator=_gen(3))
    d = Diffusion(NoiseSchedule(steps=50))
    outs = []
    for _ in range(2):
        torch.manual_seed(0)
        m = fit_denoiser(TinyDenoiser(width=32), d, points, steps=20, generator=_gen(5), progress=False)
        outs.append(d.sample_ddim(m, (2, 8), steps=5, generator=_gen(0)))
    assert torch.equal(outs[0], outs[1])
    with pytest.raises(ConfigError, match="cond"):
        fit_denoiser(TinyDenoiser(), d, points, steps=1, cond=torch.zeros(3, 1), progress=False)


def test_linear_schedule_rescales():
    assert NoiseSchedule.linear(1000) == NoiseSchedule()
    short = NoiseSchedule.linear(100)
    assert short.steps == 100 and short.beta_end == pytest.approx(0.2)
    # both end near pure noise, unlike the 1000-step betas used for 100 steps
    assert float(short.alphas_cumprod[-1]) < 1e-3 and float(NoiseSchedule().alphas_cumprod[-1]) < 1e-3
    assert float(NoiseSchedule(steps=100).alphas_cumprod[-1]) > 0.3


@pytest.mark.parametrize("prediction", ["eps", "x0"])
def test_clip_bounds_the_clean_estimate(prediction):
    s = NoiseSchedule.linear(50)
    point = torch.tensor([3.0, -0.5, -2.0])
    clipped = Diffusion(s, prediction, clip=1.0)
    model = _oracle(point, s, prediction)
    out = clipped.sample_ddpm(model, (4, 3), generator=_gen(0))
    assert torch.allclose(out, point.clamp(-1, 1).expand(4, 3), atol=1e-4)
    assert torch.allclose(clipped.sample_ddim(model, (4, 3), steps=10, generator=_gen(0)),
                          point.clamp(-1, 1).expand(4, 3), atol=1e-4)
    with pytest.raises(ConfigError, match="clip"):
        Diffusion(s, clip=0.0)


def test_a_batch_transform_and_a_schedule_train_as_the_loop_written_out():
    """fit_denoiser with ``batch`` and ``lr_lambda`` (G.pt's augmentation and cosine decay) trains step
    for step as AdamW + LambdaLR written out, and returns the warm-up EMA of the trained weights."""
    points = torch.randn(6, 8, generator=_gen(3))
    d = Diffusion(NoiseSchedule(steps=50))
    steps, decay = 30, 0.9

    def lam(i):
        return 1.0 - i / (steps + 10)

    def jitter(gen):
        def batch(idx):
            return points[idx] + 0.1 * torch.randn(len(idx), 8, generator=gen), None
        return batch

    torch.manual_seed(0)
    model = TinyDenoiser(width=16)
    ref = copy.deepcopy(model)
    gen = _gen(5)
    out = fit_denoiser(model, d, points, steps=steps, batch_size=4, lr=1e-2, ema_decay=decay, generator=gen,
                       progress=False, batch=jitter(gen), lr_lambda=lam)

    g = _gen(5)
    opt = torch.optim.AdamW(ref.parameters(), lr=1e-2, weight_decay=0.0, fused=True)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lam)
    avg = {k: p.detach().clone() for k, p in ref.named_parameters()}
    for n in range(1, steps + 1):
        idx = torch.randint(0, len(points), (4,), generator=g)
        loss = d.loss(ref, points[idx] + 0.1 * torch.randn(4, 8, generator=g), None, g)
        opt.zero_grad()
        loss.backward()
        opt.step()
        sched.step()
        w = min(decay, n / (n + 9))
        avg = {k: w * avg[k] + (1 - w) * p.detach() for k, p in ref.named_parameters()}
    for (k, p), q in zip(model.named_parameters(), ref.parameters()):
        assert torch.equal(p, q), k  # the same steps, bit for bit
    for k, p in out.named_parameters():
        assert torch.allclose(p, avg[k], atol=1e-6), k
        assert not p.requires_grad
    assert not out.training and not torch.allclose(out.net[0].weight, model.net[0].weight)
