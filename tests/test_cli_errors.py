"""User errors on the command line: one line naming the file or value, exit status 2."""

from __future__ import annotations

import numpy as np
import pytest
import soundfile as sf
import torch
from conftest import tiny_codec

from ndpca.cli import main
from shared.checkpoint import save_checkpoint


def _run(capsys, argv: list[str]) -> str:
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err and err.startswith("error: ")
    return err


def test_unknown_config_key(tmp_path, capsys):
    """An unknown key in a training config is named with its section."""
    cfg = tmp_path / "c.toml"
    cfg.write_text('base = "base.toml"\n[model]\narch = "jae"\nlatentz = 3\n')
    assert "model.latentz" in _run(capsys, ["train", "--config", str(cfg)])


def test_missing_and_corrupt_checkpoints(tmp_path, capsys):
    """No checkpoint for evaluate, or a junk file for serve, is named in one line."""
    assert "no checkpoint for" in _run(capsys, ["evaluate", "--out", str(tmp_path / "o"),
                                                "--checkpoints", str(tmp_path)])
    junk = tmp_path / "junk.ckpt"
    junk.write_bytes(b"\x00" * 64)
    assert str(junk) in _run(capsys, ["serve", "--checkpoint", str(junk), "--port", "0"])


def test_demo_names_the_checkpoint_it_was_given(tmp_path, capsys):
    """A corrupt --checkpoint is named as given (not as the copy the demo would make of it)."""
    junk = tmp_path / "mine.ckpt"
    junk.write_bytes(b"\x00" * 64)
    err = _run(capsys, ["demo", "--out", str(tmp_path / "out"), "--checkpoint", str(junk), "--seconds", "2",
                        "--prepare-only"])
    assert str(junk) in err and "model.ckpt" not in err
    trace = tmp_path / "empty.csv"
    trace.write_text("")
    err = _run(capsys, ["demo", "--out", str(tmp_path / "out"), "--trace", str(trace), "--seconds", "2",
                        "--prepare-only"])
    assert "empty.csv" in err


def test_serve_settings_from_environment_and_options(monkeypatch):
    """`ndpca serve`: NDPCA_ENHANCER replaces the default stage (auto), --enhancer both, and
    --record-seconds caps recordings."""
    from ndpca.cli import build_parser
    from server.cli import settings_from_args

    def settings(*argv):
        return settings_from_args(build_parser().parse_args(["serve", *argv]))

    monkeypatch.delenv("NDPCA_ENHANCER", raising=False)
    assert settings().enhancer == "auto"
    monkeypatch.setenv("NDPCA_ENHANCER", "classical")
    assert settings().enhancer == "classical"
    assert settings("--enhancer", "identity").enhancer == "identity"
    assert settings("--record-seconds", "12.5").record_seconds == 12.5


def test_serve_checks_what_it_loads_before_it_starts(tmp_path, capsys):
    """A bad trace, reference, sampler or record directory stops serve in one line (exit 2)
    before the server starts, not as a failed start-up with a traceback."""
    codec = tmp_path / "codec.ckpt"
    tiny_codec().save(codec)
    base = ["serve", "--checkpoint", str(codec), "--port", "0", "--enhancer", "identity",
            "--session", "s", "--token", "t"]
    trace = tmp_path / "neg.csv"
    trace.write_text("time_s,capacity_bps\n0,100\n1,-200\n")
    err = _run(capsys, [*base, "--trace", str(trace)])
    assert "neg.csv" in err and "negative" in err
    ref = tmp_path / "ref8k.wav"
    sf.write(ref, np.zeros(800, np.float32), 8000)
    assert "8000 Hz" in _run(capsys, [*base, "--reference", str(ref)])
    assert "unknown sampler preset 'bogus'" in _run(capsys, [*base, "--enhancer", "sgmse",
                                                             "--enhance-sampler", "bogus"])
    (tmp_path / "afile").write_text("x")
    assert "cannot be created" in _run(capsys, [*base, "--record-dir", str(tmp_path / "afile")])
    assert "threads = 0" in _run(capsys, [*base, "--threads", "0"])
    sessions = tmp_path / "sessions.json"
    sessions.write_text('{"sessions": [{"id": "a", "token": "t"}, {"id": "a", "token": "u"}]}')
    assert "session 'a' already exists" in _run(capsys, [*base[:7], "--sessions-file", str(sessions)])
    sessions.write_text('{"sessions": [{"id": "a", "token": "t", "sources": [7]}]}')
    assert "sources [7] out of range" in _run(capsys, [*base[:7], "--sessions-file", str(sessions)])
    assert "cannot be created" in _run(capsys, [*base, "--record-dir", str(tmp_path / "afile" / "sub")])


def test_evaluate_refuses_a_data_dir_without_data(tmp_path, capsys):
    """--data-dir naming a folder with no data set (or a file) is an error, not a silent build."""
    codec = tiny_codec()
    for arch in ("ndpca-e4d1", "dpca-e4d1"):
        codec.save(tmp_path / f"{arch}.ckpt")
    (tmp_path / "empty").mkdir()
    err = _run(capsys, ["evaluate", "--out", str(tmp_path / "o"), "--checkpoints", str(tmp_path),
                        "--methods", "ndpca-e4d1", "--no-opus", "--data-dir", str(tmp_path / "empty")])
    assert "holds no data set" in err and "ndpca data build" in err


def test_bad_enhancer_checkpoint_stops_serve_before_it_starts(tmp_path, capsys):
    """A junk or wrong-kind enhancer checkpoint stops serve before it starts."""
    codec = tmp_path / "codec.ckpt"
    tiny_codec().save(codec)
    junk = tmp_path / "enhancer.ckpt"
    junk.write_bytes(b"\x00" * 64)
    err = _run(capsys, ["serve", "--checkpoint", str(codec), "--port", "0", "--enhancer", "sgmse",
                        "--enhancer-checkpoint", str(junk)])
    assert str(junk) in err
    err = _run(capsys, ["serve", "--checkpoint", str(codec), "--port", "0", "--enhancer", "sgmse",
                        "--enhancer-checkpoint", str(codec)])
    assert "expected 'enhancer'" in err
    # the default stage (auto) finds a corrupt enhancer in the checkpoint folder: one line, before start
    folder = tmp_path / "ckpts"
    folder.mkdir()
    (folder / "enhancer-0123abcd.ckpt").write_bytes(b"\x00" * 64)
    err = _run(capsys, ["serve", "--checkpoint", str(codec), "--checkpoint-dir", str(folder), "--port", "0"])
    assert "enhancer-0123abcd.ckpt" in err
    assert "ta-jae.toml" in _run(capsys, ["evaluate", "--task-aware", "--out", str(tmp_path / "o"),
                                          "--checkpoints", str(tmp_path)])


def test_old_layout_checkpoint_names_the_training_command(tmp_path, capsys):
    """A codec checkpoint of the old chunk-latent layout is refused with the command that makes a new one."""
    old = tmp_path / "old.ckpt"
    save_checkpoint(old, {"kind": "codec", "arch": "ndpca-e4d1", "stft": "stream",
                          "model_config": {"arch": "ndpca-e4d1", "frames": 32, "channels": 64}},
                    {"model.w": torch.zeros(1)})
    command = "ndpca train --config training/configs/ndpca-e4d1.toml"
    err = _run(capsys, ["serve", "--checkpoint", str(old), "--port", "0"])
    assert str(old) in err and command in err
    wav = tmp_path / "a.wav"
    sf.write(wav, np.zeros((2000, 4), np.float32), 16000)
    err = _run(capsys, ["edge", "--session", "s", "--source", "0", "--input", str(wav), "--token", "t",
                        "--checkpoint", str(old), "--retry-for", "1"])
    assert str(old) in err and command in err


def test_checkpoint_of_another_architecture(tmp_path, capsys):
    """A checkpoint of another architecture than --arch names both."""
    path = tmp_path / "e2.ckpt"
    tiny_codec("naive-e2d1").save(path)
    err = _run(capsys, ["serve", "--checkpoint", str(path), "--arch", "ndpca-e4d1", "--port", "0"])
    assert "naive-e2d1" in err and "ndpca-e4d1" in err


@pytest.mark.parametrize("kind", ["wrong_rate", "unreadable"])
def test_bad_audio_for_an_edge(tmp_path, capsys, kind):
    """Wrong-rate or unreadable edge audio is named with the file."""
    ckpt = tmp_path / "c.ckpt"
    tiny_codec("ndpca-e4d1").save(ckpt)
    audio = tmp_path / "in.wav"
    if kind == "wrong_rate":
        sf.write(audio, np.zeros((8000, 4), np.float32), 8000)
        expect = "8000 Hz"
    else:
        audio.write_bytes(b"not audio")
        expect = "cannot read audio"
    err = _run(capsys, ["edge", "--session", "s", "--source", "0", "--input", str(audio),
                        "--token", "t", "--checkpoint", str(ckpt), "--retry-for", "1"])
    assert expect in err and str(audio) in err
