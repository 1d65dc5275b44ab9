"""Readers for measured throughput traces: Mahimahi, Pensieve/FCC "cooked" and 5Gophers.

All give ``kind="throughput"`` and ``C = share x throughput`` (DESIGN.md section 3); the
measured links carry Mbit/s, far more than one room's speech budget, so ``share`` (the
fraction of the link given to this room) scales them down. ``channel_traces/README.md``
explains how to choose it.
"""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np

from channel_traces._parse import (
    check_increasing,
    check_nonnegative,
    check_share,
    numbered_rows,
    parse_float,
    read_text_lines,
    trace_error,
)
from channel_traces.trace import Trace
from shared.rate import capacity_from_throughput

#: Mahimahi: every line is one delivery opportunity for one MTU-sized packet.
MAHIMAHI_PACKET_BYTES = 1500
#: 5Gophers: one throughput sample per second (``seq_num`` counts seconds).
FIVEGOPHERS_SAMPLE_S = 1.0


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
    for lineno, line in numbered_rows(lines):
        if not line.isdigit():
            raise trace_error(
                path, f"line {lineno}, field 'timestamp_ms'", f"{line!r} is not an integer",
                "write one non-negative integer millisecond timestamp per line",
            )
        stamps.append(int(line))
        linenos.append(lineno)
    ms = np.asarray(stamps, dtype=np.int64)
    back = np.flatnonzero(np.diff(ms) < 0)
    if back.size:
        i = int(back[0]) + 1
        raise trace_error(path, f"line {linenos[i]}, field 'timestamp_ms'",
                          f"{ms[i]} ms goes back in time (previous {ms[i - 1]} ms)",
                          "sort the timestamps in non-decreasing order")
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
             f"period {period_ms} ms")
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
    linenos: list[int] = []
    for lineno, line in numbered_rows(lines):
        cells = line.split()
        if len(cells) != 2:
            raise trace_error(path, f"line {lineno}", f"{len(cells)} fields, expected 2",
                              "write 'time_s throughput_mbps' separated by whitespace")
        times.append(parse_float(path, lineno, "time_s", cells[0]))
        mbps.append(parse_float(path, lineno, "throughput_mbps", cells[1]))
        linenos.append(lineno)
    t = np.asarray(times, dtype=np.float64)
    rate = np.asarray(mbps, dtype=np.float64)
    check_increasing(path, t, linenos, "time_s")
    check_nonnegative(path, rate, linenos, "throughput_mbps")
    cap = np.asarray(capacity_from_throughput(rate, share), dtype=np.float64).reshape(-1)
    shift = f"; times shifted by -{t[0]:g} s" if t[0] != 0 else ""
    notes = f"C = share x throughput (Mbit/s column 2), share = {share:g}{shift}"
    return Trace(t - t[0], cap, "throughput", str(path), notes,
                 extras={"throughput_mbps": rate})


def read_5gophers(path: Path, column: str | None = None, share: float = 1.0) -> Trace:
    """Read a 5Gophers throughput CSV (one row per second, ``seq_num`` counts seconds).

    Two layouts exist: single-carrier files with ``throughput_mbps``, ``radio_type`` (4G/5G),
    ``primitive_handoff_type`` and ``anonymized_mCid`` columns, and multi-carrier files with
    one ``<Carrier>_throughput_mbps`` column each. Radio type, handoff and cell id are kept
    as ``extras`` and summarised in ``notes``.

    Args:
        path: the CSV file.
        column: the throughput column (or carrier prefix, e.g. ``"Verizon"``); default the
            first ``*throughput_mbps`` column.
        share: fraction of the link given to this room.
    """
    share = check_share(share)
    lines = read_text_lines(path)
    reader = csv.DictReader(lines)
    fields = [f.strip() for f in (reader.fieldnames or [])]
    thr_cols = [f for f in fields if f.lower().endswith("throughput_mbps")]
    if "seq_num" not in fields or not thr_cols:
        raise trace_error(path, "line 1", f"header {fields} lacks seq_num/*throughput_mbps",
                          "use a 5Gophers throughput CSV or pass the right --format")
    if column is None:
        chosen = thr_cols[0]
    else:
        matches = [f for f in thr_cols if f == column or f.split("_")[0] == column]
        if not matches:
            raise trace_error(path, "line 1", f"no throughput column {column!r}",
                              f"pass column= one of {thr_cols}")
        chosen = matches[0]
    seq: list[float] = []
    mbps: list[float] = []
    radio: list[str] = []
    handoff: list[str] = []
    cell: list[str] = []
    linenos: list[int] = []
    for row in reader:
        lineno = reader.line_num
        if None in row or any(row.get(f) is None for f in ("seq_num", chosen)):
            raise trace_error(path, f"line {lineno}", "wrong number of fields",
                              f"every row needs the {len(fields)} header fields")
        seq.append(parse_float(path, lineno, "seq_num", row["seq_num"]))
        mbps.append(parse_float(path, lineno, chosen, row[chosen]))
        radio.append((row.get("radio_type") or "").strip())
        handoff.append((row.get("primitive_handoff_type") or "").strip())
        cell.append((row.get("anonymized_mCid") or "").strip())
        linenos.append(lineno)
    t = np.asarray(seq, dtype=np.float64) * FIVEGOPHERS_SAMPLE_S
    rate = np.asarray(mbps, dtype=np.float64)
    check_increasing(path, t, linenos, "seq_num")
    check_nonnegative(path, rate, linenos, chosen)
    cap = np.asarray(capacity_from_throughput(rate, share), dtype=np.float64).reshape(-1)
    extras: dict[str, np.ndarray] = {"throughput_mbps": rate}
    notes = f"C = share x throughput (Mbit/s column {chosen!r}), share = {share:g}"
    others = [c for c in thr_cols if c != chosen]
    if others:
        notes += f"; other carriers in file: {', '.join(others)}"
    if "radio_type" in fields:
        extras["radio_type"] = np.asarray(radio)
        extras["handoff"] = np.asarray([h != "" for h in handoff])
        extras["handoff_type"] = np.asarray(handoff)
        counts = {r: radio.count(r) for r in sorted(set(radio))}
        notes += (f"; radio types {counts}; {int(extras['handoff'].sum())} handoffs "
                  f"({', '.join(sorted(set(handoff) - {''}))})")
    if "anonymized_mCid" in fields:
        extras["cell_id"] = np.asarray(cell)
    gaps = int(np.sum(np.diff(t) > FIVEGOPHERS_SAMPLE_S))
    if gaps:
        notes += f"; {gaps} gaps in seq_num (the previous sample holds)"
    if t[0] != 0:
        notes += f"; seq_num shifted by -{seq[0]:g} to start at 0 s"
    return Trace(t - t[0], cap, "throughput", str(path), notes, extras=extras)
