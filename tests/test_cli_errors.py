"""User errors on the command line: one line naming the file or value, exit status 2."""

from __future__ import annotations

import numpy as np
import pytest
import soundfile as sf
from conftest import tiny_codec

from ndpca.cli import main


def _run(capsys, argv: list[str]) -> str:
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err and err.startswith("error: ")
    return err


def test_unknown_config_key(tmp_path, capsys):
    cfg = tmp_path / "c.toml"
    cfg.write_text('base = "base.toml"\n[model]\narch = "jae"\nlatentz = 3\n')
    assert "model.latentz" in _run(capsys, ["train", "--config", str(cfg)])


def test_missing_and_corrupt_checkpoints(tmp_path, capsys):
    assert "no checkpoint for" in _run(capsys, ["evaluate", "--out", str(tmp_path / "o"),
                                                "--checkpoints", str(tmp_path)])
    junk = tmp_path / "junk.ckpt"
    junk.write_bytes(b"\x00" * 64)
    assert str(junk) in _run(capsys, ["serve", "--checkpoint", str(junk), "--port", "0"])


def test_bad_enhancer_checkpoint_stops_serve_before_it_starts(tmp_path, capsys):
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
    assert "ta-jae.toml" in _run(capsys, ["evaluate", "--task-aware", "--out", str(tmp_path / "o"),
                                          "--checkpoints", str(tmp_path)])


def test_checkpoint_of_another_architecture(tmp_path, capsys):
    path = tmp_path / "e2.ckpt"
    tiny_codec("naive-e2d1").save(path)
    err = _run(capsys, ["serve", "--checkpoint", str(path), "--arch", "ndpca-e4d1", "--port", "0"])
    assert "naive-e2d1" in err and "ndpca-e4d1" in err


@pytest.mark.parametrize("kind", ["wrong_rate", "unreadable"])
def test_bad_audio_for_an_edge(tmp_path, capsys, kind):
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
