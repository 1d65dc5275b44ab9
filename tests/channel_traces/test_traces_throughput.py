"""Tests of the throughput readers (Mahimahi, cooked, 5Gophers) on small and real files."""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pytest

from channel_traces._parse import TraceWarning
from channel_traces.registry import detect_format, load_trace
from shared.errors import ConfigError, TraceError

TRACES = Path(__file__).resolve().parents[2].parent / "shared" / "data" / "traces"
THROUGHPUT = TRACES / "throughput"


def _real(name: str) -> Path:
    path = THROUGHPUT / name
    if not path.is_file():
        pytest.skip(f"{path} not present (../shared/data is optional)")
    return path


def _write(tmp_path: Path, name: str, text: str) -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def test_mahimahi_bins_packets_into_windows(tmp_path: Path) -> None:
    """Each line is one 1500-byte opportunity; windows count them; the period wraps."""
    # period 2000 ms; window 1 s: [0,1000) gets 4 (incl. the 2000 ms one at t mod 2000 = 0)
    path = _write(tmp_path, "link.up", "0\n10\n10\n1500\n2000\n")
    tr = load_trace(path, window_s=1.0)
    assert tr.kind == "throughput"
    np.testing.assert_allclose(tr.times_s, [0.0, 1.0])
    np.testing.assert_allclose(tr.capacity_bps, [4 * 12000.0, 1 * 12000.0])
    assert tr.duration_s == pytest.approx(2.0)
    half = load_trace(path, window_s=0.5, share=0.5)
    np.testing.assert_allclose(half.capacity_bps, [4 * 12000.0, 0.0, 0.0, 12000.0])


def test_mahimahi_partial_last_window(tmp_path: Path) -> None:
    """A period that is not a multiple of the window gives a shorter last window."""
    path = _write(tmp_path, "link", "100\n1200\n1400\n1500\n")
    tr = load_trace(path, fmt="mahimahi", window_s=1.0)
    # period 1.5 s: window [1, 1.5) holds 1200 and 1400 (1500 wraps to 0) over 0.5 s
    np.testing.assert_allclose(tr.capacity_bps, [2 * 12000.0, 2 * 12000.0 / 0.5])


@pytest.mark.parametrize(
    ("body", "pattern"),
    [
        ("5\n3\n", r"line 2, field 'timestamp_ms': 3 ms goes back in time"),
        ("5\n7.5\n", r"line 2, field 'timestamp_ms': '7.5' is not an integer"),
        ("0\n0\n", r"the trace spans 0 ms"),
        ("", r"the file is empty"),
    ],
)
def test_mahimahi_errors(tmp_path: Path, body: str, pattern: str) -> None:
    """Malformed Mahimahi traces name the line and the fix."""
    with pytest.raises(TraceError, match=pattern):
        load_trace(_write(tmp_path, "m.down", body), fmt="mahimahi")


def test_cooked_reads_mbps_and_share(tmp_path: Path) -> None:
    """Cooked traces: C = share x Mbit/s x 1e6, times shifted to 0."""
    path = _write(tmp_path, "k.txt", "1.0\t2.5\n1.5 0.0\n3.0\t1.0\n")
    tr = load_trace(path, share=0.001)
    np.testing.assert_allclose(tr.times_s, [0.0, 0.5, 2.0])
    np.testing.assert_allclose(tr.capacity_bps, [2500.0, 0.0, 1000.0])
    assert "share = 0.001" in tr.notes
    with pytest.raises(ConfigError, match="share must be in"):
        load_trace(path, share=2.0)
    with pytest.raises(ConfigError, match="share must be in"):
        load_trace(path, share=0.0)


@pytest.mark.parametrize(
    ("body", "pattern"),
    [
        ("0 1\n1 -2\n", r"line 2, field 'throughput_mbps': negative value"),
        ("0 1\n1 x\n", r"line 2, field 'throughput_mbps': 'x' is not a number"),
        ("0 1\n0 2\n", r"line 2, field 'time_s'.*does not increase"),
        ("0 1\n1 nan\n", r"line 2, field 'throughput_mbps'.*finite"),
        ("0 1\n1 2 3\n", r"line 2: 3 fields"),
    ],
)
def test_cooked_errors(tmp_path: Path, body: str, pattern: str) -> None:
    """Malformed cooked traces name the line and field."""
    with pytest.raises(TraceError, match=pattern):
        load_trace(_write(tmp_path, "k.txt", body), fmt="cooked")


GOPHERS_WALK = """protocol,num_tcp_conn,seq_num,anonymized_mCid,radio_type,throughput_mbps,nrStatus,primitive_handoff_type
TCP,8,1,3,4G,92.1,NOT_RESTRICTED,
TCP,8,2,3,5G,150,CONNECTED,P2
TCP,8,3,4,5G,186,CONNECTED,
TCP,8,5,4,4G,0,NOT_RESTRICTED,P4
"""


def test_5gophers_single_carrier_keeps_radio_and_handoffs(tmp_path: Path) -> None:
    """throughput_mbps is the capacity; radio type and handoffs are kept as extras."""
    tr = load_trace(_write(tmp_path, "walk.csv", GOPHERS_WALK), share=1e-5)
    np.testing.assert_allclose(tr.times_s, [0.0, 1.0, 2.0, 4.0])
    np.testing.assert_allclose(tr.capacity_bps, [921.0, 1500.0, 1860.0, 0.0])
    assert list(tr.extras["radio_type"]) == ["4G", "5G", "5G", "4G"]
    assert list(tr.extras["handoff"]) == [False, True, False, True]
    assert list(tr.extras["cell_id"]) == ["3", "3", "4", "4"]
    assert "2 handoffs" in tr.notes and "1 gaps" in tr.notes


def test_5gophers_multi_carrier_column(tmp_path: Path) -> None:
    """Multi-carrier files pick a column by carrier name; default the first."""
    body = ("protocol,num_tcp_conn,seq_num,Sprint_throughput_mbps,Verizon_throughput_mbps\n"
            "TCP,8,0,10,20\nTCP,8,1,11,0\n")
    path = _write(tmp_path, "car.csv", body)
    np.testing.assert_allclose(load_trace(path).capacity_bps, [10e6, 11e6])
    np.testing.assert_allclose(load_trace(path, column="Verizon").capacity_bps, [20e6, 0.0])
    with pytest.raises(TraceError, match="no throughput column 'ATT'.*Fix: pass column="):
        load_trace(path, column="ATT")


@pytest.mark.parametrize(
    ("rows", "pattern"),
    [
        ("TCP,8,0,1,5G,abc,x,\n", r"line 2, field 'throughput_mbps': 'abc'"),
        ("TCP,8,0,1,5G,5,x,\nTCP,8,0,1,5G,5,x,\n", r"line 3, field 'seq_num'.*does not increase"),
        ("TCP,8,0,1,5G,-1,x,\n", r"line 2, field 'throughput_mbps': negative"),
        ("TCP,8,0,1\n", r"line 2: wrong number of fields"),
        ("", r"line 1: the file has no data rows"),
    ],
)
def test_5gophers_errors(tmp_path: Path, rows: str, pattern: str) -> None:
    """Malformed 5Gophers rows name the line and field."""
    header = GOPHERS_WALK.splitlines()[0] + "\n"
    with pytest.raises(TraceError, match=pattern):
        load_trace(_write(tmp_path, "g.csv", header + rows), fmt="5gophers")


def _trace_warnings(caught: list[warnings.WarningMessage]) -> list[str]:
    return [str(w.message) for w in caught if issubclass(w.category, TraceWarning)]


def test_cooked_and_mahimahi_skip_a_few_bad_lines(tmp_path: Path) -> None:
    """A few bad lines (3 of 30, 1 of 14) are skipped with one warning naming them."""
    lines = [f"{t} {1 + t % 3}" for t in range(12)]
    lines[5] = "5 1,5"
    lines[8] = "6.5 2"  # goes back in time
    lines.append("12 -1")  # negative
    body = "\n".join(lines) + "\n" + "\n".join(f"{t} 1" for t in range(13, 30)) + "\n"
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        tr = load_trace(_write(tmp_path, "k.txt", body), fmt="cooked")
    (message,) = _trace_warnings(caught)
    assert "skipped 3 of 30 rows" in message and "line 6, 9, 13" in message
    assert "2 bad throughput_mbps; 1 bad time_s" in message
    assert len(tr) == 27 and "3 of 30 rows skipped" in tr.notes
    stamps = "\n".join(["0", "5", "x5", *[str(10 * i) for i in range(1, 12)]]) + "\n"
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        mm = load_trace(_write(tmp_path, "m.up", stamps), fmt="mahimahi")
    assert "skipped 1 of 14 rows (1 bad timestamp_ms): line 3" in _trace_warnings(caught)[0]
    assert "13 delivery opportunities" in mm.notes


def _runs_file(tmp_path: Path) -> Path:
    rows = ["protocol,carrier,num_tcp_conn,server,run_num,seq_num,throughput_mbps"]
    for c, carrier in enumerate(("Verizon", "TMobile")):
        for run in (1, 2):
            rows += [f"TCP,{carrier},8,east,{run},{s},{100 * c + 10 * run + s}" for s in range(4)]
    path = tmp_path / "runs.csv"
    path.write_text("\n".join(rows) + "\n", encoding="utf-8")
    return path


def test_5gophers_runs_are_selectable(tmp_path: Path) -> None:
    """A file of many runs: run=N, run=key=value,... or FILE#RUN picks one."""
    path = _runs_file(tmp_path)
    assert detect_format(path) == "5gophers"
    third = load_trace(path, run=3)
    np.testing.assert_allclose(third.capacity_bps, np.array([110, 111, 112, 113]) * 1e6)
    assert "run #3 (carrier=TMobile,run_num=1) of 4, lines 10-13" in third.notes
    keyed = load_trace(path, run="carrier=tmobile,run_num=2")
    np.testing.assert_allclose(keyed.capacity_bps, np.array([120, 121, 122, 123]) * 1e6)
    hashed = load_trace(f"{path}#carrier=Verizon,run_num=2", share=0.5)
    np.testing.assert_allclose(hashed.capacity_bps, np.array([20, 21, 22, 23]) * 0.5e6)
    np.testing.assert_allclose(load_trace(f"{path}##4").capacity_bps[0], 120e6)


def test_5gophers_runs_default_to_the_first_with_a_listing(tmp_path: Path) -> None:
    """Without a selection the first run loads and a warning lists every run."""
    with pytest.warns(TraceWarning, match=r"holds 4 runs, reading #1 \(carrier=Verizon,"
                      r"run_num=1\).*#4 \(carrier=TMobile,run_num=2\) from line 14, 4 s"):
        tr = load_trace(_runs_file(tmp_path))
    np.testing.assert_allclose(tr.capacity_bps, np.array([10, 11, 12, 13]) * 1e6)


def test_5gophers_run_errors_list_the_runs(tmp_path: Path) -> None:
    """A selection matching no run (or several) names the file and lists the runs."""
    path = _runs_file(tmp_path)
    with pytest.raises(TraceError, match=r"runs\.csv:option 'run' 'carrier=ATT': matches 0 of "
                       r"the file's 4 runs\. Fix: pass run= .*#2 \(carrier=Verizon,run_num=2\)"):
        load_trace(path, run="carrier=ATT")
    with pytest.raises(TraceError, match=r"matches 2 of the file's 4 runs"):
        load_trace(path, run="carrier=Verizon")
    with pytest.raises(TraceError, match=r"'colour=red' is not key=value with a key in"):
        load_trace(path, run="colour=red")
    cooked = _write(tmp_path, "k.txt", "0 1\n1 2\n")
    with pytest.raises(ConfigError, match=r"'#2' selects a run, but format 'cooked' has no runs"):
        load_trace(f"{cooked}#2")


def test_5gophers_time_restart_starts_a_new_run(tmp_path: Path) -> None:
    """Without key columns, seq_num going back to the start splits the runs."""
    body = "protocol,num_tcp_conn,seq_num,throughput_mbps\n" + "".join(
        f"TCP,8,{s},{v}\n" for s, v in ((1, 5), (2, 6), (3, 7), (1, 8), (2, 9)))
    path = _write(tmp_path, "restart.csv", body)
    tr = load_trace(path, run="#2")
    np.testing.assert_allclose(tr.capacity_bps, [8e6, 9e6])
    assert "run #2 of 2, lines 5-6" in tr.notes and "seq_num shifted by -1" in tr.notes


def test_real_norway_hsdpa_traces() -> None:
    """The Norway HSDPA cooked traces load with their exact values and lengths."""
    bus = load_trace(_real("norway_hsdpa_bus_1.txt"))
    assert len(bus) == 266
    assert bus.capacity_bps[0] == pytest.approx(4.03768755221e6)
    assert bus.times_s[1] == pytest.approx(0.549999952316)
    assert bus.times_s[-1] == pytest.approx(154.75999999)
    assert bus.capacity_bps[-1] == pytest.approx(1.85123847695e6)
    train = load_trace(_real("norway_hsdpa_train_19.txt"), share=1e-3)
    assert len(train) == 265
    assert train.capacity_bps[0] == pytest.approx(1520.32463039)
    assert train.times_s[-1] == pytest.approx(256.940000057)


def test_real_fcc_trace() -> None:
    """The FCC MBA cooked trace has 372 samples every 5 s."""
    tr = load_trace(_real("fcc_mba_trace_28838.txt"))
    assert len(tr) == 372
    np.testing.assert_allclose(np.diff(tr.times_s), 5.0)
    assert tr.capacity_bps[0] == pytest.approx(1.190712e6)
    assert tr.duration_s == pytest.approx(1860.0)


def test_real_5gophers_traces() -> None:
    """5Gophers: 603 walking seconds with 4G/5G and 32 handoffs; the car file by carrier."""
    walk = load_trace(_real("5gophers_walking_trace.csv"))
    assert len(walk) == 603
    assert walk.capacity_bps[0] == pytest.approx(92.1e6)
    assert walk.capacity_bps[-1] == pytest.approx(178e6)
    radio = walk.extras["radio_type"]
    assert (radio == "4G").sum() == 315 and (radio == "5G").sum() == 288
    assert int(walk.extras["handoff"].sum()) == 32
    car = load_trace(_real("5gophers_car_driving_trace_1.csv"), column="TMobile")
    assert len(car) == 120
    assert car.capacity_bps[0] == pytest.approx(145.75433600000005e6)
    assert car.capacity_bps[-1] == 0.0
    assert car.duration_s == pytest.approx(126.0)
    assert "Sprint_throughput_mbps" in car.notes
