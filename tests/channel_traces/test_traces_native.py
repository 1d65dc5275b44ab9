"""Tests of the native formats (SNR CSV, capacity CSV, CSI npz), their errors and load_trace."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from channel_traces.registry import READERS, detect_format, load_trace
from shared.errors import ConfigError, TraceError


def _write(tmp_path: Path, name: str, text: str) -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def test_snr_csv_capacity_is_shannon(tmp_path: Path) -> None:
    """C = W log2(1 + SNR) with W from the header comment; notes say so."""
    path = _write(tmp_path, "a.csv",
                  "# bandwidth_hz: 20000\n# site: lab\ntime_s,snr_db\n0,0\n0.5,10\n1.5,-3\n")
    tr = load_trace(path)
    assert tr.kind == "snr"
    np.testing.assert_allclose(tr.times_s, [0.0, 0.5, 1.5])
    snr = 10 ** (np.array([0.0, 10.0, -3.0]) / 10)
    np.testing.assert_allclose(tr.capacity_bps, 20000 * np.log2(1 + snr))
    assert tr.capacity_bps[0] == pytest.approx(20000.0)
    assert "W = 20000 Hz" in tr.notes and "site: lab" in tr.notes
    np.testing.assert_allclose(tr.extras["snr_db"], [0.0, 10.0, -3.0])


def test_snr_csv_bandwidth_option_overrides(tmp_path: Path) -> None:
    """bandwidth_hz= overrides the comment and works without it."""
    path = _write(tmp_path, "a.csv", "time_s,snr_db\n0,0\n1,0\n")
    tr = load_trace(path, bandwidth_hz=500.0)
    np.testing.assert_allclose(tr.capacity_bps, [500.0, 500.0])
    with pytest.raises(TraceError, match=r"a\.csv.*bandwidth.*Fix: add a comment line"):
        load_trace(path)


def test_capacity_csv_values_and_shift(tmp_path: Path) -> None:
    """capacity_bps is read as is; a non-zero start time is shifted to 0 and noted."""
    path = _write(tmp_path, "c.csv", "time_s,capacity_bps\n2.0,1500\n2.5,0\n3.0,2200.5\n")
    tr = load_trace(path)
    assert tr.kind == "capacity"
    np.testing.assert_allclose(tr.times_s, [0.0, 0.5, 1.0])
    np.testing.assert_allclose(tr.capacity_bps, [1500.0, 0.0, 2200.5])
    assert "shifted by -2 s" in tr.notes


@pytest.mark.parametrize(
    ("body", "pattern"),
    [
        ("", r"c\.csv:line 1: the file is empty"),
        ("\n\n  \n", r"c\.csv:line 1: the file is empty"),
        ("time_s,capacity_bps\n", r"c\.csv:line 1: the file has no data rows"),
        ("time_s,capacity_bps\n0,10\n1,abc\n", r"c\.csv:line 3, field 'capacity_bps': 'abc' is not a number"),
        ("time_s,capacity_bps\n0,10\nx,5\n", r"c\.csv:line 3, field 'time_s': 'x' is not a number"),
        ("time_s,capacity_bps\n0,10\n1,nan\n", r"c\.csv:line 3, field 'capacity_bps': 'nan' is not a finite"),
        ("time_s,capacity_bps\n0,10\n1,inf\n", r"line 3, field 'capacity_bps'.*not a finite"),
        ("time_s,capacity_bps\n0,10\n1,5\n1,6\n", r"c\.csv:line 4, field 'time_s': time 1 does not increase"),
        ("time_s,capacity_bps\n0,10\n2,5\n1,6\n", r"line 4, field 'time_s'.*does not increase.*Fix: sort"),
        ("time_s,capacity_bps\n0,10\n1,-5\n", r"c\.csv:line 3, field 'capacity_bps': negative value -5"),
        ("time_s,capacity_bps\n0,10,3\n", r"c\.csv:line 2: 3 fields, expected 2"),
        ("time,cap\n0,10\n", r"c\.csv:line 1: header 'time,cap' is not 'time_s,capacity_bps'"),
    ],
)
def test_capacity_csv_errors_name_file_line_and_fix(tmp_path: Path, body: str, pattern: str) -> None:
    """Every malformed capacity CSV gives a TraceError with file, line/field and a fix."""
    path = _write(tmp_path, "c.csv", body)
    with pytest.raises(TraceError, match=pattern) as err:
        load_trace(path, fmt="capacity_csv")
    assert "Fix:" in str(err.value)


@pytest.mark.parametrize(
    ("body", "pattern"),
    [
        ("# bandwidth_hz: 1000\ntime_s,snr_db\n0,3\n1,NaN\n", r"s\.csv:line 4, field 'snr_db'"),
        ("# bandwidth_hz: 1000\ntime_s,snr_db\n0,3\n0,4\n", r"s\.csv:line 4, field 'time_s'"),
        ("# bandwidth_hz: wide\ntime_s,snr_db\n0,3\n", r"'bandwidth_hz'.*'wide' is not a number"),
        ("# bandwidth_hz: -5\ntime_s,snr_db\n0,3\n", r"'bandwidth_hz'.*positive"),
    ],
)
def test_snr_csv_errors(tmp_path: Path, body: str, pattern: str) -> None:
    """SNR CSV errors name the file, line and field."""
    path = _write(tmp_path, "s.csv", body)
    with pytest.raises(TraceError, match=pattern):
        load_trace(path)


def test_missing_file_is_a_trace_error(tmp_path: Path) -> None:
    """A path that does not exist is a TraceError naming it."""
    with pytest.raises(TraceError, match="nope.csv.*no such file"):
        load_trace(tmp_path / "nope.csv")
    with pytest.raises(TraceError, match="no such file"):
        load_trace(tmp_path / "nope.csv", fmt="capacity_csv")


def _save_csi(path: Path, **overrides: object) -> Path:
    rng = np.random.default_rng(0)
    arrays = {
        "times": np.array([0.0, 0.1, 0.2]),
        "h": (rng.standard_normal((3, 8)) + 1j * rng.standard_normal((3, 8))) / np.sqrt(2),
        "snr_db": np.float64(10.0),
        "subcarrier_spacing_hz": np.float64(312_500.0),
    }
    arrays.update(overrides)
    np.savez(path, **{k: v for k, v in arrays.items() if v is not None})
    return path


def test_csi_npz_capacity_formula(tmp_path: Path) -> None:
    """C = sum_k df log2(1 + |H_k|^2 SNR) per snapshot, times share."""
    path = _save_csi(tmp_path / "c.npz")
    with np.load(path) as data:
        h = data["h"]
    expected = 312_500.0 * np.log2(1 + np.abs(h) ** 2 * 10.0).sum(axis=1)
    tr = load_trace(path)
    assert tr.kind == "csi" and len(tr) == 3
    np.testing.assert_allclose(tr.capacity_bps, expected)
    np.testing.assert_allclose(load_trace(path, share=0.25).capacity_bps, expected * 0.25)
    assert "df = 312500 Hz" in tr.notes and "K = 8" in tr.notes


def test_csi_npz_per_snapshot_snr(tmp_path: Path) -> None:
    """snr_db may be one value per snapshot."""
    h = np.ones((3, 4), dtype=complex)
    path = _save_csi(tmp_path / "c.npz", h=h, snr_db=np.array([0.0, 10.0, 20.0]))
    tr = load_trace(path)
    np.testing.assert_allclose(tr.capacity_bps, 4 * 312_500.0 * np.log2(1 + np.array([1, 10, 100])))


@pytest.mark.parametrize(
    ("overrides", "pattern"),
    [
        ({"h": None}, r"array 'h'.*missing"),
        ({"times": np.array([0.0, 0.2, 0.1])}, r"array 'times', index 2.*does not increase"),
        ({"times": np.array([0.0, np.nan, 0.2])}, r"array 'times', index \(1,\)"),
        ({"h": np.full((3, 8), np.nan + 0j)}, r"array 'h', index \(0, 0\).*NaN"),
        ({"h": np.ones((2, 8))}, r"array 'h'.*need \[3, K\]"),
        ({"snr_db": np.array([1.0, 2.0])}, r"array 'snr_db'.*shape"),
        ({"subcarrier_spacing_hz": np.float64(-1)}, r"subcarrier_spacing_hz"),
    ],
)
def test_csi_npz_errors(tmp_path: Path, overrides: dict, pattern: str) -> None:
    """Broken CSI archives give TraceErrors naming the array and index."""
    path = _save_csi(tmp_path / "bad.npz", **overrides)
    with pytest.raises(TraceError, match=pattern):
        load_trace(path)


def test_csi_npz_not_a_zip(tmp_path: Path) -> None:
    """A .npz that is not an archive is a TraceError."""
    path = _write(tmp_path, "x.npz", "hello")
    with pytest.raises(TraceError, match=r"x\.npz:file: not a readable \.npz"):
        load_trace(path)


def test_detect_format_by_extension_and_content(tmp_path: Path) -> None:
    """Auto-detection looks at the extension, then the first data line."""
    cases = {
        "a.npz": ("", "csi_npz"),
        "a.dat": ("", "intel5300"),
        "s.csv": ("# bandwidth_hz: 1\ntime_s,snr_db\n0,1\n", "snr_csv"),
        "c.txt": ("time_s, capacity_bps\n0,1\n", "capacity_csv"),
        "m.up": ("12\n15\n", "mahimahi"),
        "k.txt": ("0.0\t1.5\n1.0\t2.0\n", "cooked"),
        "g.csv": ("protocol,seq_num,throughput_mbps\n", "5gophers"),
        "e.csv": ("type,role,rssi,noise_floor,CSI_DATA\n", "esp32"),
    }
    for name, (body, fmt) in cases.items():
        assert detect_format(_write(tmp_path, name, body)) == fmt, name


def test_unknown_format_is_a_clear_error(tmp_path: Path) -> None:
    """Unrecognised content and unknown format names say what to pass instead."""
    path = _write(tmp_path, "w.log", "hello world and more\n")
    with pytest.raises(TraceError, match=r"w\.log:line 1: cannot tell the trace format.*--format"):
        load_trace(path)
    with pytest.raises(ConfigError, match="unknown trace format 'wav'.*snr_csv"):
        load_trace(path, fmt="wav")


def test_unknown_option_is_rejected(tmp_path: Path) -> None:
    """An option the reader does not take is a ConfigError listing the accepted ones."""
    path = _write(tmp_path, "c.csv", "time_s,capacity_bps\n0,1\n")
    with pytest.raises(ConfigError, match="does not accept option.*share"):
        load_trace(path, share=0.5)


def test_registry_lists_all_formats() -> None:
    """The registry holds every documented format."""
    assert set(READERS) == {"snr_csv", "capacity_csv", "csi_npz", "mahimahi", "cooked",
                            "5gophers", "gnettrack", "phy_log", "intel5300", "esp32", "nexmon",
                            "picoscenes"}
