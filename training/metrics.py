"""Quality metrics with fixed, documented definitions.

* ``psnr_db``: paper Eq. 13 on the codec's compressed magnitude spectrogram (see
  :func:`training.losses.psnr_db`), computed from the waveforms with the codec's STFT, peak of
  the reference over all its microphones.
* ``si_sdr_db``: scale-invariant SDR (Le Roux et al. 2019) of zero-mean signals, with the
  optimal scaling of the reference; eps 1e-8 inside the logs only.
* ``pesq_wb``: ITU-T P.862.2 wide-band PESQ at 16 kHz (package ``pesq``), MOS-LQO.
* ``stoi``: classic STOI (not extended) at the signal's rate (package ``pystoi``).
"""

from __future__ import annotations

import warnings

import numpy as np
import torch

from shared.stft import StftPreset, stft, to_channels
from training.losses import psnr_db

EPS = 1e-8


def si_sdr_db(reference: np.ndarray, estimate: np.ndarray) -> float:
    """Scale-invariant SDR in dB of 1-D signals of equal length."""
    ref = np.asarray(reference, dtype=np.float64)
    est = np.asarray(estimate, dtype=np.float64)
    ref = ref - ref.mean()
    est = est - est.mean()
    alpha = np.dot(est, ref) / (np.dot(ref, ref) + EPS)
    target = alpha * ref
    noise = est - target
    return float(10 * np.log10((np.dot(target, target) + EPS) / (np.dot(noise, noise) + EPS)))


def pesq_wb(reference: np.ndarray, estimate: np.ndarray, sample_rate: int = 16000) -> float:
    """Wide-band PESQ; NaN when PESQ finds no utterance (silence)."""
    from pesq import pesq
    from pesq.cypesq import PesqError

    try:
        return float(pesq(sample_rate, np.asarray(reference, np.float64), np.asarray(estimate, np.float64), "wb"))
    except PesqError:
        return float("nan")


def stoi(reference: np.ndarray, estimate: np.ndarray, sample_rate: int = 16000) -> float:
    from pystoi import stoi as _stoi

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return float(_stoi(np.asarray(reference, np.float64), np.asarray(estimate, np.float64), sample_rate, extended=False))


def spectral_psnr_db(
    reference: torch.Tensor, estimate: torch.Tensor, preset: StftPreset, representation: str = "complex"
) -> float:
    """Eq. 13 PSNR between multi-microphone waveforms ``[M, N]`` (one example)."""
    ref = to_channels(stft(reference, preset), representation)[None]
    est = to_channels(stft(estimate, preset), representation)[None]
    return float(psnr_db(est, ref, representation)[0])


def all_metrics(
    ref_mics: torch.Tensor, est_mics: torch.Tensor, preset: StftPreset, ref_channel: int = 0,
    representation: str = "complex", perceptual: bool = True,
) -> dict[str, float]:
    """PSNR over all microphones; SI-SDR, PESQ and STOI on the reference microphone."""
    r = ref_mics[ref_channel].cpu().numpy()
    e = est_mics[ref_channel].cpu().numpy()
    out = {
        "psnr_db": spectral_psnr_db(ref_mics.cpu(), est_mics.cpu(), preset, representation),
        "si_sdr_db": si_sdr_db(r, e),
    }
    if perceptual:
        out["pesq"] = pesq_wb(r, e, preset.sample_rate)
        out["stoi"] = stoi(r, e, preset.sample_rate)
    return out
