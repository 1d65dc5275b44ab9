"""Tests of the ``traces`` command (show, generate) and of the summary statistics."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pytest

from channel_traces.cli import main, register
from channel_traces.generate import TRACES_DIR
from channel_traces.registry import load_trace
from channel_traces.summary import suggest_share, summarize
from channel_traces.trace import Trace
from shared.rate import RateConfig, budget_coefficients

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="ndpca")
    register(parser.add_subparsers(dest="command", required=True))
    return parser


def test_show_prints_stats_and_writes_png(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    """`traces show FILE --plot OUT.png` prints the summary and writes a PNG."""
    out = tmp_path / "plots" / "default.png"
    args = _parser().parse_args(
        ["traces", "show", str(TRACES_DIR / "default.csv"), "--plot", str(out)])
    assert args.func(args) == 0
    text = capsys.readouterr().out
    assert out.read_bytes()[:8] == PNG_MAGIC and out.stat().st_size > 10_000
    for word in ("duration   60.000 s", "1875 samples", "capacity   min", "median", "mean",
                 "outage", "budget     min", "W = 50000 Hz", "sigma2 1, D 0.01, eta 1.1"):
        assert word in text
    summary = summarize(load_trace(TRACES_DIR / "default.csv"))
    assert f"max {summary.budget_max} coefficients per step" in text


def test_show_with_share_and_period(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    """--share reaches the reader and --period sets the step of the budget."""
    path = tmp_path / "k.txt"
    path.write_text("0 1.0\n1 2.0\n", encoding="utf-8")
    assert main(["traces", "show", str(path), "--share", "0.001", "--period", "0.5"]) == 0
    text = capsys.readouterr().out
    assert "share = 0.001" in text and "T 0.5 s" in text
    expected = budget_coefficients(1000.0, RateConfig(chunk_seconds=0.5), 256)
    assert f"budget     min {expected} " in text


def test_show_reports_user_errors(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    """A bad file or option exits with 2 and a message, not a traceback."""
    bad = tmp_path / "bad.csv"
    bad.write_text("time_s,capacity_bps\n0,1\n0,2\n", encoding="utf-8")
    assert main(["traces", "show", str(bad)]) == 2
    assert "bad.csv:line 3" in capsys.readouterr().err
    assert main(["traces", "show", str(TRACES_DIR / "static.csv"), "--share", "0.5"]) == 2
    assert "does not accept" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exit_:  # argparse refuses it before anything runs
        main(["traces", "show", str(TRACES_DIR / "static.csv"), "--period", "-1"])
    assert exit_.value.code == 2 and "--period: '-1' must be a positive number" in capsys.readouterr().err
    assert main(["traces", "show", str(TRACES_DIR / "static.csv"), "--period", "1e-9"]) == 2
    assert "pass a period of at least" in capsys.readouterr().err
    assert main(["traces", "show", str(TRACES_DIR / "default.csv"), "--option", "bandwidth_hz=abc"]) == 2
    assert "bandwidth_hz='abc' must be a finite number" in capsys.readouterr().err


def test_generate_command_writes_the_traces(tmp_path: Path) -> None:
    """`traces generate --out DIR` writes the same bytes as the committed files."""
    assert main(["traces", "generate", "--out", str(tmp_path)]) == 0
    for committed in TRACES_DIR.glob("*.csv"):
        assert (tmp_path / committed.name).read_bytes() == committed.read_bytes()


def test_traces_without_subcommand_prints_help(capsys: pytest.CaptureFixture) -> None:
    """`traces` alone prints its usage and returns 2."""
    args = _parser().parse_args(["traces"])
    assert args.func(args) == 2
    assert "show" in capsys.readouterr().out


def test_summary_values_on_a_known_trace() -> None:
    """Summary statistics: time-weighted mean, outage steps, budget extremes."""
    tr = Trace(np.array([0.0, 1.0, 2.0]), np.array([0.0, 1000.0, 4000.0]), "capacity", "t")
    cfg = RateConfig(chunk_seconds=0.5)
    s = summarize(tr, cfg, max_total=256)
    assert s.duration_s == 3.0 and s.samples == 3 and s.steps == 6
    assert s.cap_mean == pytest.approx(5000.0 / 3)
    assert s.cap_median == 1000.0 and s.cap_min == 0.0 and s.cap_max == 4000.0
    assert s.outage_fraction == pytest.approx(2 / 6)
    assert s.budget_min == 0
    assert s.budget_max == budget_coefficients(4000.0, cfg, 256)


def test_suggest_share_puts_the_median_budget_at_target() -> None:
    """Scaling by suggest_share gives a median budget of about 64 coefficients."""
    tr = Trace(np.arange(10.0), np.linspace(1e6, 5e6, 10), "throughput", "t")
    cfg = RateConfig()
    share = suggest_share(tr, cfg, target=64)
    budgets = [budget_coefficients(c * share, cfg, 256) for c in tr.steps(cfg.chunk_seconds)]
    assert np.median(budgets) == pytest.approx(64, abs=1)


GNETTRACK = ("Timestamp,Longitude,Latitude,Speed,Operatorname,CellID,NetworkMode,RSRP,RSRQ,"
             "SNR,CQI,RSSI,DL_bitrate,UL_bitrate,State")


def _gnettrack_row(second: int, cqi: str, dl: str = "4000") -> str:
    return f"2020.01.02_10.00.{second:02d},-8.4,51.9,0,A,7,LTE,-95,-9,5,{cqi},-70,{dl},30,D"


def test_show_prints_the_derivation_and_skipped_rows(tmp_path: Path,
                                                     capsys: pytest.CaptureFixture) -> None:
    """`traces show` on a G-NetTrack log prints the formula, the data notes and warnings."""
    rows = [_gnettrack_row(s, str(1 + s % 15)) for s in range(12)]
    rows[3] = _gnettrack_row(3, "7", dl="4,000")
    path = tmp_path / "drive.csv"
    path.write_text("\n".join([GNETTRACK, *rows]) + "\n", encoding="utf-8")
    assert main(["traces", "show", str(path), "--metric", "cqi", "--bandwidth-hz", "1000"]) == 0
    text = capsys.readouterr().out
    assert "derived    C = share x W x SE(CQI), W = 1000 Hz" in text
    assert "LTE: TS 36.213 Table 7.2.3-1" in text
    assert "\n           12 rows, 11 used\n" in text
    assert "warning    " in text and "skipped 1 of 12 rows (1 wrong number of fields" in text
    assert main(["traces", "show", str(path), "--option", "states=all", "--share", "0.01"]) == 0
    text = capsys.readouterr().out
    assert "C = share x DL_bitrate (kbit/s) x 1000 on rows with State in any" in text
    assert "capacity   min 40000" in text
    assert main(["traces", "show", str(path), "--option", "states"]) == 2
    assert "--option 'states' is not KEY=VALUE" in capsys.readouterr().err


def test_show_selects_a_run(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    """--run and FILE#RUN reach the 5Gophers reader; a bad run lists the runs."""
    rows = ["protocol,carrier,seq_num,throughput_mbps"]
    rows += [f"TCP,{c},{s},{v}" for c, v in (("A", 1), ("B", 2)) for s in range(3)]
    path = tmp_path / "runs.csv"
    path.write_text("\n".join(rows) + "\n", encoding="utf-8")
    assert main(["traces", "show", str(path), "--run", "carrier=B"]) == 0
    assert "run #2 (carrier=B) of 2" in capsys.readouterr().out
    assert main(["traces", "show", f"{path}#1"]) == 0
    assert "capacity   min 1e+06" in capsys.readouterr().out
    assert main(["traces", "show", str(path), "--run", "9"]) == 2
    assert "matches 0 of the file's 2 runs" in capsys.readouterr().err


def test_registered_readers_keep_their_own_option_types(tmp_path: Path) -> None:
    """Options of a reader without plain annotations (none, Literal, Any) reach it as given;
    annotated number options are converted from text."""
    from channel_traces.registry import EXTENSIONS, READERS, register_reader

    seen: dict[str, object] = {}

    def reader(path, share=1.0, mode: Literal["a", "b"] = "a", extra: Any = None, level: float = 0.0):
        seen.update(share=share, mode=mode, extra=extra, level=level)
        return Trace(np.array([0.0, 1.0]), np.array([1e4, 1e4]), "capacity", str(path))

    register_reader("custom-test", reader, (".cst",))
    try:
        (tmp_path / "x.cst").write_text("x")
        load_trace(tmp_path / "x.cst", share="0.5", mode="b", extra=[1], level="3")
        assert seen == {"share": "0.5", "mode": "b", "extra": [1], "level": 3.0}
    finally:
        READERS.pop("custom-test")
        EXTENSIONS.pop(".cst")
