"""Task- and perception-aware codec training: every term is differentiable and reaches every
encoder (the public code of the paper computed these with ``.item()`` and numpy)."""

from __future__ import annotations

import pytest
import torch
from conftest import tiny_model_config

from shared.enhancer import SCORE_NET_PRESETS, ScoreEnhancer
from shared.errors import ConfigError
from shared.models.architectures import DistributedAutoencoder
from training.config import TaskSection, TrainConfig
from training.task_aware import TaskAwareObjective, waveforms
from training.train import BottleneckedAutoencoder

SMALL_SCALES = [256, 128, 64]


def _config(arch: str, frames: int = 8, **task) -> TrainConfig:
    task = {"lambda_task": 1.0, "lambda_perc": 1.0, "disc_n_ffts": SMALL_SCALES, **task}
    return TrainConfig(model=tiny_model_config(arch, frames=frames), task=TaskSection(**task))


def _trained_like(model: DistributedAutoencoder) -> DistributedAutoencoder:
    """Move the residual networks off their zero start (the last layers begin at zero, which
    blocks every path through the joint decoder until the first update); any trained model
    is in this state."""
    with torch.no_grad():
        for p in model.parameters():
            if p.dim() == 2 and not p.abs().sum():
                p.normal_(0, 0.05)
    return model


def _encoder_grads(model: DistributedAutoencoder) -> list[float]:
    return [sum(float(p.grad.abs().sum()) for p in enc.parameters() if p.grad is not None)
            for enc in model.encoders]


@pytest.mark.parametrize("arch,bottleneck", [("ndpca-e4d1", "pca"), ("naive-e2d1", "truncate"), ("jae", "pca")])
def test_task_and_perceptual_terms_reach_every_encoder(arch, bottleneck):
    torch.manual_seed(0)
    cfg = _config(arch)
    model = _trained_like(DistributedAutoencoder(cfg.model))
    module = BottleneckedAutoencoder(model, bottleneck)
    enhancer = ScoreEnhancer(SCORE_NET_PRESETS["tiny"])
    objective = TaskAwareObjective(cfg, enhancer=enhancer)
    assert all(not p.requires_grad for p in objective.enhancer.parameters()), "the enhancer must be frozen"
    x = torch.randn(6, 4, 2, 256, 8) * 0.3
    clean = torch.randn(6, 2, 256, 8) * 0.3
    gen = torch.Generator().manual_seed(0)
    for name in ("task", "perc"):
        model.zero_grad()
        out = module(x, 12)
        terms = objective.terms(out["recon"], x, clean, gen)
        assert terms[name].requires_grad
        terms[name].backward()
        grads = _encoder_grads(model)
        assert all(g > 0 for g in grads), f"{name} gives no gradient to some encoder: {grads}"
        assert all(p.grad is None for p in objective.enhancer.parameters())
        disc = objective.perceptual.discriminator if hasattr(objective.perceptual, "discriminator") else None
        if disc is not None:
            assert all(p.grad is None or float(p.grad.abs().sum()) == 0 for p in disc.parameters()), \
                "the generator loss must not train the discriminator"


def test_discriminator_learns_and_weighted_total():
    torch.manual_seed(0)
    cfg = _config("ndpca-e4d1", lambda_task=0.0, lambda_perc=0.5)
    model = DistributedAutoencoder(cfg.model)
    objective = TaskAwareObjective(cfg)
    assert objective.enhancer is None
    x = torch.randn(4, 4, 2, 256, 8) * 0.3
    recon = model(x)
    disc = objective.perceptual.discriminator
    before = [p.detach().clone() for p in disc.parameters()]
    stats = objective.discriminator_step(recon, x)
    assert stats and all(isinstance(v, float) for v in stats.values())
    assert any(not torch.equal(a, b) for a, b in zip(before, disc.parameters())), "discriminator did not step"
    terms = objective.terms(recon, x, None)
    total = objective.weighted(terms)
    assert torch.isclose(total, 0.5 * terms["perc"])
    state = objective.state_dict()
    fresh = TaskAwareObjective(cfg)
    fresh.load_state_dict(state)
    for a, b in zip(fresh.perceptual.discriminator.parameters(), disc.parameters()):
        assert torch.equal(a, b)


def test_waveforms_invert_the_codec_spectra():
    from shared.stft import get_preset, stft, to_channels

    preset = get_preset("stream")
    audio = torch.randn(3, 7 * preset.hop) * 0.1
    ch = to_channels(stft(audio, preset), "complex")
    assert ch.shape[-1] == 8
    wave = waveforms(ch, "complex", "stream")
    assert wave.shape == (3, 7 * preset.hop)
    assert torch.allclose(wave, audio, atol=1e-4)


def test_bad_task_settings_are_clear():
    with pytest.raises(ConfigError, match="disc_n_ffts"):
        TaskAwareObjective(_config("ndpca-e4d1", lambda_task=0.0, disc_n_ffts=[32768]))
    with pytest.raises(ConfigError, match="ref_mic"):
        TaskAwareObjective(_config("ndpca-e4d1", lambda_perc=0.0, ref_mic=7),
                           enhancer=ScoreEnhancer(SCORE_NET_PRESETS["tiny"]))
    with pytest.raises(ConfigError, match="enhancer checkpoint"):
        TaskAwareObjective(_config("ndpca-e4d1", lambda_perc=0.0, enhancer="/nonexistent/enhancer.ckpt"))
