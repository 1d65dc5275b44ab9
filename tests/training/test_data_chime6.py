"""CHiME-6 loader on a tiny fixture in the exact CHiME-6 layout."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from shared.errors import AudioError, ConfigError
from training.data.chime6 import Chime6Dataset, parse_time

SR = 16000
SESSION = "S02"
DURATION = 6.0


def _tone(freq: float, seconds: float, channels: int = 1) -> np.ndarray:
    t = np.arange(int(seconds * SR)) / SR
    x = 0.3 * np.sin(2 * np.pi * freq * t)
    return np.stack([x * (1.0 - 0.2 * c) for c in range(channels)], axis=1).astype(np.float32)


@pytest.fixture()
def chime(tmp_path: Path) -> Path:
    """One session, two speakers, arrays U01/U02 with 4 channels each, binaural close-talk."""
    audio = tmp_path / "audio" / "dev"
    trans = tmp_path / "transcriptions" / "dev"
    audio.mkdir(parents=True)
    trans.mkdir(parents=True)
    for a, array in enumerate(("U01", "U02")):
        for ch in range(1, 5):
            # each channel a different tone so we can tell them apart
            sf.write(audio / f"{SESSION}_{array}.CH{ch}.wav", _tone(200 + 100 * a + 10 * ch, DURATION), SR)
    # close-talk: a ramp encodes time, left ear = ramp, right ear = ramp + 0.2 -> mean = ramp + 0.1
    ramp = np.linspace(0, 0.5, int(DURATION * SR), dtype=np.float32)
    for p, offset in (("P05", 0.0), ("P06", -0.3)):
        sf.write(audio / f"{SESSION}_{p}.wav", np.stack([ramp + offset, ramp + offset + 0.2], axis=1), SR)
    utterances = [
        {"speaker": "P05", "session": SESSION, "start_time": "0:00:00.50", "end_time": "0:00:01.75",
         "words": "hello there", "ref": "U01", "location": "kitchen"},
        {"speaker": "P06", "session": SESSION, "start_time": "0:00:02.00", "end_time": "0:00:05.00",
         "words": "how are you", "ref": "U01", "location": "kitchen"},
        {"speaker": "P05", "session": SESSION, "start_time": "0:00:05.50", "end_time": "0:00:05.50",
         "words": "[noise]"},  # empty: skipped
    ]
    (trans / f"{SESSION}.json").write_text(json.dumps(utterances))
    return tmp_path


def test_parse_time() -> None:
    """CHiME time stamps are H:MM:SS.ss."""
    assert parse_time("0:00:01.75") == pytest.approx(1.75)
    assert parse_time("1:02:03.50") == pytest.approx(3723.5)
    assert parse_time(2.5) == 2.5
    with pytest.raises(ValueError):
        parse_time("a:b")


def test_segments_shapes_and_close_talk(chime: Path) -> None:
    """Items cover the transcribed spans, one row per channel, clean = mean of the two ears."""
    ds = Chime6Dataset(chime, "dev", array="U01", channels=(1, 2, 3, 4))
    assert len(ds) == 2
    item = ds[0]
    assert item["mics"].shape == (4, int(1.25 * SR)) and item["clean"].shape == (int(1.25 * SR),)
    assert item["meta"]["speaker"] == "P05" and item["meta"]["words"] == "hello there"
    assert item["meta"]["start_s"] == pytest.approx(0.5) and item["meta"]["end_s"] == pytest.approx(1.75)
    # the close-talk values at the segment start/end match the ramp at 0.5 s and 1.75 s (+0.1)
    ramp = np.linspace(0, 0.5, int(DURATION * SR))
    clean = item["clean"].numpy()
    assert clean[0] == pytest.approx(ramp[int(0.5 * SR)] + 0.1, abs=1e-4)
    assert clean[-1] == pytest.approx(ramp[int(1.75 * SR) - 1] + 0.1, abs=1e-4)
    # channel c of U01 is the 200 + 10 c Hz tone, phase-continuous from the file start
    t = (np.arange(int(1.25 * SR)) + int(0.5 * SR)) / SR
    for c in range(4):
        expected = 0.3 * np.sin(2 * np.pi * (210 + 10 * c) * t)
        np.testing.assert_allclose(item["mics"][c].numpy(), expected, atol=1e-3)
    second = ds[1]
    assert second["meta"]["speaker"] == "P06" and second["mics"].shape == (4, 3 * SR)
    assert second["clean"][0].item() == pytest.approx(ramp[2 * SR] - 0.3 + 0.1, abs=1e-4)


def test_distributed_arrays_and_max_seconds(chime: Path) -> None:
    """arrays=... takes channels from several Kinects; max_seconds cuts long utterances."""
    ds = Chime6Dataset(chime, "dev", arrays=("U01", "U02"), channels=(1,), max_seconds=1.0)
    item = ds[1]
    assert item["mics"].shape == (2, SR) and item["clean"].shape == (SR,)
    assert item["meta"]["mics"] == ["U01.CH1", "U02.CH1"]
    assert item["meta"]["end_s"] == pytest.approx(3.0)
    t = (np.arange(SR) + 2 * SR) / SR
    np.testing.assert_allclose(item["mics"][1].numpy(), 0.3 * np.sin(2 * np.pi * 310 * t), atol=1e-3)


def test_missing_files_are_clear_errors(chime: Path, tmp_path: Path) -> None:
    """A missing channel or close-talk file, or missing transcripts, name the path."""
    with pytest.raises(AudioError, match="U03.CH1.wav"):
        Chime6Dataset(chime, "dev", array="U03")
    (chime / "audio" / "dev" / f"{SESSION}_P06.wav").unlink()
    with pytest.raises(AudioError, match="S02_P06.wav"):
        Chime6Dataset(chime, "dev")
    with pytest.raises(ConfigError, match="transcriptions"):
        Chime6Dataset(tmp_path / "nowhere", "dev")
    (chime / "transcriptions" / "dev" / "S02.json").write_text(json.dumps([{"speaker": "P05"}]))
    with pytest.raises(ConfigError, match="lacks"):
        Chime6Dataset(chime, "dev")


def test_segment_past_file_end_is_padded(chime: Path) -> None:
    """An utterance running past the end of the recordings is zero-padded, not wrong-sized."""
    trans = chime / "transcriptions" / "dev" / "S02.json"
    trans.write_text(json.dumps([{"speaker": "P05", "session": SESSION,
                                  "start_time": "0:00:05.00", "end_time": "0:00:07.00"}]))
    item = Chime6Dataset(chime, "dev", channels=(1,))[0]
    assert item["mics"].shape == (1, 2 * SR)
    assert float(item["mics"][0, SR + 100:].abs().max()) == 0.0
