"""Reader for Nexmon CSI captures: a pcap of the UDP port 5500 records nexmon_csi sends.

nexmon_csi (Broadcom chips: bcm4339 in the Nexus 5, bcm43455c0, bcm4358, bcm4366c0) sends
one UDP packet per received frame and per (receive core, spatial stream): Ethernet source
MAC ``NEXMON``, then an 18-byte header (magic, source MAC, sequence number, core and
spatial stream, chanspec, chip version) and one 4-byte value per FFT bin (64, 128, 256 bins
for 20, 40, 80 MHz), bins in FFT order. ``csiread.Nexmon`` decodes the values; this module
checks the capture record by record, groups the records of one frame (same sequence
number) and computes ``C = sum_streams mean_cores sum_k df log2(1 + |H_k|^2 SNR)`` over the
occupied subcarriers (:mod:`channel_traces.mimo`). nexmon_csi logs no RSSI and no noise,
so the SNR is an assumption the user can change (``snr_db``).
"""

from __future__ import annotations

import struct
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from channel_traces._parse import SkippedRows, check_share, trace_error
from channel_traces._timeline import repair_times
from channel_traces.mimo import RX_COMBINING, combined_capacity, unit_mean_gain
from channel_traces.trace import Trace
from shared.errors import TraceError
from shared.rate import db_to_linear

#: pcap magic numbers -> (byte order, time fraction unit).
PCAP_MAGICS = {b"\xd4\xc3\xb2\xa1": ("<", 1e-6), b"\xa1\xb2\xc3\xd4": (">", 1e-6),
               b"\x4d\x3c\xb2\xa1": ("<", 1e-9), b"\xa1\xb2\x3c\x4d": (">", 1e-9)}
NEXMON_MAC = b"NEXMON"
#: Ethernet (14) + IPv4 (20) + UDP (8) headers, then the nexmon_csi header.
UDP_HEADERS, NEXMON_HEADER = 42, 18
CHIPS = ("4339", "43455c0", "4358", "4366c0")
#: SNR assumed when the capture has no RSSI and no noise floor, dB.
DEFAULT_SNR_DB = 20.0
SPACING_HZ = 312_500.0


def occupied_bins(nfft: int) -> np.ndarray:
    """FFT-order indices of the occupied (data and pilot) subcarriers of an HT/VHT channel."""
    edges = {64: ((1, 28),), 128: ((2, 58),), 256: ((2, 122),),
             512: ((6, 126), (130, 250))}[nfft]
    ks = np.concatenate([np.r_[lo:hi + 1] for lo, hi in edges])
    return np.sort(np.concatenate([-ks, ks])) % nfft


@dataclass(frozen=True)
class _Scan:
    header: bytes
    records: list[tuple[int, float, bytes]]  # (record number, time s, record bytes incl. header)
    others: int
    skipped: SkippedRows
    total: int
    nfft: int


def is_pcap(head: bytes) -> bool:
    """Whether bytes start like a pcap capture."""
    return head[:4] in PCAP_MAGICS


def _scan(path: Path) -> _Scan:
    """Walk the pcap: keep well-formed nexmon_csi records, count others, skip bad ones."""
    data = path.read_bytes()
    if len(data) < 24 or data[:4] not in PCAP_MAGICS:
        raise trace_error(path, "byte 0", "not a pcap capture (bad magic number)",
                          "pass the .pcap written by tcpdump -w on the nexmon_csi host")
    order, unit = PCAP_MAGICS[data[:4]]
    skipped = SkippedRows(path, unit="records")
    records: list[tuple[int, float, bytes]] = []
    offset, number, others, nfft = 24, 0, 0, 0
    while offset < len(data):
        number += 1
        if offset + 16 > len(data):
            skipped.skip(number, trace_error(path, f"record {number} (byte {offset})",
                         "truncated record header", "the capture was cut: drop the tail"))
            break
        sec, frac, incl, _ = struct.unpack(order + "IIII", data[offset:offset + 16])
        end = offset + 16 + incl
        if end > len(data):
            skipped.skip(number, trace_error(path, f"record {number} (byte {offset})",
                         f"record of {incl} bytes runs past the end of the file",
                         "the capture was cut: drop the tail"))
            break
        packet = data[offset + 16:end]
        if len(packet) < UDP_HEADERS or packet[6:12] != NEXMON_MAC:
            others += 1
        else:
            try:
                size = len(packet) - UDP_HEADERS - NEXMON_HEADER
                if size % 4 or size // 4 not in (64, 128, 256, 512) or (nfft and size // 4 != nfft):
                    raise trace_error(path, f"record {number} (byte {offset})",
                                      f"{size} bytes of CSI, not 4 bytes x "
                                      f"{nfft or '64/128/256/512'} subcarriers",
                                      "record complete nexmon_csi packets (snaplen >= 1100)")
                nfft = size // 4
                records.append((number, sec + frac * unit, data[offset:end]))
            except TraceError as err:
                skipped.skip(number, err)
        offset = end
    return _Scan(data[:24], records, others, skipped, len(records) + len(skipped), nfft)


def _frames(seq: np.ndarray, mac: np.ndarray, core: np.ndarray, spatial: np.ndarray) -> np.ndarray:
    """Frame index per record: consecutive records of one (source, sequence number)."""
    frame = np.zeros(seq.size, dtype=np.int64)
    seen: set[tuple[int, int]] = set()
    for i in range(seq.size):
        stream = (int(core[i]), int(spatial[i]))
        same = i > 0 and seq[i] == seq[i - 1] and np.array_equal(mac[i], mac[i - 1])
        if i > 0 and (not same or stream in seen):
            frame[i] = frame[i - 1] + 1
            seen.clear()
        elif i > 0:
            frame[i] = frame[i - 1]
        seen.add(stream)
    return frame


def read_nexmon(
    path: Path, chip: str = "4339", snr_db: float | None = None, rx_combine: str = "mean",
    share: float = 1.0,
) -> Trace:
    """Read a Nexmon CSI pcap (UDP port 5500 records) with ``csiread.Nexmon``.

    Args:
        path: the capture.
        chip: ``"4339"`` (default, int16 CSI), ``"43455c0"``, ``"4358"`` or ``"4366c0"``.
        snr_db: SNR per stream at unit mean gain; default :data:`DEFAULT_SNR_DB` (assumed:
            the capture has no RSSI or noise).
        rx_combine: receive cores: ``"mean"`` or ``"mrc"``.
        share: fraction of the link given to this room.
    """
    share = check_share(share)
    if chip not in CHIPS or rx_combine not in RX_COMBINING:
        raise trace_error(path, "options", f"chip {chip!r}, rx_combine {rx_combine!r}",
                          f"use chip in {CHIPS} and rx_combine in {RX_COMBINING}")
    scan = _scan(path)
    skip_note = scan.skipped.finish(max(scan.total, 1))
    if not scan.records:
        raise trace_error(path, "file", f"no nexmon_csi records among {scan.others} packets",
                          "capture UDP port 5500 on the nexmon_csi host (source MAC NEXMON)")
    import csiread  # imported here: a compiled extension needed only by the CSI readers

    bw = int(scan.nfft / 3.2)
    with tempfile.TemporaryDirectory() as tmp:
        clean = path
        if len(scan.skipped) or scan.others:
            clean = Path(tmp) / "nexmon.pcap"
            clean.write_bytes(scan.header + b"".join(r[2] for r in scan.records))
        log = csiread.Nexmon(str(clean), chip=chip, bw=bw, if_report=False)
        log.read()
    n = log.count
    if n != len(scan.records):
        raise trace_error(path, "file", f"csiread decoded {n} of {len(scan.records)} records",
                          "check the capture with tcpdump -r; report the file if it is valid")
    h = np.asarray(log.csi)[:n][:, occupied_bins(scan.nfft)]
    dead = np.flatnonzero(~np.any(h != 0, axis=1))
    if dead.size:
        raise trace_error(path, f"record {scan.records[int(dead[0])][0]}",
                          "all occupied subcarriers are zero", "drop this record")
    core, spatial = np.asarray(log.core)[:n], np.asarray(log.spatial)[:n]
    frame = _frames(np.asarray(log.seq)[:n], np.asarray(log.src_addr)[:n], core, spatial)
    frames = int(frame[-1]) + 1
    snr = DEFAULT_SNR_DB if snr_db is None else float(snr_db)
    gains = np.zeros((frames, 8, 8, h.shape[1]), dtype=complex)
    valid = np.zeros((frames, 8, 8), dtype=bool)
    gains[frame, core, spatial] = unit_mean_gain(h) * np.sqrt(db_to_linear(snr))
    valid[frame, core, spatial] = True
    cap = combined_capacity(gains, SPACING_HZ, rx_combine, valid) * share
    first = np.r_[0, np.flatnonzero(np.diff(frame)) + 1]
    repair = repair_times(np.asarray([r[1] for r in scan.records])[first])
    snr_text = (f"assumed {snr:g} dB (nexmon_csi logs no RSSI or noise: pass snr_db)"
                if snr_db is None else f"{snr:g} dB")
    notes = "; ".join(p for p in (
        f"C = sum over spatial streams of {rx_combine} over cores of sum_k df log2(1+|H_k|^2 "
        f"SNR), df = {SPACING_HZ:g} Hz, K = {occupied_bins(scan.nfft).size} occupied "
        f"subcarriers of {bw} MHz at unit mean gain per stream, SNR {snr_text}, "
        f"chip bcm{chip}, share = {share:g}",
        f"{n} records in {frames} frames (same sequence number), {scan.others} other packets "
        "ignored", skip_note, repair.note()) if p)
    streams = valid.sum(axis=(1, 2))
    return Trace(repair.times - repair.times[0], repair.reduce(cap), "csi", str(path), notes,
                 extras={"streams": repair.first(streams)})
