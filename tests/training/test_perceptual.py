"""Multi-scale STFT discriminator: shapes, weight norm, training and the generator's terms."""

import io
import math

import pytest
import torch

from training.perceptual import (
    DiscriminatorConfig,
    MultiScaleSTFTDiscriminator,
    PerceptualLoss,
    discriminator_hinge_loss,
    feature_matching_loss,
    generator_hinge_loss,
)

TINY = DiscriminatorConfig(n_ffts=(128, 64), filters=8)


def _sines(n: int, length: int = 1024, seed: int = 0) -> torch.Tensor:
    """Random-frequency, random-phase sines at 16 kHz with amplitude 0.3."""
    g = torch.Generator().manual_seed(seed)
    f = 200 + 2000 * torch.rand(n, 1, generator=g)
    ph = 2 * math.pi * torch.rand(n, 1, generator=g)
    t = torch.arange(length) / 16000
    return 0.3 * torch.sin(2 * math.pi * f * t + ph)


def _noise(n: int, length: int = 1024, seed: int = 1) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return 0.3 / math.sqrt(2) * torch.randn(n, length, generator=g)


def test_shapes_per_scale():
    """Default config: logits [B, 1, N // hop + 1, F'] with the bins halved three times,
    five feature maps of 32 channels per scale; [B, 1, N] is the same as [B, N]."""
    torch.manual_seed(0)
    disc = MultiScaleSTFTDiscriminator()
    wave = 0.1 * torch.randn(2, 4096)
    logits, feats = disc(wave)
    assert len(logits) == len(feats) == 5
    for n_fft, lg, ft in zip(DiscriminatorConfig().n_ffts, logits, feats):
        frames, bins = 4096 // (n_fft // 4) + 1, n_fft // 2 + 1
        assert len(ft) == 5
        assert tuple(ft[0].shape) == (2, 32, frames, bins)
        for _ in range(3):
            bins = (bins + 1) // 2
        assert tuple(lg.shape) == (2, 1, frames, bins)
        assert all(f.shape[1] == 32 for f in ft)
    logits3, _ = disc(wave[:, None])
    for a, b in zip(logits, logits3):
        torch.testing.assert_close(a, b)


def test_weight_norm_on_every_conv():
    disc = MultiScaleSTFTDiscriminator(TINY)
    convs = [m for m in disc.modules() if isinstance(m, torch.nn.Conv2d)]
    assert len(convs) == 2 * 6
    for c in convs:
        assert torch.nn.utils.parametrize.is_parametrized(c, "weight")
        names = {n for n, _ in c.named_parameters()}
        assert {"parametrizations.weight.original0", "parametrizations.weight.original1"} <= names


def test_hinge_losses_closed_form():
    real = [torch.full((2, 1, 3, 3), 2.0), torch.full((2, 1, 2, 2), 0.5)]
    fake = [torch.full((2, 1, 3, 3), -2.0), torch.full((2, 1, 2, 2), 0.0)]
    # scale 0: 0 + 0; scale 1: 0.5 + 1.0
    assert discriminator_hinge_loss(real, fake).item() == pytest.approx(0.75)
    # scale 0: relu(1 + 2) = 3; scale 1: relu(1 - 0) = 1
    assert generator_hinge_loss(fake).item() == pytest.approx(2.0)


def test_feature_matching_zero_for_identical_inputs():
    torch.manual_seed(0)
    disc = MultiScaleSTFTDiscriminator(TINY)
    wave = _sines(4)
    _, f1 = disc(wave)
    _, f2 = disc(wave.clone())
    assert feature_matching_loss(f1, f2).item() == pytest.approx(0.0, abs=1e-7)
    _, f3 = disc(_noise(4))
    assert feature_matching_loss(f1, f3).item() > 0.01


def test_discriminator_learns_sines_vs_noise():
    """20 steps change the weights and lower the hinge loss on held-out examples."""
    torch.manual_seed(0)
    pl = PerceptualLoss(TINY, lr=3e-3)
    held_real, held_fake = _sines(16, seed=10), _noise(16, seed=11)

    def held_out_loss():
        with torch.no_grad():
            r, _ = pl.discriminator(held_real)
            f, _ = pl.discriminator(held_fake)
            return discriminator_hinge_loss(r, f).item()

    before_params = [p.detach().clone() for p in pl.discriminator.parameters()]
    before = held_out_loss()
    for step in range(20):
        stats = pl.discriminator_step(_sines(16, seed=100 + step), _noise(16, seed=200 + step))
        assert set(stats) == {"disc_loss", "real_logit", "fake_logit"}
    after = held_out_loss()
    assert after < 0.5 * before
    assert stats["real_logit"] > stats["fake_logit"]
    changed = [not torch.equal(a, b) for a, b in zip(before_params, pl.discriminator.parameters())]
    assert all(changed)


def test_generator_terms_reach_generator_not_discriminator():
    torch.manual_seed(0)
    pl = PerceptualLoss(TINY)
    real = _sines(4)
    pl.discriminator_step(real, _noise(4))  # leaves .grad set on every parameter
    grads = [p.grad.clone() for p in pl.discriminator.parameters()]

    generator = torch.nn.Conv1d(1, 1, 9, padding=4)
    fake = generator(_noise(4)[:, None])[:, 0]
    terms = pl.generator_terms(real, fake)
    assert set(terms) == {"adv", "feat"}
    assert terms["adv"].requires_grad and terms["feat"].requires_grad
    for name in ("adv", "feat"):
        generator.zero_grad()
        fake_leaf = fake.detach().requires_grad_(True)
        t = pl.generator_terms(real, fake_leaf)[name]
        t.backward()
        assert fake_leaf.grad.abs().sum() > 0, name
    generator.zero_grad()
    pl.generator_loss(real, fake, feat_weight=2.0).backward()
    assert all(p.grad.abs().sum() > 0 for p in generator.parameters())

    for p, g in zip(pl.discriminator.parameters(), grads):
        assert p.requires_grad
        assert torch.equal(p.grad, g)
    fresh = PerceptualLoss(TINY)
    fresh.generator_loss(real, _noise(4).requires_grad_(True)).backward()
    assert all(p.grad is None for p in fresh.discriminator.parameters())


def test_state_dict_round_trip():
    torch.manual_seed(0)
    a = PerceptualLoss(TINY)
    a.discriminator_step(_sines(4), _noise(4))
    buf = io.BytesIO()
    torch.save(a.state_dict(), buf)
    buf.seek(0)
    torch.manual_seed(1)
    b = PerceptualLoss(TINY)
    b.load_state_dict(torch.load(buf, weights_only=True))
    for pa, pb in zip(a.discriminator.parameters(), b.discriminator.parameters()):
        assert torch.equal(pa, pb)
    # Same optimiser state: the next step is identical on both.
    real, fake = _sines(4, seed=5), _noise(4, seed=6)
    sa, sb = a.discriminator_step(real, fake), b.discriminator_step(real, fake)
    assert sa == sb
    for pa, pb in zip(a.discriminator.parameters(), b.discriminator.parameters()):
        assert torch.equal(pa, pb)
    with pytest.raises(ValueError, match="config mismatch"):
        PerceptualLoss(DiscriminatorConfig(n_ffts=(128,), filters=8)).load_state_dict(a.state_dict())
