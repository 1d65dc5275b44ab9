"""The libopus (PyAV) baseline: measured rates, the bit-rate search, alignment, errors."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy.signal import correlate

from training.opus import (
    MIN_BITRATE_BPS,
    opus_at_bitrate,
    opus_min_bitrate,
    opus_roundtrip,
)

SR = 16000


@pytest.fixture(scope="module")
def speechlike() -> np.ndarray:
    """1.5 s harmonic signal: gliding f0, three formants, 4 Hz syllabic envelope, odd length."""
    rng = np.random.default_rng(0)
    t = np.arange(int(1.5 * SR) + 77) / SR
    f0 = 140 + 40 * np.sin(2 * np.pi * 1.3 * t)
    phase = 2 * np.pi * np.cumsum(f0) / SR
    x = np.zeros_like(t)
    for k in range(1, 40):
        fk = k * f0
        env = (np.exp(-(((fk - 500) / 300) ** 2)) + 0.6 * np.exp(-(((fk - 1500) / 400) ** 2))
               + 0.3 * np.exp(-(((fk - 2500) / 500) ** 2)) + 0.05)
        x += np.where(fk < SR / 2 - 500, env / math.sqrt(k), 0.0) * np.sin(k * phase)
    x *= 0.5 + 0.5 * np.sin(2 * np.pi * 4 * t) ** 2
    x += 0.003 * rng.standard_normal(len(t))
    return (0.3 * x / np.abs(x).max()).astype(np.float32)


def _peak_lag(y: np.ndarray, x: np.ndarray, max_lag: int = 40) -> int:
    c = correlate(y.astype(np.float64), x.astype(np.float64), mode="full", method="fft")
    lags = np.arange(-len(x) + 1, len(y))
    keep = np.abs(lags) <= max_lag
    return int(lags[keep][np.argmax(c[keep])])


def _snr_db(x: np.ndarray, y: np.ndarray) -> float:
    return float(10 * np.log10(np.sum(x.astype(np.float64) ** 2) / np.sum((x - y).astype(np.float64) ** 2)))


def test_roundtrip_shape_and_cbr_rate_counts_packet_bytes_only(speechlike):
    """Output has the input's length; CBR measures its nominal rate (no container overhead)."""
    y, rate = opus_roundtrip(speechlike, SR, 16000, vbr="off")
    assert y.shape == speechlike.shape and y.dtype == np.float32
    assert 16000 <= rate <= 16000 * 1.03  # 40-byte frames plus the flush packet


def test_rate_increases_with_setting(speechlike):
    """The measured rate grows with the nominal bit rate."""
    rates = [opus_roundtrip(speechlike, SR, b)[1] for b in (6000, 12000, 24000)]
    assert rates[0] < rates[1] < rates[2]


def test_output_aligned_and_snr_increases_with_rate(speechlike):
    """Cross-correlation peaks at lag 0 (within 1 on pre-skip alone); SNR grows with the rate."""
    snrs = []
    for b in (6000, 12000, 24000):
        y, _ = opus_roundtrip(speechlike, SR, b)
        assert _peak_lag(y, speechlike) == 0, b
        assert abs(_peak_lag(opus_roundtrip(speechlike, SR, b, align=False)[0], speechlike)) <= 1, b
        snrs.append(_snr_db(speechlike, y))
    assert snrs[0] < snrs[1] < snrs[2]
    assert snrs[2] > 10.0


def test_search_never_exceeds_target_and_is_largest(speechlike):
    """The searched setting measures at most the target; one bit/s more measures above it."""
    for target in (7000.0, 20000.0):
        res = opus_at_bitrate(speechlike, SR, target)
        assert res.audio is not None and res.setting is not None
        assert res.bitrate_bps <= target
        assert res.audio.shape == speechlike.shape
        assert opus_roundtrip(speechlike, SR, res.setting)[1] == res.bitrate_bps
        assert opus_roundtrip(speechlike, SR, res.setting + 1)[1] > target


def test_unreachable_target_returns_none(speechlike):
    """A target below the lowest setting's measured rate gives no audio and a NaN rate."""
    floor = opus_min_bitrate(speechlike, SR)
    assert floor.setting == MIN_BITRATE_BPS and floor.audio is not None
    res = opus_at_bitrate(speechlike, SR, floor.bitrate_bps - 1.0)
    assert res.audio is None and res.setting is None and math.isnan(res.bitrate_bps)
    at_floor = opus_at_bitrate(speechlike, SR, floor.bitrate_bps)
    assert at_floor.audio is not None and at_floor.bitrate_bps <= floor.bitrate_bps


@pytest.mark.parametrize("rate", [8000, 22050, 48000])
def test_wrong_sample_rate_raises(speechlike, rate):
    """Inputs not at 16 kHz are refused with a ValueError naming the rates."""
    with pytest.raises(ValueError, match="16000 Hz"):
        opus_roundtrip(speechlike, rate, 16000)
    with pytest.raises(ValueError, match="16000 Hz"):
        opus_at_bitrate(speechlike, rate, 16000)
