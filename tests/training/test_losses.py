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
    for name in ("mse", "mse_complex", "cosine", "spectral_snr", "psnr", "nuclear", "mrstft"):
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
