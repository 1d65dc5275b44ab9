"""Readers for real Wi-Fi CSI logs: Intel 5300 CSI Tool binaries and ESP32 CSI CSV.

Both compute, per packet, ``C = sum_k df log2(1 + |H_k|^2 SNR)`` with
:func:`shared.rate.capacity_from_csi` (``kind="csi"``); see ``channel_traces/README.md``
for the choices (subcarrier spacing, antennas, where the SNR comes from).
"""

from __future__ import annotations

import csv
import warnings
from pathlib import Path

import numpy as np

from channel_traces._parse import (
    TraceWarning,
    check_share,
    read_text_lines,
    trace_error,
    warn_skipped,
)
from channel_traces._timeline import repair_times, unwrap_counter
from channel_traces.mimo import check_csi_log, combined_capacity, unit_mean_gain
from channel_traces.trace import Trace
from shared.rate import capacity_from_csi, db_to_linear

#: OFDM subcarrier spacing of a 20 MHz 802.11 channel (20 MHz / 64), Hz.
WIFI20_SPACING_HZ = 312_500.0
#: Intel 5300, 20 MHz: 30 reported groups stand for the 56 occupied subcarriers (-28..28).
INTEL_GROUP_SPACING_HZ = 56 * WIFI20_SPACING_HZ / 30
#: 32-bit microsecond counters (Intel timestamp_low, ESP32 local_timestamp) wrap here.
US_WRAP = 2**32
#: ESP32 LLTF buffer (non-HT, 20 MHz, no secondary channel): items are subcarriers 0..31, -32..-1.
ESP32_LLTF_ITEMS = 64
#: Usable ESP32 LLTF subcarriers: -26..-1 and 2..26 (0 is DC; item 1 sits in the first word
#: that ESP-IDF flags as invalid on the ESP32; 27..31 and -32..-27 are guard bands).
ESP32_USED_ITEMS = np.r_[2:27, 38:64]
ESP32_COLUMNS = ("rssi", "noise_floor", "local_timestamp", "len", "CSI_DATA")


def _unwrap_us(stamps: np.ndarray) -> np.ndarray:
    """Unwrap a 32-bit microsecond counter into seconds from the first sample."""
    unwrapped, _ = unwrap_counter(stamps, US_WRAP, fold_forward=False)
    return (unwrapped - unwrapped[0]) / 1e6


def read_intel5300(
    path: Path, snr_db: float | None = None, rx_combine: str = "mean", share: float = 1.0
) -> Trace:
    """Read an Intel 5300 CSI Tool log (``.dat``) with ``csiread.Intel``.

    Per packet and per (rx antenna, tx stream), capacity is ``capacity_from_csi`` over the
    30 subcarrier groups with ``df = 56 x 312.5 kHz / 30`` (each group stands for 56/30 of the
    occupied subcarriers). Streams are summed; rx antennas are averaged (``"mean"``, one
    single-antenna link, the default) or combined by maximal-ratio combining (``"mrc"``:
    ``|H_k|^2`` summed over antennas).

    Times come from ``timestamp_low``, the NIC's 32-bit microsecond counter: wraps are
    unwrapped, and a log whose times still do not increase is repaired by
    :func:`~channel_traces._timeline.repair_times` (packets in the same microsecond merged,
    packets logged twice, same time and ``bfee_count``, dropped, an isolated out-of-order
    packet dropped, a clock reset spliced), said in ``notes`` and in a :class:`TraceWarning`.

    Args:
        path: the binary log.
        snr_db: transmit SNR for a unit-mean-gain channel. ``None`` (default) uses the log's
            own scale: ``get_scaled_csi`` makes ``|H_k|^2`` the per-subcarrier SNR from RSSI,
            AGC and noise (noise -127, "unknown", is taken as -92 dBm as in the CSI Tool).
        rx_combine: ``"mean"`` or ``"mrc"``.
        share: fraction of the link given to this room.
    """
    share = check_csi_log(path, share, rx_combine)
    import csiread  # imported here: a compiled extension needed only by this reader

    log = csiread.Intel(str(path), nrxnum=3, ntxnum=3, if_report=False)
    try:
        log.read()
    except Exception as err:  # the extension raises bare errors on malformed input
        raise trace_error(path, "file", f"csiread cannot parse it ({err})",
                          "pass an Intel 5300 CSI Tool log_to_file .dat") from None
    if log.count == 0:
        raise trace_error(path, "file", "no CSI (0xbb) packets found",
                          "record with the CSI Tool's log_to_file, or pick another --format")
    n = log.count
    scaled = log.get_scaled_csi() if snr_db is None else log.csi
    gains = np.moveaxis(np.asarray(scaled)[:n], 1, -1)  # [N, rx, tx, 30]
    nrx, ntx = np.asarray(log.Nrx)[:n], np.asarray(log.Ntx)[:n]
    valid = ((np.arange(3)[None, :] < nrx[:, None])[:, :, None]
             & (np.arange(3)[None, :] < ntx[:, None])[:, None, :])  # [N, rx, tx]
    if snr_db is not None:
        gains = unit_mean_gain(gains) * np.sqrt(db_to_linear(snr_db))
    cap = combined_capacity(gains, INTEL_GROUP_SPACING_HZ, rx_combine, valid) * share
    bfee = np.asarray(log.bfee_count)[:n]
    stamps, wraps = unwrap_counter(np.asarray(log.timestamp_low)[:n], US_WRAP)
    repair = repair_times(stamps, unit="us", ids=bfee)
    dropped = int(np.sum(np.diff(bfee) > 1))
    snr_text = ("from RSSI/noise via get_scaled_csi" if snr_db is None
                else f"{snr_db:g} dB with unit mean gain per packet")
    fixes = ", ".join(part for part in (
        f"{wraps} wraps of the 32-bit microsecond counter unwrapped" if wraps else "",
        repair.note()) if part)
    notes = (f"C = sum_k df log2(1+|H_k|^2 SNR) over 30 groups, df = "
             f"{INTEL_GROUP_SPACING_HZ:g} Hz, SNR {snr_text}, rx {rx_combine}, streams summed, "
             f"share = {share:g}; {n} packets, {dropped} gaps in bfee_count"
             + (f"; timestamp_low: {fixes}" if fixes else ""))
    if repair.note():
        warnings.warn(TraceWarning(f"{path}: timestamp_low does not increase: {repair.note()}"),
                      stacklevel=2)
    rssi = np.stack([np.asarray(getattr(log, f"rssi_{c}"))[:n] for c in "abc"], 1)
    return Trace((repair.times - repair.times[0]) / 1e6, repair.reduce(cap), "csi", str(path),
                 notes, extras={"nrx": repair.first(nrx), "ntx": repair.first(ntx),
                                "rssi": repair.first(rssi)})


def _esp32_items(text: str) -> np.ndarray | None:
    """Parse ``[imag real imag real ...]`` into complex items, ``None`` if malformed."""
    body = text.strip()
    if not (body.startswith("[") and body.endswith("]")):
        return None
    try:
        values = np.array([int(v) for v in body[1:-1].split()], dtype=np.int64)
    except ValueError:
        return None
    if values.size % 2 or np.any((values < -128) | (values > 127)):
        return None
    return values[1::2] + 1j * values[0::2]  # each item: imaginary part, then real part


def read_esp32(path: Path, snr_db: float | None = None, share: float = 1.0) -> Trace:
    """Read an ESP32 CSI CSV log (ESP32-CSI-Tool layout, ``CSI_DATA`` rows).

    ``CSI_DATA`` holds int8 pairs, imaginary part first, one per LLTF subcarrier in the order
    0..31, -32..-1 (ESP-IDF Wi-Fi CSI docs, non-HT 20 MHz). The 51 usable subcarriers
    (:data:`ESP32_USED_ITEMS`) are scaled to unit mean gain per packet (the int8 values carry
    an AGC-dependent scale) and ``C = sum_k 312.5 kHz log2(1 + |H_k|^2 SNR)``.
    Times come from ``local_timestamp`` (the ESP32's microsecond clock, unwrapped).
    Truncated or malformed rows are skipped with one :class:`TraceWarning`.

    Args:
        path: the CSV log.
        snr_db: fixed SNR; default per packet ``rssi - noise_floor`` (dB).
        share: fraction of the link given to this room.
    """
    share = check_share(share)
    lines = read_text_lines(path)
    reader = csv.DictReader(lines)
    fields = reader.fieldnames or []
    missing = [c for c in ESP32_COLUMNS if c not in fields]
    if missing:
        raise trace_error(path, "line 1", f"header lacks {missing}",
                          "keep the ESP32-CSI-Tool header line (type,role,mac,rssi,...)")
    stamps: list[int] = []
    snrs: list[int] = []
    rows: list[np.ndarray] = []
    linenos: list[int] = []
    skipped: list[int] = []
    total = 0
    for row in reader:
        lineno = reader.line_num
        total += 1
        try:
            length = int(row["len"] or "")
            rssi, noise, stamp = (int(row[c] or "") for c in ESP32_COLUMNS[:3])
        except ValueError:
            skipped.append(lineno)
            continue
        items = _esp32_items(row.get("CSI_DATA") or "")
        if items is None or None in row or 2 * items.size != length:
            skipped.append(lineno)
            continue
        if length < 2 * ESP32_LLTF_ITEMS or row.get("secondary_channel", "0") not in ("0", ""):
            raise trace_error(path, f"line {lineno}, field 'CSI_DATA'",
                              f"len {length} / secondary channel not the 20 MHz LLTF layout",
                              "log on a 20 MHz channel without secondary channel (HT20)")
        stamps.append(stamp)
        snrs.append(rssi - noise)
        rows.append(items[:ESP32_LLTF_ITEMS][ESP32_USED_ITEMS])
        linenos.append(lineno)
    warn_skipped(path, skipped, total, "truncated or malformed CSI_DATA")
    if not rows:
        raise trace_error(path, "line 2", "no complete CSI_DATA row",
                          "record CSI rows with the ESP32-CSI-Tool")
    times = _unwrap_us(np.asarray(stamps))
    back = np.flatnonzero(np.diff(times) <= 0)
    if back.size:
        raise trace_error(path, f"line {linenos[int(back[0]) + 1]}, field 'local_timestamp'",
                          "time does not increase", "sort rows by time and drop duplicates")
    h = np.asarray(rows)
    dead = np.flatnonzero(~np.any(h != 0, axis=1))
    if dead.size:
        raise trace_error(path, f"line {linenos[int(dead[0])]}, field 'CSI_DATA'",
                          "all used subcarriers are zero", "drop this row")
    snr = np.asarray(snrs, dtype=np.float64) if snr_db is None else np.full(len(rows), snr_db)
    gains = unit_mean_gain(h) * np.sqrt(db_to_linear(snr))[:, None]
    cap = np.asarray(capacity_from_csi(gains, 0.0, WIFI20_SPACING_HZ)).reshape(-1) * share
    snr_text = "rssi - noise_floor per packet" if snr_db is None else f"{snr_db:g} dB"
    notes = (f"C = sum_k df log2(1+|H_k|^2 SNR), df = {WIFI20_SPACING_HZ:g} Hz, "
             f"K = {ESP32_USED_ITEMS.size} LLTF subcarriers at unit mean gain, SNR {snr_text}, "
             f"share = {share:g}; {len(skipped)} of {total} rows skipped")
    return Trace(times, cap, "csi", str(path), notes, extras={"snr_db": snr})
