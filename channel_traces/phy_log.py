"""Reader for 5G uplink PHY logs: per-leg transport blocks, MCS, RBs and BLER every ~20 ms.

A non-standalone (EN-DC) phone sends on two legs, 5G NR and 4G LTE. The log has a time
column ``td``, then per leg ``5G_TBS, 4G_TBS, 5G_MCS, 4G_MCS, 5G_RB, 4G_RB, 5G_BLER,
4G_BLER``, and ``RSRP, RSRQ, CQI`` and the transmit power (kept as extras).

Capacity per row (documented in ``channel_traces/README.md``)::

    C = share x sum over legs of (1 - BLER) x TBS / TTI

``TBS`` is the transport block of one TTI (TS 38.214 section 5.1.3.2), ``1 - BLER`` the
fraction of blocks decoded, ``TTI`` the leg's slot (5G: 0.5 ms, 30 kHz SCS; 4G: 1 ms).
Where ``TBS`` is missing, it is computed from ``MCS`` and ``RB`` with TS 38.214 Table
5.1.3.1-1 and section 5.1.3.2 (:func:`channel_traces.link_tables.tbs_from_mcs`).
"""

from __future__ import annotations

import functools
import math
from collections import Counter
from dataclasses import dataclass, field
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
from channel_traces.link_tables import LTE_RE_PER_PRB, NR_RE_PER_PRB, tbs_from_mcs
from channel_traces.trace import Trace
from shared.errors import TraceError

#: Legs and the prefixes their columns use.
LEGS = {"5G": ("5g", "nr"), "4G": ("4g", "lte")}
FIELDS = ("tbs", "mcs", "rb", "bler")
TIME_COLUMNS = ("td", "time", "time_s", "time_ms", "timestamp")
SIDE_WORDS = ("rsrp", "rsrq", "cqi", "power")
TD_UNITS = ("auto", "s", "ms")


def is_phy_log_header(header: tuple[str, ...]) -> bool:
    """Whether lower-cased header cells look like the 5G uplink PHY log."""
    return "td" in header and any(cell.endswith("_tbs") for cell in header)


def _leg_columns(header: list[str]) -> dict[tuple[str, str], int]:
    """Column index of each (leg, field) present, e.g. ``("5G", "tbs")`` for ``5G_TBS``."""
    found = {}
    for leg, prefixes in LEGS.items():
        for name in FIELDS:
            names = (name, "prb") if name == "rb" else (name,)
            index = find_column(header, *(f"{p}_{n}" for p in prefixes for n in names))
            if index is not None:
                found[(leg, name)] = index
    return found


@dataclass
class _Rows:
    """The usable rows of a PHY log: times, leg fields (NaN when missing), side columns."""

    stamps: list[float] = field(default_factory=list)
    fields: list[list[float]] = field(default_factory=list)
    side: list[list[float]] = field(default_factory=list)
    left_out: int = 0
    skip_note: str = ""


def _parse_rows(path: Path, header: list[str], rows: list[tuple[int, list[str]]],
                time_col: int, columns: dict[tuple[str, str], int], side: list[int]) -> _Rows:
    """Parse every row; a few malformed ones are skipped (:class:`SkippedRows`)."""
    skipped = SkippedRows(path)
    out = _Rows()
    for lineno, cells in rows:
        try:
            if len(cells) != len(header):
                raise trace_error(path, f"line {lineno}", f"wrong number of fields "
                                  f"({len(cells)}, the header has {len(header)})",
                                  "repair or delete this truncated row")
            stamp = optional_float(path, lineno, header[time_col], cells[time_col])
            if stamp is None:
                raise trace_error(path, f"line {lineno}, field '{header[time_col]}'",
                                  "no time", "every row needs its td value")
            values = [optional_float(path, lineno, header[i], cells[i]) for i in columns.values()]
            for index, value in zip(columns.values(), values, strict=True):
                if value is not None and value < 0:
                    raise trace_error(path, f"line {lineno}, field '{header[index]}'",
                                      f"negative value {value:g}", "use 0 when the leg is idle")
        except TraceError as err:
            skipped.skip(lineno, err)
            continue
        if all(v is None for v in values):
            out.left_out += 1
            continue
        out.stamps.append(stamp)
        out.fields.append([math.nan if v is None else v for v in values])
        out.side.append([_side_value(cells[i]) for i in side])
    out.skip_note = skipped.finish(len(rows))
    return out


@functools.lru_cache(maxsize=4096)
def _tbs(mcs: int, n_prb: int, re_per_prb: int) -> int:
    return tbs_from_mcs(mcs, n_prb, re_per_prb)


def _times(raw: np.ndarray, td_unit: str) -> tuple[np.ndarray, str]:
    """Seconds from the ``td`` column: times or, when fewer than 90 % of its steps go up and
    every value is positive, per-row intervals; in ms when the typical step (or interval) is
    >= 1, else in s (``td_unit`` overrides the unit)."""
    steps = np.diff(raw)
    deltas = raw.size > 2 and np.mean(steps > 0) < 0.9 and np.all(raw > 0)
    typical = float(np.median(raw if deltas else steps[steps > 0])) if raw.size > 1 else 0.0
    unit = td_unit if td_unit != "auto" else ("ms" if typical >= 1.0 else "s")
    scale = 1e-3 if unit == "ms" else 1.0
    if deltas:
        return np.concatenate([[0.0], np.cumsum(raw[1:])]) * scale, f"td read as the interval " \
            f"since the previous row, in {unit}"
    return raw * scale, f"td read as the time in {unit}"


def read_phy_log(
    path: Path, nr_tti_ms: float = 0.5, lte_tti_ms: float = 1.0, tbs_unit: str = "bits",
    td_unit: str = "auto", share: float = 1.0,
) -> Trace:
    """Read a 5G uplink PHY log (``td``, per-leg TBS, MCS, RB, BLER, RSRP, RSRQ, CQI, power).

    Args:
        path: the text log (comma, tab, semicolon or space separated, one header line).
        nr_tti_ms: the 5G leg's TTI (slot) in ms: 1 at 15 kHz, 0.5 at 30 kHz (default),
            0.125 at 120 kHz. For TDD, divide by the uplink fraction of slots.
        lte_tti_ms: the 4G leg's TTI in ms (1).
        tbs_unit: ``"bits"`` (default) or ``"bytes"``.
        td_unit: ``"auto"`` (ms when the typical step is >= 1, else s), ``"s"`` or ``"ms"``.
        share: fraction of the uplink given to this room.
    """
    share = check_share(share)
    if td_unit not in TD_UNITS or tbs_unit not in ("bits", "bytes"):
        raise trace_error(path, "options", f"td_unit {td_unit!r}, tbs_unit {tbs_unit!r}",
                          f"use td_unit in {TD_UNITS} and tbs_unit 'bits' or 'bytes'")
    if not (nr_tti_ms > 0 and lte_tti_ms > 0):
        raise trace_error(path, "options", "a TTI is not positive", "pass TTIs in ms, e.g. 0.5")
    header, rows = read_table(path, read_text_lines(path))
    time_col = find_column(header, *TIME_COLUMNS)
    columns = _leg_columns(header)
    if time_col is None or not any(name == "tbs" for _, name in columns):
        raise trace_error(path, "line 1", f"header {header[:6]}... lacks td or <leg>_TBS",
                          "keep the log's header (td, 5G_TBS, 4G_TBS, 5G_MCS, ...)")
    side = [i for i, cell in enumerate(header) if any(w in cell.lower() for w in SIDE_WORDS)]
    parsed = _parse_rows(path, header, rows, time_col, columns, side)
    if not parsed.stamps:
        raise trace_error(path, "line 2", "no row with TBS, MCS, RB or BLER values",
                          "log while the phone sends on the uplink")
    times, td_note = _times(np.asarray(parsed.stamps), td_unit)
    data = {key: np.asarray(parsed.fields)[:, i] for i, key in enumerate(columns)}
    legs, leg_notes = {}, []
    for leg, tti_ms in (("5G", nr_tti_ms), ("4G", lte_tti_ms)):
        rate, note = _leg_rate(path, data, leg, tbs_unit, tti_ms)
        legs[leg] = rate * share
        leg_notes.append(note)
    repair = repair_times(times)
    held = (f"{parsed.left_out} rows without PHY values left out (the previous sample holds)"
            if parsed.left_out else "")
    notes = "; ".join(p for p in (
        "C = share x sum over legs (1 - BLER) x TBS / TTI (TBS per TTI, TS 38.214 5.1.3.2), "
        f"share = {share:g}", ", ".join(leg_notes), td_note, held, parsed.skip_note,
        repair.note()) if p)
    extras = {"nr_bps": repair.reduce(legs["5G"]), "lte_bps": repair.reduce(legs["4G"])}
    side_values = repair.reduce(np.asarray(parsed.side).reshape(len(parsed.stamps), len(side)))
    extras.update({header[i].lower(): side_values[:, k] for k, i in enumerate(side)})
    return Trace(repair.times - repair.times[0], repair.reduce(legs["5G"] + legs["4G"]),
                 "throughput", str(path), notes, extras=extras)


def _leg_rate(path: Path, data: dict[tuple[str, str], np.ndarray], leg: str, tbs_unit: str,
              tti_ms: float) -> tuple[np.ndarray, str]:
    """``(1 - BLER) x TBS / TTI`` of one leg per row, in bit/s, and its note."""
    bits, note = _leg_bits(data, leg, tbs_unit)
    bler = data.get((leg, "bler"), np.full(bits.size, np.nan))
    percent = bool(np.nanmax(bler, initial=0.0) > 1.0)
    bler = np.nan_to_num(bler / (100.0 if percent else 1.0), nan=0.0)
    if np.any(bler > 1):
        raise trace_error(path, f"column '{leg}_BLER'", "a BLER above 100 %",
                          "write BLER as a fraction (0..1) or a percentage (0..100)")
    rate = (1.0 - bler) * bits / (tti_ms * 1e-3)
    return rate, f"{leg}: TTI {tti_ms:g} ms{note}" + (", BLER in %" if percent else "")


def _side_value(text: str) -> float:
    """A side column's value, NaN when missing or not a number (it never rejects a row)."""
    try:
        value = float(text)
    except ValueError:
        return math.nan
    return value if math.isfinite(value) else math.nan


def _leg_bits(
    data: dict[tuple[str, str], np.ndarray], leg: str, tbs_unit: str
) -> tuple[np.ndarray, str]:
    """Bits per TTI of one leg: the TBS column, else TBS from MCS and RB, else 0 (idle)."""
    n = next(iter(data.values())).size
    tbs = data.get((leg, "tbs"), np.full(n, np.nan)) * (8.0 if tbs_unit == "bytes" else 1.0)
    mcs = data.get((leg, "mcs"), np.full(n, np.nan))
    rb = data.get((leg, "rb"), np.full(n, np.nan))
    re_per_prb = NR_RE_PER_PRB if leg == "5G" else LTE_RE_PER_PRB
    bits = np.nan_to_num(tbs, nan=0.0)
    derive = np.isnan(tbs) & ~np.isnan(mcs) & ~np.isnan(rb)
    reasons: Counter[str] = Counter()
    for i in np.flatnonzero(derive):
        if mcs[i] != int(mcs[i]) or mcs[i] > 28:
            reasons["MCS 29..31 (retransmission, no TBS)"] += 1
            continue
        bits[i] = _tbs(int(mcs[i]), int(rb[i]), re_per_prb)
        reasons["TBS from MCS and RB"] += 1
    if not reasons:
        return bits, ""
    approx = ", 4G approximated with the NR procedure" if leg == "4G" else ""
    detail = ", ".join(f"{n} rows {why}" for why, n in reasons.items())
    return bits, f" ({detail}: Table 5.1.3.1-1, {re_per_prb} REs/PRB{approx})"
