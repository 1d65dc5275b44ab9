"""The project's native trace formats: SNR CSV, capacity CSV and per-subcarrier CSI ``.npz``.

See ``channel_traces/README.md`` for the formats with examples. Capacity is derived with the
formulas of :mod:`shared.rate` (DESIGN.md section 3) and the formula used is kept in
``Trace.notes``.
"""

from __future__ import annotations

import zipfile
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from channel_traces._parse import (
    check_increasing,
    check_nonnegative,
    check_share,
    numbered_rows,
    parse_float,
    parse_header_comments,
    read_text_lines,
    trace_error,
)
from channel_traces.trace import Trace
from shared.rate import capacity_from_csi, capacity_from_snr, db_to_linear

SNR_HEADER = ("time_s", "snr_db")
CAPACITY_HEADER = ("time_s", "capacity_bps")
CSI_KEYS = ("times", "h", "snr_db", "subcarrier_spacing_hz")


def _read_two_columns(
    path: Path, header: tuple[str, str]
) -> tuple[np.ndarray, np.ndarray, list[int], dict[str, str]]:
    """Read a ``time_s,<value>`` CSV with ``#`` comments: (times, values, line numbers, meta)."""
    lines = read_text_lines(path)
    rows = numbered_rows(lines)
    lineno, first = next(rows, (1, ""))
    found = tuple(cell.strip().lower() for cell in first.split(","))
    if found != header:
        raise trace_error(
            path, f"line {lineno}", f"header {first!r} is not {','.join(header)!r}",
            f"start the data with the header line '{','.join(header)}'",
        )
    times: list[float] = []
    values: list[float] = []
    linenos: list[int] = []
    for lineno, line in rows:
        cells = line.split(",")
        if len(cells) != 2:
            raise trace_error(
                path, f"line {lineno}", f"{len(cells)} fields, expected 2",
                f"write exactly '{header[0]},{header[1]}' values per row",
            )
        times.append(parse_float(path, lineno, header[0], cells[0].strip()))
        values.append(parse_float(path, lineno, header[1], cells[1].strip()))
        linenos.append(lineno)
    t = np.asarray(times, dtype=np.float64)
    check_increasing(path, t, linenos, header[0])
    return t, np.asarray(values, dtype=np.float64), linenos, parse_header_comments(lines)


def _shift_note(times: np.ndarray) -> tuple[np.ndarray, str]:
    """Shift times to start at 0; return the note to append when they did not."""
    if times[0] == 0.0:
        return times, ""
    return times - times[0], f"; times shifted by -{times[0]:g} s to start at 0"


def _meta_note(meta: dict[str, str], skip: Sequence[str]) -> str:
    extra = [f"{k}: {v}" for k, v in meta.items() if k not in skip]
    return ("; " + "; ".join(extra)) if extra else ""


def read_snr_csv(path: Path, bandwidth_hz: float | None = None) -> Trace:
    """Read ``time_s,snr_db`` rows; capacity ``C = W log2(1 + SNR)``.

    Args:
        path: the CSV file; a ``# bandwidth_hz: <W>`` comment gives W.
        bandwidth_hz: W in Hz, overriding the file's comment.
    """
    times, snr_db, _, meta = _read_two_columns(path, SNR_HEADER)
    if bandwidth_hz is None:
        if "bandwidth_hz" not in meta:
            raise trace_error(
                path, "header", "no bandwidth given",
                "add a comment line '# bandwidth_hz: 1000' or pass bandwidth_hz",
            )
        try:
            bandwidth_hz = float(meta["bandwidth_hz"])
        except ValueError:
            raise trace_error(path, "header comment 'bandwidth_hz'",
                              f"{meta['bandwidth_hz']!r} is not a number",
                              "write the bandwidth in Hz, e.g. '# bandwidth_hz: 1000'") from None
    if not (bandwidth_hz > 0 and np.isfinite(bandwidth_hz)):
        raise trace_error(path, "header comment 'bandwidth_hz'", f"W = {bandwidth_hz!r} Hz",
                          "give the uplink bandwidth as a positive number of Hz")
    times, shift = _shift_note(times)
    cap = np.asarray(capacity_from_snr(snr_db, bandwidth_hz), dtype=np.float64).reshape(-1)
    notes = f"C = W log2(1+SNR), W = {bandwidth_hz:g} Hz" + shift + _meta_note(
        meta, ("bandwidth_hz",))
    return Trace(times, cap, "snr", str(path), notes, extras={"snr_db": snr_db})


def read_capacity_csv(path: Path) -> Trace:
    """Read ``time_s,capacity_bps`` rows: the capacity is the file's value, in bit/s."""
    times, cap, linenos, meta = _read_two_columns(path, CAPACITY_HEADER)
    check_nonnegative(path, cap, linenos, CAPACITY_HEADER[1])
    times, shift = _shift_note(times)
    notes = "C read from the capacity_bps column" + shift + _meta_note(meta, ())
    return Trace(times, cap, "capacity", str(path), notes)


def _npz_array(path: Path, data: np.lib.npyio.NpzFile, key: str) -> np.ndarray:
    if key not in data.files:
        raise trace_error(
            path, f"array '{key}'", f"missing (found {sorted(data.files)})",
            f"save the arrays {', '.join(CSI_KEYS)} with numpy.savez",
        )
    try:
        return np.asarray(data[key])
    except ValueError as err:
        raise trace_error(path, f"array '{key}'", f"unreadable ({err})",
                          "save plain numeric arrays (allow_pickle is off)") from None


def _first_bad(path: Path, key: str, mask: np.ndarray, problem: str, fix: str) -> None:
    if np.any(mask):
        index = np.unravel_index(int(np.flatnonzero(mask)[0]), mask.shape)
        raise trace_error(path, f"array '{key}', index {tuple(int(i) for i in index)}",
                          problem, fix)


def read_csi_npz(path: Path, share: float = 1.0) -> Trace:
    """Read per-subcarrier CSI; capacity ``C = sum_k df log2(1 + |H_k|^2 SNR)`` per sample.

    The ``.npz`` holds ``times [N]`` (s), ``h [N, K]`` complex gains, ``snr_db`` (scalar or
    ``[N]``, the transmit SNR for a unit-gain channel) and ``subcarrier_spacing_hz`` (df).

    Args:
        path: the ``.npz`` file.
        share: fraction of the link's capacity given to this room.
    """
    share = check_share(share)
    if not path.is_file():
        raise trace_error(path, "file", "no such file", "check the path")
    try:
        with np.load(path, allow_pickle=False) as data:
            times, h, snr_db, spacing = (_npz_array(path, data, k) for k in CSI_KEYS)
    except (zipfile.BadZipFile, OSError, EOFError, ValueError) as err:
        raise trace_error(path, "file", f"not a readable .npz ({err})",
                          "write the file with numpy.savez(times=..., h=..., ...)") from None
    if not all(np.issubdtype(a.dtype, np.number) for a in (times, h, snr_db, spacing)):
        raise trace_error(path, "arrays", "non-numeric values",
                          f"store {', '.join(CSI_KEYS)} as numeric arrays")
    times = times.astype(np.float64)
    if times.ndim != 1 or times.size == 0:
        raise trace_error(path, "array 'times'", f"shape {times.shape}, need [N] with N >= 1",
                          "store one time per CSI snapshot")
    n = times.size
    if h.ndim != 2 or h.shape[0] != n or h.shape[1] == 0:
        raise trace_error(path, "array 'h'", f"shape {h.shape}, need [{n}, K]",
                          "store one row of K subcarrier gains per time")
    _first_bad(path, "times", ~np.isfinite(times), "NaN or infinite time", "drop that snapshot")
    _first_bad(path, "h", ~np.isfinite(h), "NaN or infinite gain", "drop or re-measure it")
    bad = np.flatnonzero(np.diff(times) <= 0)
    if bad.size:
        raise trace_error(path, f"array 'times', index {int(bad[0]) + 1}",
                          "time does not increase", "sort snapshots by time, drop duplicates")
    if np.ndim(snr_db) > 1 or np.size(snr_db) not in (1, n):
        raise trace_error(path, "array 'snr_db'", f"shape {np.shape(snr_db)}, need () or [{n}]",
                          "store one SNR in dB, or one per snapshot")
    snr = np.resize(snr_db.astype(np.float64).reshape(-1), n)
    _first_bad(path, "snr_db", ~np.isfinite(snr), "NaN or infinite SNR", "give a finite dB value")
    flat_spacing = spacing.astype(np.float64).reshape(-1)
    if flat_spacing.size != 1 or not flat_spacing[0] > 0:
        raise trace_error(path, "array 'subcarrier_spacing_hz'", f"value {spacing!r}",
                          "store one positive spacing in Hz (312500 for 20 MHz Wi-Fi)")
    df = float(flat_spacing[0])
    # |H_k|^2 SNR_n == |H_k sqrt(SNR_n)|^2: fold the per-snapshot SNR into the gains.
    gains = h.astype(np.complex128) * np.sqrt(db_to_linear(snr))[:, None]
    cap = np.asarray(capacity_from_csi(gains, 0.0, df), dtype=np.float64).reshape(-1) * share
    times, shift = _shift_note(times)
    snr_text = f"{snr[0]:g} dB" if np.all(snr == snr[0]) else "per snapshot (snr_db [N])"
    notes = (f"C = sum_k df log2(1+|H_k|^2 SNR), df = {df:g} Hz, K = {h.shape[1]}, "
             f"SNR = {snr_text}, share = {share:g}{shift}")
    return Trace(times, cap, "csi", str(path), notes, extras={"snr_db": np.array(snr)})


def write_snr_csv(
    path: Path, times_s: np.ndarray, snr_db: np.ndarray, bandwidth_hz: float,
    comments: Sequence[str] = (),
) -> None:
    """Write the native SNR CSV (times with 3 decimals, SNR with 2), reproducibly.

    Args:
        path: output file.
        times_s: sample times, shape ``[N]``.
        snr_db: SNR per sample in dB, shape ``[N]``.
        bandwidth_hz: W, written as the ``# bandwidth_hz`` comment.
        comments: further ``key: value`` comment lines.
    """
    out = [f"# bandwidth_hz: {bandwidth_hz:g}"] + [f"# {c}" for c in comments]
    out.append(",".join(SNR_HEADER))
    out += [f"{t:.3f},{s:.2f}" for t, s in zip(times_s, snr_db, strict=True)]
    path.write_text("\n".join(out) + "\n", encoding="utf-8", newline="\n")


def write_capacity_csv(path: Path, trace: Trace, comments: Sequence[str] = ()) -> None:
    """Write a trace as the native capacity CSV (``time_s,capacity_bps``)."""
    out = [f"# {c}" for c in (f"source: {trace.source}", f"derived: {trace.notes}", *comments)]
    out.append(",".join(CAPACITY_HEADER))
    out += [f"{t:.6f},{c:.3f}" for t, c in zip(trace.times_s, trace.capacity_bps, strict=True)]
    path.write_text("\n".join(out) + "\n", encoding="utf-8", newline="\n")
