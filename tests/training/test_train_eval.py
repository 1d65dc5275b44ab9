"""A tiny train-then-evaluate run on the debug config, resume, and two-process DDP."""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from shared.codec import Codec
from shared.errors import ConfigError
from training.config import load_config, parse_override
from training.evaluate import CODEC_CONFIGS, METHODS, codec_arch, run_evaluation
from training.train import train

REPO = Path(__file__).resolve().parents[2]
DEBUG = REPO / "training" / "configs" / "debug.toml"


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory) -> Path:
    from training.data.build import DataConfig, build_dataset

    cfg = load_config(DEBUG)
    out = tmp_path_factory.mktemp("rooms")
    build_dataset(DataConfig(**cfg.data.build), out, progress=False)
    return out


def _cfg(data_dir: Path, arch: str = "ndpca-e4d1", steps: int = 4, bottleneck: str = "auto"):
    return load_config(DEBUG, {"data": {"dir": str(data_dir)}, "model": {"arch": arch},
                               "train": {"steps": steps, "bottleneck": bottleneck}})


@pytest.fixture(scope="module")
def checkpoints(data_dir, tmp_path_factory) -> Path:
    """Every codec the evaluation compares, trained the way its shipped config says (the
    full-latent naive baselines without a bottleneck), under its own subfolder."""
    out = tmp_path_factory.mktemp("ckpt")
    for ref in sorted({c for c, _ in METHODS.values()}):
        arch = codec_arch(ref)
        shipped = load_config(REPO / "training" / "configs" / f"{CODEC_CONFIGS.get(ref, arch)}.toml")
        train(_cfg(data_dir, arch, bottleneck=shipped.train.bottleneck), out / "runs" / ref,
              out=out / f"{ref}.ckpt", progress=False)
    return out


def test_training_writes_a_loadable_checkpoint(checkpoints):
    """The checkpoint holds weights, config, bases, STFT preset, rate and a verified hash."""
    codec = Codec.load(checkpoints / "ndpca-e4d1.ckpt", expect_arch="ndpca-e4d1")
    assert codec.header["stft"] == "stream" and codec.header["sample_rate"] == 16000
    assert codec.header["train_config"]["train"]["steps"] == 4
    assert len(codec.bases) == 4 and codec.latent_sizes == [16, 16, 16, 16]
    assert torch.all(codec.bases[0].singular_values[:-1] >= codec.bases[0].singular_values[1:])


def test_training_is_seeded(data_dir, tmp_path):
    """The same config gives the same weights."""
    a = train(_cfg(data_dir, steps=2), tmp_path / "a", progress=False)
    b = train(_cfg(data_dir, steps=2), tmp_path / "b", progress=False)
    sa, sb = Codec.load(a).model.state_dict(), Codec.load(b).model.state_dict()
    assert all(torch.equal(sa[k], sb[k]) for k in sa)


def test_resume_continues_from_saved_step(data_dir, tmp_path):
    """A resumed run starts at the saved step and logs only the remaining steps."""
    train(_cfg(data_dir, steps=2), tmp_path, progress=False)
    train(_cfg(data_dir, steps=4), tmp_path, resume=True, progress=False)
    steps = [int(line.split('"step": ')[1].split(",")[0]) for line in (tmp_path / "log.jsonl").read_text().splitlines()]
    assert steps == [0, 1, 2, 3]


def test_the_default_data_folder_always_holds_the_configured_rooms(tmp_path, monkeypatch):
    """With ``data.dir`` unset the builder is always asked for the configured rooms (it reuses a
    folder whose configuration hash matches, and rebuilds one that holds other rooms); a folder
    given as ``data.dir`` with a manifest is used as it is."""
    import training.data.build as build
    import training.data.dataset as dataset
    from training.config import DataSection
    from training.train import data_manifests

    asked = []

    def fake_build(cfg, out_dir, *args, **kwargs):
        asked.append((cfg.n_train, Path(out_dir)))
        (Path(out_dir) / "manifest.json").parent.mkdir(parents=True, exist_ok=True)
        (Path(out_dir) / "manifest.json").write_text("{}")
        return Path(out_dir) / "manifest.json"

    monkeypatch.setattr(build, "build_dataset", fake_build)
    monkeypatch.setattr(dataset, "default_data_dir", lambda: tmp_path / "rooms")
    (tmp_path / "rooms").mkdir()
    (tmp_path / "rooms" / "manifest.json").write_text("{}")  # a folder built with other settings
    data_manifests(DataSection(), num_mics=4)
    assert asked == [(240, tmp_path / "rooms")]  # the default configuration, checked every time
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "manifest.json").write_text("{}")
    assert data_manifests(DataSection(dir=str(tmp_path / "mine")), num_mics=4) == [tmp_path / "mine" / "manifest.json"]
    assert len(asked) == 1


def test_real_rooms_never_shrink(tmp_path, monkeypatch):
    """`evaluate --limit 1` after `--limit 8` keeps the 8 real rooms other tools read (room i
    depends on its own seed only, so the larger set holds the smaller one)."""
    import json as json_

    import training.data.build as build
    import training.evaluate as evaluate

    (tmp_path / "shared" / "data" / "speech" / "librispeech").mkdir(parents=True)  # what real_rooms looks for
    monkeypatch.setattr(evaluate, "REPO", tmp_path / "repo")
    asked = []

    def fake_build(cfg, out_dir, *args, **kwargs):
        asked.append(cfg.n_test)
        manifest = Path(out_dir) / "manifest.json"
        manifest.parent.mkdir(parents=True, exist_ok=True)
        manifest.write_text(json_.dumps({"config": {"n_test": cfg.n_test}}))
        return manifest

    monkeypatch.setattr(build, "build_dataset", fake_build)
    rooms = tmp_path / "rooms"
    evaluate.real_rooms(rooms, 4, 8)
    evaluate.real_rooms(rooms, 4, 1)
    evaluate.real_rooms(rooms, 4, 16)
    assert asked == [8, 8, 16]


def test_resume_refuses_a_corrupt_state(data_dir, tmp_path):
    """--resume with a truncated state.pt is one clear error that names the file and the way out."""
    from shared.errors import ConfigError

    (tmp_path / "state.pt").write_bytes(b"\x80\x02 not a state")
    with pytest.raises(ConfigError, match=r"state\.pt cannot be loaded .* drop --resume"):
        train(_cfg(data_dir, steps=2), tmp_path, resume=True, progress=False)


def test_evaluate_writes_results_for_every_method(checkpoints, data_dir, tmp_path):
    """results.csv has every method at every bandwidth and the required columns."""
    run_evaluation(tmp_path, checkpoints, data_dir, limit=1, bandwidths=(4, 8, 32), opus_kbps=(8.0, 32.0),
                   perceptual="ref", workers=1, real=False, progress=False)
    rows = list(csv.DictReader(open(tmp_path / "results.csv")))
    for col in ("method", "bandwidth", "room_kbps", "psnr_db", "si_sdr_db", "pesq", "stoi"):
        assert col in rows[0]
    got = {(r["method"], int(r["bandwidth"])) for r in rows}
    for m in METHODS:
        for bw in (4, 8, 32):
            assert (m, bw) in got
    head = json.loads((tmp_path / "headline.json").read_text())["mean_below_full"]
    assert {"ndpca-e4d1 gain over naive (%)", "ndpca-e4d1 gain over naive-full (%)",
            "ndpca-e2d1 share of JAE (%)"} <= set(head)
    jae = {int(r["bandwidth"]): float(r["psnr_db"]) for r in rows if r["method"] == "jae"}
    assert all(map(torch.isfinite, torch.tensor(list(jae.values()))))
    opus = [r for r in rows if r["method"] == "opus-all" and float(r["target_kbps"]) == 8.0]
    assert opus and all("not reachable" in r["note"] for r in opus)  # 2 kbit/s a mic: below Opus's floor
    for name in ("summary.md", "fig3b_psnr.png", "quality_vs_rate.png", "headline.json", "command.txt"):
        assert (tmp_path / name).is_file()


def test_unknown_config_key_is_named(tmp_path):
    bad = tmp_path / "bad.toml"
    bad.write_text('base = "%s"\n[train]\nstepz = 3\n' % (REPO / "training" / "configs" / "base.toml"))
    with pytest.raises(ConfigError, match="stepz"):
        load_config(bad)
    assert parse_override("train.steps=7") == {"train": {"steps": 7}}


def test_configs_are_found_by_name_with_or_without_toml():
    assert load_config("ndpca-e4d1") == load_config("ndpca-e4d1.toml")
    with pytest.raises(ConfigError, match="ndpca-e4d1.toml"):  # the listing names the real files
        load_config("ndpca-e9d9")


def test_two_process_ddp(data_dir, tmp_path):
    """torchrun with two gloo processes trains a few steps and writes one checkpoint."""
    env = dict(os.environ, OMP_NUM_THREADS="1")
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2",
           "-m", "ndpca", "train", "--config", str(DEBUG), "--run-dir", str(tmp_path),
           "--set", f"data.dir='{data_dir}'", "--set", "train.steps=3", "--no-progress"]
    res = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr[-3000:]
    codec = Codec.load(tmp_path / "ndpca-e4d1.ckpt")
    assert codec.header["train_config"]["train"]["steps"] == 3


def test_codec_references_find_subfolders_and_name_their_config(tmp_path):
    """``[subfolder/]arch`` finds shipped files in the subfolder; a missing one names its config."""
    from shared.errors import CheckpointError
    from training.evaluate import find_codec

    (tmp_path / "full_latent").mkdir()
    (tmp_path / "full_latent" / "naive-e4d1-0123abcd.ckpt").write_bytes(b"")
    (tmp_path / "naive-e4d1-89abcdef.ckpt").write_bytes(b"")
    assert find_codec(tmp_path, "full_latent/naive-e4d1").name == "naive-e4d1-0123abcd.ckpt"
    assert find_codec(tmp_path, "naive-e4d1").name == "naive-e4d1-89abcdef.ckpt"
    with pytest.raises(CheckpointError, match=r"naive-e2d1-full\.toml"):
        find_codec(tmp_path, "full_latent/naive-e2d1")
    with pytest.raises(CheckpointError, match=r"ta-naive-e2d1-full\.toml"):
        find_codec(tmp_path, "full_latent/naive-e2d1", "ta-")


def test_resumed_training_records_total_steps_and_hours(data_dir, tmp_path):
    """A run in two sittings records its total steps and training hours in the checkpoint."""
    train(_cfg(data_dir, steps=2), tmp_path, progress=False)
    path = train(_cfg(data_dir, steps=4), tmp_path, resume=True, progress=False)
    prov = Codec.load(path).header["provenance"]
    assert prov["steps"] == 4 and prov["processes"] == 1
    assert prov["train_seconds"] > 0 and abs(prov["train_hours"] - prov["train_seconds"] / 3600) < 1e-3


def test_linear_baseline_trains_nothing_and_is_the_pca_coder(data_dir, tmp_path):
    """dpca with train.steps = 0: no residual networks, linear maps at PCA, a loadable codec."""
    cfg = load_config(DEBUG, {"data": {"dir": str(data_dir)}, "model": {"arch": "dpca-e4d1"},
                              "train": {"steps": 0}})
    codec = Codec.load(train(cfg, tmp_path, progress=False), expect_arch="dpca-e4d1")
    assert codec.model.decoder.residual is None
    assert all(enc.residual is None for enc in codec.model.encoders)
    w = codec.model.frame.weight.double()
    assert torch.allclose(w @ w.T, torch.eye(w.shape[0], dtype=torch.float64), atol=1e-4)  # PCA rows


def test_linear_maps_learn_at_their_own_rate():
    """The PCA-initialised linear maps form their own optimiser group at linear_lr_scale."""
    from shared.models.architectures import DistributedAutoencoder
    from training.train import param_groups

    cfg = load_config(DEBUG)
    model = DistributedAutoencoder(cfg.model)
    groups = param_groups(model, 0.1)
    assert [g["lr_scale"] for g in groups] == [0.1, 1.0]
    assert len(groups[0]["params"]) == 1 + len(model.encoders)
    assert sum(len(g["params"]) for g in groups) == len(list(model.parameters()))


def test_missing_extra_data_set_names_its_build_command(data_dir, tmp_path):
    """A training config whose extra data set is not built says how to build it."""
    cfg = load_config(DEBUG, {"data": {"dir": str(data_dir), "extra_dirs": [
        {"dir": str(tmp_path / "nowhere"), "build_command": "ndpca data build --out nowhere"}]}})
    with pytest.raises(ConfigError, match="ndpca data build --out nowhere"):
        train(cfg, tmp_path / "run", progress=False)


def test_loss_mic_weights_scale_each_microphone_and_are_checked():
    """train.loss_mic_weights: microphone m's spectra are scaled by sqrt(w_m / mean w), so a
    squared error there counts w_m / mean w times; a list of the wrong length is refused."""
    from training.losses import complex_mse_loss
    from training.train import _mic_scale

    cfg = load_config(DEBUG, {"train": {"loss_mic_weights": [1.0, 0.25, 0.25, 0.25]}})
    scale = _mic_scale(cfg, "cpu")
    assert scale.shape == (1, 4, 1, 1, 1)
    target = torch.zeros(2, 4, 2, 3, 5)
    err = torch.zeros_like(target)
    err[:, 0] = 1.0  # the same error on microphone 0 ...
    on_ref = complex_mse_loss(target + err * scale, target * scale)
    err = torch.zeros_like(target)
    err[:, 1] = 1.0  # ... and on microphone 1
    on_other = complex_mse_loss(target + err * scale, target * scale)
    assert on_ref / on_other == pytest.approx(4.0)
    assert _mic_scale(load_config(DEBUG), "cpu") is None
    with pytest.raises(ConfigError, match="loss_mic_weights"):
        _mic_scale(load_config(DEBUG, {"train": {"loss_mic_weights": [1.0, 0.5]}}), "cpu")


def test_training_with_loss_mic_weights_writes_a_loadable_codec(data_dir, tmp_path):
    cfg = load_config(DEBUG, {"data": {"dir": str(data_dir)},
                              "train": {"steps": 3, "loss_mic_weights": [1.0, 0.25, 0.25, 0.25]}})
    path = train(cfg, tmp_path / "run", out=tmp_path / "codec.ckpt", progress=False)
    assert Codec.load(path).cfg.num_mics == 4


def test_speed_perturbation_adds_resampled_copies_and_is_checked(data_dir):
    """train.speed_perturb: each example is kept, then again at every factor, N / f samples
    long, with the signal's pitch moved by f (a 500 Hz tone at 0.9x speed becomes 450 Hz)."""
    from training.train import load_training_audio, speed_perturbed

    sr, n = 16000, 16000
    tone = torch.sin(2 * torch.pi * 500 * torch.arange(n) / sr)[None].repeat(2, 1)
    out = speed_perturbed([tone], [0.9, 1.1])
    assert [x.shape[0] for x in out] == [2, 2, 2]
    assert [abs(x.shape[-1] - n / f) <= 1 for x, f in zip(out, (1.0, 0.9, 1.1))] == [True] * 3
    assert torch.equal(out[0], tone)
    for x, f in zip(out[1:], (0.9, 1.1)):
        peak = torch.fft.rfft(x[0]).abs().argmax().item() * sr / x.shape[-1]
        assert peak == pytest.approx(500 * f, abs=2)
    cfg = load_config(DEBUG, {"data": {"dir": str(data_dir)}, "train": {"speed_perturb": [0.9]}})
    plain = load_training_audio(load_config(DEBUG, {"data": {"dir": str(data_dir)}}))
    perturbed = load_training_audio(cfg)
    assert len(perturbed) == 2 * len(plain)
    assert abs(perturbed[len(plain)].shape[-1] - plain[0].shape[-1] / 0.9) <= 1
    with pytest.raises(ConfigError, match="speed_perturb"):
        load_config(DEBUG, {"train": {"speed_perturb": [3.0]}})
