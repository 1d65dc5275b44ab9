"""Tests of the PicoScenes .csi reader on frames written here from the documented layout."""

from __future__ import annotations

import struct
import warnings
from pathlib import Path

import numpy as np
import pytest

from channel_traces._parse import TraceWarning
from channel_traces.mimo import thermal_noise_dbm
from channel_traces.registry import detect_format, load_trace
from shared.errors import TraceError

MAGIC = 0x20150315
AX200 = 0x2000


def segment(name: str, version: int, payload: bytes) -> bytes:
    """A PicoScenes segment: uint32 length, uint8 name length, name (NUL-terminated),
    uint16 version, payload."""
    label = name.encode() + b"\0"
    body = struct.pack("<B", len(label)) + label + struct.pack("<H", version) + payload
    return struct.pack("<I", len(body)) + body


def rx_basic(timestamp_us: int, rssi: int, chains: tuple[int, int], cbw: int = 20) -> bytes:
    """RxSBasic version 3 (device, timestamp, center/control frequency, CBW, packet format,
    packet CBW, GI, MCS, NumSTS, NumESS, NumRx, NumUser, UserIndex, noise floor, RSSI, per-chain
    RSSI x 3); the AX200 reports no noise floor (0)."""
    return struct.pack("<HQhhHBHHBBBBBBbbbbb", AX200, timestamp_us, 5180, 5180, cbw, 1, cbw,
                       800, 5, 1, 0, 2, 1, 0, 0, rssi, chains[0], chains[1], 0)


def csi_v4(h: np.ndarray, cbw: int = 20, device: int = AX200) -> bytes:
    """CSI segment version 4 for an Intel MVM device: head, then int16 (real, imag) per entry,
    tones varying fastest, then receive chains (``h`` is [tones, rx], one stream)."""
    tones, nrx = h.shape
    head = struct.pack("<HBbHQQIHBBBHBhI", device, 0, 1, cbw, 5_180_000_000, 20_000_000, 312_500,
                       tones, 1, nrx, 0, 1, 0, 0, tones * nrx * 4)
    values = np.empty(2 * h.size, dtype="<i2")
    flat = h.T.reshape(-1)
    values[0::2], values[1::2] = flat.real, flat.imag
    return head + values.tobytes()


def frame(timestamp_us: int, h: np.ndarray, chains: tuple[int, int] = (-40, -43),
          with_csi: bool = True, device: int = AX200) -> bytes:
    """One PicoScenes frame: uint32 length, magic 0x20150315, version 1, segment count,
    segments, then a (zero) 802.11 header standing in for the MPDU."""
    segments = [segment("RxSBasic", 3, rx_basic(timestamp_us, max(chains), chains))]
    if with_csi:
        segments.append(segment("CSI", 4, csi_v4(h, device=device)))
    body = struct.pack("<IHB", MAGIC, 1, len(segments)) + b"".join(segments) + bytes(26)
    return struct.pack("<I", len(body)) + body


def _flat() -> np.ndarray:
    h = np.zeros((56, 2), dtype=complex)
    h[:, 0], h[:, 1] = 300 + 400j, -120 + 50j
    return h


def test_csiread_reads_the_fixture_frames(tmp_path: Path) -> None:
    """csiread.Picoscenes parses the fixture: times, per-chain RSSI, dimensions, first tones."""
    # csiread 1.4.1 drops four tones per chain as pilots, with an index not reset between
    # chains, so only chain 0's tones before the first pilot (-28..-22) are compared.
    import csiread

    h = _flat()
    h[3, 0] = 9 - 2j
    path = tmp_path / "ax200.csi"
    path.write_bytes(frame(1000, h) + frame(2000, h, chains=(-50, -52)))
    log = csiread.Picoscenes(str(path), {"CSI": [56, 2, 1]}, if_report=False)
    log.read()
    assert log.count == 2
    assert list(log.raw["RxSBasic"]["Timestamp"]) == [1000, 2000]
    assert list(log.raw["RxSBasic"]["RSSI1"]) == [-40, -50]
    assert list(log.raw["RxSBasic"]["RSSI2"]) == [-43, -52]
    info = log.raw["CSI"]["Info"][0]
    assert (info["NumTones"], info["NumRx"], info["NumTx"], info["CBW"]) == (56, 2, 1, 20)
    assert info["SubcarrierBandwidth"] == 312_500
    np.testing.assert_allclose(log.raw["CSI"]["CSI"][0][:7, 0, 0], h[:7, 0])
    tr = load_trace(path)  # this reader decodes all 56 tones of both chains
    assert len(tr) == 2 and np.all(tr.capacity_bps > 0)


def test_capacity_from_per_chain_rssi_and_the_noise_assumption(tmp_path: Path) -> None:
    """SNR per chain = RSSI - (thermal + 7 dB noise figure); chains averaged, 312.5 kHz tones."""
    path = tmp_path / "ax200.bin"
    path.write_bytes(frame(10_000, _flat()) + frame(10_500, _flat(), chains=(-60, -63)))
    assert detect_format(path) == "picoscenes"
    tr = load_trace(path)
    assert tr.kind == "csi" and len(tr) == 2
    np.testing.assert_allclose(tr.times_s, [0.0, 0.0005])
    noise = thermal_noise_dbm(20e6)
    assert noise == pytest.approx(-93.99, abs=0.01)

    def expected(a: float, b: float) -> float:
        return np.mean([56 * 312_500 * np.log2(1 + 10 ** ((r - noise) / 10)) for r in (a, b)])

    np.testing.assert_allclose(tr.capacity_bps, [expected(-40, -43), expected(-60, -63)])
    assert "noise assumed thermal + 7 dB noise figure (-94.0 dBm at 20 MHz" in tr.notes
    assert "Intel AX200 (IWLMVM), 2 frames with CSI" in tr.notes
    given = load_trace(path, noise_dbm=-80.0, rx_combine="mrc")
    mrc = 56 * 312_500 * np.log2(1 + 10 ** ((-40 + 80) / 10) + 10 ** ((-43 + 80) / 10))
    assert given.capacity_bps[0] == pytest.approx(mrc)
    fixed = load_trace(path, snr_db=0.0, share=0.5)
    np.testing.assert_allclose(fixed.capacity_bps, 0.5 * 56 * 312_500)


def test_frames_without_csi_and_damaged_frames(tmp_path: Path) -> None:
    """A frame without CSI is left out; a damaged frame is skipped with a warning."""
    frames = [frame(1000 * i, _flat()) for i in range(11)]
    damaged = bytearray(frame(99_000, _flat()))
    damaged[4:8] = b"\0\0\0\0"
    path = tmp_path / "mixed.csi"
    path.write_bytes(b"".join(frames[:5]) + frame(5500, _flat(), with_csi=False)
                     + bytes(damaged) + b"".join(frames[5:]))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        tr = load_trace(path)
    assert len(tr) == 11 and "1 without CSI left out" in tr.notes
    messages = [str(w.message) for w in caught if issubclass(w.category, TraceWarning)]
    assert len(messages) == 1 and "skipped 1 of 13 frames" in messages[0]
    assert "frame 7" in messages[0]


def test_bad_logs_are_trace_errors(tmp_path: Path) -> None:
    """A log of damaged or CSI-less frames says where and what to do."""
    path = tmp_path / "bad.csi"
    path.write_bytes(frame(1, _flat(), with_csi=False))
    with pytest.raises(TraceError, match=r"bad\.csi:file: no frame with a CSI segment among 1"):
        load_trace(path)
    path.write_bytes(frame(1, _flat())[:-30])
    with pytest.raises(TraceError, match=r"frame 1 \(byte 0\): frame runs past the end"):
        load_trace(path, fmt="picoscenes")
    path.write_bytes(frame(1, _flat(), device=0x9300))
    with pytest.raises(TraceError, match=r"frame 1 \(byte 0\): CSI of device type 0x9300"):
        load_trace(path)
