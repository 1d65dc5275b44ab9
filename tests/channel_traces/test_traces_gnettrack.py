"""Tests of the G-NetTrack Pro CSV reader (UCC 5G data set layout) and the 3GPP CQI tables."""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pytest

from channel_traces._parse import TraceWarning
from channel_traces.link_tables import LTE_CQI_TABLE, NR_CQI_TABLE, cqi_efficiency
from channel_traces.registry import detect_format, load_trace
from shared.errors import TraceError

#: The UCC 5G data set header (Raca et al., MMSys 2020), as G-NetTrack Pro writes it.
HEADER = ("Timestamp,Longitude,Latitude,Speed,Operatorname,CellID,NetworkMode,RSRP,RSRQ,SNR,"
          "CQI,RSSI,DL_bitrate,UL_bitrate,State,PINGAVG,PINGMIN,PINGMAX,PINGSTDEV,PINGLOSS,"
          "CELLHEX,NODEHEX,LACHEX,RAWCELLID,NRxRSRP,NRxRSRQ")


def _row(second: int, mode: str = "5G", snr: str = "8.0", cqi: str = "15", dl: str = "5000",
         state: str = "D", cell: str = "12") -> str:
    stamp = f"2019.11.28_07.{second // 60:02d}.{second % 60:02d}"
    return (f"{stamp},-8.38,51.93,0,B,{cell},{mode},-100,-10,{snr},{cqi},-,{dl},40,{state},"
            "-,-,-,-,-,C,A,B,1,-100,-1")


def _write(tmp_path: Path, rows: list[str], name: str = "drive.csv") -> Path:
    path = tmp_path / name
    path.write_text("\n".join([HEADER, *rows]) + "\n", encoding="utf-8")
    return path


def test_cqi_tables_match_the_specifications() -> None:
    """TS 36.213 7.2.3-1 / TS 38.214 5.2.2.1-2: CQI 1 -> 0.1523, 7 -> 1.4766, 15 -> 5.5547."""
    for table in (LTE_CQI_TABLE, NR_CQI_TABLE):
        assert cqi_efficiency(0, table) == 0.0
        assert cqi_efficiency(1, table) == pytest.approx(0.1523, abs=1e-4)
        assert cqi_efficiency(7, table) == pytest.approx(1.4766, abs=1e-4)
        assert cqi_efficiency(15, table) == pytest.approx(5.5547, abs=1e-4)
    with pytest.raises(ValueError, match="outside 0..15"):
        cqi_efficiency(16)


def test_throughput_uses_busy_rows_and_holds_over_the_rest(tmp_path: Path) -> None:
    """C = share x DL_bitrate x 1000 on State D rows; idle and '-' rows are left out."""
    rows = [_row(0, dl="5000"), _row(1, dl="6000"), _row(2, dl="0", state="I"),
            _row(3, dl="-"), _row(4, dl="800")]
    path = _write(tmp_path, rows)
    assert detect_format(path) == "gnettrack"
    tr = load_trace(path, share=0.001)
    assert tr.kind == "throughput"
    np.testing.assert_allclose(tr.times_s, [0.0, 1.0, 4.0])
    np.testing.assert_allclose(tr.capacity_bps, [5000.0, 6000.0, 800.0])
    assert "State I not in ['D']" in tr.notes and "no DL_bitrate value ('-')" in tr.notes
    assert "time 0 is Timestamp 2019.11.28_07.00.00" in tr.notes
    every = load_trace(path, states="all")
    np.testing.assert_allclose(every.capacity_bps, [5e6, 6e6, 0.0, 8e5])


def test_rows_in_the_same_second_are_merged(tmp_path: Path) -> None:
    """Two rows with one Timestamp become one sample holding their mean."""
    path = _write(tmp_path, [_row(0, dl="1000"), _row(0, dl="3000"), _row(1, dl="500")])
    tr = load_trace(path)
    np.testing.assert_allclose(tr.capacity_bps, [2e6, 5e5])
    assert "1 repeated seconds merged (mean)" in tr.notes


def test_snr_metric_is_shannon_with_the_stated_bandwidth(tmp_path: Path) -> None:
    """metric='snr': C = W log2(1 + SNR) with W = bandwidth_hz; rows without SNR are left out."""
    path = _write(tmp_path, [_row(0, snr="0"), _row(1, snr="-"), _row(2, snr="10")])
    tr = load_trace(path, metric="snr", bandwidth_hz=1000.0)
    assert tr.kind == "snr"
    np.testing.assert_allclose(tr.times_s, [0.0, 2.0])
    np.testing.assert_allclose(tr.capacity_bps, [1000.0, 1000.0 * np.log2(11.0)])
    assert "W = 1000 Hz" in tr.notes
    with pytest.raises(TraceError, match=r"option 'bandwidth_hz'.*Fix: pass --bandwidth-hz"):
        load_trace(path, metric="snr")


def test_cqi_metric_uses_the_table_of_each_network_mode(tmp_path: Path) -> None:
    """metric='cqi': C = W x SE(CQI), LTE and 5G tables; HSPA+ rows have no CQI table."""
    rows = [_row(0, mode="LTE", cqi="7"), _row(1, mode="5G", cqi="15"),
            _row(2, mode="HSPA+", cqi="5"), _row(3, mode="LTE", cqi="0")]
    tr = load_trace(_write(tmp_path, rows), metric="cqi", bandwidth_hz=1000.0)
    np.testing.assert_allclose(tr.times_s, [0.0, 1.0, 3.0])
    np.testing.assert_allclose(tr.capacity_bps, [1000 * 4 * 378 / 1024, 1000 * 6 * 948 / 1024, 0])
    assert "TS 36.213 Table 7.2.3-1" in tr.notes and "TS 38.214 Table 5.2.2.1-2" in tr.notes
    assert "NetworkMode HSPA+ has no CQI table" in tr.notes
    assert list(tr.extras["network_mode"]) == ["LTE", "5G", "LTE"]


def test_a_few_bad_rows_are_skipped_with_a_warning(tmp_path: Path) -> None:
    """One malformed row in twelve loads the rest and says which line and why."""
    rows = [_row(s, dl=str(1000 + s)) for s in range(12)]
    rows[4] = _row(4, dl="12k")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        tr = load_trace(_write(tmp_path, rows))
    messages = [str(w.message) for w in caught if issubclass(w.category, TraceWarning)]
    assert len(messages) == 1
    assert "skipped 1 of 12 rows (1 bad DL_bitrate): line 6" in messages[0]
    assert len(tr) == 11 and "1 of 12 rows skipped" in tr.notes


@pytest.mark.parametrize(
    ("rows", "pattern"),
    [
        ([_row(0), "2019.11.28_07.00.01,-8.38,51.93"],
         r"drive\.csv:line 3: wrong number of fields \(3, the header has 26\).*Fix: repair"),
        ([_row(0), _row(1, dl="abc")], r"line 3, field 'DL_bitrate': 'abc' is not a number"),
        ([_row(5), _row(1)], r"line 3, field 'Timestamp': 2019.11.28_07.00.01 goes back"),
        ([_row(0).replace("2019.11.28_07.00.00", "28/11/2019 07:00")],
         r"line 2, field 'Timestamp'.*not a YYYY.MM.DD_hh.mm.ss time"),
        ([_row(0, state="I")], r"line 2: no row has a usable DL_bitrate value \(1 State I"),
    ],
)
def test_bad_logs_name_the_line_and_the_fix(tmp_path: Path, rows: list[str], pattern: str) -> None:
    """Too many bad rows (here half or all) is an error naming the first line and the fix."""
    with pytest.raises(TraceError, match=pattern):
        load_trace(_write(tmp_path, rows))
