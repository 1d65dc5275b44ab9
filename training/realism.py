"""Realism measure for the rate-distortion-perception curve: Fréchet mel distance.

Distortion compares each output with its own reference; realism compares distributions. The
Fréchet mel distance (FMD) fits a Gaussian to the log-mel frames of a set of outputs and
another to those of a set of clean references, with no pairing between the sets, and returns

    ``FMD = ||mu_o - mu_r||^2 + tr(C_o + C_r - 2 (C_o C_r)^(1/2))``

(the Fréchet, or 2-Wasserstein, distance between the two Gaussians; 0 for equal
statistics, larger for less realistic outputs; in dB squared).

Frame features (:func:`log_mel_frames`), fixed so numbers are comparable across runs:

* periodic Hann window of ``n_fft`` (512) samples, hop 128, frames centred with reflect
  padding (as ``torch.stft(center=True)``), power spectrum ``|X|^2``;
* ``n_mels`` (40) triangular filters equally spaced on the HTK mel scale
  ``m = 2595 log10(1 + f / 700)`` from 0 Hz to ``sample_rate / 2``, peak 1, no area
  normalisation;
* ``10 log10(mel power + 1e-10)`` (dB), floored at 80 dB below the loudest mel cell of the
  waveform, so numerically empty bands (e.g. between the harmonics of a clean synthetic voice)
  do not dominate the covariance;
* frames whose total power is more than 60 dB below the loudest frame of the same waveform
  are dropped, so leading/trailing silence does not dominate the statistics.

The measure is level-sensitive: a uniformly quieter output moves the mean of every feature.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence

import numpy as np
import torch

POWER_FLOOR = 1e-10
SILENCE_DB = -60.0
DYNAMIC_RANGE_DB = 80.0


def hz_to_mel(f: np.ndarray | float) -> np.ndarray:
    """HTK mel scale."""
    return 2595.0 * np.log10(1.0 + np.asarray(f, dtype=np.float64) / 700.0)


def mel_to_hz(m: np.ndarray | float) -> np.ndarray:
    """Inverse of :func:`hz_to_mel`."""
    return 700.0 * (10.0 ** (np.asarray(m, dtype=np.float64) / 2595.0) - 1.0)


@functools.lru_cache(maxsize=16)
def mel_filterbank(sample_rate: int, n_fft: int, n_mels: int) -> np.ndarray:
    """Triangular HTK-mel filters ``[n_mels, n_fft // 2 + 1]`` from 0 Hz to Nyquist.

    Filter ``i`` rises linearly from edge ``i`` to a peak of 1 at edge ``i + 1`` and falls to 0
    at edge ``i + 2`` of ``n_mels + 2`` edges equally spaced in mel; the weights are the
    triangle evaluated at each FFT bin's frequency.
    """
    bins = np.arange(n_fft // 2 + 1) * sample_rate / n_fft
    edges = mel_to_hz(np.linspace(0.0, hz_to_mel(sample_rate / 2), n_mels + 2))
    lo, mid, hi = edges[:-2, None], edges[1:-1, None], edges[2:, None]
    rising = (bins[None] - lo) / (mid - lo)
    falling = (hi - bins[None]) / (hi - mid)
    fb = np.maximum(0.0, np.minimum(rising, falling))
    if np.any(fb.sum(axis=1) == 0):
        raise ValueError(f"{n_mels} mel bands are too narrow for n_fft {n_fft} at {sample_rate} Hz")
    fb.setflags(write=False)
    return fb


def _as_rows(wave: torch.Tensor | np.ndarray) -> np.ndarray:
    if isinstance(wave, torch.Tensor):
        wave = wave.detach().cpu().numpy()
    arr = np.asarray(wave, dtype=np.float64)
    if arr.ndim == 0:
        raise ValueError("waveform must have a time axis")
    return arr.reshape(-1, arr.shape[-1])


def log_mel_frames(
    wave: torch.Tensor | np.ndarray,
    sample_rate: int = 16000,
    n_mels: int = 40,
    n_fft: int = 512,
    hop: int = 128,
) -> np.ndarray:
    """Log-mel frames ``[frames, n_mels]`` (dB) of a waveform, silent frames dropped (see the
    module docstring for the exact definition).

    ``wave`` is ``[N]``; with leading dimensions (``[..., N]``, e.g. microphones) each row is
    analysed on its own and the frames are concatenated.
    """
    rows = _as_rows(wave)
    n = rows.shape[-1]
    pad = n_fft // 2
    if n <= pad:
        raise ValueError(f"waveform of {n} samples is too short for n_fft {n_fft}")
    padded = np.pad(rows, ((0, 0), (pad, pad)), mode="reflect")
    n_frames = n // hop + 1
    idx = np.arange(n_frames)[:, None] * hop + np.arange(n_fft)[None]
    window = 0.5 - 0.5 * np.cos(2 * np.pi * np.arange(n_fft) / n_fft)  # periodic Hann
    power = np.abs(np.fft.rfft(padded[:, idx] * window, axis=-1)) ** 2  # [R, T, F]
    frame_power = power.sum(axis=-1)  # [R, T]
    peak = frame_power.max(axis=-1, keepdims=True)
    keep = frame_power > peak * 10 ** (SILENCE_DB / 10)
    mel = power @ mel_filterbank(int(sample_rate), int(n_fft), int(n_mels)).T  # [R, T, M]
    db = 10.0 * np.log10(mel + POWER_FLOOR)
    db = np.maximum(db, db.max(axis=(1, 2), keepdims=True) - DYNAMIC_RANGE_DB)
    return db[keep]


def _sqrtm_psd(c: np.ndarray) -> np.ndarray:
    """Symmetric square root of a (numerically) positive semi-definite matrix."""
    w, v = np.linalg.eigh((c + c.T) / 2)
    return (v * np.sqrt(np.clip(w, 0.0, None))) @ v.T


def frechet_distance(mu1, cov1, mu2, cov2) -> float:
    """Fréchet distance ``||mu1 - mu2||^2 + tr(C1 + C2 - 2 (C1 C2)^(1/2))`` of two Gaussians.

    ``tr (C1 C2)^(1/2)`` is computed as the sum of the square roots of the eigenvalues of the
    symmetric PSD matrix ``C1^(1/2) C2 C1^(1/2)`` (which has the eigenvalues of ``C1 C2``),
    with tiny negative eigenvalues from round-off clipped to 0. Works in float64; the result is
    clipped at 0.
    """
    mu1 = np.atleast_1d(np.asarray(mu1, dtype=np.float64))
    mu2 = np.atleast_1d(np.asarray(mu2, dtype=np.float64))
    cov1 = np.atleast_2d(np.asarray(cov1, dtype=np.float64))
    cov2 = np.atleast_2d(np.asarray(cov2, dtype=np.float64))
    d = mu1.shape[0]
    if mu2.shape != (d,) or cov1.shape != (d, d) or cov2.shape != (d, d):
        raise ValueError(f"shape mismatch: mu {mu1.shape} {mu2.shape}, cov {cov1.shape} {cov2.shape}")
    s1 = _sqrtm_psd(cov1)
    m = s1 @ cov2 @ s1
    eig = np.linalg.eigvalsh((m + m.T) / 2)
    tr_sqrt = np.sqrt(np.clip(eig, 0.0, None)).sum()
    diff = mu1 - mu2
    dist = diff @ diff + np.trace(cov1) + np.trace(cov2) - 2.0 * tr_sqrt
    return float(max(dist, 0.0))


def mel_statistics(
    waves: Sequence[torch.Tensor | np.ndarray], sample_rate: int = 16000, **mel_kw
) -> tuple[np.ndarray, np.ndarray]:
    """Mean ``[n_mels]`` and covariance ``[n_mels, n_mels]`` (unbiased) of the pooled
    :func:`log_mel_frames` of ``waves``; reusable for a fixed reference set."""
    frames = [log_mel_frames(w, sample_rate, **mel_kw) for w in waves]
    pooled = np.concatenate(frames, axis=0) if frames else np.empty((0, 0))
    if pooled.shape[0] < 2:
        raise ValueError("need at least two non-silent frames")
    return pooled.mean(axis=0), np.cov(pooled, rowvar=False)


def frechet_mel_distance(
    outputs: Sequence[torch.Tensor | np.ndarray],
    references: Sequence[torch.Tensor | np.ndarray],
    sample_rate: int = 16000,
    **mel_kw,
) -> float:
    """Fréchet distance between the log-mel frame distributions of ``outputs`` and
    ``references`` (unpaired sets of waveforms; lower is more realistic).

    ``mel_kw`` passes ``n_mels``, ``n_fft`` and ``hop`` to :func:`log_mel_frames`.
    """
    mu_o, cov_o = mel_statistics(outputs, sample_rate, **mel_kw)
    mu_r, cov_r = mel_statistics(references, sample_rate, **mel_kw)
    return frechet_distance(mu_o, cov_o, mu_r, cov_r)
