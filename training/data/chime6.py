"""Loader for CHiME-6 (the data set of the paper): one item per transcribed utterance.

Expected layout under ``root`` (as distributed by the CHiME-6 challenge)::

    transcriptions/<split>/<session>.json   list of utterances with "speaker", "session",
                                            "start_time", "end_time" ("H:MM:SS.ss"),
                                            "words", optionally "ref", "location"
    audio/<split>/<session>_U0<a>.CH<c>.wav Kinect array a, channel c, 16 kHz, mono
    audio/<split>/<session>_P<nn>.wav       binaural close-talk of speaker P<nn>, 2 channels

Each item: ``mics`` ``[S, N]`` from the chosen array channels over the utterance's time span,
``clean`` ``[N]`` the close-talk recording of the utterance's speaker averaged over both
ears (the usual CHiME reference: it still holds cross-talk from the other speakers, and it
is not time-aligned with the far-field arrays to the sample: the arrays are 1-10 m away),
and ``meta``. Distributed microphones: pass ``arrays=("U01", "U02", ...)`` and, say,
``channels=(1,)`` for one channel per Kinect, S = ``len(arrays) * len(channels)``.
Files at another rate than ``sample_rate`` are resampled (logged).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset

from shared.errors import AudioError, ConfigError

from .audio import audio_info, read_audio

log = logging.getLogger(__name__)

REQUIRED_KEYS: tuple[str, ...] = ("speaker", "session", "start_time", "end_time")


def parse_time(value: str | float | int) -> float:
    """Seconds from a CHiME time stamp ``"H:MM:SS.ss"`` (or a number of seconds).

    Raises:
        ValueError: not a time stamp.
    """
    if isinstance(value, int | float):
        return float(value)
    parts = str(value).strip().split(":")
    if not 1 <= len(parts) <= 3:
        raise ValueError(f"not a time stamp: {value!r}")
    seconds = 0.0
    for part in parts:
        seconds = seconds * 60.0 + float(part)
    return seconds


def _time_field(utt: dict[str, Any], key: str, device: str) -> float:
    """A time of an utterance; CHiME-5 style dicts per device fall back to 'original'."""
    value = utt[key]
    if isinstance(value, dict):
        value = value.get(device, value.get("original"))
    return parse_time(value)


class Chime6Dataset(Dataset):
    """Utterances of one CHiME-6 split with far-field mics and the close-talk reference.

    Args:
        root: CHiME-6 root holding ``transcriptions/`` and ``audio/``.
        split: ``"train"``, ``"dev"`` or ``"eval"`` (any folder name under both).
        array: the Kinect used when ``arrays`` is None, e.g. ``"U01"``.
        channels: channel numbers (1-4) taken from each array.
        arrays: several Kinects for distributed microphones, e.g. ``("U01", "U02")``.
        max_seconds: cut longer utterances to their first ``max_seconds``.
        min_seconds: skip utterances shorter than this.
        sample_rate: Hz of the returned audio.

    Raises:
        ConfigError: missing or malformed transcription files.
        AudioError: a needed audio file is missing or has the wrong channel count.
    """

    def __init__(self, root: Path, split: str, array: str = "U01",
                 channels: Sequence[int] = (1, 2, 3, 4), arrays: Sequence[str] | None = None,
                 max_seconds: float | None = None, min_seconds: float = 0.0,
                 sample_rate: int = 16000) -> None:
        self.root = Path(root)
        self.split = split
        self.arrays = list(arrays) if arrays else [array]
        self.channels = [int(c) for c in channels]
        if not self.channels:
            raise ConfigError("Chime6Dataset needs at least one channel, e.g. channels=(1,)")
        self.max_seconds = max_seconds
        self.sample_rate = int(sample_rate)
        self.audio_dir = self.root / "audio" / split
        trans_dir = self.root / "transcriptions" / split
        files = sorted(trans_dir.glob("*.json"))
        if not files:
            raise ConfigError(f"no transcription files in {trans_dir}: point root at the CHiME-6 "
                              f"folder holding transcriptions/{split}/<session>.json")
        self.utterances: list[dict[str, Any]] = []
        for path in files:
            for k, utt in enumerate(self._read_json(path)):
                missing = [key for key in REQUIRED_KEYS if key not in utt]
                if missing:
                    raise ConfigError(f"{path}: utterance {k} lacks {', '.join(missing)}")
                try:
                    start = _time_field(utt, "start_time", self.arrays[0])
                    end = _time_field(utt, "end_time", self.arrays[0])
                except (TypeError, ValueError) as err:
                    raise ConfigError(f"{path}: utterance {k} has a bad time ({err})") from err
                if end - start < max(min_seconds, 1.0 / self.sample_rate):
                    continue
                self.utterances.append({**utt, "_start": start, "_end": end, "_file": path.name})
        self._check_audio()

    @staticmethod
    def _read_json(path: Path) -> list[dict[str, Any]]:
        try:
            data = json.loads(path.read_text())
        except (OSError, UnicodeDecodeError, ValueError) as err:
            raise ConfigError(f"cannot parse CHiME-6 transcription {path} ({err})") from err
        if not isinstance(data, list):
            raise ConfigError(f"CHiME-6 transcription {path} must hold a list of utterances")
        return data

    def mic_path(self, session: str, array: str, channel: int) -> Path:
        """``audio/<split>/<session>_<array>.CH<channel>.wav``."""
        return self.audio_dir / f"{session}_{array}.CH{channel}.wav"

    def close_talk_path(self, session: str, speaker: str) -> Path:
        """``audio/<split>/<session>_<speaker>.wav``."""
        return self.audio_dir / f"{session}_{speaker}.wav"

    def _check_audio(self) -> None:
        """Every needed file exists with the right channel count (AudioError otherwise)."""
        checked: set[Path] = set()
        for utt in self.utterances:
            for array in self.arrays:
                for ch in self.channels:
                    path = self.mic_path(utt["session"], array, ch)
                    if path not in checked:
                        if audio_info(path)[1] != 1:
                            raise AudioError(f"CHiME-6 array file {path} must be mono (one file per channel)")
                        checked.add(path)
            path = self.close_talk_path(utt["session"], utt["speaker"])
            if path not in checked:
                if audio_info(path)[1] not in (1, 2):
                    raise AudioError(f"CHiME-6 close-talk file {path} must have 1 or 2 channels")
                checked.add(path)

    def __len__(self) -> int:
        return len(self.utterances)

    def span(self, index: int) -> tuple[float, float]:
        """Start and end in seconds of item ``index`` (after ``max_seconds``)."""
        utt = self.utterances[index]
        start, end = utt["_start"], utt["_end"]
        if self.max_seconds is not None:
            end = min(end, start + self.max_seconds)
        return start, end

    def _segment(self, path: Path, start_s: float, n: int) -> np.ndarray:
        """Mono float32 ``[n]`` from ``start_s`` at :attr:`sample_rate`; zero-padded past the end."""
        sr, _, frames = audio_info(path)
        first = int(round(start_s * sr))
        count = int(round(n * sr / self.sample_rate))
        if first >= frames:
            log.warning("%s ends at %.2f s, before %.2f s: segment is silence", path, frames / sr, start_s)
            return np.zeros(n, dtype=np.float32)
        audio = read_audio(path, self.sample_rate, start=first, frames=count)
        if len(audio) < n:
            log.warning("%s ends inside a segment at %.2f s: zero-padded", path, start_s)
            audio = np.pad(audio, (0, n - len(audio)))
        return audio[:n]

    def __getitem__(self, index: int) -> dict[str, Any]:
        utt = self.utterances[index]
        start, end = self.span(index)
        n = int(round((end - start) * self.sample_rate))
        mics = np.stack([self._segment(self.mic_path(utt["session"], a, c), start, n)
                         for a in self.arrays for c in self.channels])
        clean = self._segment(self.close_talk_path(utt["session"], utt["speaker"]), start, n)
        meta = {
            "index": index,
            "session": utt["session"],
            "speaker": utt["speaker"],
            "start_s": start,
            "end_s": end,
            "words": utt.get("words", ""),
            "location": utt.get("location"),
            "ref": utt.get("ref"),
            "mics": [f"{a}.CH{c}" for a in self.arrays for c in self.channels],
        }
        return {"mics": torch.from_numpy(mics), "clean": torch.from_numpy(clean), "meta": meta,
                "id": f"{utt['session']}-{utt['speaker']}-{int(round(start * 100)):07d}"}
