"""``ndpca evaluate`` on tiny debug checkpoints: every method and Opus against the room rate."""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path

import pytest

from training.config import load_config
from training.evaluate import (
    CODEC_CONFIGS,
    FIELDS,
    METHODS,
    OPUS_METHODS,
    codec_arch,
    run_evaluation,
    sweep_bandwidths,
)
from training.evaluate_report import interp_log_rate
from training.train import train

REPO = Path(__file__).resolve().parents[2]
DEBUG = REPO / "training" / "configs" / "debug.toml"
BANDWIDTHS = (4, 16)
FULL = 64  # the debug config's latent_total
OPUS_KBPS = (8.0, 32.0)  # 8: below 4 x Opus's floor for opus-all; 32: reachable by both
N_EXAMPLES = 2


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory) -> Path:
    from training.data.build import DataConfig, build_dataset

    out = tmp_path_factory.mktemp("rooms")
    build_dataset(DataConfig(**load_config(DEBUG).data.build), out, progress=False)
    return out


@pytest.fixture(scope="module")
def checkpoints(data_dir, tmp_path_factory) -> Path:
    """Every codec of METHODS from the debug config (DPCA: no training steps), with the
    bottleneck its shipped config names."""
    out = tmp_path_factory.mktemp("ckpt")
    for ref in sorted({c for c, _ in METHODS.values()}):
        arch = codec_arch(ref)
        shipped = load_config(REPO / "training" / "configs" / f"{CODEC_CONFIGS.get(ref, arch)}.toml")
        cfg = load_config(DEBUG, {"data": {"dir": str(data_dir)}, "model": {"arch": arch},
                                  "train": {"steps": 0 if arch.startswith("dpca") else 4,
                                            "bottleneck": shipped.train.bottleneck}})
        train(cfg, out / "runs" / ref, out=out / f"{ref}.ckpt", progress=False)
    return out


@pytest.fixture(scope="module")
def evaluation(checkpoints, data_dir, tmp_path_factory) -> tuple[Path, dict]:
    out = tmp_path_factory.mktemp("eval")
    res = run_evaluation(out, checkpoints, data_dir, limit=N_EXAMPLES, bandwidths=BANDWIDTHS,
                         opus_kbps=OPUS_KBPS, perceptual="all", workers=2, real=False, progress=False)
    return out, res


def _rows(path: Path) -> list[dict[str, str]]:
    with open(path) as fh:
        return list(csv.DictReader(fh))


def _f(v: str) -> float:
    return float(v) if v not in ("", None) else math.nan


def test_results_have_the_columns_and_every_method_at_every_bandwidth(evaluation):
    """results.csv: the issue's columns first, every method at every bandwidth, both Opus kinds."""
    out, _ = evaluation
    rows = _rows(out / "results.csv")
    assert list(rows[0])[:7] == ["method", "bandwidth", "room_kbps", "psnr_db", "si_sdr_db", "pesq", "stoi"]
    assert list(rows[0]) == FIELDS
    got = {(r["method"], int(r["bandwidth"])) for r in rows}
    assert got >= {(m, bw) for m in METHODS for bw in (*BANDWIDTHS, FULL)}
    opus = {(r["method"], float(r["target_kbps"])) for r in rows if int(r["bandwidth"]) == -1}
    assert opus == {(m, t) for m in OPUS_METHODS for t in OPUS_KBPS}
    assert all(int(r["n_examples"]) == N_EXAMPLES for r in rows)


def test_room_rate_grows_with_bandwidth(evaluation):
    """NDPCA-E4D1's measured room rate increases with the components per vector."""
    out, _ = evaluation
    rates = [_f(r["room_kbps"]) for r in _rows(out / "results.csv") if r["method"] == "ndpca-e4d1"]
    assert len(rates) == len(BANDWIDTHS) + 1
    assert all(a < b for a, b in zip(rates, rates[1:])) and rates[-1] > 0


def test_scores_cover_reference_and_all_microphones(evaluation):
    """Codec rows have finite reference, all-microphone and clean-speech scores; opus-ref only
    reference (and clean-speech) ones."""
    out, _ = evaluation
    rows = _rows(out / "results_per_example.csv")
    keys = ("psnr_db", "si_sdr_db", "pesq", "stoi")
    clean = ("clean_si_sdr_db", "clean_pesq", "clean_stoi")
    for r in rows:
        if r["method"] in METHODS:
            assert all(math.isfinite(_f(r[k])) and math.isfinite(_f(r[f"all_{k}"])) for k in keys), r
            assert all(math.isfinite(_f(r[k])) for k in clean), r
        elif r["method"] == "opus-ref" and not r["note"]:
            assert all(math.isfinite(_f(r[k])) for k in keys)
            assert all(math.isnan(_f(r[f"all_{k}"])) for k in keys)


def test_opus_fits_its_target_or_says_not_reachable(evaluation):
    """Every Opus row measures at most its room target, or is NaN with a "not reachable" note."""
    out, _ = evaluation
    rows = [r for r in _rows(out / "results_per_example.csv") if r["method"] in OPUS_METHODS]
    assert len(rows) == N_EXAMPLES * len(OPUS_METHODS) * len(OPUS_KBPS)
    for r in rows:
        rate, target = _f(r["room_kbps"]), _f(r["target_kbps"])
        if "not reachable" in r["note"]:
            assert math.isnan(rate) and math.isnan(_f(r["pesq"])) and _f(r["opus_floor_kbps"]) > target
        else:
            assert 0 < rate <= target and math.isfinite(_f(r["pesq"]))
    # four microphones at 2 kbit/s each are below Opus's floor; the reference alone at 32 is not
    assert all("not reachable" in r["note"] for r in rows if r["method"] == "opus-all" and _f(r["target_kbps"]) == 8)
    assert not any(r["note"] for r in rows if r["method"] == "opus-ref" and _f(r["target_kbps"]) == 32)


def test_per_example_rows_are_examples_times_methods_times_bandwidths(evaluation):
    """One per-example row per example, method and bandwidth, plus the Opus targets."""
    out, _ = evaluation
    rows = _rows(out / "results_per_example.csv")
    n_bw = len(sweep_bandwidths(BANDWIDTHS, FULL))
    assert len(rows) == N_EXAMPLES * (len(METHODS) * n_bw + len(OPUS_METHODS) * len(OPUS_KBPS))
    assert len({r["example"] for r in rows}) == N_EXAMPLES


def test_plots_summary_and_headline_are_written(evaluation):
    """Both plots, the summary's sections with the anchors, the headline and the command."""
    out, res = evaluation
    for name in ("quality_vs_rate.png", "fig3b_psnr.png", "summary.md", "headline.json", "command.txt"):
        assert (out / name).stat().st_size > 0
    summary = (out / "summary.md").read_text()
    for text in ("Room rate by bandwidth", "PESQ-WB, reference microphone", "STOI, all microphones",
                 "## opus-ref", "## opus-all", "nearest the anchors", "4.43 / 0.99", "log-rate axis",
                 "NDPCA-E4D1 against the baselines", "Headline ratios", "18.8"):
        assert text in summary, text
    head = json.loads((out / "headline.json").read_text())
    assert head["metric"] == "all_psnr_db"
    assert {"ndpca-e4d1 gain over naive (%)", "ndpca-e4d1 gain over naive-full (%)",
            "ndpca-e4d1 gain over dpca (%)", "ndpca-e2d1 share of JAE (%)"} <= set(head["mean_below_full"])
    assert {r["method"] for r in res["synthetic"]} == set(METHODS) | set(OPUS_METHODS)


def test_sweep_and_log_rate_interpolation():
    """The sweep drops values above full width and adds it; interpolation is on log rate only
    inside the measured range."""
    assert sweep_bandwidths((2, 4, 128, 1024), 64) == (2, 4, 64)
    assert sweep_bandwidths((), 1536) == (1536,)
    pts = [(6.0, 2.0), (24.0, 4.0)]
    assert interp_log_rate(pts, 12.0) == pytest.approx(3.0)
    assert interp_log_rate(pts, 5.0) is None and interp_log_rate(pts, 30.0) is None
