"""The task- and perception-aware pipeline on the debug configs: train the enhancer (from mic and
decoded inputs), fine-tune task-aware codecs through it, evaluate Fig. 3c and Fig. 4."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest
import torch

from shared.codec import Codec
from shared.enhancer import ScoreEnhancer, sampler_from_name
from shared.errors import CheckpointError, ConfigError
from training.config import load_config
from training.enhancer_train import load_enhancer_config, train_enhancer
from training.evaluate import CODEC_CONFIGS, codec_arch
from training.evaluate_task import TASK_METHODS, run_task_evaluation
from training.train import train

REPO = Path(__file__).resolve().parents[2]
CONFIGS = REPO / "training" / "configs"
SMALL = {"disc_n_ffts": [256, 128]}


@pytest.fixture(scope="module")
def pipeline(tmp_path_factory):
    from training.data.build import DataConfig, build_dataset

    root = tmp_path_factory.mktemp("task")
    debug = load_config(CONFIGS / "debug.toml")
    data = root / "rooms"
    build_dataset(DataConfig(**debug.data.build), data, progress=False)
    agnostic = root / "agnostic"
    refs = sorted({c for c, _ in TASK_METHODS.values()})
    bottleneck = {r: load_config(CONFIGS / f"{CODEC_CONFIGS.get(r, codec_arch(r))}.toml").train.bottleneck
                  for r in refs}
    for ref in refs:
        cfg = load_config(CONFIGS / "debug.toml", {"data": {"dir": str(data)}, "model": {"arch": codec_arch(ref)},
                                                      "train": {"steps": 2, "bottleneck": bottleneck[ref]}})
        train(cfg, root / "runs" / ref, out=agnostic / f"{ref}.ckpt", progress=False)
    ecfg = load_enhancer_config(CONFIGS / "enhancer-debug.toml", {
        "data": {"dir": str(data), "build": {}},
        "inputs": {"codec": str(agnostic / "ndpca-e4d1.ckpt"), "decoded_prob": 0.5, "bandwidths": [4, 16]}})
    enh = train_enhancer(ecfg, root / "runs" / "enhancer", progress=False)
    task_dir, sweep = root / "task_aware", root / "perception"
    for ref in refs:
        cfg = load_config(CONFIGS / "debug.toml", {
            "data": {"dir": str(data)}, "model": {"arch": codec_arch(ref)},
            "train": {"steps": 2, "init_from": str(agnostic / f"{ref}.ckpt"), "bottleneck": bottleneck[ref]},
            "task": {"lambda_task": 1.0, "lambda_perc": 0.01, "enhancer": str(enh), **SMALL}})
        train(cfg, root / "runs" / f"ta-{ref}", out=task_dir / f"{ref}.ckpt", progress=False)
    cfg = load_config(CONFIGS / "debug.toml", {
        "data": {"dir": str(data)}, "train": {"steps": 2, "init_from": str(agnostic / "ndpca-e4d1.ckpt")},
        "task": {"lambda_task": 1.0, "lambda_perc": 1.0, "enhancer": str(enh), **SMALL}})
    train(cfg, root / "runs" / "lp1", out=sweep / "lp-1" / "ndpca-e4d1.ckpt", progress=False)
    return {"root": root, "data": data, "agnostic": agnostic, "enhancer": enh, "task": task_dir, "sweep": sweep}


def test_enhancer_checkpoint_records_training(pipeline):
    enh = ScoreEnhancer.load(pipeline["enhancer"])
    assert enh.header["kind"] == "enhancer" and enh.sampler.mode == "fast"
    assert enh.header["train_config"]["inputs"]["decoded_prob"] == 0.5
    assert "psnr_enhanced_db" in enh.header["validation"]
    decoded = list((pipeline["root"] / "runs" / "enhancer").glob("decoded-train-*.pt"))
    assert decoded, "decoded inputs were not made"


def test_enhancer_after_the_classical_stage_trains_on_its_output(pipeline):
    """front_end = classical: both the captured and the decoded inputs are the streaming
    classical stage's output (step by step, the microphones the receiver's beamformer rule takes
    from the allocation), and the checkpoint says so, which is what the receiver's sgmse stage
    reads."""
    from server.enhance import beamforming_mask
    from shared.classical import stream_classical
    from shared.stft import from_channels, get_preset, stft, to_channels
    from training.data.dataset import RoomDataset
    from training.enhancer_train import build_pairs

    ecfg = load_enhancer_config(CONFIGS / "enhancer-debug.toml", {
        "data": {"dir": str(pipeline["data"]), "build": {}, "max_train_examples": 2},
        "inputs": {"codec": str(pipeline["agnostic"] / "ndpca-e4d1.ckpt"), "decoded_prob": 0.5, "bandwidths": [16],
                   "front_end": "classical"},
        "train": {"steps": 1}})
    bank = build_pairs(ecfg, "train", None, progress=False)
    ex = RoomDataset(pipeline["data"] / "manifest.json", "train")[0]
    spec = stft(ex["mics"], get_preset("stream"))
    want = to_channels(torch.from_numpy(stream_classical(spec.to(torch.complex128).numpy(), 4)).to(torch.complex64))
    torch.testing.assert_close(bank.mic[0][0], want, atol=1e-5, rtol=1e-4)
    assert not torch.allclose(bank.mic[0][0], to_channels(spec[0]), atol=1e-3)  # not microphone 0 itself
    codec = Codec.load(pipeline["agnostic"] / "ndpca-e4d1.ckpt")
    _, stats = codec.code_signal(ex["mics"], 16)
    active = beamforming_mask(codec, stats["allocation"])
    dec = from_channels(stats["spectra"].double()).numpy()
    want = to_channels(torch.from_numpy(stream_classical(dec, codec.frames_per_step, active.numpy())).to(torch.complex64))
    torch.testing.assert_close(bank.decoded[0][0], want, atol=1e-5, rtol=1e-4)
    path = train_enhancer(ecfg, pipeline["root"] / "runs" / "enhancer-classical", progress=False)
    assert ScoreEnhancer.load(path).header["front_end"] == "classical"


def test_task_aware_codec_starts_from_the_agnostic_one(pipeline):
    ta = Codec.load(pipeline["task"] / "ndpca-e4d1.ckpt")
    assert ta.header["train_config"]["task"]["lambda_task"] == 1.0
    assert ta.header["train_config"]["train"]["init_from"].endswith("ndpca-e4d1.ckpt")
    log = (pipeline["root"] / "runs" / "ta-ndpca-e4d1" / "log.jsonl").read_text()
    assert '"task"' in log and '"perc"' in log and '"disc_' in log


def test_evaluate_task_aware_writes_fig3c_and_fig4(pipeline, tmp_path):
    res = run_task_evaluation(tmp_path, pipeline["task"], pipeline["enhancer"], pipeline["data"], limit=1,
                              bandwidths=(4, 16, 32), sampler="realtime", perceptual=False, workers=1,
                              real=False, progress=False, perception_dir=pipeline["sweep"])
    rows = list(csv.DictReader(open(tmp_path / "results.csv")))
    for col in ("method", "bandwidth", "bitrate_bps", "psnr_db", "si_sdr_db", "pesq", "stoi",
                "decoded_psnr_db", "decoded_si_sdr_db", "fmd"):
        assert col in rows[0]
    assert {(r["method"], int(r["bandwidth"])) for r in rows} == {(m, b) for m in TASK_METHODS for b in (4, 16, 32)}
    assert all(torch.isfinite(torch.tensor(float(r["psnr_db"]))) for r in rows)
    rdp = list(csv.DictReader(open(tmp_path / "rdp.csv")))
    assert {r["lambda_perc"] for r in rdp} == {"1", "0.01"}
    for name in ("summary.md", "fig3c_psnr.png", "fig4_rdp.png", "headline.json", "command.txt"):
        assert (tmp_path / name).is_file()
    assert "ndpca-e4d1 gain over naive (%)" in res["synthetic"]["headline"]["mean_below_full"]


def test_evaluate_task_aware_leaves_out_missing_codecs_only_when_asked(pipeline, tmp_path, capsys):
    """The default method list evaluates the task-aware codecs that are there (a fresh clone ships
    the E4D1 ones) and names the command for each missing one; an explicit list stops."""
    import shutil

    partial = tmp_path / "task_aware"
    partial.mkdir()
    shutil.copy(pipeline["task"] / "ndpca-e4d1.ckpt", partial / "ndpca-e4d1.ckpt")
    shutil.copy(pipeline["task"] / "naive-e4d1.ckpt", partial / "naive-e4d1.ckpt")
    kw = dict(limit=1, bandwidths=(4,), sampler="realtime", perceptual=False, workers=1, real=False,
              progress=False, perception_dir=None)
    with pytest.raises(CheckpointError, match="ta-jae"):
        run_task_evaluation(tmp_path / "strict", partial, pipeline["enhancer"], pipeline["data"], **kw)
    run_task_evaluation(tmp_path / "out", partial, pipeline["enhancer"], pipeline["data"], skip_missing=True, **kw)
    rows = list(csv.DictReader(open(tmp_path / "out" / "results.csv")))
    assert {r["method"] for r in rows} == {"ndpca-e4d1", "naive-e4d1"}
    assert "left out: no checkpoint for 'jae'" in capsys.readouterr().err
    with pytest.raises(CheckpointError, match="make weights-task"):
        run_task_evaluation(tmp_path / "none", tmp_path / "empty", pipeline["enhancer"], pipeline["data"],
                            skip_missing=True, **kw)


def test_task_config_errors_are_clear(pipeline, tmp_path):
    cfg = load_config(CONFIGS / "debug.toml", {"data": {"dir": str(pipeline["data"])},
                                               "train": {"steps": 1, "init_from": str(pipeline["agnostic"] / "jae.ckpt")}})
    with pytest.raises(CheckpointError, match="jae"):
        train(cfg, tmp_path / "r", progress=False)
    with pytest.raises(ConfigError, match="lambda_tsk"):
        load_config(CONFIGS / "debug.toml", {"task": {"lambda_tsk": 1.0}})
    with pytest.raises(ConfigError, match="net"):
        load_enhancer_config(CONFIGS / "enhancer-debug.toml", {"enhancer": {"net": "huge"}})


def test_bench_enhancer_table(pipeline, tmp_path):
    """``ndpca bench-enhancer``: one row per setting with quality and real-time factor."""
    from ndpca.cli import main

    out = tmp_path / "bench"
    rc = main(["bench-enhancer", "--out", str(out), "--codec", str(pipeline["task"] / "ndpca-e4d1.ckpt"),
               "--enhancer", str(pipeline["enhancer"]), "--data-dir", str(pipeline["data"]), "--limit", "1",
               "--bandwidth", "16", "--chunks", "4", "--settings", "realtime,fast:2:8"])
    assert rc == 0
    rows = list(csv.DictReader(open(out / "bench.csv")))
    assert [r["setting"] for r in rows] == ["decoded", "classical", "realtime", "fast:2 +8 frames"]
    assert [int(r["evaluations"]) for r in rows] == [0, 0, 2, 2]
    assert [int(r["context_frames"]) for r in rows] == [0, 0, 0, 8]
    assert all(float(r["rtf_median"]) > 0 for r in rows)
    assert "RTF" in (out / "bench.md").read_text()


def test_streaming_fine_tune_with_the_stoi_term(pipeline, tmp_path):
    """sequence_steps: the predictive network runs over consecutive steps of each crop as the
    receiver runs it (the same output as one call per step); stoi_weight adds the STOI term;
    init_from starts from a checkpoint. Bad combinations are refused when the config is read."""
    from shared.enhancer import SCORE_NET_PRESETS
    from training.enhancer_train import streaming_loss

    torch.manual_seed(0)
    net = ScoreEnhancer(SCORE_NET_PRESETS["tiny"], sampler=sampler_from_name("predictive"), predictive=True)
    with torch.no_grad():
        for p in net.parameters():
            p.normal_(0, 0.05)
    start = tmp_path / "start.ckpt"
    net.save(start)
    y = torch.randn(2, 2, 256, 16 + 11 * 4) * 0.3
    seq = net.predict_streaming(y, 16, 4)
    assert seq.shape == (2, 2, 256, 48)
    for j in range(12):  # step j: the view of 16 frames ending with it, its last 4 frames
        torch.testing.assert_close(seq[..., 4 * j : 4 * j + 4], net.predict(y[..., 4 * j : 4 * j + 16])[..., -4:])
    over = {"data": {"dir": str(pipeline["data"]), "build": {}},
            "enhancer": {"sampler": "predictive"},
            "train": {"objective": "predictive", "frames": 16, "loss_frames": 4, "sequence_steps": 12,
                      "stoi_weight": 0.5, "batch_size": 2, "steps": 2, "init_from": str(start)}}
    ecfg = load_enhancer_config(CONFIGS / "enhancer-debug.toml", over)
    terms: dict[str, float] = {}
    x = torch.randn_like(y) * 0.3
    loss = streaming_loss(net, x, y, ecfg.train, terms)
    assert set(terms) == {"regression", "stoi_term"}
    assert loss.item() == pytest.approx(terms["regression"] + 0.5 * terms["stoi_term"], rel=1e-3)
    path = train_enhancer(ecfg, tmp_path / "run", progress=False)
    log = [json.loads(line) for line in (tmp_path / "run" / "log.jsonl").read_text().splitlines()]
    assert "stoi_term" in log[0]
    assert ScoreEnhancer.load(path).header["train_config"]["train"]["init_from"] == str(start)
    with pytest.raises(ConfigError, match="48 frames"):
        load_enhancer_config(CONFIGS / "enhancer-debug.toml", {**over, "train": {**over["train"], "sequence_steps": 4}})
    with pytest.raises(ConfigError, match="predictive objective"):
        load_enhancer_config(CONFIGS / "enhancer-debug.toml", {"train": {"sequence_steps": 4}})


def test_init_from_names_a_shipped_enhancer():
    """train.init_from = "[subfolder/]enhancer": the newest enhancer-*.ckpt of checkpoints/[subfolder]."""
    from training.enhancer_train import resolve_enhancer_path

    found = resolve_enhancer_path("predictive/enhancer")
    assert found.parent.name == "predictive" and found.name.startswith("enhancer-")
    assert resolve_enhancer_path(str(found)) == found
    with pytest.raises(ConfigError, match="no enhancer-"):
        resolve_enhancer_path("no-such-folder/enhancer")
