"""Every loss term carries gradient to every encoder's parameters."""

import pytest
import torch
from conftest import tiny_model_config

from shared.models.architectures import DistributedAutoencoder
from shared.stft import get_preset
from training.losses import psnr_db, spectral_snr_db, task_agnostic_losses
from training.train import BottleneckedAutoencoder


@pytest.mark.parametrize("arch,bottleneck", [("ndpca-e4d1", "pca"), ("naive-e2d1", "truncate"),
                                             ("ndpca-e2d1", "pca")])
def test_each_term_reaches_every_encoder(arch, bottleneck):
    """Each term alone gives non-zero gradients at every encoder (cosine: sources > 1)."""
    torch.manual_seed(0)
    model = DistributedAutoencoder(tiny_model_config(arch))
    module = BottleneckedAutoencoder(model, bottleneck)
    x = torch.randn(24, 4, 2, 256, 8) * 0.3
    for name in ("mse", "mse_complex", "cosine", "spectral_snr", "psnr", "nuclear", "mrstft", "loudness"):
        model.zero_grad()
        out = module(x, 12)
        terms = task_agnostic_losses(out["recon"], x, out["latents"], "complex", get_preset("stream"))
        terms[name].backward()
        for s, enc in enumerate(model.encoders):
            g = sum(p.grad.abs().sum().item() for p in enc.parameters() if p.grad is not None)
            assert g > 0, f"{name} gives no gradient to encoder {s}"


def test_psnr_and_snr_definitions():
    """PSNR and spectral SNR rise as the reconstruction approaches the target."""
    x = torch.randn(2, 4, 2, 16, 8)
    near, far = x + 0.01 * torch.randn_like(x), x + 0.5 * torch.randn_like(x)
    assert torch.all(psnr_db(near, x) > psnr_db(far, x))
    assert torch.all(spectral_snr_db(near, x) > spectral_snr_db(far, x))
    assert spectral_snr_db(x, x).min() > 60


def test_stoi_term_follows_stoi():
    """The STOI term is 0 for the reference itself, grows as noise masks the speech's band
    envelopes (in the same order as pystoi's STOI), skips digital silence and has a gradient."""
    from pystoi import stoi

    from shared.stft import get_preset, stft, to_channels
    from training.losses import stoi_envelope_loss

    preset = get_preset("stream")
    g = torch.Generator().manual_seed(0)
    t = torch.arange(16000) / 16000
    # a speech-like test signal: a 150 Hz pulse train through moving resonances, syllables at 4 Hz
    src = torch.sign(torch.sin(2 * torch.pi * 150 * t)) * (0.55 + 0.45 * torch.sin(2 * torch.pi * 4 * t)).clamp_min(0)
    clean = torch.nn.functional.conv1d(src[None, None], torch.randn(1, 1, 64, generator=g) * 0.1, padding=32)[0, 0, :16000]
    clean = torch.cat([torch.zeros(4000), clean])  # digital silence first
    ch = lambda w: to_channels(stft(w, preset), "complex")[None]  # noqa: E731
    assert stoi_envelope_loss(ch(clean), ch(clean), preset).item() < 0.01
    losses, scores = [], []
    for level in (0.05, 0.2, 0.8):
        noisy = clean + level * clean.std() * torch.randn(clean.shape, generator=g)
        losses.append(stoi_envelope_loss(ch(noisy), ch(clean), preset).item())
        scores.append(stoi(clean.numpy(), noisy.numpy(), 16000))
    assert losses == sorted(losses) and scores == sorted(scores, reverse=True)
    est = ch(clean + 0.2 * clean.std() * torch.randn(clean.shape, generator=g)).requires_grad_()
    stoi_envelope_loss(est, ch(clean), preset).backward()
    assert torch.isfinite(est.grad).all() and est.grad.abs().sum() > 0
    with pytest.raises(ValueError, match="48 frames"):
        stoi_envelope_loss(est[..., :20], ch(clean)[..., :20], preset)


def test_loudness_term_weighs_added_energy_more():
    """0 for the target itself; a band made 2 dB louder costs more than one made 2 dB quieter
    (added energy counts twice as much before squaring); zeroing the upper bands costs little
    next to adding energy there."""
    from training.losses import loudness_loss

    preset = get_preset("stream")
    g = torch.Generator().manual_seed(0)
    x = torch.randn(2, 4, 2, 256, 16, generator=g) * torch.linspace(1, 0.05, 256)[:, None]
    assert loudness_loss(x, x, preset).item() == 0
    up, down = 10 ** (2 / 20), 10 ** (-2 / 20)
    louder, quieter = loudness_loss(x * up, x, preset), loudness_loss(x * down, x, preset)
    assert 3.0 < (louder / quieter).item() < 8.0  # 4 from the weight, the rest from the exponent
    hi = torch.zeros(256, 1)
    hi[128:] = 1
    assert loudness_loss(x * (1 - hi), x, preset) < loudness_loss(x + 3 * x.std() * hi * torch.randn_like(x), x, preset)
