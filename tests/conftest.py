"""Shared fixtures: tiny random codecs and the path of the team's real data."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[1]
REAL_DATA = REPO.parent / "shared" / "data"

# One intra-op thread: the models in tests are tiny, and on a busy two-core machine two
# OpenMP threads made small convolutions many times slower than one.
torch.set_num_threads(1)


def tiny_model_config(arch: str = "ndpca-e4d1", stft: str = "stream", **kw):
    from shared.models.architectures import ModelConfig

    base = dict(arch=arch, stft=stft, latent_total=32, frame_dim=16, hidden_enc=16, hidden_dec=32,
                frames=4, vectors_per_step=2)
    base.update(kw)
    return ModelConfig(**base)


def tiny_codec(arch: str = "ndpca-e4d1", seed: int = 0, n_fit: int = 64, step_profile: str = "water",
               **cfg_kw):
    """A random tiny codec: linear transforms and bases fitted on random audio, residual
    networks at random (non-zero) weights so that the nonlinear path is exercised."""
    from shared.codec import Codec
    from shared.models.architectures import DistributedAutoencoder
    from training.train import SpectralBank, fit_bases

    torch.manual_seed(seed)
    cfg = tiny_model_config(arch, **cfg_kw)
    model = DistributedAutoencoder(cfg).eval()
    audio = [torch.randn(cfg.num_mics, 8000) * 0.1 for _ in range(4)]
    bank = SpectralBank.from_examples(audio, cfg, seq_vectors=2)
    model.init_linear(bank.all_chunks())
    with torch.no_grad():
        for p in model.parameters():
            if p.dim() == 2 and not p.abs().sum():
                p.normal_(0, 0.05)  # the residual networks start at zero; make them act
    bases = fit_bases(model, bank.all_chunks(stride=2)[:n_fit])
    return Codec(model, bases, step_profile=step_profile)


@pytest.fixture
def codec_e4d1():
    return tiny_codec("ndpca-e4d1")


@pytest.fixture
def real_data() -> Path:
    if not REAL_DATA.is_dir():
        pytest.skip("../shared/data not present")
    return REAL_DATA
