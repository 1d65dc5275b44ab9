"""Tests of the CSI log readers (Intel 5300 via csiread, ESP32 CSV) on small and real files."""

from __future__ import annotations

import struct
import warnings
from pathlib import Path

import numpy as np
import pytest

from channel_traces._parse import TraceWarning
from channel_traces.csi import ESP32_USED_ITEMS, INTEL_GROUP_SPACING_HZ, WIFI20_SPACING_HZ
from channel_traces.registry import load_trace
from shared.errors import TraceError

TRACES = Path(__file__).resolve().parents[2].parent / "shared" / "data" / "traces"
WIFI = TRACES / "wifi_csi"


def _real(name: str) -> Path:
    path = WIFI / name
    if not path.is_file():
        pytest.skip(f"{path} not present (../shared/data is optional)")
    return path


def _intel_record(csi: np.ndarray, ts_us: int, count: int, rssi_a: int = 40, agc: int = 20) -> bytes:
    """One Intel 5300 log record (0xbb beamforming report) for 1 tx and ``csi.shape[1]`` rx.

    Layout of the CSI Tool's read_bfee: a 20-byte little-endian header, then per subcarrier
    group 3 padding bits and 8-bit real/imag pairs per antenna, packed LSB first.
    """
    nrx = csi.shape[1]
    bits: list[int] = []
    for k in range(30):
        bits += [0, 0, 0]
        for r in range(nrx):
            for value in (int(csi[k, r].real), int(csi[k, r].imag)):
                bits += [((value & 0xFF) >> i) & 1 for i in range(8)]
    nbytes = (30 * (nrx * 16 + 3) + 7) // 8
    bits += [0] * (8 * nbytes - len(bits))
    payload = bytes(sum(bits[8 * i + j] << j for j in range(8)) for i in range(nbytes))
    rssi = (rssi_a, rssi_a if nrx > 1 else 0, rssi_a if nrx > 2 else 0)
    header = struct.pack("<IHHBBBBBbBBHH", ts_us, count, 0, nrx, 1, *rssi, -127, agc, 0x24,
                         nbytes, 0x101)
    body = b"\xbb" + header + payload
    return struct.pack(">H", len(body)) + body


def test_intel5300_small_log_matches_the_csi_tool_scaling(tmp_path: Path) -> None:
    """Capacity uses get_scaled_csi (|H|^2 = SNR from RSSI, AGC, noise) over 30 groups."""
    csi = np.full((30, 1), 10 + 0j)
    csi[::2, 0] = -6 + 8j  # |H| = 10 on every group
    path = tmp_path / "log.dat"
    path.write_bytes(_intel_record(csi, 1000, 1) + _intel_record(csi, 2000, 2)
                     + _intel_record(csi, 5000, 4, rssi_a=30))
    tr = load_trace(path)
    assert tr.kind == "csi" and len(tr) == 3
    np.testing.assert_allclose(tr.times_s, [0.0, 0.001, 0.004])
    # CSI Tool: total RSS = rssi - 44 - agc dBm; noise -127 -> -92 dBm; quantisation error
    # scale x Nrx Ntx with scale = RSS / (|H|^2): SNR = RSS / (N + RSS / 100)
    rss = 10 ** ((np.array([40, 40, 30]) - 44 - 20) / 10)
    snr = rss / (10 ** (-9.2) + rss / 100)
    np.testing.assert_allclose(tr.capacity_bps, 30 * INTEL_GROUP_SPACING_HZ * np.log2(1 + snr),
                               rtol=1e-3)
    assert "1 gaps in bfee_count" in tr.notes
    fixed = load_trace(path, snr_db=10.0, share=0.5)
    np.testing.assert_allclose(fixed.capacity_bps, 0.5 * 30 * INTEL_GROUP_SPACING_HZ
                               * np.log2(11.0))


def test_intel5300_rx_combining(tmp_path: Path) -> None:
    """rx_combine='mean' averages per-antenna capacity; 'mrc' adds antenna powers."""
    csi = np.zeros((30, 3), dtype=complex)
    csi[:, 0], csi[:, 1], csi[:, 2] = 20, 10, 10
    path = tmp_path / "three.dat"
    path.write_bytes(_intel_record(csi, 10, 1) + _intel_record(csi, 20, 2))
    mean = load_trace(path, snr_db=0.0)  # unit mean gain per antenna: each link 30 df log2(2)
    np.testing.assert_allclose(mean.capacity_bps, 30 * INTEL_GROUP_SPACING_HZ)
    mrc = load_trace(path, snr_db=0.0, rx_combine="mrc")
    np.testing.assert_allclose(mrc.capacity_bps, 30 * INTEL_GROUP_SPACING_HZ * np.log2(4.0))
    with pytest.raises(TraceError, match="rx_combine.*Fix: use 'mean' or 'mrc'"):
        load_trace(path, rx_combine="sum")


def test_intel5300_wrapping_and_repeating_timestamps_load(tmp_path: Path) -> None:
    """A wrap, records logged twice, a shared microsecond and a reset load, repaired and said."""
    csi = np.full((30, 1), 10 + 0j)
    top = 2**32
    records = [(top - 3000, 1, 40), (top - 2000, 2, 40), (top - 1000, 3, 40), (0, 4, 40),
               (1000, 5, 40), (top - 2000, 2, 40), (top - 1000, 3, 40),  # logged twice
               (2000, 6, 40), (2000, 7, 30), (3000, 8, 40),  # 6 and 7 in one microsecond
               (50, 9, 40), (1050, 10, 40)]  # the NIC clock restarted
    path = tmp_path / "wrap.dat"
    path.write_bytes(b"".join(_intel_record(csi, ts, n, rssi_a=r) for ts, n, r in records))
    with pytest.warns(TraceWarning, match=r"timestamp_low does not increase: 1 repeated"):
        tr = load_trace(path, snr_db=None)
    np.testing.assert_allclose(tr.times_s, np.arange(9) * 1e-3)
    rss = 10 ** ((np.array([40.0, 30.0]) - 44 - 20) / 10)
    cap40, cap30 = 30 * INTEL_GROUP_SPACING_HZ * np.log2(1 + rss / (10 ** (-9.2) + rss / 100))
    assert tr.capacity_bps[0] == pytest.approx(cap40, rel=1e-3)
    assert tr.capacity_bps[5] == pytest.approx((cap40 + cap30) / 2, rel=1e-3)
    for text in ("1 wraps of the 32-bit microsecond counter unwrapped",
                 "1 repeated timestamps merged (mean)", "2 records logged twice dropped",
                 "1 clock resets spliced"):
        assert text in tr.notes


@pytest.mark.parametrize(
    ("content", "pattern"),
    [
        (b"", r"junk\.dat:file: no CSI \(0xbb\) packets found"),
        (b"\x00\x03\xc1\x01\x02" * 4, r"junk\.dat:file: csiread cannot parse it"),
    ],
)
def test_intel5300_bad_logs_are_trace_errors(tmp_path: Path, content: bytes, pattern: str) -> None:
    """A .dat with no CSI packets, or one csiread cannot parse, is a TraceError."""
    path = tmp_path / "junk.dat"
    path.write_bytes(content)
    with pytest.raises(TraceError, match=pattern):
        load_trace(path)


def test_real_intel5300_log() -> None:
    """The csiread sample: 2998 packets over 3 s, 1x3, tens of Mbit/s at full share."""
    tr = load_trace(_real("intel5300_sample_0x5_64_3000.dat"))
    assert len(tr) == 2998
    assert tr.duration_s == pytest.approx(3.0, abs=0.01)
    assert 30e6 < float(np.median(tr.capacity_bps)) < 100e6
    assert np.all(tr.extras["nrx"] == 3) and np.all(tr.extras["ntx"] == 1)
    mrc = load_trace(_real("intel5300_sample_0x5_64_3000.dat"), rx_combine="mrc")
    assert np.all(mrc.capacity_bps >= tr.capacity_bps)


def _esp32_row(items: np.ndarray, stamp: int, rssi: int = -50, noise: int = -90) -> str:
    pairs = " ".join(f"{int(v.imag)} {int(v.real)}" for v in items)
    return (f"CSI_DATA,PASSIVE,aa:bb:cc:dd:ee:ff,{rssi},11,0,0,0,0,0,0,0,0,0,{noise},0,6,0,"
            f"{stamp},0,38,0,0,0.1,{2 * items.size},[{pairs} ]")


ESP32_HEADER = ("type,role,mac,rssi,rate,sig_mode,mcs,bandwidth,smoothing,not_sounding,"
                "aggregation,stbc,fec_coding,sgi,noise_floor,ampdu_cnt,channel,"
                "secondary_channel,local_timestamp,ant,sig_len,rx_state,real_time_set,"
                "real_timestamp,len,CSI_DATA")


def test_esp32_small_log_order_and_skipped_rows(tmp_path: Path) -> None:
    """Items are (imag, real) pairs in subcarrier order 0..31, -32..-1; bad rows are skipped."""
    flat = np.zeros(64, dtype=complex)
    flat[ESP32_USED_ITEMS] = 3 + 4j
    tilted = flat.copy()
    tilted[ESP32_USED_ITEMS[:25]] = 0 + 1j  # subcarriers 2..26 weak, -26..-1 strong
    truncated = _esp32_row(flat, 300)[:-20]
    rows = [ESP32_HEADER, _esp32_row(flat, 100), _esp32_row(tilted, 200, rssi=-60),
            truncated, _esp32_row(flat, 2**32 - 50 + 400)]
    path = tmp_path / "esp.csv"
    path.write_text("\n".join(rows) + "\n", encoding="utf-8")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        tr = load_trace(path)
    messages = [str(w.message) for w in caught if issubclass(w.category, TraceWarning)]
    assert len(messages) == 1 and "skipped 1 of 4 rows" in messages[0] and "line 4" in messages[0]
    assert tr.kind == "csi" and len(tr) == 3
    np.testing.assert_allclose(tr.times_s, [0.0, 100e-6, (2**32 - 50 + 300) * 1e-6])
    k = ESP32_USED_ITEMS.size
    np.testing.assert_allclose(tr.capacity_bps[0], k * WIFI20_SPACING_HZ * np.log2(1 + 1e4))
    gains = np.r_[np.full(25, 1.0), np.full(26, 25.0)]
    gains /= gains.mean()
    expected = WIFI20_SPACING_HZ * np.log2(1 + gains * 1e3).sum()
    assert tr.capacity_bps[1] == pytest.approx(expected)
    np.testing.assert_allclose(tr.extras["snr_db"], [40.0, 30.0, 40.0])
    with pytest.warns(TraceWarning):
        fixed = load_trace(path, snr_db=0.0, share=0.1)
    assert fixed.capacity_bps[0] == pytest.approx(0.1 * k * WIFI20_SPACING_HZ)


def test_esp32_errors(tmp_path: Path) -> None:
    """Missing columns, backwards time and no complete rows are TraceErrors."""
    flat = np.zeros(64, dtype=complex)
    flat[ESP32_USED_ITEMS] = 1
    cases = {
        "nohdr.csv": ("type,role,rssi\nCSI_DATA,PASSIVE,-50\n", r"line 1: header lacks"),
        "back.csv": (f"{ESP32_HEADER}\n{_esp32_row(flat, 500)}\n{_esp32_row(flat, 400)}\n",
                     r"line 3, field 'local_timestamp': time does not increase"),
        "none.csv": (f"{ESP32_HEADER}\n{_esp32_row(flat, 500)[:-30]}\n",
                     r"no complete CSI_DATA row"),
        "zero.csv": (f"{ESP32_HEADER}\n{_esp32_row(np.zeros(64, complex), 5)}\n",
                     r"line 2, field 'CSI_DATA': all used subcarriers are zero"),
    }
    for name, (body, pattern) in cases.items():
        path = tmp_path / name
        path.write_text(body, encoding="utf-8")
        with pytest.raises(TraceError, match=pattern), warnings.catch_warnings():
            warnings.simplefilter("ignore", TraceWarning)
            load_trace(path, fmt="esp32")


def test_real_esp32_log_skips_the_truncated_row() -> None:
    """The CSIKit sample: 834 rows, the truncated line 19 skipped with a warning."""
    path = _real("esp32_example_100hz_pitraffic.csv")
    with pytest.warns(TraceWarning, match=r"skipped 1 of 834 rows.*line 19"):
        tr = load_trace(path)
    assert len(tr) == 833
    assert tr.duration_s == pytest.approx(13.15, abs=0.02)
    assert tr.extras["snr_db"][0] == pytest.approx(-52 - (-98))
    assert 1e8 < float(np.median(tr.capacity_bps)) < 4e8  # ~40 dB over 51 x 312.5 kHz
