"""Data-set build: determinism, caching, disjoint splits, folder sources, datasets, CLI."""

from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch
from pydantic import ValidationError

from shared.errors import AudioError, ConfigError
from training.data.build import DataConfig, build_dataset, split_groups
from training.data.cli import read_config_file, register
from training.data.dataset import RoomDataset, SegmentDataset, default_data_dir, load_manifest
from training.data.sources import FolderSpeechSource

SHARED_DATA = Path(__file__).resolve().parents[2].parent / "shared" / "data"
TINY = {"duration_s": 1.0, "n_train": 3, "n_val": 2, "n_test": 2, "num_mics": 3,
        "talkers_range": (1, 2), "rt60_range": (0.15, 0.3)}


def _audio_bytes(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*.flac"))}


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny eSpeak data set, built once for this module."""
    out = tmp_path_factory.mktemp("rooms")
    return build_dataset(DataConfig(seed=11, **TINY), out, progress=False)


def test_same_seed_same_bytes(built: Path, tmp_path: Path) -> None:
    """Building the same config twice (in parallel the second time) gives identical files."""
    again = build_dataset(DataConfig(seed=11, **TINY), tmp_path / "b", progress=False, workers=2)
    a, b = _audio_bytes(built.parent), _audio_bytes(again.parent)
    assert len(a) == 2 * 7 and a == b
    ma, mb = load_manifest(built), load_manifest(again)
    assert ma["config_hash"] == mb["config_hash"] and ma["examples"] == mb["examples"]


def test_cache_and_rebuild(built: Path, tmp_path: Path) -> None:
    """Same config hash: returned without rebuilding; another seed: new hash, other audio."""
    stamp = {p: p.stat().st_mtime_ns for p in built.parent.rglob("*.flac")}
    assert build_dataset(DataConfig(seed=11, **TINY), built.parent, progress=False) == built
    assert stamp == {p: p.stat().st_mtime_ns for p in built.parent.rglob("*.flac")}
    other = build_dataset(DataConfig(seed=12, **TINY), tmp_path / "c", progress=False)
    assert load_manifest(other)["config_hash"] != load_manifest(built)["config_hash"]
    assert _audio_bytes(other.parent) != _audio_bytes(built.parent)


def test_splits_disjoint_by_speaker_and_room(built: Path) -> None:
    """No speaker, speaker group, room seed or room geometry is shared between splits."""
    manifest = load_manifest(built)
    by_split: dict[str, dict[str, set]] = {}
    for ex in manifest["examples"]:
        d = by_split.setdefault(ex["split"], {"spk": set(), "grp": set(), "seed": set(), "dims": set()})
        d["spk"].update(ex["speakers"])
        d["grp"].update(ex["speaker_groups"])
        d["seed"].add(tuple(ex["room_seed"]))
        d["dims"].add(tuple(ex["room"]["dims"]))
    assert set(by_split) == {"train", "val", "test"}
    groups = manifest["splits"]
    for a, b in (("train", "val"), ("train", "test"), ("val", "test")):
        for key in ("spk", "grp", "seed", "dims"):
            assert not by_split[a][key] & by_split[b][key], (a, b, key)
        assert not set(groups[a]["speaker_groups"]) & set(groups[b]["speaker_groups"])
    for ex in manifest["examples"]:  # every talker in the room speaks
        assert {u["speaker"] for u in ex["utterances"]} == set(ex["speakers"])
        assert len(ex["room"]["talker_positions"]) == len(ex["speakers"])
    ex = manifest["examples"][0]
    for key in ("rt60", "snr_db", "noise_kind", "duration_s", "utterances"):
        assert key in ex
    assert len(ex["room"]["mic_positions"]) == 3
    assert len(ex["room"]["talker_positions"]) == len(ex["speakers"])
    assert 0.0 <= ex["snr_db"] <= 20.0 and ex["duration_s"] == 1.0


def test_room_and_segment_datasets(built: Path) -> None:
    """Items have the documented shapes; crops are deterministic and change per epoch."""
    rooms = RoomDataset(built, "train")
    assert len(rooms) == 3
    item = rooms[0]
    assert item["mics"].shape == (3, 16000) and item["clean"].shape == (16000,)
    assert item["mics"].dtype == torch.float32 and item["id"] == "train-00000"
    assert 0.85 < float(item["mics"].abs().max()) <= 0.91
    seg = SegmentDataset(rooms, 4000, seed=1, crops_per_example=4)
    assert len(seg) == 12
    first = [seg.start(i) for i in range(12)]
    assert first == [SegmentDataset(rooms, 4000, seed=1, crops_per_example=4).start(i) for i in range(12)]
    crop = seg[5]
    assert crop["mics"].shape == (3, 4000) and crop["clean"].shape == (4000,)
    torch.testing.assert_close(crop["mics"], rooms[1]["mics"][:, crop["start"]:crop["start"] + 4000])
    seg.set_epoch(1)
    assert [seg.start(i) for i in range(12)] != first
    padded = SegmentDataset(rooms, 20000)[0]
    assert padded["mics"].shape == (3, 20000) and torch.all(padded["clean"][16000:] == 0)
    with pytest.raises(ConfigError, match="empty"):
        RoomDataset(built, "nosuchsplit")


def test_manifest_errors(built: Path, tmp_path: Path) -> None:
    """Missing or corrupt manifests and missing audio give user errors with the fix."""
    with pytest.raises(ConfigError, match="ndpca data build"):
        load_manifest(tmp_path / "nothing")
    bad = tmp_path / "manifest.json"
    bad.write_text("{not json")
    with pytest.raises(ConfigError, match="corrupt"):
        load_manifest(bad)
    bad.write_text(json.dumps({"examples": [{"split": "train"}]}))
    with pytest.raises(ConfigError, match="lacks"):
        load_manifest(tmp_path)
    manifest = json.loads(built.read_text())
    manifest["examples"][0]["mics"] = "train/gone.flac"
    bad.write_text(json.dumps(manifest))
    (tmp_path / "train").mkdir()
    with pytest.raises(AudioError, match="gone.flac"):
        RoomDataset(bad, "train")[0]


def _fake_librispeech(root: Path, speakers: int, rate: int) -> None:
    """Tiny LibriSpeech-like folder: voiced buzz with a syllable envelope per file."""
    rng = np.random.default_rng(0)
    t = np.arange(int(1.5 * rate)) / rate
    for s in range(speakers):
        for chapter in ("100", "200"):
            folder = root / f"{1000 + s}" / chapter
            folder.mkdir(parents=True)
            f0 = 100 + 30 * s
            x = np.sign(np.sin(2 * np.pi * f0 * t)) * (0.5 + 0.5 * np.sin(2 * np.pi * 4 * t)) ** 2
            x = 0.3 * x + 0.01 * rng.standard_normal(len(t))
            sf.write(folder / f"{1000 + s}-{chapter}-0000.flac", x.astype(np.float32), rate)


def test_folder_speech_source_build(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """LibriSpeech-layout speech and a noise folder: resampled with a log line, split by speaker."""
    _fake_librispeech(tmp_path / "speech", 4, 22050)
    (tmp_path / "noise").mkdir()
    sf.write(tmp_path / "noise" / "fan.wav", np.random.default_rng(1).standard_normal(48000) * 0.1, 48000)
    source = FolderSpeechSource(tmp_path / "speech", 16000)
    assert source.speakers == ["1000", "1001", "1002", "1003"]
    with caplog.at_level(logging.INFO):
        audio, name = source.utterance("1001", np.random.default_rng(0))
    assert "from 22050 Hz to 16000 Hz" in caplog.text and name.startswith("1")
    assert abs(len(audio) - 24000) <= 1
    cfg = DataConfig(seed=3, speech_dir=tmp_path / "speech", noise_dir=tmp_path / "noise",
                     real_noise_fraction=1.0, **{**TINY, "n_train": 2, "n_val": 1, "n_test": 1})
    manifest = load_manifest(build_dataset(cfg, tmp_path / "out", progress=False))
    spk = {s: {x for ex in manifest["examples"] if ex["split"] == s for x in ex["speakers"]}
           for s in ("train", "val", "test")}
    assert not spk["train"] & spk["test"] and not spk["val"] & spk["test"]
    assert all(x.startswith("10") for v in spk.values() for x in v)
    assert {ex["noise_kind"] for ex in manifest["examples"]} == {"file"}
    assert manifest["examples"][0]["noise_files"][0] == "fan.wav"


def test_folder_source_errors(tmp_path: Path) -> None:
    """Empty folders, unreadable files and too few speakers give clear errors."""
    (tmp_path / "empty").mkdir()
    with pytest.raises(AudioError, match="LibriSpeech"):
        FolderSpeechSource(tmp_path / "empty")
    with pytest.raises(AudioError, match="--speech-dir"):
        FolderSpeechSource(tmp_path / "missing")
    (tmp_path / "bad" / "spk").mkdir(parents=True)
    (tmp_path / "bad" / "spk" / "x.flac").write_bytes(b"garbage")
    source = FolderSpeechSource(tmp_path / "bad")
    with pytest.raises(AudioError, match="x.flac"):
        source.utterance("spk", np.random.default_rng(0))
    with pytest.raises(ConfigError, match="at least 3"):
        split_groups(["a", "b"], (0.7, 0.1, 0.2), 0)


@pytest.mark.skipif(not (SHARED_DATA / "speech" / "librispeech").is_dir(), reason="no ../shared/data")
def test_real_librispeech_and_noise(tmp_path: Path) -> None:
    """The real LibriSpeech clips and recorded noise of ../shared/data build a valid data set."""
    cfg = DataConfig(seed=0, speech_dir=SHARED_DATA / "speech" / "librispeech",
                     noise_dir=SHARED_DATA / "noise", **{**TINY, "n_train": 2, "n_val": 1, "n_test": 1})
    manifest_path = build_dataset(cfg, tmp_path, progress=False)
    manifest = load_manifest(manifest_path)
    assert len(manifest["examples"]) == 4
    train = {x for ex in manifest["examples"] if ex["split"] == "train" for x in ex["speakers"]}
    test = {x for ex in manifest["examples"] if ex["split"] == "test" for x in ex["speakers"]}
    assert train and test and not train & test
    item = RoomDataset(manifest_path, "test")[0]
    assert item["mics"].shape == (3, 16000) and float(item["clean"].abs().max()) > 0.01


def test_config_validation_and_cli(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                   capsys: pytest.CaptureFixture[str]) -> None:
    """DataConfig rejects bad values; the CLI reads TOML, rejects unknown keys, builds, informs."""
    with pytest.raises(ValidationError):
        DataConfig(bogus=1)
    with pytest.raises(ValidationError):
        DataConfig(snr_range=(20.0, 0.0))
    monkeypatch.setenv("NDPCA_DATA_DIR", str(tmp_path / "env"))
    assert default_data_dir() == tmp_path / "env"
    monkeypatch.delenv("NDPCA_DATA_DIR")
    assert default_data_dir().parts[-2:] == ("data", "rooms")

    toml = tmp_path / "tiny.toml"
    toml.write_text("duration_s = 1.0\nnum_mics = 2\nn_train = 1\nn_val = 1\nn_test = 1\n"
                    "rt60_range = [0.15, 0.25]\ntalkers_range = [1, 1]\n")
    parser = argparse.ArgumentParser(prog="ndpca")
    register(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(["data", "build", "--out", str(tmp_path / "cli"), "--config", str(toml),
                              "--seed", "4", "--n-train", "2", "--workers", "1", "--quiet"])
    assert args.func(args) == 0
    manifest = load_manifest(tmp_path / "cli")
    assert manifest["config"]["seed"] == 4 and manifest["config"]["n_train"] == 2
    assert len(manifest["examples"]) == 4
    args = parser.parse_args(["data", "info", "--out", str(tmp_path / "cli")])
    assert args.func(args) == 0
    out = capsys.readouterr().out
    assert "train: 2 examples" in out and "test:  1 examples" in out and "speakers" in out

    toml.write_text("duration_s = 1.0\nn_trian = 3\n")
    with pytest.raises(ConfigError, match="n_trian"):
        read_config_file(toml)
    toml.write_text("duration_s = [")
    with pytest.raises(ConfigError, match="TOML"):
        read_config_file(toml)
