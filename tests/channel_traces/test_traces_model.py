"""Tests of the Trace type (sample-and-hold, looping, step means) and TraceReplay."""

from __future__ import annotations

import math

import numpy as np
import pytest

from channel_traces.replay import TraceReplay
from channel_traces.trace import Trace
from shared.errors import TraceError


def _trace(times: list[float], caps: list[float], end_s: float | None = None) -> Trace:
    return Trace(np.array(times), np.array(caps), "capacity", "test", "unit", end_s=end_s)


def test_capacity_at_is_sample_and_hold() -> None:
    """capacity_at returns the last sample at or before t."""
    tr = _trace([0.0, 1.0, 3.0], [100.0, 200.0, 50.0])
    assert tr.duration_s == pytest.approx(5.0)  # last time + last interval (2 s)
    assert tr.capacity_at(0.0) == 100.0
    assert tr.capacity_at(0.999) == 100.0
    assert tr.capacity_at(1.0) == 200.0
    assert tr.capacity_at(2.5) == 200.0
    assert tr.capacity_at(4.9) == 50.0


def test_capacity_at_loops_or_holds() -> None:
    """With loop the time wraps modulo end_s; without, the last sample holds."""
    tr = _trace([0.0, 1.0, 3.0], [100.0, 200.0, 50.0])
    assert tr.capacity_at(5.5) == 100.0
    assert tr.capacity_at(6.2) == 200.0
    assert tr.capacity_at(5.5, loop=False) == 50.0
    assert tr.capacity_at(1e6, loop=False) == 50.0
    with pytest.raises(ValueError):
        tr.capacity_at(-1.0)


def test_steps_are_time_weighted_means() -> None:
    """steps() averages the held capacity over each step, wrapping around the end."""
    tr = _trace([0.0, 1.0, 3.0], [100.0, 200.0, 50.0])
    steps = tr.steps(2.0)
    # [0,2): 1 s at 100 + 1 s at 200; [2,4): 1 s at 200 + 1 s at 50; [4,6): 1 s at 50 + wrap 100
    np.testing.assert_allclose(steps, [150.0, 125.0, 75.0])
    assert tr.n_steps(2.0) == 3
    np.testing.assert_allclose(tr.steps(2.0, n_steps=5), [150.0, 125.0, 75.0, 200.0, 50.0])
    np.testing.assert_allclose(tr.steps(2.0, n_steps=4, loop=False), [150, 125, 50, 50])


def test_step_mean_times_period_is_the_integral() -> None:
    """Mean capacity x period equals the bits of integral_bits, over many passes."""
    rng = np.random.default_rng(0)
    times = np.cumsum(np.r_[0.0, rng.uniform(0.01, 0.3, 49)])
    tr = Trace(times, rng.uniform(0, 4000, 50), "capacity", "rand")
    period = 0.256
    steps = tr.steps(period, n_steps=200)
    total = tr.integral_bits(200 * period)
    assert steps.sum() * period == pytest.approx(float(total), rel=1e-9)
    one_pass = tr.integral_bits(tr.duration_s)
    assert float(tr.integral_bits(3 * tr.duration_s)) == pytest.approx(3 * float(one_pass))


def test_single_sample_trace_is_constant() -> None:
    """A one-sample trace holds its value everywhere."""
    tr = _trace([0.0], [42.0])
    assert tr.capacity_at(123.4) == 42.0
    np.testing.assert_allclose(tr.steps(0.256, n_steps=10), 42.0)


@pytest.mark.parametrize(
    ("times", "caps", "match"),
    [
        ([0.0, 1.0, 1.0], [1.0, 2.0, 3.0], "does not increase"),
        ([0.0, 2.0, 1.0], [1.0, 2.0, 3.0], "does not increase"),
        ([0.0, 1.0], [1.0, -2.0], "negative capacity"),
        ([0.0, 1.0], [1.0, math.nan], "NaN"),
        ([0.5, 1.0], [1.0, 2.0], "not 0"),
        ([], [], "non-empty"),
    ],
)
def test_trace_rejects_invalid_samples(times: list, caps: list, match: str) -> None:
    """Trace() refuses bad arrays with a TraceError naming the problem."""
    with pytest.raises(TraceError, match=match):
        _trace(times, caps)


def test_trace_rejects_unknown_kind_and_short_end() -> None:
    """kind must be known; end_s must lie after the last sample."""
    with pytest.raises(TraceError, match="kind"):
        Trace(np.array([0.0]), np.array([1.0]), "wifi", "x")
    with pytest.raises(TraceError, match="end_s"):
        _trace([0.0, 1.0], [1.0, 1.0], end_s=1.0)


def test_trace_arrays_are_read_only() -> None:
    """A Trace cannot be changed behind the replay's back."""
    tr = _trace([0.0, 1.0], [1.0, 2.0])
    with pytest.raises(ValueError):
        tr.capacity_bps[0] = 5.0


def test_replay_steps_match_trace_steps() -> None:
    """TraceReplay.step(i) gives (i T, mean over the step), consistent with Trace.steps."""
    tr = _trace([0.0, 0.1, 0.5, 0.7], [1000.0, 0.0, 3000.0, 2000.0])
    replay = TraceReplay(tr, 0.256)
    expected = tr.steps(0.256, n_steps=12)
    for i in range(12):
        t, cap = replay.step(i)
        assert t == pytest.approx(i * 0.256)
        assert cap == pytest.approx(expected[i])
    assert replay.bits(0) == pytest.approx(expected[0] * 0.256)
    assert len(replay) == 4  # 0.9 s / 0.256 s -> 4 steps


def test_replay_without_loop_ends() -> None:
    """Without loop, steps past the end raise IndexError; negative steps always do."""
    tr = _trace([0.0, 0.5], [100.0, 300.0])
    replay = TraceReplay(tr, 0.4, loop=False)
    assert len(replay) == 3
    assert replay.step(2)[1] == pytest.approx(300.0)  # partial last step holds the last sample
    with pytest.raises(IndexError):
        replay.step(3)
    with pytest.raises(IndexError):
        TraceReplay(tr, 0.4).step(-1)
    with pytest.raises(ValueError):
        TraceReplay(tr, 0.0)
