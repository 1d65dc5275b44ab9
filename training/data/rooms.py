"""Simulated rooms: distributed microphones, one to three talkers taking turns, noise.

A room is a pyroomacoustics shoebox whose wall absorption and image-source order come from
``pra.inverse_sabine`` for a drawn RT60. The S microphones sit at distinct places like the
Kinect arrays of CHiME-6 (on shelves near the walls or on tables, at least
``min_mic_spacing`` apart), not in one tight array. Talkers stand or sit at distinct places
and speak in turns with gaps and occasional overlaps (:func:`place_utterances`). Noise comes
from one point source or, "diffuse-ish", from several sources near the walls, and is scaled
to the drawn SNR.

Definitions (fixed, the rest of the project relies on them):

- Mic signals ``mics[s] = sum_t x_t * h_{t,s} + n_s``, where ``x_t`` is the dry signal of
  talker t (the timeline of its utterances), ``h_{t,s}`` the full simulated RIR from talker t
  to mic s, ``*`` linear convolution cut to the first N samples, and ``n_s`` the noise at mic
  s (each dry noise source circularly convolved with its RIR, i.e. noise in steady state).
- SNR: ``10 log10(sum(speech_0^2) / sum(n_0^2))`` at reference microphone 0 over the whole
  example, where ``speech_0 = sum_t x_t * h_{t,0}``; all mics share the one noise scale, so
  their level differences stay physical.
- CLEAN REFERENCE: ``clean = sum_t x_t * e_{t,0}`` cut to the first N samples, where
  ``e_{t,0}`` is ``h_{t,0}`` kept from sample 0 through the direct-path peak plus 50 ms
  (``round(0.05 fs)`` samples, hard cut) and zero afterwards: direct path plus early
  reflections at microphone 0, no late reverberation, no noise. The direct-path peak is the
  largest ``|h|`` within 1 ms of the geometric arrival ``d/c fs`` plus the half-length of
  pyroomacoustics' fractional-delay filter. The reference keeps the propagation delay, so
  it is time-aligned with ``mics[0]`` sample for sample (same length N).
- Level: every signal is multiplied by one gain so that the loudest of ``mics`` and
  ``clean`` peaks at ``peak`` (0.9); normally that is the loudest microphone.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np
import pyroomacoustics as pra
from scipy.signal import fftconvolve

from shared.errors import ConfigError

from .audio import active_rms

EARLY_MS = 50.0
PEAK = 0.9
SPEED_OF_SOUND = float(pra.constants.get("c"))
ROOM_LOW: tuple[float, float, float] = (4.0, 3.5, 2.4)
ROOM_HIGH: tuple[float, float, float] = (9.0, 7.0, 3.2)


@dataclass
class RoomLayout:
    """Geometry and acoustics of one simulated room (positions in metres, ``[x, y, z]``)."""

    dims: np.ndarray  # [3]
    rt60: float  # target RT60 in seconds (Sabine)
    absorption: float  # energy absorption coefficient of every wall
    max_order: int  # image-source order from inverse_sabine
    mics: np.ndarray  # [S, 3]
    talkers: np.ndarray  # [T, 3]
    noise_sources: np.ndarray  # [K, 3]
    mic_styles: list[str] = field(default_factory=list)  # "wall" or "table", per mic

    def to_dict(self) -> dict[str, object]:
        """JSON-ready summary (positions rounded to the millimetre)."""
        return {
            "dims": np.round(self.dims, 3).tolist(),
            "rt60": round(float(self.rt60), 4),
            "absorption": round(float(self.absorption), 4),
            "max_order": int(self.max_order),
            "mic_positions": np.round(self.mics, 3).tolist(),
            "mic_styles": list(self.mic_styles),
            "talker_positions": np.round(self.talkers, 3).tolist(),
            "noise_positions": np.round(self.noise_sources, 3).tolist(),
        }


@dataclass
class Segment:
    """One utterance on the timeline: talker index and sample range ``[start, end)``."""

    talker: int
    start: int
    end: int


@dataclass
class RoomMix:
    """Simulated recording of one room.

    Attributes:
        mics: float32 ``[S, N]`` microphone signals.
        clean: float32 ``[N]`` clean reference (see the module docstring).
        gain: the normalisation gain that was applied to both.
        rt60_measured: RT60 in s measured (T30) on the RIR talker 0 -> mic 0, or None.
        direct_index: ``[T]`` sample index of each talker's direct-path peak at mic 0.
    """

    mics: np.ndarray
    clean: np.ndarray
    gain: float
    rt60_measured: float | None
    direct_index: list[int]


def _far_enough(p: np.ndarray, others: Sequence[np.ndarray], min_dist: float) -> bool:
    return all(np.linalg.norm(p[:2] - q[:2]) >= min_dist for q in others)


def _wall_point(rng: np.random.Generator, dims: np.ndarray, inset: tuple[float, float],
                height: tuple[float, float]) -> np.ndarray:
    """A point ``inset`` metres from a random wall, at a random place along it."""
    wall = int(rng.integers(4))
    axis, other = (0, 1) if wall < 2 else (1, 0)
    p = np.empty(3)
    p[axis] = rng.uniform(0.3, dims[axis] - 0.3)
    off = rng.uniform(*inset)
    p[other] = off if wall % 2 == 0 else dims[other] - off
    p[2] = rng.uniform(*height)
    return p


def sample_layout(
    rng: np.random.Generator,
    num_mics: int = 4,
    num_talkers: int = 1,
    num_noise_sources: int = 1,
    rt60_range: tuple[float, float] = (0.15, 0.6),
    room_low: tuple[float, float, float] = ROOM_LOW,
    room_high: tuple[float, float, float] = ROOM_HIGH,
    min_mic_spacing: float = 0.8,
) -> RoomLayout:
    """Draw a room, its RT60, and positions of microphones, talkers and noise sources.

    Microphones: 60 % on a shelf 5-30 cm from a wall at 0.9-2.0 m height, otherwise on a
    table inside the room at 0.7-1.0 m; pairwise at least ``min_mic_spacing`` apart
    (horizontally). Talkers: 0.6 m from the walls, 1.15-1.8 m high, at least 0.8 m from every
    microphone and 1 m from each other. Noise sources: 0.2-0.6 m from a wall, 0.3-2.2 m high,
    at least 0.5 m from microphones and talkers.

    Raises:
        ConfigError: no valid layout after many attempts (too many mics for the room size,
            or an RT60 too short for the room).
    """
    if min_mic_spacing < 0.5:
        raise ConfigError(f"min_mic_spacing {min_mic_spacing} m is below 0.5 m: mics must be distinct")
    for _ in range(50):
        dims = rng.uniform(room_low, room_high)
        rt60 = float(rng.uniform(*rt60_range))
        try:
            absorption, max_order = pra.inverse_sabine(rt60, dims.tolist())
        except ValueError:
            continue  # RT60 unreachable for this room size: draw again
        layout = _place_points(rng, dims, num_mics, num_talkers, num_noise_sources, min_mic_spacing)
        if layout is not None:
            mics, styles, talkers, noise = layout
            return RoomLayout(dims, rt60, float(absorption), int(max_order), mics, talkers,
                              noise, styles)
    raise ConfigError(
        f"could not place {num_mics} mics and {num_talkers} talkers in rooms of "
        f"{room_low}-{room_high} m with RT60 {rt60_range}: use fewer mics or larger rooms"
    )


def _place_points(rng: np.random.Generator, dims: np.ndarray, num_mics: int, num_talkers: int,
                  num_noise: int, spacing: float
                  ) -> tuple[np.ndarray, list[str], np.ndarray, np.ndarray] | None:
    """Rejection-sample all positions; None when the room is too crowded."""
    mics: list[np.ndarray] = []
    styles: list[str] = []
    for _ in range(num_mics):
        for _attempt in range(300):
            if rng.random() < 0.6:
                p, style = _wall_point(rng, dims, (0.05, 0.3), (0.9, 2.0)), "wall"
            else:
                p = np.array([rng.uniform(0.8, dims[0] - 0.8), rng.uniform(0.8, dims[1] - 0.8),
                              rng.uniform(0.7, 1.0)])
                style = "table"
            if _far_enough(p, mics, spacing):
                mics.append(p)
                styles.append(style)
                break
        else:
            return None
    talkers: list[np.ndarray] = []
    for _ in range(num_talkers):
        for _attempt in range(300):
            p = np.array([rng.uniform(0.6, dims[0] - 0.6), rng.uniform(0.6, dims[1] - 0.6),
                          rng.uniform(1.15, 1.8)])
            if _far_enough(p, mics, 0.8) and _far_enough(p, talkers, 1.0):
                talkers.append(p)
                break
        else:
            return None
    noise: list[np.ndarray] = []
    for _ in range(num_noise):
        for _attempt in range(300):
            p = _wall_point(rng, dims, (0.2, 0.6), (0.3, 2.2))
            if _far_enough(p, mics, 0.5) and _far_enough(p, talkers, 0.5):
                noise.append(p)
                break
        else:
            return None
    return np.array(mics), styles, np.array(talkers).reshape(-1, 3), np.array(noise).reshape(-1, 3)


def _faded(x: np.ndarray, fade: int) -> np.ndarray:
    """``x`` ``[M]`` with raised-cosine fades of ``fade`` samples at both ends."""
    fade = min(fade, len(x) // 2)
    if fade <= 0:
        return x
    ramp = (0.5 - 0.5 * np.cos(np.linspace(0.0, np.pi, fade))).astype(np.float32)
    out = x.copy()
    out[:fade] *= ramp
    out[len(x) - fade:] *= ramp[::-1]
    return out


def place_utterances(
    rng: np.random.Generator,
    num_talkers: int,
    next_utterance: Callable[[int], np.ndarray],
    num_samples: int,
    sample_rate: int = 16000,
    overlap_prob: float = 0.25,
    level_dbfs: float = -25.0,
    gain_spread_db: float = 4.0,
    max_turn_samples: int | None = None,
) -> tuple[np.ndarray, list[Segment]]:
    """Lay utterances on a timeline: turn-taking with gaps and occasional overlaps.

    The first turns go to every talker once in random order, then each turn goes to a talker
    other than the previous one. After a turn comes a gap of 0.1-0.8 s or, with probability
    ``overlap_prob`` when there are several talkers, an overlap of 0.2-1.0 s (at most half the
    turn). A talker never overlaps itself. An utterance that does not fit is cut to a random
    excerpt of the remaining length, and ends the timeline. A turn longer than
    ``max_turn_samples`` is cut to a random excerpt of that length with 10 ms fades (so
    several talkers fit in a short example). Each utterance is set to ``level_dbfs`` active RMS, then
    each talker gets a fixed gain in ``+-gain_spread_db``.

    Args:
        rng: randomness for the timeline (and passed on by ``next_utterance`` if it wants).
        num_talkers: T.
        next_utterance: ``talker index -> float32 [M]`` dry speech at ``sample_rate``.
        num_samples: N, length of the timeline.
        sample_rate: Hz.

    Returns:
        ``(tracks, segments)``: float32 ``[T, N]`` dry talker signals and the placed turns.
    """
    tracks = np.zeros((num_talkers, num_samples), dtype=np.float32)
    talker_gain = 10 ** (rng.uniform(-gain_spread_db, gain_spread_db, num_talkers) / 20)
    last_end = np.zeros(num_talkers, dtype=np.int64)
    segments: list[Segment] = []
    order = list(rng.permutation(num_talkers))
    t = int(rng.uniform(0.0, 0.3) * sample_rate)
    min_len = int(0.3 * sample_rate)
    prev = -1
    while t < num_samples - min_len:
        if order:
            talker = int(order.pop(0))
        elif num_talkers > 1:
            talker = int(rng.choice([k for k in range(num_talkers) if k != prev]))
        else:
            talker = 0
        start = max(t, int(last_end[talker]) + int(0.1 * sample_rate)) if segments else t
        if start >= num_samples - min_len:
            break
        utt = np.asarray(next_utterance(talker), dtype=np.float32)
        if max_turn_samples is not None and len(utt) > max_turn_samples:
            offset = int(rng.integers(0, len(utt) - max_turn_samples + 1))
            utt = _faded(utt[offset:offset + max_turn_samples], int(0.01 * sample_rate))
        room_left = num_samples - start
        if len(utt) > room_left:
            offset = int(rng.integers(0, len(utt) - room_left + 1))
            utt = utt[offset:offset + room_left]
        utt = utt * (10 ** (level_dbfs / 20) / active_rms(utt, sample_rate)) * talker_gain[talker]
        end = start + len(utt)
        tracks[talker, start:end] += utt
        segments.append(Segment(talker, start, end))
        last_end[talker] = end
        prev = talker
        if end >= num_samples:
            break
        if num_talkers > 1 and rng.random() < overlap_prob:
            gap = -min(rng.uniform(0.2, 1.0), 0.5 * len(utt) / sample_rate)
        else:
            gap = rng.uniform(0.1, 0.8)
        t = end + int(gap * sample_rate)
    return tracks, segments


def compute_rirs(layout: RoomLayout, sample_rate: int = 16000) -> list[list[np.ndarray]]:
    """RIRs from every source (talkers, then noise sources) to every mic: ``rir[s][k]`` ``[L]``."""
    room = pra.ShoeBox(layout.dims.tolist(), fs=sample_rate,
                       materials=pra.Material(layout.absorption), max_order=layout.max_order)
    for p in list(layout.talkers) + list(layout.noise_sources):
        room.add_source(p.tolist())
    room.add_microphone_array(np.asarray(layout.mics, dtype=float).T)
    room.compute_rir()
    return [[np.asarray(h, dtype=np.float64) for h in row] for row in room.rir]


def direct_path_index(rir: np.ndarray, distance: float, sample_rate: int) -> int:
    """Index of the direct-path peak of ``rir`` ``[L]`` for a source ``distance`` m away."""
    expected = distance / SPEED_OF_SOUND * sample_rate + pra.constants.get("frac_delay_length") // 2
    half = max(1, int(round(0.001 * sample_rate)))
    lo = max(0, int(np.floor(expected)) - half)
    hi = min(len(rir), int(np.ceil(expected)) + half + 1)
    return lo + int(np.argmax(np.abs(rir[lo:hi])))


def early_rir(rir: np.ndarray, direct_index: int, sample_rate: int,
              early_ms: float = EARLY_MS) -> np.ndarray:
    """``rir`` ``[L]`` through ``direct_index + round(early_ms/1000 fs)``, zero after; ``[L]``."""
    out = np.zeros_like(rir)
    stop = min(len(rir), direct_index + int(round(early_ms / 1000.0 * sample_rate)) + 1)
    out[:stop] = rir[:stop]
    return out


def _circular_convolve(x: np.ndarray, h: np.ndarray) -> np.ndarray:
    """Circular convolution of ``x`` ``[N]`` with ``h`` ``[L]`` (h folded modulo N); ``[N]``."""
    n = len(x)
    folded = np.zeros(n)
    for k in range(0, len(h), n):
        part = h[k:k + n]
        folded[: len(part)] += part
    return np.fft.irfft(np.fft.rfft(x) * np.fft.rfft(folded), n=n)


def _measure_rt60(rir: np.ndarray, sample_rate: int) -> float | None:
    """T30-based RT60 of one RIR, or None when the decay is too short to fit."""
    try:
        value = float(pra.experimental.measure_rt60(rir, fs=sample_rate, decay_db=30))
    except (ValueError, IndexError):
        return None
    return value if np.isfinite(value) else None


def simulate_room(
    layout: RoomLayout,
    talkers: np.ndarray,
    noise: np.ndarray | None,
    snr_db: float,
    sample_rate: int = 16000,
    peak: float = PEAK,
) -> RoomMix:
    """Render a room: reverberant talkers plus noise at every mic, and the clean reference.

    Args:
        layout: the room (see :func:`sample_layout`); ``layout.noise_sources`` has K rows.
        talkers: float32 ``[T, N]`` dry talker signals (T = ``len(layout.talkers)``).
        noise: float ``[K, N]`` dry noise, one row per noise source, or None for no noise.
        snr_db: wanted SNR at mic 0 (see the module docstring).
        sample_rate: Hz.
        peak: the peak level after normalisation.

    Returns:
        A :class:`RoomMix` with ``mics`` ``[S, N]`` and ``clean`` ``[N]``.
    """
    num_talkers, n = talkers.shape
    if num_talkers != len(layout.talkers):
        raise ValueError(f"{num_talkers} talker signals for {len(layout.talkers)} talker positions")
    rirs = compute_rirs(layout, sample_rate)
    num_mics = len(rirs)
    speech = np.zeros((num_mics, n))
    clean = np.zeros(n)
    direct: list[int] = []
    for t in range(num_talkers):
        for s in range(num_mics):
            speech[s] += fftconvolve(talkers[t].astype(np.float64), rirs[s][t])[:n]
        distance = float(np.linalg.norm(layout.talkers[t] - layout.mics[0]))
        idx = direct_path_index(rirs[0][t], distance, sample_rate)
        direct.append(idx)
        clean += fftconvolve(talkers[t].astype(np.float64), early_rir(rirs[0][t], idx, sample_rate))[:n]
    mics = speech
    if noise is not None and len(noise) > 0:
        if len(noise) != len(layout.noise_sources):
            raise ValueError(f"{len(noise)} noise signals for {len(layout.noise_sources)} sources")
        noise_at = np.zeros((num_mics, n))
        for k in range(len(noise)):
            for s in range(num_mics):
                noise_at[s] += _circular_convolve(np.asarray(noise[k], dtype=np.float64)[:n],
                                                  rirs[s][num_talkers + k])
        scale = np.sqrt(np.sum(speech[0] ** 2) / (np.sum(noise_at[0] ** 2) + 1e-20)
                        / 10 ** (snr_db / 10))
        mics = speech + scale * noise_at
    gain = peak / max(float(np.max(np.abs(mics))), float(np.max(np.abs(clean))), 1e-9)
    return RoomMix(
        mics=(mics * gain).astype(np.float32),
        clean=(clean * gain).astype(np.float32),
        gain=float(gain),
        rt60_measured=_measure_rt60(rirs[0][0], sample_rate),
        direct_index=direct,
    )
