"""Step-by-step replay of a trace for the receiver: pure, no I/O and no clocks.

Step ``i`` covers ``[i p, (i + 1) p)`` with ``p = period_s``; its capacity is the mean of the
trace's sample-and-hold ``C(t)`` over that interval (:meth:`Trace.steps` uses the same rule),
so ``capacity x period`` is exactly the number of bits the channel carries in the step.
"""

from __future__ import annotations

import math

from channel_traces.trace import Trace


class TraceReplay:
    """Replays a :class:`Trace` one fixed-length step at a time.

    Args:
        trace: the channel trace.
        period_s: step length in seconds (the chunk duration T).
        loop: wrap around the end of the trace (default). Without it the replay has
            ``len(self)`` steps and asking for a later one raises ``IndexError``; the last,
            partial step holds the final sample past the end.
    """

    def __init__(self, trace: Trace, period_s: float, loop: bool = True) -> None:
        if not (period_s > 0 and math.isfinite(period_s)):
            raise ValueError(f"period_s must be positive and finite, got {period_s}")
        self.trace = trace
        self.period_s = float(period_s)
        self.loop = loop
        self._n_steps = trace.n_steps(self.period_s)

    def __len__(self) -> int:
        """Steps in one pass of the trace (the last one may be partial)."""
        return self._n_steps

    def __repr__(self) -> str:
        return (f"TraceReplay({self.trace.source!r}, period_s={self.period_s:g}, "
                f"loop={self.loop}, steps={self._n_steps})")

    def step(self, i: int) -> tuple[float, float]:
        """Start time and capacity of step ``i``.

        Args:
            i: step index, ``>= 0``.

        Returns:
            ``(t, capacity_bps)``: ``t = i x period_s`` in seconds since the start of the
            replay, and the mean capacity over the step in bit/s.
        """
        if i < 0:
            raise IndexError(f"step index must be >= 0, got {i}")
        if not self.loop and i >= self._n_steps:
            raise IndexError(f"step {i} is past the end of the trace ({self._n_steps} steps)")
        t0 = i * self.period_s
        return t0, self.trace.mean_capacity(t0, t0 + self.period_s, loop=self.loop)

    def bits(self, i: int) -> float:
        """Bits the channel carries during step ``i`` (capacity x period)."""
        return self.step(i)[1] * self.period_s
