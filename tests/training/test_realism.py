"""Fréchet mel distance: closed forms, symmetry, identity and sensitivity to noise."""

import numpy as np
import pytest
import torch

from training.realism import (
    frechet_distance,
    frechet_mel_distance,
    hz_to_mel,
    log_mel_frames,
    mel_filterbank,
    mel_to_hz,
)

SR = 16000


def _speech_like(seed: int, seconds: float = 1.0) -> np.ndarray:
    """Harmonics of a gliding f0 (100-250 Hz) with a 1/k spectral tilt under a syllable-rate
    (3-6 Hz) envelope that dips to silence."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * SR)) / SR
    f0 = rng.uniform(100, 250) * (1 + 0.1 * np.sin(2 * np.pi * rng.uniform(0.5, 2) * t))
    phase = 2 * np.pi * np.cumsum(f0) / SR
    sig = sum(np.sin(k * phase + rng.uniform(0, 2 * np.pi)) / k for k in range(1, 30)
              if k * f0.max() < SR / 2)
    env = np.clip(np.sin(2 * np.pi * rng.uniform(3, 6) * t + rng.uniform(0, np.pi)), 0, None) ** 2
    return 0.1 * env * sig


def test_filterbank_htk_triangles():
    assert float(mel_to_hz(hz_to_mel(1234.5))) == pytest.approx(1234.5)
    assert float(hz_to_mel(1000.0)) == pytest.approx(1000.0, abs=0.1)
    fb = mel_filterbank(SR, 512, 40)
    assert fb.shape == (40, 257)
    assert np.all(fb >= 0) and np.all(fb.max(axis=1) <= 1) and np.all(fb.sum(axis=1) > 0)
    # A 1 kHz tone peaks in the band centred nearest to 1000 mel.
    t = np.arange(SR) / SR
    frames = log_mel_frames(np.sin(2 * np.pi * 1000 * t), SR)
    centres = hz_to_mel(mel_to_hz(np.linspace(0, hz_to_mel(SR / 2), 42))[1:-1])
    assert np.argmax(frames.mean(axis=0)) == np.argmin(np.abs(centres - 1000.0))


def test_log_mel_frames_shape_and_silence():
    x = _speech_like(0)
    frames = log_mel_frames(x, SR)
    assert frames.ndim == 2 and frames.shape[1] == 40
    assert frames.shape[0] <= len(x) // 128 + 1
    padded = np.concatenate([np.zeros(SR), x, np.zeros(SR)])
    assert log_mel_frames(padded, SR).shape[0] == pytest.approx(frames.shape[0], abs=4)
    np.testing.assert_allclose(log_mel_frames(torch.tensor(x), SR), frames, rtol=1e-6)
    two = log_mel_frames(np.stack([x, x]), SR)
    assert two.shape == (2 * frames.shape[0], 40)


def test_frechet_closed_form_1d_and_diagonal():
    assert frechet_distance([1.0], [[4.0]], [3.0], [[9.0]]) == pytest.approx(4 + (2 - 3) ** 2)
    rng = np.random.default_rng(0)
    mu1, mu2 = rng.normal(size=6), rng.normal(size=6)
    s1, s2 = rng.uniform(0.1, 3, 6), rng.uniform(0.1, 3, 6)
    expected = np.sum((mu1 - mu2) ** 2) + np.sum((s1 - s2) ** 2)
    got = frechet_distance(mu1, np.diag(s1**2), mu2, np.diag(s2**2))
    assert got == pytest.approx(expected, rel=1e-9)


def test_frechet_full_covariance_against_scipy():
    linalg = pytest.importorskip("scipy.linalg")
    rng = np.random.default_rng(1)
    a, b = rng.normal(size=(5, 5)), rng.normal(size=(5, 5))
    c1, c2 = a @ a.T + 0.1 * np.eye(5), b @ b.T + 0.1 * np.eye(5)
    mu1, mu2 = rng.normal(size=5), rng.normal(size=5)
    ref = np.sum((mu1 - mu2) ** 2) + np.trace(c1 + c2 - 2 * linalg.sqrtm(c1 @ c2).real)
    assert frechet_distance(mu1, c1, mu2, c2) == pytest.approx(ref, rel=1e-8)
    assert frechet_distance(mu1, c1, mu2, c2) == pytest.approx(frechet_distance(mu2, c2, mu1, c1),
                                                               rel=1e-9)
    assert frechet_distance(mu1, c1, mu1, c1) == pytest.approx(0.0, abs=1e-9)


def test_fmd_identity_and_symmetry():
    clean = [_speech_like(s) for s in range(6)]
    other = [_speech_like(s) + 0.003 * np.random.default_rng(s).normal(size=SR) for s in range(10, 16)]
    assert frechet_mel_distance(clean, clean, SR) == pytest.approx(0.0, abs=1e-6)
    d_ab = frechet_mel_distance(clean, other, SR)
    d_ba = frechet_mel_distance(other, clean, SR)
    assert d_ab > 1.0
    assert d_ab == pytest.approx(d_ba, rel=1e-6)


def test_fmd_grows_with_noise():
    refs = [_speech_like(s) for s in range(6)]
    clean = [_speech_like(s) for s in range(20, 26)]
    rng = np.random.default_rng(0)
    noises = [rng.normal(size=SR) for _ in clean]
    dists = [frechet_mel_distance([c + std * n for c, n in zip(clean, noises)], refs, SR)
             for std in (0.0, 1e-3, 3e-3, 1e-2, 3e-2)]
    assert all(a < b for a, b in zip(dists, dists[1:])), dists
