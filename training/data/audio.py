"""Small audio helpers shared by the data modules: reading, resampling, levels.

Every reader returns float32 arrays at the requested sample rate. A file at another rate is
resampled with a polyphase filter and a log line says so; an unreadable file raises
:class:`shared.errors.AudioError` naming the file and what to do about it.
"""

from __future__ import annotations

import logging
from fractions import Fraction
from pathlib import Path

import numpy as np
import soundfile as sf
from scipy.signal import resample_poly

from shared.errors import AudioError

log = logging.getLogger(__name__)

AUDIO_SUFFIXES: tuple[str, ...] = (".flac", ".wav", ".ogg")


def resample(x: np.ndarray, sr_in: int, sr_out: int) -> np.ndarray:
    """Resample along the last axis with a polyphase (Kaiser-windowed) filter.

    Args:
        x: signal ``[..., N]``.
        sr_in: its sample rate in Hz.
        sr_out: the wanted sample rate in Hz.

    Returns:
        float32 ``[..., round(N * sr_out / sr_in)]`` (the input itself when the rates match).
    """
    if sr_in == sr_out:
        return np.asarray(x, dtype=np.float32)
    ratio = Fraction(int(sr_out), int(sr_in))
    y = resample_poly(np.asarray(x, dtype=np.float64), ratio.numerator, ratio.denominator, axis=-1)
    return y.astype(np.float32)


def read_audio(
    path: Path,
    sample_rate: int,
    *,
    mono: bool = True,
    start: int = 0,
    frames: int = -1,
) -> np.ndarray:
    """Read an audio file as float32, resampled to ``sample_rate``.

    Args:
        path: a file libsndfile can read (WAV, FLAC, OGG, ...).
        sample_rate: the rate the caller works at, in Hz.
        mono: average all channels into one.
        start: first frame to read, counted at the file's own rate.
        frames: number of frames to read at the file's own rate (-1: to the end).

    Returns:
        ``[N]`` when ``mono`` else ``[C, N]``, float32, at ``sample_rate``.

    Raises:
        AudioError: the file is missing, unreadable or empty.
    """
    path = Path(path)
    if not path.is_file():
        raise AudioError(f"audio file {path} does not exist: check the path or rebuild the list")
    try:
        data, sr = sf.read(str(path), start=start, frames=frames, dtype="float32", always_2d=True)
    except (RuntimeError, sf.LibsndfileError, ValueError) as err:
        raise AudioError(
            f"cannot read audio file {path} ({err}); replace or delete it "
            "(it must be a WAV/FLAC/OGG file libsndfile can open)"
        ) from err
    if data.shape[0] == 0:
        raise AudioError(f"audio file {path} holds no samples; delete it or replace it")
    out = data.T  # [C, N]
    if sr != sample_rate:
        log.info("resampling %s from %d Hz to %d Hz", path, sr, sample_rate)
        out = resample(out, sr, sample_rate)
    if mono:
        if out.shape[0] > 1:
            log.info("mixing %d channels of %s down to mono", out.shape[0], path)
        return np.ascontiguousarray(out.mean(axis=0), dtype=np.float32)
    return np.ascontiguousarray(out, dtype=np.float32)


def audio_info(path: Path) -> tuple[int, int, int]:
    """Return ``(sample_rate, channels, frames)`` of an audio file.

    Raises:
        AudioError: the file is missing or unreadable.
    """
    path = Path(path)
    if not path.is_file():
        raise AudioError(f"audio file {path} does not exist: check the path")
    try:
        info = sf.info(str(path))
    except (RuntimeError, sf.LibsndfileError) as err:
        raise AudioError(f"cannot read audio file {path} ({err}); replace or delete it") from err
    return int(info.samplerate), int(info.channels), int(info.frames)


def rms(x: np.ndarray, eps: float = 1e-12) -> float:
    """Root mean square of ``x`` (any shape)."""
    return float(np.sqrt(np.mean(np.square(x, dtype=np.float64)) + eps))


def active_rms(x: np.ndarray, sample_rate: int, frame_s: float = 0.02, top_db: float = 30.0) -> float:
    """RMS over the active frames of a mono signal, a simple speech-level estimate.

    Frames of ``frame_s`` seconds whose energy lies within ``top_db`` dB of the loudest frame
    count as active, so leading and trailing silence do not lower the level.

    Args:
        x: mono signal ``[N]``.
        sample_rate: Hz.
        frame_s: frame length in seconds.
        top_db: activity threshold below the loudest frame.
    """
    hop = max(1, int(round(frame_s * sample_rate)))
    n = len(x) // hop
    if n == 0:
        return rms(x)
    energy = np.mean(np.square(x[: n * hop].reshape(n, hop), dtype=np.float64), axis=1)
    threshold = energy.max() * 10.0 ** (-top_db / 10.0)
    active = energy[energy >= threshold]
    return float(np.sqrt(active.mean() + 1e-12))


def trim_silence(x: np.ndarray, sample_rate: int, top_db: float = 40.0, pad_s: float = 0.05) -> np.ndarray:
    """Cut leading and trailing frames quieter than ``top_db`` below the peak frame.

    Args:
        x: mono signal ``[N]``.
        sample_rate: Hz.
        top_db: threshold below the loudest 10 ms frame.
        pad_s: silence kept on either side, in seconds.

    Returns:
        ``[M]`` with ``M <= N`` (the input when it is entirely quiet).
    """
    hop = max(1, sample_rate // 100)
    n = len(x) // hop
    if n == 0:
        return x
    energy = np.mean(np.square(x[: n * hop].reshape(n, hop), dtype=np.float64), axis=1)
    if energy.max() <= 0.0:
        return x
    loud = np.flatnonzero(energy >= energy.max() * 10.0 ** (-top_db / 10.0))
    pad = int(round(pad_s * sample_rate))
    first = max(0, loud[0] * hop - pad)
    last = min(len(x), (loud[-1] + 1) * hop + pad)
    return x[first:last]
