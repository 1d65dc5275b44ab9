"""The in-memory channel trace: capacity over time, with sample-and-hold semantics.

A :class:`Trace` is a piecewise-constant capacity ``C(t)``: sample ``i`` holds from
``times_s[i]`` until ``times_s[i + 1]`` (the last one until ``end_s``). Looping repeats
``[0, end_s)`` forever, the way Mahimahi and Pensieve replay their traces.

Per replay step the capacity is the **mean over the step** (the time average of ``C(t)`` over
``[t, t + period)``), because the bits a step can carry are ``integral C(t) dt``; the value at
the start of the step would over- or under-count a step in which the channel changes.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Literal

import numpy as np

from shared.errors import TraceError

TraceKind = Literal["snr", "csi", "throughput", "capacity"]
KINDS: tuple[str, ...] = ("snr", "csi", "throughput", "capacity")

#: Hold of a single-sample trace (a constant channel), in seconds.
SINGLE_SAMPLE_HOLD_S = 1.0


@dataclass(frozen=True, eq=False)
class Trace:
    """Capacity over time of the uplink given to one room.

    Attributes:
        times_s: sample times in seconds, shape ``[N]``, strictly increasing, ``times_s[0] == 0``
            (readers shift a file's first timestamp to 0 and say so in ``notes``).
        capacity_bps: capacity in bit/s, shape ``[N]``, finite and ``>= 0``.
        kind: what the file measured: ``"snr"``, ``"csi"``, ``"throughput"`` or ``"capacity"``.
        source: the file path, or the generator name and seed.
        notes: how capacity was derived, e.g. ``"C = W log2(1+SNR), W = 1000 Hz"``.
        end_s: end of the last sample's hold (exclusive), the loop length. ``None`` means
            ``times_s[-1]`` plus the last sampling interval (``1 s`` for a single sample).
        extras: per-sample side information, each shape ``[N]`` (radio type, handoff, SNR...).
    """

    times_s: np.ndarray
    capacity_bps: np.ndarray
    kind: TraceKind
    source: str
    notes: str = ""
    end_s: float | None = None
    extras: dict[str, np.ndarray] = field(default_factory=dict)

    def __post_init__(self) -> None:
        times = np.array(self.times_s, dtype=np.float64)
        cap = np.array(self.capacity_bps, dtype=np.float64)
        where = f"trace {self.source}"
        if times.ndim != 1 or cap.shape != times.shape or times.size == 0:
            raise TraceError(
                f"{where}: times {times.shape} and capacity {cap.shape} must be equal, "
                "non-empty 1-D arrays. Fix: give one capacity per sample time"
            )
        if self.kind not in KINDS:
            raise TraceError(f"{where}: kind {self.kind!r} unknown. Fix: use one of {KINDS}")
        if not (np.all(np.isfinite(times)) and np.all(np.isfinite(cap))):
            i = int(np.flatnonzero(~(np.isfinite(times) & np.isfinite(cap)))[0])
            raise TraceError(f"{where}: sample {i} is NaN or infinite. Fix: drop or repair it")
        if times[0] != 0.0:
            raise TraceError(
                f"{where}: first time is {times[0]:g} s, not 0. Fix: subtract the first time"
            )
        bad = np.flatnonzero(np.diff(times) <= 0)
        if bad.size:
            i = int(bad[0]) + 1
            raise TraceError(f"{where}: time of sample {i} does not increase. Fix: sort times")
        if np.any(cap < 0):
            i = int(np.flatnonzero(cap < 0)[0])
            raise TraceError(f"{where}: sample {i} has negative capacity. Fix: use 0 for outage")
        end = self.end_s
        if end is None:
            end = times[-1] + (times[-1] - times[-2] if times.size > 1 else SINGLE_SAMPLE_HOLD_S)
        if not (math.isfinite(end) and end > times[-1]):
            raise TraceError(f"{where}: end_s {end} must exceed the last time {times[-1]:g}")
        extras = {}
        for name, values in self.extras.items():
            arr = np.array(values)
            if arr.shape[:1] != times.shape:
                raise TraceError(f"{where}: extra {name!r} has shape {arr.shape}, need [N]")
            arr.setflags(write=False)
            extras[name] = arr
        times.setflags(write=False)
        cap.setflags(write=False)
        object.__setattr__(self, "times_s", times)
        object.__setattr__(self, "capacity_bps", cap)
        object.__setattr__(self, "end_s", float(end))
        object.__setattr__(self, "extras", extras)

    def __len__(self) -> int:
        """Number of samples N."""
        return int(self.times_s.size)

    @property
    def duration_s(self) -> float:
        """Length of one pass of the trace (``end_s``), in seconds."""
        assert self.end_s is not None
        return self.end_s

    def capacity_at(self, t: float, loop: bool = True) -> float:
        """Capacity in bit/s at time ``t`` (sample-and-hold of the last sample at or before t).

        Args:
            t: time in seconds, ``>= 0``.
            loop: wrap ``t`` around the trace length; without it, times past the end hold the
                last sample.
        """
        if t < 0 or not math.isfinite(t):
            raise ValueError(f"t must be finite and >= 0, got {t}")
        if loop:
            t = math.fmod(t, self.duration_s)
        i = int(np.searchsorted(self.times_s, t, side="right")) - 1
        return float(self.capacity_bps[max(i, 0)])

    def integral_bits(self, t: np.ndarray | float, loop: bool = True) -> np.ndarray:
        """Bits the channel carries in ``[0, t)``: ``integral_0^t C(s) ds``, shape of ``t``.

        Without ``loop`` the last sample holds past the end.
        """
        t = np.asarray(t, dtype=np.float64)
        if np.any(t < 0):
            raise ValueError("times must be >= 0")
        edges = np.append(self.times_s, self.duration_s)
        cum = np.concatenate([[0.0], np.cumsum(self.capacity_bps * np.diff(edges))])
        if loop:
            cycles, rest = np.divmod(t, self.duration_s)
        else:
            cycles, rest = np.zeros_like(t), np.minimum(t, self.duration_s)
        idx = np.clip(np.searchsorted(self.times_s, rest, side="right") - 1, 0, len(self) - 1)
        partial = cum[idx] + self.capacity_bps[idx] * (rest - self.times_s[idx])
        total = cycles * cum[-1] + partial
        if not loop:
            total = total + self.capacity_bps[-1] * np.maximum(t - self.duration_s, 0.0)
        return total

    def mean_capacity(self, t0: float, t1: float, loop: bool = True) -> float:
        """Time-averaged capacity over ``[t0, t1)`` in bit/s."""
        if not t1 > t0:
            raise ValueError(f"need t1 > t0, got [{t0}, {t1})")
        bits = self.integral_bits(np.array([t0, t1]), loop=loop)
        return float((bits[1] - bits[0]) / (t1 - t0))

    def n_steps(self, period_s: float) -> int:
        """Steps of ``period_s`` needed to cover one pass (the last one may be partial)."""
        _check_period(period_s)
        return max(1, math.ceil(self.duration_s / period_s - 1e-9))

    def steps(self, period_s: float, n_steps: int | None = None, loop: bool = True) -> np.ndarray:
        """Capacity per replay step: the mean of ``C(t)`` over ``[i p, (i + 1) p)``.

        Args:
            period_s: step length p in seconds (the chunk duration T).
            n_steps: how many steps; default :meth:`n_steps` (one pass of the trace).
            loop: wrap around the trace (default), else hold the last sample.

        Returns:
            capacity in bit/s per step, shape ``[n_steps]``.
        """
        count = self.n_steps(period_s) if n_steps is None else int(n_steps)
        if count < 0:
            raise ValueError(f"n_steps must be >= 0, got {n_steps}")
        edges = np.arange(count + 1, dtype=np.float64) * period_s
        return np.diff(self.integral_bits(edges, loop=loop)) / period_s

    def scaled(self, factor: float, note: str) -> Trace:
        """A copy with capacity multiplied by ``factor`` and ``note`` appended to ``notes``."""
        return Trace(
            self.times_s, self.capacity_bps * factor, self.kind, self.source,
            f"{self.notes}; {note}" if self.notes else note, self.end_s, dict(self.extras),
        )


def _check_period(period_s: float) -> None:
    if not (period_s > 0 and math.isfinite(period_s)):
        raise ValueError(f"period_s must be positive and finite, got {period_s}")
