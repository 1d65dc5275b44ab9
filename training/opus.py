"""Opus baseline: libopus through PyAV at a real bit-rate setting.

Each call encodes a mono 16 kHz signal with libopus (``bit_rate`` set, 20 ms frames, VBR on,
``application`` "audio" by default), counts the bytes of every encoded packet (no container:
no Ogg pages, no OpusHead/OpusTags) and decodes the packets with libopus again. "audio" rather
than "voip": on LibriSpeech their PESQ/STOI differ by at most 0.05/0.01 up to 16 kbit/s and
"audio" is better above, while "voip" high-passes the input, which moves the
cross-correlation peak of speech by up to 2 samples.

Alignment: the encoder's algorithmic delay is the OpusHead pre-skip (104 samples at 16 kHz,
312 at the decoder's 48 kHz). The decoder is given no OpusHead, so it drops nothing; this
module drops exactly the pre-skip at 48 kHz, resamples to 16 kHz with a zero-phase polyphase
filter and cuts/pads to the input length, so output sample ``n`` codes input sample ``n``.
libopus's resamplers are not linear-phase, so a signal- and mode-dependent residual remains:
the fractional cross-correlation peak lies within about -0.7..+1.1 samples (SILK late, CELT
early), enough to put the integer peak at -1 or +1. With ``align`` (default) the residual is
removed too: the decoded 48 kHz signal is shifted by the lag within +-3 samples (one input
sample) that best correlates with the input, leaving under 1/6 sample. This uses the input, as
PESQ's own alignment does; ``align=False`` keeps only the codec's declared delay.

:func:`opus_at_bitrate` searches the nominal setting (integer bit/s) whose *measured* rate is
the largest not above the target. Opus is specified from 6 kbit/s (RFC 6716); a target below
what the lowest setting measures is reported unreachable (audio None, NaN rate), never
approximated.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import av
import numpy as np
from scipy.signal import resample_poly

SAMPLE_RATE = 16000  # the project's rate; the only one accepted
DECODER_RATE = 48000  # FFmpeg's Opus decoders always output 48 kHz
MIN_BITRATE_BPS = 6000  # lowest nominal setting searched (RFC 6716's lower end)
FFMPEG_MIN_BPS = 500  # lowest bit_rate FFmpeg's libopus wrapper accepts
MAX_BITRATE_BPS = 256000  # FFmpeg's libopus limit per channel
FRAME_MS = 20
UP = DECODER_RATE // SAMPLE_RATE  # 3


@dataclass
class OpusResult:
    """One Opus coding of a signal, or an unreachable target."""

    audio: np.ndarray | None  # [N] decoded float32, None when unreachable
    bitrate_bps: float  # measured from the packet bytes, NaN when unreachable
    setting: int | None  # nominal libopus bit_rate (bit/s), None when unreachable


def _check(audio: np.ndarray, sample_rate: int) -> np.ndarray:
    if sample_rate != SAMPLE_RATE:
        raise ValueError(f"Opus baseline expects {SAMPLE_RATE} Hz audio, got {sample_rate} Hz; "
                         "resample the input first")
    x = np.ascontiguousarray(audio, dtype=np.float32)
    if x.ndim != 1 or x.size == 0:
        raise ValueError(f"expected a non-empty mono signal [N], got shape {x.shape}")
    return x


def _encode(x: np.ndarray, bitrate_bps: int, application: str, vbr: str) -> tuple[list[bytes], int]:
    """Packets (bytes) of ``x`` and the pre-skip in 48 kHz samples."""
    enc = av.CodecContext.create("libopus", "w")
    enc.sample_rate = SAMPLE_RATE
    enc.layout = "mono"
    enc.format = "flt"
    enc.bit_rate = int(bitrate_bps)
    enc.options = {"frame_duration": str(FRAME_MS), "application": application, "vbr": vbr}
    enc.open()
    n = enc.frame_size  # 320 at 16 kHz
    padded = np.pad(x, (0, -len(x) % n))  # the encoder would zero-pad the last frame itself
    packets = []
    for start in range(0, len(padded), n):
        frame = av.AudioFrame.from_ndarray(padded[None, start:start + n], format="flt", layout="mono")
        frame.sample_rate, frame.pts = SAMPLE_RATE, start
        packets += enc.encode(frame)
    packets += enc.encode(None)  # flush: the last packets carry the lookahead
    pre_skip = int.from_bytes(bytes(enc.extradata)[10:12], "little")  # OpusHead field, 48 kHz
    return [bytes(p) for p in packets], pre_skip


def _decode(packets: list[bytes]) -> np.ndarray:
    """Concatenated 48 kHz output of libopus's decoder, nothing skipped."""
    dec = av.CodecContext.create("libopus", "r")
    dec.sample_rate, dec.layout = DECODER_RATE, "mono"
    dec.options = {"request_sample_fmt": "flt"}
    out = [f.to_ndarray().reshape(-1) for p in packets for f in dec.decode(av.Packet(p))]
    out += [f.to_ndarray().reshape(-1) for f in dec.decode(None)]
    return np.concatenate(out).astype(np.float32)


def _residual_lag(y48: np.ndarray, x: np.ndarray) -> int:
    """48 kHz lag in [-UP, UP] (one input sample) maximising the correlation of y48 with x."""
    x48 = resample_poly(x.astype(np.float64), UP, 1)
    n = len(x48) - 2 * UP
    y48 = np.pad(y48.astype(np.float64), (0, max(0, len(x48) + UP - len(y48))))
    ref = x48[UP: UP + n]  # np.sum, not np.dot: BLAS threads stall on a busy machine
    corr = [float(np.sum(y48[UP + k: UP + k + n] * ref)) for k in range(-UP, UP + 1)]
    return int(np.argmax(corr)) - UP


def opus_roundtrip(audio: np.ndarray, sample_rate: int, bitrate_bps: int, *,
                   application: str = "audio", vbr: str = "on",
                   align: bool = True) -> tuple[np.ndarray, float]:
    """Encode and decode a mono 16 kHz signal at nominal ``bitrate_bps``.

    Returns (decoded [N] float32 aligned with ``audio``, measured bit/s = packet bits / seconds).
    The pre-skip is always removed; ``align`` also removes the sub-sample residual (best 48 kHz
    lag within one input sample), so the cross-correlation with ``audio`` peaks at lag 0.
    """
    x = _check(audio, sample_rate)
    if not FFMPEG_MIN_BPS <= int(bitrate_bps) <= MAX_BITRATE_BPS:
        raise ValueError(f"bit rate {bitrate_bps} outside {FFMPEG_MIN_BPS}..{MAX_BITRATE_BPS} bit/s")
    packets, pre_skip = _encode(x, int(bitrate_bps), application, vbr)
    rate = 8.0 * sum(len(p) for p in packets) / (len(x) / SAMPLE_RATE)
    y48 = _decode(packets)
    y48 = y48[pre_skip:]  # exactly the encoder's algorithmic delay
    if align:
        k = _residual_lag(y48, x)
        y48 = y48[k:] if k >= 0 else np.pad(y48, (-k, 0))
    y = resample_poly(y48.astype(np.float64), 1, UP)[: len(x)]
    y = np.pad(y, (0, len(x) - len(y)))
    return y.astype(np.float32), rate


def opus_at_bitrate(audio: np.ndarray, sample_rate: int, target_bps: float, **opts: Any) -> OpusResult:
    """The largest nominal setting whose measured rate does not exceed ``target_bps``.

    Integer bisection on the nominal rate: the lowest setting first (above the target: not
    reachable), then doubling until a setting measures above the target, then bisection
    between the last setting that fits and the first that does not (VBR rates are not strictly
    monotonic, so "largest" means: it fits and the next setting up does not). ``opts`` are
    :func:`opus_roundtrip`'s keyword options.
    """
    dec, rate = opus_roundtrip(audio, sample_rate, MIN_BITRATE_BPS, **opts)
    if not rate <= target_bps:
        return OpusResult(None, float("nan"), None)
    best = OpusResult(dec, rate, MIN_BITRATE_BPS)
    lo, hi = MIN_BITRATE_BPS, max(MIN_BITRATE_BPS + 1, min(MAX_BITRATE_BPS, math.ceil(target_bps)))
    while True:  # find a setting above the target (lo always fits)
        d, r = opus_roundtrip(audio, sample_rate, hi, **opts)
        if r > target_bps:
            break
        best, lo = OpusResult(d, r, hi), hi
        if hi == MAX_BITRATE_BPS:
            return best
        hi = min(MAX_BITRATE_BPS, 2 * hi)
    while hi - lo > 1:
        mid = (lo + hi) // 2
        d, r = opus_roundtrip(audio, sample_rate, mid, **opts)
        if r <= target_bps:
            best, lo = OpusResult(d, r, mid), mid
        else:
            hi = mid
    return best


def opus_min_bitrate(audio: np.ndarray, sample_rate: int, **opts: Any) -> OpusResult:
    """Opus at its lowest nominal setting (``MIN_BITRATE_BPS``) for this signal."""
    dec, rate = opus_roundtrip(audio, sample_rate, MIN_BITRATE_BPS, **opts)
    return OpusResult(dec, rate, MIN_BITRATE_BPS)
