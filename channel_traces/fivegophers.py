"""Reader for 5Gophers throughput CSVs (Narayanan et al., WWW 2020), one run or many.

``seq_num`` counts seconds; the value is ``throughput_mbps`` (single carrier, with
``radio_type``, ``primitive_handoff_type``, ``anonymized_mCid``) or one
``<Carrier>_throughput_mbps`` column per carrier. Files of the data set's throughput folder
hold **many runs** one after another, keyed by columns such as ``protocol``, ``carrier``,
``num_tcp_conn``, ``server`` and a run number: a run starts where a key changes or where
``seq_num`` restarts. ``run=`` (or ``load_trace("FILE#<run>")``) selects one.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from channel_traces._parse import (
    SkippedRows,
    TraceWarning,
    check_share,
    find_column,
    parse_float,
    read_table,
    read_text_lines,
    trace_error,
)
from channel_traces.trace import Trace
from shared.errors import TraceError
from shared.rate import capacity_from_throughput

#: 5Gophers: one throughput sample per second (``seq_num`` counts seconds).
FIVEGOPHERS_SAMPLE_S = 1.0
#: Columns that key a run (lower case), in the order they are shown.
RUN_KEYS = ("protocol", "carrier", "operator", "num_tcp_conn", "num_conn", "connections",
            "server", "server_location", "run", "run_num", "run_number", "run_id", "trial")
#: Runs listed in a message before "... and N more".
LISTED_RUNS = 20


def is_5gophers_header(header: tuple[str, ...]) -> bool:
    """Whether lower-cased header cells look like a 5Gophers throughput CSV."""
    return "seq_num" in header and any(h.endswith("throughput_mbps") for h in header)


@dataclass
class _Run:
    key: tuple[str, ...]
    first_line: int
    first_seq: float
    rows: list[tuple[int, list[str], float, float]] = field(default_factory=list)


def _label(run: _Run, index: int, names: list[str], varying: list[int]) -> str:
    parts = ",".join(f"{names[i]}={run.key[i]}" for i in varying)
    return f"#{index} ({parts})" if parts else f"#{index}"


def _listing(runs: list[_Run], names: list[str], varying: list[int]) -> str:
    shown = [f"{_label(r, i + 1, names, varying)} from line {r.first_line}, {len(r.rows)} s"
             for i, r in enumerate(runs[:LISTED_RUNS])]
    more = f" ... and {len(runs) - LISTED_RUNS} more" if len(runs) > LISTED_RUNS else ""
    return "; ".join(shown) + more


def _select(path: Path, runs: list[_Run], names: list[str], varying: list[int],
            run: str | int) -> int:
    """Index of the run that ``run`` names: ``N``/``#N`` (1-based) or ``key=value,...``."""
    text = str(run).strip().lstrip("#")
    if text.isdigit():
        matches = [int(text) - 1] if 1 <= int(text) <= len(runs) else []
    else:
        wanted: dict[int, str] = {}
        for pair in text.split(","):
            name, _, value = pair.partition("=")
            lowered = [n.lower() for n in names]
            if name.strip().lower() not in lowered or not value:
                raise trace_error(path, f"option 'run' {run!r}", f"{pair!r} is not key=value "
                                  f"with a key in {names}", "pass run=N or run=key=value,...")
            wanted[lowered.index(name.strip().lower())] = value.strip().lower()
        matches = [i for i, r in enumerate(runs)
                   if all(r.key[k].lower() == v for k, v in wanted.items())]
    if len(matches) != 1:
        raise trace_error(path, f"option 'run' {run!r}",
                          f"matches {len(matches)} of the file's {len(runs)} runs",
                          f"pass run= (or FILE#<run>) naming one of: "
                          f"{_listing(runs, names, varying)}")
    return matches[0]


def _split_runs(path: Path, rows: list[tuple[int, list[str]]], n_fields: int, seq_col: int,
                value_col: int, value_name: str, key_cols: list[int]) -> tuple[list[_Run], str]:
    """Group rows into runs; skip malformed rows (a few) or fail (many)."""
    skipped = SkippedRows(path)
    runs: list[_Run] = []
    for lineno, cells in rows:
        try:
            if len(cells) != n_fields:
                raise trace_error(path, f"line {lineno}", "wrong number of fields",
                                  f"every row needs the {n_fields} header fields")
            seq = parse_float(path, lineno, "seq_num", cells[seq_col])
            value = parse_float(path, lineno, value_name, cells[value_col])
            if value < 0:
                raise trace_error(path, f"line {lineno}, field '{value_name}'",
                                  f"negative value {value:g}",
                                  "a throughput cannot be negative: use 0 for an outage")
            key = tuple(cells[i] for i in key_cols)
            current = runs[-1] if runs else None
            last = current.rows[-1][2] if current else None
            restart = current is not None and seq < last and seq <= current.first_seq
            if current is None or key != current.key or restart:
                runs.append(_Run(key, lineno, seq))
            elif seq <= last:
                raise trace_error(path, f"line {lineno}, field 'seq_num'",
                                  f"time {seq:g} does not increase (previous sample {last:g})",
                                  "sort the rows by seq_num and drop duplicated ones")
            runs[-1].rows.append((lineno, cells, seq, value))
        except TraceError as err:
            skipped.skip(lineno, err)
    note = skipped.finish(len(rows))
    if not runs:
        raise trace_error(path, "line 1", "the file has no data rows", "add at least one sample")
    return runs, note


def read_5gophers(
    path: Path, column: str | None = None, run: str | int | None = None, share: float = 1.0
) -> Trace:
    """Read a 5Gophers throughput CSV: ``C = share x Mbit/s x 1e6`` for one run.

    Args:
        path: the CSV file.
        column: the throughput column (or carrier prefix, e.g. ``"Verizon"``); default the
            first ``*throughput_mbps`` column.
        run: the run to read when the file holds several: ``N`` or ``"#N"`` (1-based, file
            order) or ``"key=value,..."`` over the key columns (``carrier=Verizon,run_num=3``).
            Default: the first run, with a :class:`TraceWarning` listing the others.
        share: fraction of the link given to this room.
    """
    share = check_share(share)
    header, rows = read_table(path, read_text_lines(path))
    thr_cols = [h for h in header if h.lower().endswith("throughput_mbps")]
    seq_col = find_column(header, "seq_num")
    if seq_col is None or not thr_cols:
        raise trace_error(path, "line 1", f"header {header} lacks seq_num/*throughput_mbps",
                          "use a 5Gophers throughput CSV or pass the right --format")
    matches = [h for h in thr_cols if column is None or h == column or h.split("_")[0] == column]
    if not matches:
        raise trace_error(path, "line 1", f"no throughput column {column!r}",
                          f"pass column= one of {thr_cols}")
    chosen = matches[0]
    key_cols = [i for i, h in enumerate(header) if h.lower() in RUN_KEYS]
    names = [header[i] for i in key_cols]
    runs, skip_note = _split_runs(path, rows, len(header), seq_col, header.index(chosen),
                                  chosen, key_cols)
    varying = [k for k in range(len(key_cols)) if len({r.key[k] for r in runs}) > 1]
    if run is not None:
        index = _select(path, runs, names, varying, run)
    else:
        index = 0
        if len(runs) > 1:
            warnings.warn(TraceWarning(
                f"{path}: holds {len(runs)} runs, reading {_label(runs[0], 1, names, varying)}; "
                f"select another with run= or FILE#<run>: {_listing(runs, names, varying)}"),
                stacklevel=2)
    picked = runs[index]
    return _trace(path, picked, header, chosen, thr_cols, share,
                  [skip_note, f"run {_label(picked, index + 1, names, varying)} of {len(runs)}, "
                   f"lines {picked.first_line}-{picked.rows[-1][0]}" if len(runs) > 1 else ""])


def _trace(path: Path, picked: _Run, header: list[str], chosen: str, thr_cols: list[str],
           share: float, more_notes: list[str]) -> Trace:
    """The trace of one run, with radio type, handoffs and cell ids as extras."""
    def column(name: str) -> list[str]:
        index = find_column(header, name)
        return [cells[index] if index is not None else "" for _, cells, _, _ in picked.rows]

    seq = np.asarray([r[2] for r in picked.rows])
    rate = np.asarray([r[3] for r in picked.rows])
    t = seq * FIVEGOPHERS_SAMPLE_S
    cap = np.asarray(capacity_from_throughput(rate, share), dtype=np.float64).reshape(-1)
    extras: dict[str, np.ndarray] = {"throughput_mbps": rate}
    notes = f"C = share x throughput (Mbit/s column {chosen!r}), share = {share:g}"
    others = [c for c in thr_cols if c != chosen]
    if others:
        notes += f"; other carriers in file: {', '.join(others)}"
    if find_column(header, "radio_type") is not None:
        radio, handoff = column("radio_type"), column("primitive_handoff_type")
        extras["radio_type"] = np.asarray(radio)
        extras["handoff"] = np.asarray([h != "" for h in handoff])
        extras["handoff_type"] = np.asarray(handoff)
        counts = {r: radio.count(r) for r in sorted(set(radio))}
        notes += (f"; radio types {counts}; {int(extras['handoff'].sum())} handoffs "
                  f"({', '.join(sorted(set(handoff) - {''}))})")
    if find_column(header, "anonymized_mCid") is not None:
        extras["cell_id"] = np.asarray(column("anonymized_mCid"))
    gaps = int(np.sum(np.diff(t) > FIVEGOPHERS_SAMPLE_S))
    if gaps:
        notes += f"; {gaps} gaps in seq_num (the previous sample holds)"
    if t[0] != 0:
        notes += f"; seq_num shifted by -{seq[0]:g} to start at 0 s"
    notes += "".join(f"; {n}" for n in more_notes if n)
    return Trace(t - t[0], cap, "throughput", str(path), notes, extras=extras)
