"""Repairs of measured timestamps: counter wraps, repeated timestamps, records logged twice,
clock resets.

Real logs do not always have increasing times: a 32-bit microsecond counter wraps every
71.6 minutes, a logger writes a packet (or a whole stretch) twice, a NIC reset restarts its
clock, two rows land in the same second. :func:`repair_times` turns such a sequence into
strictly increasing sample times and says what it did, so a reader can load the log instead
of failing on "time does not increase".
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


def unwrap_counter(
    stamps: np.ndarray, modulus: int, fold_forward: bool = True
) -> tuple[np.ndarray, int]:
    """Unwrap a free-running counter that wraps at ``modulus`` (e.g. ``2**32`` microseconds).

    A step back by more than half the range is a wrap forward. With ``fold_forward``, a step
    forward by more than half the range (a record from before the wrap, logged again after
    it) goes back across the wrap; without it, it stays a long gap. Smaller steps back are
    left for :func:`repair_times` (repeats, resets).

    Returns:
        the unwrapped counter (int64) and the net number of wraps.
    """
    values = np.asarray(stamps).astype(np.int64)
    if values.size == 0:
        return values, 0
    half = modulus // 2
    steps = np.diff(values)
    steps = np.where(steps < -half, steps + modulus, steps)
    if fold_forward:
        steps = np.where(steps > half, steps - modulus, steps)
    unwrapped = values[0] + np.concatenate([[0], np.cumsum(steps)])
    return unwrapped, int(unwrapped[-1] // modulus - values[0] // modulus)


@dataclass(frozen=True)
class TimeRepair:
    """Strictly increasing sample times built from raw times, and what was done.

    Attributes:
        times: output sample times (same unit as the input, not shifted), shape ``[M]``.
        group: for each input sample, the output sample it went into, or -1 if dropped.
        merged: input samples merged into the previous one (same timestamp).
        repeated: input samples dropped because their timestamp was already seen (a record
            logged twice).
        out_of_order: input samples dropped because they went back in time once.
        resets: clock resets spliced (the clock went back and stayed back).
        unit: name of the time unit for :meth:`note` (``"s"``, ``"us"``).
    """

    times: np.ndarray
    group: np.ndarray
    merged: int
    repeated: int
    out_of_order: int
    resets: int
    unit: str = "s"

    def reduce(self, values: np.ndarray) -> np.ndarray:
        """Mean of ``values`` (one per input sample, shape ``[N, ...]``) per output sample."""
        values = np.asarray(values, dtype=np.float64)
        keep = self.group >= 0
        sums = np.zeros((self.times.size, *values.shape[1:]))
        np.add.at(sums, self.group[keep], values[keep])
        counts = np.bincount(self.group[keep], minlength=self.times.size)
        return sums / counts.reshape(-1, *([1] * (values.ndim - 1)))

    def first(self, values: np.ndarray) -> np.ndarray:
        """The value of the first input sample of each output sample (for labels, flags)."""
        values = np.asarray(values)
        firsts = np.full(self.times.size, -1)
        for index in range(self.group.size - 1, -1, -1):
            if self.group[index] >= 0:
                firsts[self.group[index]] = index
        return values[firsts]

    def note(self, what: str = "timestamps") -> str:
        """Say what was repaired (``""`` when nothing was)."""
        parts = []
        if self.merged:
            parts.append(f"{self.merged} repeated {what} merged (mean)")
        if self.repeated:
            parts.append(f"{self.repeated} records logged twice dropped")
        if self.out_of_order:
            parts.append(f"{self.out_of_order} out-of-order samples dropped")
        if self.resets:
            parts.append(f"{self.resets} clock resets spliced (the next sample follows the "
                         "previous one by the median interval)")
        return ", ".join(parts)


def repair_times(raw: np.ndarray, unit: str = "s", ids: np.ndarray | None = None) -> TimeRepair:
    """Make times strictly increasing: merge, drop, or splice what goes back.

    For each sample, in order:

    * a time equal to the previous kept one: merged into it (two rows in the same second,
      a packet logged twice in a row);
    * a time already seen earlier (with the same ``ids`` entry, when given): dropped (a
      stretch of records logged twice);
    * a time back that the next sample does not follow (or the last sample): dropped (one
      out-of-order sample);
    * a time back that the next sample follows: the clock was reset; the rest of the log is
      shifted to continue after the previous sample by the median interval of the log.

    Args:
        raw: times in log order, shape ``[N]`` (already unwrapped).
        unit: name of the unit, for notes.
        ids: optional record identity per sample (e.g. the Intel 5300 ``bfee_count``): a
            sample is a repeat only if both its time and its id were seen.
    """
    times = np.asarray(raw, dtype=np.float64)
    n = times.size
    group = np.full(n, -1, dtype=np.int64)
    if n == 0:
        return TimeRepair(times, group, 0, 0, 0, 0, unit)
    steps = np.diff(times)
    step = float(np.median(steps[steps > 0])) if np.any(steps > 0) else 1.0
    out = [times[0]]
    group[0] = 0
    keys = times.tolist() if ids is None else list(zip(times.tolist(), np.asarray(ids).tolist()))
    seen = {keys[0]}
    offset, merged, repeated, out_of_order, resets = 0.0, 0, 0, 0, 0
    for i in range(1, n):
        t = times[i] + offset
        last = out[-1]
        if t > last:
            out.append(t)
        elif ids is not None and keys[i] in seen:
            repeated += 1
            continue
        elif t == last:
            merged += 1
        elif keys[i] in seen:
            repeated += 1
            continue
        elif i + 1 >= n or times[i + 1] + offset > last:
            out_of_order += 1
            continue
        else:
            resets += 1
            offset += last + step - t
            out.append(last + step)
        group[i] = len(out) - 1
        seen.add(keys[i])
    return TimeRepair(np.asarray(out), group, merged, repeated, out_of_order, resets, unit)
