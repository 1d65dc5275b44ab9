"""Tests of the 5G uplink PHY log reader and of the TS 38.214 MCS and TBS procedure."""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pytest

from channel_traces._parse import TraceWarning
from channel_traces.link_tables import (
    LTE_RE_PER_PRB,
    NR_RE_PER_PRB,
    mcs_entry,
    tbs_from_mcs,
    transport_block_size,
)
from channel_traces.registry import detect_format, load_trace
from shared.errors import TraceError

HEADER = "td,5G_TBS,4G_TBS,5G_MCS,4G_MCS,5G_RB,4G_RB,5G_BLER,4G_BLER,RSRP,RSRQ,CQI,TxPower"


def _write(tmp_path: Path, rows: list[str], header: str = HEADER, name: str = "ul.csv") -> Path:
    path = tmp_path / name
    path.write_text("\n".join([header, *rows]) + "\n", encoding="utf-8")
    return path


def test_mcs_table_and_tbs_follow_ts_38_214() -> None:
    """Table 5.1.3.1-1 entries and section 5.1.3.2 on known cases (both TBS branches)."""
    assert mcs_entry(0) == (2, 120 / 1024) and mcs_entry(28) == (6, 948 / 1024)
    with pytest.raises(ValueError, match="0..28"):
        mcs_entry(29)
    # 273 PRB, 13 symbols with 24 DM-RS REs, Qm 4, R 616/1024, 4 layers: 344376 bits.
    assert transport_block_size(273, 4, 616 / 1024, layers=4, re_per_prb=12 * 13 - 24) == 344376
    # Small TBS: N_info = 156 x 1 x 120/1024 x 2 = 36.6 -> quantised 32 -> table entry 32.
    assert tbs_from_mcs(0, 1) == 32
    # Large TBS, R > 1/4, N'_info > 8424: 11 code blocks -> 86040 bits.
    assert tbs_from_mcs(28, 100) == 86040
    assert NR_RE_PER_PRB == 156 and LTE_RE_PER_PRB == 144
    assert transport_block_size(0, 2, 0.5) == 0


def test_capacity_is_tbs_times_one_minus_bler_per_tti(tmp_path: Path) -> None:
    """C = sum over legs (1 - BLER) TBS / TTI, 5G TTI 0.5 ms and 4G TTI 1 ms; td in ms."""
    rows = ["0,1000,500,10,5,20,10,0.1,0,-90,-10,12,20",
            "20,2000,0,20,0,50,0,0,0,-91,-11,13,21",
            "40,0,400,0,3,0,5,0,0.5,-92,-12,11,22"]
    path = _write(tmp_path, rows)
    assert detect_format(path) == "phy_log"
    tr = load_trace(path, share=0.5)
    assert tr.kind == "throughput"
    np.testing.assert_allclose(tr.times_s, [0.0, 0.02, 0.04])
    expected_5g = np.array([0.9 * 1000, 2000, 0]) / 0.5e-3
    expected_4g = np.array([500, 0, 0.5 * 400]) / 1e-3
    np.testing.assert_allclose(tr.capacity_bps, 0.5 * (expected_5g + expected_4g))
    np.testing.assert_allclose(tr.extras["nr_bps"], 0.5 * expected_5g)
    np.testing.assert_allclose(tr.extras["rsrp"], [-90, -91, -92])
    assert "td read as the time in ms" in tr.notes and "(1 - BLER) x TBS / TTI" in tr.notes
    slow = load_trace(path, nr_tti_ms=1.0, td_unit="ms")
    assert slow.capacity_bps[1] == pytest.approx(2000 / 1e-3)


def test_missing_tbs_comes_from_mcs_and_rb(tmp_path: Path) -> None:
    """Where TBS is '-', TBS = TS 38.214 5.1.3.2 from MCS and RB; BLER in percent is seen."""
    rows = ["0.00,-,-,28,0,100,1,10,0,-90,-10,12,20", "0.02,-,-,29,-,10,-,0,-,-90,-10,12,20"]
    tr = load_trace(_write(tmp_path, rows))
    nr = 0.9 * tbs_from_mcs(28, 100) / 0.5e-3
    lte = tbs_from_mcs(0, 1, re_per_prb=LTE_RE_PER_PRB) / 1e-3
    np.testing.assert_allclose(tr.capacity_bps, [nr + lte, 0.0])
    np.testing.assert_allclose(tr.times_s, [0.0, 0.02])
    assert "td read as the time in s" in tr.notes and "BLER in %" in tr.notes
    assert "1 rows MCS 29..31 (retransmission, no TBS)" in tr.notes
    assert "4G approximated with the NR procedure" in tr.notes


def test_td_as_intervals_and_tab_separated_logs(tmp_path: Path) -> None:
    """A td column of per-row intervals (20 ms each) is summed; tabs separate cells."""
    rows = ["20\t100\t0\t1\t1\t1\t1\t0\t0\t-90\t-10\t7\t3"] * 3
    path = _write(tmp_path, rows, header=HEADER.replace(",", "\t"), name="ul.txt")
    assert detect_format(path) == "phy_log"
    tr = load_trace(path)
    np.testing.assert_allclose(tr.times_s, [0.0, 0.02, 0.04])
    assert "interval since the previous row, in ms" in tr.notes


def test_bad_rows_are_skipped_or_rejected(tmp_path: Path) -> None:
    """One bad row in twelve is skipped with a warning; a BLER above 100 % is an error."""
    rows = [f"{20 * i},1000,0,10,0,20,0,0,0,-90,-10,12,20" for i in range(12)]
    rows[3] = "60,1e3x,0,10,0,20,0,0,0,-90,-10,12,20"
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        tr = load_trace(_write(tmp_path, rows))
    assert len(tr) == 11
    assert any("skipped 1 of 12 rows (1 bad 5G_TBS): line 5" in str(w.message)
               for w in caught if issubclass(w.category, TraceWarning))
    rows[3] = "60,1000,0,10,0,20,0,250,0,-90,-10,12,20"
    with pytest.raises(TraceError, match=r"column '5G_BLER': a BLER above 100 %"):
        load_trace(_write(tmp_path, rows))
    with pytest.raises(TraceError, match=r"line 3, field '4G_RB': negative value -1"):
        load_trace(_write(tmp_path, ["0,1,1,1,1,1,1,0,0,1,1,1,1", "20,1,1,1,1,1,-1,0,0,1,1,1,1"]))
    with pytest.raises(TraceError, match=r"line 1: header.*lacks td or <leg>_TBS"):
        load_trace(_write(tmp_path, ["0,1"], header="time,bits"), fmt="phy_log")
