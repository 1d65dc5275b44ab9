"""Opus baseline through libsndfile's OGG/Opus writer (``soundfile``).

libsndfile exposes no bit-rate setting, only ``compression_level`` in [0, 1] (1 = smallest
file). :func:`opus_at_bitrate` searches the level whose *measured* bit rate (file bytes,
including the Ogg container) is the largest not above the target, per microphone. Opus
cannot go below about 6 kbit/s per channel: below that the target is reported unreachable
rather than approximated.
"""

from __future__ import annotations

import io
from dataclasses import dataclass

import numpy as np
import soundfile as sf


@dataclass
class OpusResult:
    audio: np.ndarray | None  # [N] decoded, None when unreachable
    bitrate_bps: float  # measured, NaN when unreachable
    level: float | None


def opus_roundtrip(audio: np.ndarray, sample_rate: int, level: float) -> tuple[np.ndarray, float]:
    """Encode and decode a mono signal; returns (decoded [N], measured bit/s)."""
    buf = io.BytesIO()
    sf.write(buf, np.asarray(audio, np.float32), sample_rate, format="OGG", subtype="OPUS",
             compression_level=float(level))
    nbytes = len(buf.getvalue())
    buf.seek(0)
    out, _ = sf.read(buf, dtype="float32")
    out = out[: len(audio)]
    if len(out) < len(audio):
        out = np.pad(out, (0, len(audio) - len(out)))
    return out, 8.0 * nbytes / (len(audio) / sample_rate)


def opus_at_bitrate(audio: np.ndarray, sample_rate: int, target_bps: float, iters: int = 12) -> OpusResult:
    """Largest-rate Opus coding whose measured rate does not exceed ``target_bps``."""
    dec, rate = opus_roundtrip(audio, sample_rate, 1.0)
    if rate > target_bps:
        return OpusResult(None, float("nan"), None)
    best = OpusResult(dec, rate, 1.0)
    lo, hi = 0.0, 1.0  # level lo gives a higher rate than level hi
    for _ in range(iters):
        mid = 0.5 * (lo + hi)
        d, r = opus_roundtrip(audio, sample_rate, mid)
        if r <= target_bps:
            best, hi = OpusResult(d, r, mid), mid
        else:
            lo = mid
    return best


def opus_min_bitrate(audio: np.ndarray, sample_rate: int) -> OpusResult:
    """The lowest rate libsndfile's Opus writer reaches for this signal."""
    dec, rate = opus_roundtrip(audio, sample_rate, 1.0)
    return OpusResult(dec, rate, 1.0)
