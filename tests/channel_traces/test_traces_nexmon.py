"""Tests of the Nexmon CSI pcap reader on captures written here from the documented layout."""

from __future__ import annotations

import struct
import warnings
from pathlib import Path

import numpy as np
import pytest

from channel_traces._parse import TraceWarning
from channel_traces.nexmon import DEFAULT_SNR_DB, SPACING_HZ, occupied_bins
from channel_traces.registry import detect_format, load_trace
from shared.errors import TraceError


def nexmon_packet(seq: int, core: int, spatial: int, csi: np.ndarray, chip: int = 0x4339) -> bytes:
    """One Ethernet frame as nexmon_csi sends it (its README's csi_udp_frame layout).

    Ethernet (broadcast destination, source MAC "NEXMON", IPv4), IPv4 10.10.10.10 ->
    255.255.255.255, UDP 5500 -> 5500, then the 18-byte header (magic 0x1111, RSSI,
    frame control, source MAC, sequence number, core | spatial << 3, chanspec, chip) and
    one little-endian int16 (real, imaginary) pair per FFT bin.
    """
    header = struct.pack("<HbB6sHHHH", 0x1111, 0, 0x08, b"\x02\x00\x00\x00\x00\x01", seq,
                         core | (spatial << 3), 0xE02A, chip)
    values = np.empty(2 * csi.size, dtype="<i2")
    values[0::2], values[1::2] = csi.real, csi.imag
    payload = header + values.tobytes()
    udp = struct.pack(">HHHH", 5500, 5500, 8 + len(payload), 0) + payload
    ip = struct.pack(">BBHHHBBH4s4s", 0x45, 0, 20 + len(udp), 0, 0, 1, 17, 0,
                     bytes([10, 10, 10, 10]), b"\xff\xff\xff\xff") + udp
    return b"\xff" * 6 + b"NEXMON" + b"\x08\x00" + ip


def pcap(packets: list[tuple[float, bytes]]) -> bytes:
    """A little-endian, microsecond pcap (libpcap format, linktype 1 Ethernet)."""
    out = struct.pack("<IHHiIII", 0xA1B2C3D4, 2, 4, 0, 0, 65535, 1)
    for t, packet in packets:
        sec, usec = int(t), int(round((t - int(t)) * 1e6))
        out += struct.pack("<IIII", sec, usec, len(packet), len(packet)) + packet
    return out


def _flat(nfft: int = 256, level: complex = 300 + 400j) -> np.ndarray:
    csi = np.zeros(nfft, dtype=complex)
    csi[occupied_bins(nfft)] = level
    return csi


def test_csiread_reads_the_fixture_records(tmp_path: Path) -> None:
    """The fixture writer's records decode in csiread.Nexmon (bcm4339, 80 MHz, int16)."""
    import csiread

    csi = _flat()
    csi[5] = -7 + 3j
    path = tmp_path / "cap.pcap"
    path.write_bytes(pcap([(10.5, nexmon_packet(42, 1, 2, csi))]))
    log = csiread.Nexmon(str(path), chip="4339", bw=80, if_report=False)
    log.read()
    assert log.count == 1 and log.seq[0] == 42 and log.core[0] == 1 and log.spatial[0] == 2
    np.testing.assert_allclose(log.csi[0], csi)


def test_capacity_per_frame_over_the_occupied_subcarriers(tmp_path: Path) -> None:
    """Records of one sequence number form a frame; C sums streams, averages cores."""
    weak = _flat()
    weak[occupied_bins(256)[:121]] = 30 + 40j  # lower half 20 dB weaker than the upper half
    packets = [(1.0, nexmon_packet(7, 0, 0, _flat())), (1.0, nexmon_packet(7, 1, 0, weak)),
               (1.02, nexmon_packet(8, 0, 0, _flat())), (1.02, nexmon_packet(8, 0, 1, _flat()))]
    path = tmp_path / "walk.pcap"
    path.write_bytes(pcap(packets))
    assert detect_format(path) == "nexmon"
    tr = load_trace(path)
    assert tr.kind == "csi" and len(tr) == 2
    np.testing.assert_allclose(tr.times_s, [0.0, 0.02])
    snr = 10 ** (DEFAULT_SNR_DB / 10)
    k = occupied_bins(256).size
    flat = k * SPACING_HZ * np.log2(1 + snr)
    gains = np.r_[np.full(121, 1.0), np.full(121, 100.0)]
    tilted = SPACING_HZ * np.log2(1 + gains / gains.mean() * snr).sum()
    np.testing.assert_allclose(tr.capacity_bps, [(flat + tilted) / 2, 2 * flat])
    np.testing.assert_allclose(tr.extras["streams"], [2, 2])
    assert f"K = {k} occupied subcarriers of 80 MHz" in tr.notes
    assert "SNR assumed 20 dB" in tr.notes and "4 records in 2 frames" in tr.notes
    fixed = load_trace(path, snr_db=0.0, rx_combine="mrc", share=0.5)
    assert fixed.capacity_bps[1] == pytest.approx(0.5 * 2 * k * SPACING_HZ)


def test_other_packets_and_a_cut_tail_are_skipped(tmp_path: Path) -> None:
    """Non-nexmon packets are ignored; a truncated last record is skipped with a warning."""
    other = b"\x00" * 6 + b"\x11" * 6 + b"\x08\x00" + bytes(60)
    packets = [(t / 100, nexmon_packet(t, 0, 0, _flat(64))) for t in range(12)]
    data = pcap([(0.001, other), *packets])
    path = tmp_path / "cut.dat"
    path.write_bytes(data[:-100])
    assert detect_format(path) == "nexmon"
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        tr = load_trace(path)
    assert len(tr) == 11 and "1 other packets ignored" in tr.notes
    messages = [str(w.message) for w in caught if issubclass(w.category, TraceWarning)]
    assert len(messages) == 1 and "skipped 1 of 12 records" in messages[0]
    assert "record 13" in messages[0] and "K = 56 occupied subcarriers of 20 MHz" in tr.notes


def test_bad_captures_are_trace_errors(tmp_path: Path) -> None:
    """No nexmon records, a wrong magic, or zero CSI each say what and where."""
    path = tmp_path / "x.pcap"
    path.write_bytes(pcap([(0.0, b"\x00" * 80)]))
    with pytest.raises(TraceError, match=r"x\.pcap:file: no nexmon_csi records among 1 packets"):
        load_trace(path)
    path.write_bytes(b"\x00" * 40)
    with pytest.raises(TraceError, match=r"byte 0: not a pcap capture.*Fix: pass the \.pcap"):
        load_trace(path, fmt="nexmon")
    path.write_bytes(pcap([(0.0, nexmon_packet(1, 0, 0, np.zeros(64, dtype=complex)))]))
    with pytest.raises(TraceError, match=r"record 1: all occupied subcarriers are zero"):
        load_trace(path)
    with pytest.raises(TraceError, match=r"chip '4330'"):
        load_trace(path, chip="4330")
