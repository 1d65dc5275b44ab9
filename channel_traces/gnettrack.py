"""Reader for G-NetTrack Pro CSV logs, the layout of the UCC 4G/5G production data sets.

Raca et al. (MMSys 2020) logged commercial 4G/5G links with G-NetTrack Pro: one row per
second with ``Timestamp`` (``YYYY.MM.DD_hh.mm.ss``), position and speed, ``Operatorname``,
``CellID``, ``NetworkMode`` (5G, LTE, HSPA+, UMTS...), ``RSRP``, ``RSRQ``, ``SNR``, ``CQI``,
``RSSI``, ``DL_bitrate`` and ``UL_bitrate`` (kbit/s, application level), ``State`` (``D``
downloading, ``I`` idle), ping and neighbour-cell columns. Cells without a value hold ``-``.

Three capacity derivations (``metric``), documented in ``channel_traces/README.md``:

* ``throughput`` (default): ``C = share x bitrate x 1000`` on rows whose ``State`` says the
  link was busy (``D``); an idle link's bitrate says nothing about its capacity;
* ``snr``: ``C = share x W log2(1 + SNR)`` with the bandwidth ``W`` the user states;
* ``cqi``: ``C = share x W x SE(CQI)``, ``SE`` from TS 36.213 Table 7.2.3-1 on LTE rows and
  TS 38.214 Table 5.2.2.1-2 on 5G rows (:mod:`channel_traces.link_tables`).
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path

import numpy as np

from channel_traces._parse import (
    SkippedRows,
    check_share,
    find_column,
    optional_float,
    read_table,
    read_text_lines,
    trace_error,
)
from channel_traces._timeline import repair_times
from channel_traces.link_tables import LTE_CQI_TABLE, NR_CQI_TABLE, cqi_efficiency
from channel_traces.trace import Trace
from shared.errors import TraceError

TIMESTAMP_FORMAT = "%Y.%m.%d_%H.%M.%S"
METRICS = ("throughput", "snr", "cqi")
BITRATE_COLUMNS = {"dl": "DL_bitrate", "ul": "UL_bitrate"}
#: ``NetworkMode`` values read with each CQI table (upper case); other modes (HSPA+, UMTS,
#: EDGE...) report no 4-bit CQI in these tables and are left out of ``metric="cqi"``.
CQI_TABLES = {
    **{mode: ("TS 36.213 Table 7.2.3-1", LTE_CQI_TABLE) for mode in ("LTE", "LTE+", "LTE-A", "4G")},
    **{mode: ("TS 38.214 Table 5.2.2.1-2", NR_CQI_TABLE)
       for mode in ("5G", "NR", "NR5G", "5G NSA", "5G SA", "NR_NSA", "NR_SA")},
}
_EPOCH = datetime(1970, 1, 1)


def is_gnettrack_header(header: tuple[str, ...]) -> bool:
    """Whether lower-cased header cells look like a G-NetTrack Pro CSV."""
    return ("timestamp" in header and "networkmode" in header
            and ("dl_bitrate" in header or "ul_bitrate" in header))


def _seconds(path: Path, lineno: int, text: str) -> float:
    try:
        return (datetime.strptime(text.strip(), TIMESTAMP_FORMAT) - _EPOCH).total_seconds()
    except ValueError:
        raise trace_error(path, f"line {lineno}, field 'Timestamp'",
                          f"{text!r} is not a YYYY.MM.DD_hh.mm.ss time",
                          "keep G-NetTrack's Timestamp column as written") from None


def _column(path: Path, header: list[str], name: str) -> int:
    index = find_column(header, name)
    if index is None:
        raise trace_error(path, "line 1", f"no column {name!r} in the header",
                          "keep G-NetTrack's header line, or pick another --metric")
    return index


def _float_or_nan(text: str) -> float:
    try:
        return float(text)
    except ValueError:
        return float("nan")


@dataclass(frozen=True)
class _Setup:
    """What one call reads: the metric, its column, the busy states, W, the columns."""

    metric: str
    value_name: str
    value: int
    time: int
    mode: int | None
    state: int | None
    wanted: frozenset[str] | None
    bandwidth_hz: float | None


def _row_capacity(path: Path, lineno: int, cells: list[str], setup: _Setup,
                  tables_used: set[str]) -> float | str:
    """Capacity of one row in bit/s (before ``share``), or why the row is left out.

    Raises:
        TraceError: a malformed value (the caller skips the row).
    """
    mode = cells[setup.mode].strip().upper() if setup.mode is not None else ""
    state = cells[setup.state].strip().upper() if setup.state is not None else ""
    if setup.metric == "throughput" and setup.wanted is not None and state not in setup.wanted:
        return f"State {state or '(empty)'} not in {sorted(setup.wanted)}"
    value = optional_float(path, lineno, setup.value_name, cells[setup.value])
    if value is None:
        return f"no {setup.value_name} value ('-')"
    if setup.metric == "throughput":
        if value < 0:
            raise trace_error(path, f"line {lineno}, field '{setup.value_name}'",
                              f"negative bitrate {value:g}", "use 0 for no traffic")
        return value * 1000.0
    assert setup.bandwidth_hz is not None
    if setup.metric == "snr":
        return setup.bandwidth_hz * float(np.log2(1.0 + 10.0 ** (value / 10.0)))
    if mode not in CQI_TABLES:
        return f"NetworkMode {mode or '(empty)'} has no CQI table"
    if value != int(value) or not 0 <= value <= 15:
        raise trace_error(path, f"line {lineno}, field 'CQI'", f"{value:g} is not a 4-bit CQI "
                          "(0..15)", "write the integer CQI report or '-'")
    table_name, table = CQI_TABLES[mode]
    tables_used.add(f"{mode}: {table_name}")
    return setup.bandwidth_hz * cqi_efficiency(int(value), table)


def _setup(path: Path, header: list[str], metric: str, direction: str, states: str,
           bandwidth_hz: float | None) -> _Setup:
    """Check the options against the header."""
    if metric not in METRICS:
        raise trace_error(path, "option 'metric'", f"{metric!r}", f"use one of {METRICS}")
    if direction not in BITRATE_COLUMNS:
        raise trace_error(path, "option 'direction'", f"{direction!r}", "use 'dl' or 'ul'")
    if metric != "throughput" and not (bandwidth_hz and bandwidth_hz > 0):
        raise trace_error(path, "option 'bandwidth_hz'",
                          f"metric {metric!r} needs the bandwidth W given to this room",
                          "pass --bandwidth-hz (for example 1000, as the native SNR traces)")
    value_name = {"throughput": BITRATE_COLUMNS[direction], "snr": "SNR", "cqi": "CQI"}[metric]
    wanted = None if states.strip().lower() == "all" else frozenset(
        s.strip().upper() for s in states.split(",") if s.strip())
    state = find_column(header, "State")
    if metric == "throughput" and wanted is not None and state is None:
        raise trace_error(path, "line 1", "no column 'State' to tell busy rows from idle ones",
                          "pass states=all to use every row")
    return _Setup(metric, value_name, _column(path, header, value_name),
                  _column(path, header, "Timestamp"), find_column(header, "NetworkMode"), state,
                  wanted, bandwidth_hz)


def read_gnettrack(
    path: Path, metric: str = "throughput", direction: str = "dl", states: str = "D",
    bandwidth_hz: float | None = None, share: float = 1.0,
) -> Trace:
    """Read a G-NetTrack Pro CSV (UCC 5G data set layout).

    Rows whose value is ``-`` (or whose ``State`` is not busy) are left out: the previous
    sample holds over them. Malformed rows (wrong field count, bad time, junk values, times
    going back) are skipped if few (:class:`~channel_traces._parse.SkippedRows`). Rows in the
    same second are merged (mean).

    Args:
        path: the CSV log.
        metric: ``"throughput"``, ``"snr"`` or ``"cqi"`` (see the module docstring).
        direction: ``"dl"`` (``DL_bitrate``, default) or ``"ul"`` (``UL_bitrate``) for the
            throughput metric. The UCC logs are downloads: their UL_bitrate is TCP ACKs.
        states: comma-separated ``State`` values whose rows measure the link (default
            ``"D"``), or ``"all"``; throughput metric only.
        bandwidth_hz: ``W`` for the snr and cqi metrics (required there).
        share: fraction of the link given to this room.
    """
    share = check_share(share)
    header, rows = read_table(path, read_text_lines(path))
    setup = _setup(path, header, metric, direction, states, bandwidth_hz)
    side = [find_column(header, name) for name in ("CellID", "RSRP", "SNR", "CQI")]
    skipped = SkippedRows(path)
    left_out: Counter[str] = Counter()
    tables_used: set[str] = set()
    times: list[float] = []
    values: list[float] = []
    labels: list[tuple[str, str]] = []
    numbers: list[list[float]] = []
    for lineno, cells in rows:
        try:
            if len(cells) != len(header):
                raise trace_error(path, f"line {lineno}", f"wrong number of fields "
                                  f"({len(cells)}, the header has {len(header)})",
                                  "repair or delete this truncated row")
            t = _seconds(path, lineno, cells[setup.time])
            if times and t < times[-1]:
                raise trace_error(path, f"line {lineno}, field 'Timestamp'",
                                  f"{cells[setup.time]} goes back in time",
                                  "sort the rows by Timestamp")
            cap = _row_capacity(path, lineno, cells, setup, tables_used)
        except TraceError as err:
            skipped.skip(lineno, err)
            continue
        if isinstance(cap, str):
            left_out[cap] += 1
            continue
        times.append(t)
        values.append(cap * share)
        labels.append(tuple(cells[i].strip() if i is not None else ""
                            for i in (setup.mode, side[0])))
        numbers.append([_float_or_nan(cells[i]) if i is not None else np.nan for i in side[1:]])
    skip_note = skipped.finish(len(rows))
    if not times:
        why = ", ".join(f"{n} {reason}" for reason, n in left_out.items()) or "no rows"
        raise trace_error(path, "line 2", f"no row has a usable {setup.value_name} value ({why})",
                          "check --metric / --option states=..., or log while the link is busy")
    repair = repair_times(np.asarray(times))
    if metric == "throughput":
        busy = sorted(setup.wanted) if setup.wanted else "any"
        derivation = f"C = share x {setup.value_name} (kbit/s) x 1000 on rows with State in {busy}"
    elif metric == "snr":
        derivation = f"C = share x W log2(1+SNR), W = {bandwidth_hz:g} Hz, SNR column in dB"
    else:
        derivation = (f"C = share x W x SE(CQI), W = {bandwidth_hz:g} Hz, SE = Qm x R/1024 from "
                      + (", ".join(sorted(tables_used)) or "no table"))
    start = (_EPOCH + timedelta(seconds=float(repair.times[0]))).strftime(TIMESTAMP_FORMAT)
    parts = [f"{derivation}, share = {share:g}", f"{len(rows)} rows, {len(times)} used",
             *[f"{n} rows left out ({why}; the previous sample holds)"
               for why, n in left_out.items()],
             skip_note, repair.note("seconds"), f"time 0 is Timestamp {start}"]
    label = np.asarray(labels)
    side_values = repair.reduce(np.asarray(numbers))
    extras = {"network_mode": repair.first(label[:, 0]), "cell_id": repair.first(label[:, 1]),
              "rsrp_dbm": side_values[:, 0], "snr_db": side_values[:, 1], "cqi": side_values[:, 2]}
    return Trace(repair.times - repair.times[0], repair.reduce(np.asarray(values)),
                 "throughput" if metric == "throughput" else "snr", str(path),
                 "; ".join(p for p in parts if p), extras=extras)
