"""The score-based enhancer: SDE maths, network, training objective, sampler, checkpoints."""

import math

import pytest
import torch

from shared.checkpoint import save_checkpoint
from shared.enhancer import (
    OUVESDE,
    SAMPLER_PRESETS,
    SCORE_NET_PRESETS,
    SamplerConfig,
    ScoreEnhancer,
    ScoreNet,
    ScoreNetConfig,
    SDEConfig,
    sampler_from_name,
)
from shared.errors import CheckpointError, ConfigError

TINY = SCORE_NET_PRESETS["tiny"]


def _randomised(module: ScoreEnhancer | ScoreNet, seed: int = 0):
    """Give the (zero-initialised) output convolution random weights so outputs are non-trivial."""
    net = module.net if isinstance(module, ScoreEnhancer) else module
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        net.out.weight.copy_(torch.randn(net.out.weight.shape, generator=gen) * 0.1)
    return module


def _tiny_enhancer(seed: int = 0, **kw) -> ScoreEnhancer:
    torch.manual_seed(seed)
    return _randomised(ScoreEnhancer(TINY, **kw), seed)


# ---------------------------------------------------------------------------------- SDE
def test_std_matches_closed_form_and_integrated_variance():
    """std(t) is the closed form and solves dVar/dt = -2 theta Var + g(t)^2, Var(0) = 0."""
    cfg = SDEConfig()
    sde = OUVESDE(cfg)
    lam = math.log(cfg.sigma_max / cfg.sigma_min)
    ts = torch.tensor([0.03, 0.1, 0.25, 0.5, 0.75, 1.0], dtype=torch.float64)
    closed = torch.sqrt(
        cfg.sigma_min**2 * (torch.exp(2 * ts * lam) - torch.exp(-2 * cfg.theta * ts)) * lam / (cfg.theta + lam)
    )
    torch.testing.assert_close(sde.std(ts), closed)

    n = 100_000
    dt = 1.0 / n
    var, integrated = 0.0, {}
    marks = {round(float(t) * n): float(t) for t in ts}
    g2 = (sde.g(torch.arange(n, dtype=torch.float64) * dt) ** 2).tolist()
    for i in range(n):
        var += (-2 * cfg.theta * var + g2[i]) * dt
        if i + 1 in marks:
            integrated[marks[i + 1]] = var
    for t in ts.tolist():
        assert sde.std(torch.tensor([t], dtype=torch.float64)).item() == pytest.approx(
            math.sqrt(integrated[t]), rel=0.01
        )


def test_mean_g_and_perturb():
    """Mean is x0 at t = 0 and y for large theta t; g matches Eq. 15 at t = 0 and 1."""
    sde = OUVESDE()
    x0, y = torch.randn(3, 2, 5, 4), torch.randn(3, 2, 5, 4)
    torch.testing.assert_close(sde.mean(x0, y, torch.zeros(3)), x0)
    stiff = OUVESDE(SDEConfig(theta=40.0))
    torch.testing.assert_close(stiff.mean(x0, y, torch.ones(3)), y, atol=1e-6, rtol=0)
    t = torch.tensor([0.2, 0.5, 0.9])
    a = torch.exp(-1.5 * t)[:, None, None, None]
    torch.testing.assert_close(sde.mean(x0, y, t), a * x0 + (1 - a) * y)
    noise = torch.randn_like(x0)
    torch.testing.assert_close(
        sde.perturb(x0, y, t, noise), sde.mean(x0, y, t) + sde.std(t)[:, None, None, None] * noise
    )
    root = math.sqrt(2 * math.log(0.5 / 0.05))
    g = sde.g(torch.tensor([0.0, 1.0]))
    assert g[0].item() == pytest.approx(0.05 * root) and g[1].item() == pytest.approx(0.5 * root)
    start = sde.prior_sample(y, torch.Generator().manual_seed(0), t=0.5)
    z = torch.randn(y.shape, generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(start, y + sde.std(torch.tensor(0.5)) * z)
    with pytest.raises(ConfigError):
        SDEConfig(sigma_min=0.6)


# ---------------------------------------------------------------------------------- network
@pytest.mark.parametrize("n_f,n_t", [(256, 32), (257, 13)])
def test_score_net_shapes(n_f, n_t):
    torch.manual_seed(0)
    net = ScoreNet(TINY)
    x, y = torch.randn(2, 2, n_f, n_t), torch.randn(2, 2, n_f, n_t)
    out = net(x, y, torch.tensor([0.1, 0.9]))
    assert out.shape == (2, 2, n_f, n_t)
    assert torch.count_nonzero(out) == 0  # zero-initialised output layer


def test_attention_and_deeper_config():
    """Several residual blocks per level, attention at the lowest resolution, three levels."""
    torch.manual_seed(0)
    cfg = ScoreNetConfig(base_channels=8, channel_mults=(1, 2, 2), num_res_blocks=2, emb_dim=16, attention=True)
    net = _randomised(ScoreNet(cfg))
    x, y = torch.randn(2, 2, 30, 9), torch.randn(2, 2, 30, 9)
    out = net(x, y, torch.tensor([0.2, 0.6]))
    assert out.shape == x.shape and torch.isfinite(out).all()
    out.square().mean().backward()
    assert net.mid_attn.qkv.weight.grad is not None and net.mid_attn.proj.weight.grad.abs().sum() > 0


def test_time_embedding_changes_output():
    net = _randomised(ScoreNet(TINY)).eval()
    x, y = torch.randn(1, 2, 16, 8), torch.randn(1, 2, 16, 8)
    a, b = net(x, y, torch.tensor([0.1])), net(x, y, torch.tensor([0.9]))
    assert (a - b).abs().mean() > 1e-3 * a.abs().mean()
    torch.testing.assert_close(net(x, y, torch.tensor([0.1])), a)


def test_presets_are_valid_and_sized():
    sizes = {k: sum(p.numel() for p in ScoreNet(c).parameters()) for k, c in SCORE_NET_PRESETS.items()}
    assert 300_000 <= sizes["cpu"] <= 1_000_000
    assert sizes["gpu"] > 2 * sizes["cpu"] > sizes["tiny"]
    assert SCORE_NET_PRESETS["gpu"].attention
    with pytest.raises(ConfigError, match="channel_mults"):
        ScoreNetConfig(channel_mults=())


# ---------------------------------------------------------------------------------- training
def test_dsm_loss_reaches_all_parameters():
    enh = _tiny_enhancer()
    x0, y = torch.randn(2, 2, 16, 8) * 0.3, torch.randn(2, 2, 16, 8) * 0.3
    loss = enh.dsm_loss(x0, y, torch.Generator().manual_seed(0))
    assert loss.dim() == 0 and loss.requires_grad
    loss.backward()
    for name, p in enh.net.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all(), name
        assert p.grad.abs().sum() > 0, name


def test_dsm_loss_matches_eq17():
    """The loss is mean |std(t) score(x_t, y, t) + z|^2 for the t and z it draws."""
    enh = _tiny_enhancer()
    x0, y = torch.randn(3, 2, 8, 8), torch.randn(3, 2, 8, 8)
    loss = enh.dsm_loss(x0, y, torch.Generator().manual_seed(5))
    gen = torch.Generator().manual_seed(5)
    t = enh.sde.t_eps + (1 - enh.sde.t_eps) * torch.rand(3, generator=gen)
    z = torch.randn(x0.shape, generator=gen)
    x_t = enh.sde.perturb(x0, y, t, z)
    ref = (enh.sde.std(t)[:, None, None, None] * enh.score(x_t, y, t) + z).square().mean()
    torch.testing.assert_close(loss, ref)


def test_training_reduces_loss():
    """Adam on a toy problem (fixed clean spectra, y = x0 + small noise) lowers the loss."""
    torch.manual_seed(0)
    enh = ScoreEnhancer(TINY)
    gen = torch.Generator().manual_seed(1)
    x0 = torch.randn(4, 2, 16, 8, generator=gen) * 0.3
    y = x0 + 0.02 * torch.randn(x0.shape, generator=gen)

    def held_out() -> float:
        with torch.no_grad():
            return enh.dsm_loss(x0.repeat(4, 1, 1, 1), y.repeat(4, 1, 1, 1), torch.Generator().manual_seed(9)).item()

    before = held_out()
    opt = torch.optim.Adam(enh.parameters(), lr=1e-2)
    for _ in range(100):
        opt.zero_grad()
        enh.dsm_loss(x0, y, gen).backward()
        opt.step()
    after = held_out()
    assert before == pytest.approx(1.0, abs=0.1)  # zero output: loss = E z^2
    assert after < 0.4 * before


# ---------------------------------------------------------------------------------- sampler
class GaussianEnhancer(ScoreEnhancer):
    """The exact score for elementwise data x0 ~ N(m, s0^2): p_t(x | y) is Gaussian with
    mean a m + (1 - a) y and variance a^2 s0^2 + std(t)^2, a = e^{-theta t}."""

    m, s0 = 0.2, 0.3

    def __init__(self) -> None:
        super().__init__(TINY)
        self.calls = 0

    def marginal(self, t: torch.Tensor, y: torch.Tensor):
        a, std = self.sde.decay(t), self.sde.std(t)
        return a * self.m + (1 - a) * y, a * a * self.s0**2 + std * std

    def score(self, x, y, t):
        self.calls += 1
        t = torch.as_tensor(t, dtype=x.dtype).expand(x.shape[0])[:, None, None, None]
        mu, var = self.marginal(t, y)
        return -(x - mu) / var


def test_posterior_mean_is_exact_with_exact_score():
    enh = GaussianEnhancer()
    y = torch.randn(4, 2, 8, 8) * 0.5
    x_t = torch.randn(4, 2, 8, 8)
    for t in (0.05, 0.5, 1.0):
        tt = torch.tensor(t)
        a = enh.sde.decay(tt)
        mu, var = enh.marginal(tt, y)
        expected = enh.m + a * enh.s0**2 / var * (x_t - mu)  # Gaussian conditioning
        torch.testing.assert_close(enh.posterior_mean(x_t, y, t), expected)


def _mismatch_gain(sde: OUVESDE, var_end: torch.Tensor, var_1: torch.Tensor, t_end: float):
    """How much of a start error at t = 1 survives the exact reverse SDE down to t_end:
    e^{-theta (1 - t_end)} Var(t_end) / Var(1)."""
    return math.exp(-sde.theta * (1 - t_end)) * var_end / var_1


def test_sampler_recovers_gaussian_marginal():
    """With the exact score, 200 reverse-diffusion steps (plus a corrector) from the prior
    land on the marginal at t_eps, up to the known effect of the prior's mismatch."""
    enh = GaussianEnhancer()
    sde = enh.sde
    y = torch.zeros(4, 2, 64, 64)
    t_eps, one = torch.tensor(sde.t_eps), torch.tensor(1.0)
    mu_e, var_e = enh.marginal(t_eps, 0.0)
    mu_1, var_1 = enh.marginal(one, 0.0)
    gain = _mismatch_gain(sde, var_e, var_1, sde.t_eps)
    exp_mean = mu_e + (0.0 - mu_1) * gain  # the prior starts at y, not at mu_1
    exp_var = var_e + (sde.std(one) ** 2 - var_1) * gain**2
    for corrector in (0, 1):
        cfg = SamplerConfig(steps=200, corrector_steps=corrector, denoise_final=False)
        x = enh.enhance(y, cfg)
        assert x.mean().item() == pytest.approx(exp_mean.item(), abs=0.005)
        assert x.std().item() == pytest.approx(math.sqrt(exp_var.item()), rel=0.02)


def test_sampler_denoise_final_returns_posterior_mean():
    """denoise_final: the output is E[x0 | x_t] at the last step, whose spread is
    s0^2 a / sqrt(Var_t), and the number of score evaluations is steps * (1 + correctors)."""
    enh = GaussianEnhancer()
    y = torch.zeros(2, 2, 64, 64)
    cfg = SamplerConfig(steps=30, corrector_steps=1)
    x = enh.enhance(y, cfg)
    assert enh.calls == enh.evaluations(cfg) == 60
    t_last = torch.tensor(1 - (1 - enh.sde.t_eps) * 29 / 30)
    _, var = enh.marginal(t_last, 0.0)
    spread = enh.s0**2 * enh.sde.decay(t_last) / var.sqrt()
    assert x.mean().item() == pytest.approx(enh.m, abs=0.01)
    assert x.std().item() == pytest.approx(spread.item(), rel=0.02)


def test_enhance_deterministic_and_shape():
    enh = _tiny_enhancer()
    y = torch.randn(2, 3, 2, 20, 7) * 0.3
    for name in SAMPLER_PRESETS:
        if name == "predictive":
            continue  # needs a predictive network (test_predictive_network_starts_at_the_input_and_learns)
        out = enh.enhance(y, SAMPLER_PRESETS[name])
        assert out.shape == y.shape and torch.isfinite(out).all()
    fast = SAMPLER_PRESETS["fast"]
    a, b = enh.enhance(y, fast), enh.enhance(y, fast)
    torch.testing.assert_close(a, b, rtol=0, atol=0)
    c = enh.enhance(y, SamplerConfig(mode="fast", steps=4, corrector_steps=0, t_start=0.5, seed=1))
    assert not torch.equal(a, c)
    # the batch layout does not matter: the same spectra flattened give the same output
    torch.testing.assert_close(enh.enhance(y.reshape(6, 2, 20, 7), fast), a.reshape(6, 2, 20, 7))
    assert enh.enhance(y[0, 0], fast).shape == (2, 20, 7)
    assert enh.net.training  # enhance restores the mode it found
    with pytest.raises(ValueError, match="2, F, T"):
        enh.enhance(torch.randn(2, 3, 20, 7))


def test_single_fast_step_is_one_step():
    """One "fast" step with denoise_final is Tweedie's estimate from the start y + std(t) z."""
    enh = _tiny_enhancer().eval()
    y = torch.randn(2, 2, 16, 8) * 0.3
    cfg = SamplerConfig(mode="fast", steps=1, corrector_steps=0, t_start=0.5, seed=3)
    z = torch.randn(y.shape, generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        torch.testing.assert_close(enh.enhance(y, cfg), enh.one_step(y, 0.5, noise=z))
    assert enh.evaluations(cfg) == 1


def test_one_step_gradient_reaches_input_with_frozen_net():
    enh = _tiny_enhancer()
    enh.requires_grad_(False)
    y = (torch.randn(2, 2, 16, 8) * 0.3).requires_grad_()
    noise = torch.randn(2, 2, 16, 8)
    out = enh.one_step(y, t=0.35, noise=noise)
    out.square().sum().backward()
    assert y.grad is not None and y.grad.abs().sum() > 0
    assert all(p.grad is None for p in enh.parameters())
    with torch.no_grad():
        x_t = y + enh.sde.std(torch.tensor(0.35)) * noise
        torch.testing.assert_close(out, enh.posterior_mean(x_t, y, 0.35))
        torch.testing.assert_close(enh.one_step(y, 0.35), enh.posterior_mean(y, y, 0.35))


def test_one_step_gradient_reaches_parameters():
    enh = _tiny_enhancer()
    enh.one_step(torch.randn(1, 2, 16, 8), t=0.5).sum().backward()
    assert enh.net.out.weight.grad is not None and enh.net.out.weight.grad.abs().sum() > 0


# ---------------------------------------------------------------------------------- configs
def test_sampler_from_name():
    assert sampler_from_name("fast") == SAMPLER_PRESETS["fast"]
    assert sampler_from_name({"steps": 10, "snr": 0.3}) == SamplerConfig(steps=10, snr=0.3)
    assert sampler_from_name({"preset": "fast", "steps": 6}).t_start == SAMPLER_PRESETS["fast"].t_start
    cfg = SamplerConfig(steps=3)
    assert sampler_from_name(cfg) is cfg
    with pytest.raises(ConfigError, match="unknown sampler preset 'best'"):
        sampler_from_name("best")
    with pytest.raises(ConfigError, match="unknown keys \\['stpes'\\]"):
        sampler_from_name({"stpes": 3})
    with pytest.raises(ConfigError, match="steps"):
        sampler_from_name({"steps": 0})
    with pytest.raises(ConfigError, match="mode 'fast'"):
        SamplerConfig(t_start=0.5)
    assert ScoreEnhancer(TINY).evaluations() == 60
    assert ScoreEnhancer(TINY).evaluations(SAMPLER_PRESETS["realtime"]) == 2


# ---------------------------------------------------------------------------------- checkpoints
def test_save_load_round_trip(tmp_path):
    enh = _tiny_enhancer(sampler=SAMPLER_PRESETS["fast"])
    path = tmp_path / "enh.ckpt"
    digest = enh.save(path, extra_header={"trained_on": "toy"})
    loaded = ScoreEnhancer.load(path)
    assert loaded.sha256 == digest and loaded.header["trained_on"] == "toy"
    assert loaded.header["sample_rate"] == 16000 and loaded.header["kind"] == "enhancer"
    assert loaded.sampler == SAMPLER_PRESETS["fast"] and loaded.net.cfg == TINY
    assert loaded.sde.cfg == enh.sde.cfg and (loaded.stft, loaded.representation) == ("stream", "complex")
    y = torch.randn(2, 2, 16, 8)
    torch.testing.assert_close(loaded.enhance(y), enh.eval().enhance(y))
    t = torch.tensor([0.3, 0.7])
    torch.testing.assert_close(loaded.score(y, y, t), enh.score(y, y, t))
    override = ScoreEnhancer.load(path, sampler=SAMPLER_PRESETS["realtime"])
    assert override.sampler == SAMPLER_PRESETS["realtime"]


def test_load_errors(tmp_path):
    enh = _tiny_enhancer()
    path = tmp_path / "enh.ckpt"
    enh.save(path)
    data = bytearray(path.read_bytes())
    data[-50] ^= 0xFF
    bad = tmp_path / "bad.ckpt"
    bad.write_bytes(bytes(data))
    with pytest.raises(CheckpointError, match="corrupt"):
        ScoreEnhancer.load(bad)
    codec = tmp_path / "codec.ckpt"
    save_checkpoint(codec, {"kind": "codec"}, {"model.w": torch.zeros(1)})
    with pytest.raises(CheckpointError, match="expected 'enhancer'"):
        ScoreEnhancer.load(codec)
    with pytest.raises(CheckpointError, match="not found"):
        ScoreEnhancer.load(tmp_path / "missing.ckpt")
    malformed = tmp_path / "malformed.ckpt"
    enh.save(malformed, extra_header={"net_config": {"base_channels": 8, "width": 3}})
    with pytest.raises(CheckpointError, match="malformed.*width"):
        ScoreEnhancer.load(malformed)
    enh.save(malformed, extra_header={"sampler": {"steps": -1}})
    with pytest.raises(CheckpointError, match="malformed.*steps"):
        ScoreEnhancer.load(malformed)
    mismatch = tmp_path / "mismatch.ckpt"
    enh.save(mismatch, extra_header={"net_config": ScoreNetConfig(base_channels=4, channel_mults=(1, 2)).as_dict()})
    with pytest.raises(CheckpointError, match="weights do not fit"):
        ScoreEnhancer.load(mismatch)


# ---------------------------------------------------------------------------------- predictive
def test_predictive_network_starts_at_the_input_and_learns():
    """The predictive network is y plus a correction that starts at zero (an untrained one
    passes its input through), costs one evaluation, and regression lowers its loss."""
    torch.manual_seed(0)
    enh = ScoreEnhancer(TINY, sampler=SAMPLER_PRESETS["predictive"], predictive=True)
    y = torch.randn(3, 2, 16, 8) * 0.3
    torch.testing.assert_close(enh.enhance(y), y)
    assert enh.evaluations() == 1 == SAMPLER_PRESETS["predictive"].evaluations
    gen = torch.Generator().manual_seed(1)
    x0 = torch.randn(4, 2, 16, 8, generator=gen) * 0.3
    noisy = x0 + 0.1 * torch.randn(x0.shape, generator=gen)
    before = enh.predictive_loss(x0, noisy).item()
    opt = torch.optim.Adam(enh.predictor.parameters(), lr=1e-2)
    for _ in range(150):
        opt.zero_grad()
        enh.predictive_loss(x0, noisy).backward()
        opt.step()
    assert enh.predictive_loss(x0, noisy).item() < 0.5 * before
    with pytest.raises(ConfigError, match="predictive network"):
        ScoreEnhancer(TINY).enhance(y, SAMPLER_PRESETS["predictive"])


def test_predictive_checkpoint_round_trip(tmp_path):
    enh = ScoreEnhancer(TINY, sampler=SAMPLER_PRESETS["predictive"], predictive=True)
    with torch.no_grad():
        enh.predictor.out.weight.normal_(0, 0.1)
    path = tmp_path / "pred.ckpt"
    enh.save(path)
    loaded = ScoreEnhancer.load(path)
    assert loaded.header["predictive"] is True and loaded.predictor is not None
    y = torch.randn(2, 2, 16, 8)
    torch.testing.assert_close(loaded.enhance(y), enh.eval().enhance(y))
    assert not torch.allclose(loaded.enhance(y), y)


def test_predictive_loss_on_the_last_frames():
    """``last_frames`` counts only the newest frames of each crop (the ones a streaming
    receiver plays), but the network sees the whole crop."""
    enh = ScoreEnhancer(TINY, predictive=True)
    with torch.no_grad():
        enh.predictor.out.weight.normal_(0, 0.1)
    x0, y = torch.randn(2, 2, 16, 12), torch.randn(2, 2, 16, 12)
    est = enh.predict(y)
    mag = lambda v: torch.sqrt(v.square().sum(dim=-3) + 1e-8)  # noqa: E731
    tail = (est - x0)[..., -4:].square().mean() + (mag(est[..., -4:]) - mag(x0[..., -4:])).square().mean()
    torch.testing.assert_close(enh.predictive_loss(x0, y, 4), tail)
    y2 = y.clone()
    y2[..., :8] += 1.0  # the context changes the loss of the last frames
    assert enh.predictive_loss(x0, y2, 4) != enh.predictive_loss(x0, y, 4)
