"""The streaming classical enhancer (MVDR + Wiener post-filter, frame by frame)."""

import numpy as np
import pytest
import torch

from shared.classical import StreamingClassical, StreamingConfig
from shared.errors import ConfigError
from shared.stft import get_preset, stft

PRESET = get_preset("stream")


def _scene(seconds: float = 6.0, snr_db: float = 0.0, seed: int = 0):
    """Four microphones: one harmonic, syllable-modulated talker arriving with different delays
    and gains, plus independent white noise; returns (mics [4, N], clean at mic 0 [N])."""
    rng = np.random.default_rng(seed)
    sr = PRESET.sample_rate
    t = np.arange(int(seconds * sr)) / sr
    f0 = 140 + 20 * np.sin(2 * np.pi * 0.5 * t)
    phase = 2 * np.pi * np.cumsum(f0) / sr
    voice = sum(np.sin(h * phase) / h for h in range(1, 20))
    voice *= np.clip(np.sin(2 * np.pi * 3 * t), 0, None) ** 2  # syllables with pauses
    delays, gains = [0, 7, 13, 21], [1.0, 0.8, 0.9, 0.7]
    speech = np.stack([g * np.roll(voice, d) for d, g in zip(delays, gains)])
    noise = rng.standard_normal(speech.shape)
    noise *= np.sqrt(np.mean(speech[0] ** 2) / np.mean(noise**2) / 10 ** (snr_db / 10))
    return (speech + noise).astype(np.float32), speech[0].astype(np.float32)


def _spectra(x: np.ndarray) -> np.ndarray:
    return stft(torch.from_numpy(x).double(), PRESET).numpy()


def _run(enh: StreamingClassical, spec: np.ndarray, step: int = 4, active=None) -> np.ndarray:
    return np.concatenate([enh(spec[:, :, i:i + step], active) for i in range(0, spec.shape[2], step)], axis=1)


def _snr_db(ref: np.ndarray, est: np.ndarray) -> float:
    return float(10 * np.log10(np.sum(np.abs(ref) ** 2) / np.sum(np.abs(ref - est) ** 2)))


def test_it_raises_the_snr_of_a_noisy_room_after_it_settles():
    mics, clean = _scene()
    spec, ref = _spectra(mics), _spectra(clean[None])[0]
    out = _run(StreamingClassical(4, PRESET.n_bins), spec)
    late = slice(spec.shape[2] // 2, None)  # after two seconds of statistics
    before, after = _snr_db(ref[:, late], spec[0][:, late]), _snr_db(ref[:, late], out[:, late])
    assert after > before + 3, (before, after)
    one_mic = _run(StreamingClassical(4, PRESET.n_bins), spec, active=np.array([True, False, False, False]))
    assert _snr_db(ref[:, late], one_mic[:, late]) < after, "the beamformer must add to the post-filter"


def test_the_output_depends_on_past_frames_only():
    mics, _ = _scene(seconds=2.0)
    spec = _spectra(mics)
    other = spec.copy()
    other[:, :, 100:] = _spectra(_scene(seconds=2.0, seed=5)[0])[:, :, 100:]
    a = _run(StreamingClassical(4, PRESET.n_bins), spec)
    b = _run(StreamingClassical(4, PRESET.n_bins), other)
    np.testing.assert_array_equal(a[:, :100], b[:, :100])
    assert not np.allclose(a[:, 100:], b[:, 100:])


def test_inactive_microphones_are_left_out_of_the_beamformer():
    """A source the allocation left out decodes to its mean spectrum: with only the reference
    active, the output equals that of a one-microphone enhancer on the reference alone."""
    mics, _ = _scene(seconds=2.0)
    spec = _spectra(mics)
    spec[1:] = spec[1:, :, :1]  # constant spectra, as a mean latent decodes
    only_ref = _run(StreamingClassical(4, PRESET.n_bins), spec, active=np.array([True, False, False, False]))
    alone = _run(StreamingClassical(1, PRESET.n_bins), spec[:1])
    np.testing.assert_allclose(only_ref, alone, rtol=1e-10, atol=1e-12)
    # the reference is always used, even when marked inactive
    np.testing.assert_allclose(
        _run(StreamingClassical(4, PRESET.n_bins), spec, active=np.zeros(4, bool)), alone, rtol=1e-10, atol=1e-12)


def test_bad_input_and_settings_are_refused():
    enh = StreamingClassical(4, PRESET.n_bins)
    with pytest.raises(ValueError, match=r"expected spectra \[4, 256, T\]"):
        enh(np.zeros((3, PRESET.n_bins, 4), complex))
    with pytest.raises(ValueError, match="reference microphone 4"):
        StreamingClassical(4, PRESET.n_bins, ref_mic=4)
    with pytest.raises(ConfigError, match="noise_quantile"):
        StreamingConfig(noise_quantile=1.5)
    with pytest.raises(ConfigError, match="gain_floor"):
        StreamingConfig(gain_floor=-1)
    silent = enh(np.zeros((4, PRESET.n_bins, 8), complex))
    assert np.all(np.isfinite(silent)) and not np.any(silent)
