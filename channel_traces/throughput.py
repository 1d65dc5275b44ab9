"""Readers for measured throughput traces: Mahimahi and Pensieve/FCC "cooked" (5Gophers is in
:mod:`channel_traces.fivegophers`, G-NetTrack in :mod:`channel_traces.gnettrack`).

All give ``kind="throughput"`` and ``C = share x throughput`` (DESIGN.md section 3); the
measured links carry Mbit/s, far more than one room's speech budget, so ``share`` (the
fraction of the link given to this room) scales them down. ``channel_traces/README.md``
explains how to choose it. A few malformed lines are skipped with a :class:`TraceWarning`
(:class:`~channel_traces._parse.SkippedRows`); more are an error naming the first.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from channel_traces._parse import (
    SkippedRows,
    check_share,
    numbered_rows,
    parse_float,
    read_text_lines,
    trace_error,
)
from channel_traces.trace import Trace
from shared.errors import TraceError
from shared.rate import capacity_from_throughput

#: Mahimahi: every line is one delivery opportunity for one MTU-sized packet.
MAHIMAHI_PACKET_BYTES = 1500


def read_mahimahi(path: Path, window_s: float = 1.0, share: float = 1.0) -> Trace:
    """Read a Mahimahi link trace (one integer millisecond timestamp per line).

    Each line is an opportunity to deliver one 1500-byte packet; the trace repeats with a
    period equal to its last timestamp, so an opportunity at time ``t`` counts at
    ``t mod period``. Capacity per window: ``share x packets x 1500 x 8 / window``.

    Args:
        path: the trace file.
        window_s: binning window in seconds (one trace sample per window).
        share: fraction of the link given to this room.
    """
    share = check_share(share)
    if not window_s > 0:
        raise trace_error(path, "option 'window_s'", f"{window_s!r}", "pass a window > 0 s")
    lines = read_text_lines(path)
    stamps: list[int] = []
    linenos: list[int] = []
    skipped = SkippedRows(path)
    for lineno, line in numbered_rows(lines):
        try:
            if not line.isdigit():
                raise trace_error(
                    path, f"line {lineno}, field 'timestamp_ms'", f"{line!r} is not an integer",
                    "write one non-negative integer millisecond timestamp per line")
            if stamps and int(line) < stamps[-1]:
                raise trace_error(path, f"line {lineno}, field 'timestamp_ms'",
                                  f"{int(line)} ms goes back in time (previous {stamps[-1]} ms)",
                                  "sort the timestamps in non-decreasing order")
        except TraceError as err:
            skipped.skip(lineno, err)
            continue
        stamps.append(int(line))
        linenos.append(lineno)
    skip_note = skipped.finish(len(stamps) + len(skipped))
    if not stamps:
        raise trace_error(path, "line 1", "the file has no timestamps", "add delivery times")
    ms = np.asarray(stamps, dtype=np.int64)
    period_ms = int(ms[-1])
    if period_ms <= 0:
        raise trace_error(path, f"line {linenos[-1]}", "the trace spans 0 ms",
                          "a Mahimahi trace must end at a timestamp > 0 (its loop period)")
    end_s = period_ms / 1000.0
    n_windows = int(np.ceil(end_s / window_s - 1e-9))
    starts = np.arange(n_windows) * window_s
    lengths = np.minimum(starts + window_s, end_s) - starts
    index = ((ms % period_ms) / 1000.0 // window_s).astype(np.int64)
    counts = np.bincount(np.minimum(index, n_windows - 1), minlength=n_windows)
    mbps = counts * MAHIMAHI_PACKET_BYTES * 8 / lengths / 1e6
    cap = np.asarray(capacity_from_throughput(mbps, share), dtype=np.float64).reshape(-1)
    notes = (f"C = share x packets x {MAHIMAHI_PACKET_BYTES} B x 8 / window, "
             f"window = {window_s:g} s, share = {share:g}, {ms.size} delivery opportunities, "
             f"period {period_ms} ms" + (f"; {skip_note}" if skip_note else ""))
    return Trace(starts, cap, "throughput", str(path), notes, end_s=end_s)


def read_cooked(path: Path, share: float = 1.0) -> Trace:
    """Read a Pensieve "cooked" trace: two whitespace-separated columns ``time_s Mbit/s``.

    Used by the Norway HSDPA and FCC Measuring Broadband America traces.

    Args:
        path: the trace file.
        share: fraction of the link given to this room.
    """
    share = check_share(share)
    lines = read_text_lines(path)
    times: list[float] = []
    mbps: list[float] = []
    skipped = SkippedRows(path)
    for lineno, line in numbered_rows(lines):
        cells = line.split()
        try:
            if len(cells) != 2:
                raise trace_error(path, f"line {lineno}", f"{len(cells)} fields, expected 2",
                                  "write 'time_s throughput_mbps' separated by whitespace")
            t = parse_float(path, lineno, "time_s", cells[0])
            rate = parse_float(path, lineno, "throughput_mbps", cells[1])
            if times and t <= times[-1]:
                raise trace_error(path, f"line {lineno}, field 'time_s'",
                                  f"time {t:g} does not increase (previous sample {times[-1]:g})",
                                  "sort the rows by time and drop duplicated timestamps")
            if rate < 0:
                raise trace_error(path, f"line {lineno}, field 'throughput_mbps'",
                                  f"negative value {rate:g}", "a capacity or throughput cannot "
                                  "be negative: use 0 for an outage")
        except TraceError as err:
            skipped.skip(lineno, err, None if len(cells) == 2 else "wrong number of fields")
            continue
        times.append(t)
        mbps.append(rate)
    skip_note = skipped.finish(len(times) + len(skipped))
    if not times:
        raise trace_error(path, "line 1", "the file has no data rows", "add at least one sample")
    t = np.asarray(times, dtype=np.float64)
    rate = np.asarray(mbps, dtype=np.float64)
    cap = np.asarray(capacity_from_throughput(rate, share), dtype=np.float64).reshape(-1)
    shift = f"; times shifted by -{t[0]:g} s" if t[0] != 0 else ""
    skip = f"; {skip_note}" if skip_note else ""
    notes = f"C = share x throughput (Mbit/s column 2), share = {share:g}{shift}{skip}"
    return Trace(t - t[0], cap, "throughput", str(path), notes,
                 extras={"throughput_mbps": rate})
