"""Seeded synthetic background noise: coloured noise, babble-like murmur, mains hum, fan.

Every generator takes a ``numpy.random.Generator`` and returns float32 ``[N]`` with unit RMS;
the room simulator places the dry noise in the room and sets its level from the wanted SNR.

Kinds (:data:`NOISE_KINDS`):

- ``white``: Gaussian, flat spectrum.
- ``pink``: power falling as 1/f (-3 dB per octave) above 20 Hz.
- ``brown``: power falling as 1/f^2 (-6 dB per octave) above 20 Hz.
- ``babble``: 6-10 independent streams of speech-shaped noise, each switched on and off by a
  random syllabic envelope (3-7 Hz) with pauses: a distant-crowd murmur, unintelligible.
- ``hum``: 50 or 60 Hz mains hum with decaying odd and even harmonics, a slow level wobble and
  a faint broadband floor.
- ``fan``: low-passed noise with a blade-pass tone and its harmonics, slowly wandering in pitch.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
from scipy.signal import fftconvolve

NOISE_KINDS: tuple[str, ...] = ("white", "pink", "brown", "babble", "hum", "fan")


def _unit_rms(x: np.ndarray) -> np.ndarray:
    """Scale to unit RMS (float32); an all-zero input is returned unchanged."""
    level = float(np.sqrt(np.mean(np.square(x, dtype=np.float64))))
    if level <= 0.0:
        return x.astype(np.float32)
    return (x / level).astype(np.float32)


def _shaped(rng: np.random.Generator, num_samples: int, sample_rate: int,
            power: Callable[[np.ndarray], np.ndarray]) -> np.ndarray:
    """Gaussian noise whose power spectrum follows ``power(f)`` (f in Hz, any shape).

    Returns:
        float64 ``[num_samples]`` (not normalised).
    """
    spec = np.fft.rfft(rng.standard_normal(num_samples))
    freqs = np.fft.rfftfreq(num_samples, 1.0 / sample_rate)
    return np.fft.irfft(spec * np.sqrt(power(freqs)), n=num_samples)


def _coloured(exponent: float) -> Callable[[np.ndarray], np.ndarray]:
    """Power spectrum ``1 / f**exponent`` with a 20 Hz floor (no DC drift)."""

    def power(freqs: np.ndarray) -> np.ndarray:
        return 1.0 / np.maximum(freqs, 20.0) ** exponent * (freqs >= 20.0)

    return power


def _speech_shape(freqs: np.ndarray) -> np.ndarray:
    """A long-term average speech spectrum: rising to ~500 Hz, then about -9 dB/octave."""
    low = 1.0 / (1.0 + (120.0 / np.maximum(freqs, 1.0)) ** 4)
    high = 1.0 / (1.0 + (freqs / 500.0) ** 3)
    return low * high


def _syllabic_envelope(rng: np.random.Generator, num_samples: int, sample_rate: int) -> np.ndarray:
    """A random on/off envelope in [0, 1] at a syllabic rate with pauses, ``[num_samples]``."""
    rate_hz = rng.uniform(3.0, 7.0)
    step = max(1, int(sample_rate / rate_hz))
    n_syll = num_samples // step + 2
    # syllable amplitudes with pauses (about a quarter of the syllables are silent)
    amps = rng.uniform(0.3, 1.0, n_syll) * (rng.random(n_syll) > 0.25)
    env = np.repeat(amps, step)[:num_samples]
    width = max(1, step // 2)
    window = np.hanning(2 * width + 1)
    return fftconvolve(env, window / window.sum(), mode="same")


def white_noise(rng: np.random.Generator, num_samples: int, sample_rate: int) -> np.ndarray:
    """Gaussian white noise, unit RMS, ``[num_samples]``."""
    return _unit_rms(rng.standard_normal(num_samples))


def pink_noise(rng: np.random.Generator, num_samples: int, sample_rate: int) -> np.ndarray:
    """1/f noise above 20 Hz, unit RMS, ``[num_samples]``."""
    return _unit_rms(_shaped(rng, num_samples, sample_rate, _coloured(1.0)))


def brown_noise(rng: np.random.Generator, num_samples: int, sample_rate: int) -> np.ndarray:
    """1/f^2 noise above 20 Hz, unit RMS, ``[num_samples]``."""
    return _unit_rms(_shaped(rng, num_samples, sample_rate, _coloured(2.0)))


def babble_noise(rng: np.random.Generator, num_samples: int, sample_rate: int) -> np.ndarray:
    """Speech-shaped noise streams gated by syllabic envelopes, summed; unit RMS ``[N]``."""
    streams = int(rng.integers(6, 11))
    out = np.zeros(num_samples)
    for _ in range(streams):
        tilt = rng.uniform(0.8, 1.25)  # each "voice" a little brighter or darker

        def power(freqs: np.ndarray, tilt: float = tilt) -> np.ndarray:
            return _speech_shape(freqs / tilt)

        stream = _shaped(rng, num_samples, sample_rate, power)
        stream /= np.sqrt(np.mean(stream**2)) + 1e-12
        out += stream * _syllabic_envelope(rng, num_samples, sample_rate) * rng.uniform(0.5, 1.0)
    return _unit_rms(out)


def hum_noise(rng: np.random.Generator, num_samples: int, sample_rate: int) -> np.ndarray:
    """Mains hum (50 or 60 Hz and harmonics) over a faint pink floor; unit RMS ``[N]``."""
    t = np.arange(num_samples) / sample_rate
    mains = 50.0 if rng.random() < 0.5 else 60.0
    mains *= 1.0 + rng.uniform(-0.002, 0.002)  # the grid is never exactly on frequency
    out = np.zeros(num_samples)
    decay = rng.uniform(0.4, 0.8)
    for k in range(1, 12):
        freq = k * mains
        if freq >= sample_rate / 2:
            break
        out += decay ** (k - 1) * np.sin(2 * np.pi * freq * t + rng.uniform(0, 2 * np.pi))
    wobble = 1.0 + 0.1 * np.sin(2 * np.pi * rng.uniform(0.1, 0.5) * t + rng.uniform(0, 2 * np.pi))
    out = _unit_rms(out * wobble)
    floor = _unit_rms(_shaped(rng, num_samples, sample_rate, _coloured(1.0)))
    return _unit_rms(out + 10 ** (-25 / 20) * floor)


def fan_noise(rng: np.random.Generator, num_samples: int, sample_rate: int) -> np.ndarray:
    """Low-passed broadband noise plus a wandering blade-pass tone; unit RMS ``[N]``."""
    cutoff = rng.uniform(300.0, 1500.0)

    def power(freqs: np.ndarray) -> np.ndarray:
        return (freqs >= 20.0) / (1.0 + (freqs / cutoff) ** 4)

    broad = _unit_rms(_shaped(rng, num_samples, sample_rate, power))
    t = np.arange(num_samples) / sample_rate
    blade = rng.uniform(80.0, 250.0)
    drift = 1.0 + 0.01 * np.sin(2 * np.pi * rng.uniform(0.05, 0.3) * t)
    phase = 2 * np.pi * np.cumsum(blade * drift) / sample_rate
    tone = sum(0.6**k * np.sin((k + 1) * phase + rng.uniform(0, 2 * np.pi)) for k in range(4))
    return _unit_rms(broad + 10 ** (-rng.uniform(6.0, 15.0) / 20) * _unit_rms(np.asarray(tone)))


_GENERATORS: dict[str, Callable[[np.random.Generator, int, int], np.ndarray]] = {
    "white": white_noise,
    "pink": pink_noise,
    "brown": brown_noise,
    "babble": babble_noise,
    "hum": hum_noise,
    "fan": fan_noise,
}


def synthetic_noise(kind: str, num_samples: int, rng: np.random.Generator,
                    sample_rate: int = 16000) -> np.ndarray:
    """Generate ``num_samples`` of noise of the given kind.

    Args:
        kind: one of :data:`NOISE_KINDS`.
        num_samples: length N.
        rng: the source of randomness (the result depends only on its state).
        sample_rate: Hz.

    Returns:
        float32 ``[N]`` with unit RMS.

    Raises:
        ValueError: unknown ``kind``.
    """
    try:
        generator = _GENERATORS[kind]
    except KeyError as err:
        raise ValueError(f"unknown noise kind {kind!r}; use one of {', '.join(NOISE_KINDS)}") from err
    return generator(rng, int(num_samples), int(sample_rate))
