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

    base = dict(arch=arch, stft=stft, channels=16, n_res=1, latent_total=32, bottleneck_channels=4,
                frames=8, n_down=1)
    base.update(kw)
    return ModelConfig(**base)


def tiny_codec(arch: str = "ndpca-e4d1", seed: int = 0, n_fit: int = 64):
    """A random tiny codec with bases fitted on random audio."""
    from shared.codec import Codec
    from shared.models.architectures import DistributedAutoencoder
    from training.train import SpectralBank, fit_bases

    torch.manual_seed(seed)
    cfg = tiny_model_config(arch)
    model = DistributedAutoencoder(cfg).eval()
    audio = [torch.randn(cfg.num_mics, 8000) * 0.1 for _ in range(4)]
    bank = SpectralBank.from_examples(audio, cfg)
    bases = fit_bases(model, bank.all_chunks(stride=2)[:n_fit])
    return Codec(model, bases)


@pytest.fixture
def codec_e4d1():
    return tiny_codec("ndpca-e4d1")


@pytest.fixture
def real_data() -> Path:
    if not REAL_DATA.is_dir():
        pytest.skip("../shared/data not present")
    return REAL_DATA
