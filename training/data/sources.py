"""Where dry speech and noise come from: eSpeak NG talkers, or folders of real recordings.

- :class:`EspeakSpeechSource`: synthetic talkers from :func:`speaker_catalogue`, speaking
  sentences from :mod:`training.data.sentences`. Identity group = eSpeak variant.
- :class:`FolderSpeechSource`: clean speech in LibriSpeech layout,
  ``<root>/<speaker>/**/*.flac|wav``; the speaker is the first folder level.
- :class:`NoiseFolder`: any folder of noise recordings (``**/*.wav|flac|ogg``).

Audio at another sample rate is resampled, with a log line naming the file; multichannel
files are averaged to mono (also logged). Unreadable files and empty folders raise
:class:`shared.errors.AudioError` naming the path and the fix.
"""

from __future__ import annotations

import hashlib
import logging
from pathlib import Path
from typing import Protocol

import numpy as np

from shared.errors import AudioError

from .audio import read_audio, trim_silence
from .espeak import EspeakSynth, Speaker, speaker_catalogue
from .sentences import make_sentence

log = logging.getLogger(__name__)

SPEECH_SUFFIXES: tuple[str, ...] = (".flac", ".wav")
NOISE_SUFFIXES: tuple[str, ...] = (".flac", ".wav", ".ogg")


class SpeechSource(Protocol):
    """A set of talkers that can each produce dry utterances."""

    kind: str

    @property
    def speakers(self) -> list[str]:
        """All speaker ids, sorted."""
        ...

    def group(self, speaker: str) -> str:
        """The identity group of a speaker: held-out splits never share a group."""
        ...

    def utterance(self, speaker: str, rng: np.random.Generator) -> tuple[np.ndarray, str]:
        """A dry utterance ``[M]`` float32 and its description (text or file)."""
        ...

    def fingerprint(self) -> dict[str, object]:
        """What the data depend on, for the data-set hash."""
        ...


class EspeakSpeechSource:
    """Synthetic talkers speaking generated sentences.

    Args:
        sample_rate: Hz of the produced audio.
        speakers: the catalogue to draw from (default: all of :func:`speaker_catalogue`).
    """

    kind = "espeak"

    def __init__(self, sample_rate: int = 16000, speakers: list[Speaker] | None = None) -> None:
        self.sample_rate = sample_rate
        catalogue = speakers if speakers is not None else speaker_catalogue()
        self._by_id = {s.id: s for s in catalogue}
        self._synth: EspeakSynth | None = None

    @property
    def speakers(self) -> list[str]:
        """All speaker ids, sorted."""
        return sorted(self._by_id)

    def group(self, speaker: str) -> str:
        """The eSpeak variant (timbre) of the speaker."""
        return self._by_id[speaker].variant

    def utterance(self, speaker: str, rng: np.random.Generator) -> tuple[np.ndarray, str]:
        """One or two generated sentences spoken by ``speaker``; ``([M] float32, text)``."""
        if self._synth is None:
            self._synth = EspeakSynth(self.sample_rate)
        count = 1 if rng.random() < 0.7 else 2
        text = " ".join(make_sentence(rng) for _ in range(count))
        seed = int(rng.integers(0, 2**31 - 1))
        audio = self._synth.speak(self._by_id[speaker], text, seed=seed)
        return trim_silence(audio, self.sample_rate), text

    def fingerprint(self) -> dict[str, object]:
        """Source kind, eSpeak NG version and the catalogue."""
        ids = "\n".join(sorted(self._by_id)).encode()
        return {"kind": self.kind, "espeak": EspeakSynth(self.sample_rate).version,
                "speakers": len(self._by_id), "catalogue_sha1": hashlib.sha1(ids).hexdigest()}


def _audio_files(root: Path, suffixes: tuple[str, ...]) -> list[Path]:
    """Audio files under ``root`` (recursively), sorted, by lower-case suffix."""
    return sorted(p for p in root.rglob("*") if p.is_file() and p.suffix.lower() in suffixes)


def _check_dir(root: Path, what: str, flag: str) -> Path:
    root = Path(root).expanduser()
    if not root.is_dir():
        raise AudioError(f"{what} folder {root} does not exist: fix {flag} or create the folder")
    return root


class FolderSpeechSource:
    """Clean speech in LibriSpeech layout: ``<root>/<speaker>/**/*.flac|wav``.

    Args:
        root: the folder; every sub-folder is one speaker.
        sample_rate: Hz of the produced audio (files at other rates are resampled).
        cache_files: how many decoded files to keep in memory.

    Raises:
        AudioError: the folder is missing or holds no speaker folder with audio files.
    """

    kind = "folder"

    def __init__(self, root: Path, sample_rate: int = 16000, cache_files: int = 64) -> None:
        self.root = _check_dir(root, "speech", "--speech-dir")
        self.sample_rate = sample_rate
        self._files: dict[str, list[Path]] = {}
        for sub in sorted(p for p in self.root.iterdir() if p.is_dir()):
            files = _audio_files(sub, SPEECH_SUFFIXES)
            if files:
                self._files[sub.name] = files
            else:
                log.warning("speaker folder %s holds no .flac/.wav files: skipped", sub)
        if not self._files:
            raise AudioError(
                f"speech folder {self.root} holds no speaker folders with .flac/.wav files; "
                "expected <root>/<speaker>/**/*.flac (LibriSpeech layout)"
            )
        self._cache: dict[Path, np.ndarray] = {}
        self._cache_files = cache_files

    @property
    def speakers(self) -> list[str]:
        """Speaker folder names, sorted."""
        return sorted(self._files)

    def group(self, speaker: str) -> str:
        """A real speaker is its own identity group."""
        return speaker

    def files(self, speaker: str) -> list[Path]:
        """The audio files of ``speaker``, sorted."""
        return list(self._files[speaker])

    def load(self, path: Path) -> np.ndarray:
        """Read one file as mono float32 ``[M]`` at :attr:`sample_rate` (cached).

        Raises:
            AudioError: unreadable or silent file.
        """
        if path not in self._cache:
            audio = read_audio(path, self.sample_rate)
            if not np.any(audio):
                raise AudioError(f"speech file {path} is silent; delete it from {self.root}")
            if len(self._cache) >= self._cache_files:
                self._cache.pop(next(iter(self._cache)))
            self._cache[path] = audio
        return self._cache[path]

    def utterance(self, speaker: str, rng: np.random.Generator) -> tuple[np.ndarray, str]:
        """A random file of ``speaker``; ``([M] float32, path relative to the root)``."""
        files = self._files[speaker]
        path = files[int(rng.integers(len(files)))]
        return self.load(path), path.relative_to(self.root).as_posix()

    def fingerprint(self) -> dict[str, object]:
        """Relative paths and byte sizes of every file."""
        return {
            "kind": self.kind,
            "files": [[p.relative_to(self.root).as_posix(), p.stat().st_size]
                      for files in self._files.values() for p in files],
        }


class NoiseFolder:
    """Noise recordings, cut into random excerpts.

    Args:
        root: folder searched recursively for ``.wav``, ``.flac`` and ``.ogg`` files.
        sample_rate: Hz of the produced audio (files at other rates are resampled).

    Raises:
        AudioError: the folder is missing or holds no audio file.
    """

    def __init__(self, root: Path, sample_rate: int = 16000) -> None:
        self.root = _check_dir(root, "noise", "--noise-dir")
        self.sample_rate = sample_rate
        self.files = _audio_files(self.root, NOISE_SUFFIXES)
        if not self.files:
            raise AudioError(
                f"noise folder {self.root} holds no .wav/.flac/.ogg files; "
                "put noise recordings there or leave --noise-dir out for synthetic noise"
            )
        self._cache: dict[Path, np.ndarray] = {}

    def load(self, path: Path) -> np.ndarray:
        """Read one file as mono float32 ``[M]`` (cached); AudioError if unreadable/silent."""
        if path not in self._cache:
            audio = read_audio(path, self.sample_rate)
            if not np.any(audio):
                raise AudioError(f"noise file {path} is silent; delete it from {self.root}")
            self._cache[path] = audio
        return self._cache[path]

    def excerpt(self, num_samples: int, rng: np.random.Generator,
                region: tuple[float, float] = (0.0, 1.0), path: Path | None = None
                ) -> tuple[np.ndarray, str]:
        """A random excerpt of ``num_samples`` from part ``region`` of a (random) file.

        Args:
            num_samples: N.
            rng: randomness for the file and the offset.
            region: fractions ``(lo, hi)`` of each file to draw from, so that splits can use
                disjoint parts of the same recordings.
            path: use this file instead of a random one.

        Returns:
            ``([N] float32, file path relative to the root)``; a region shorter than N is
            repeated (looped) to fill N.
        """
        path = path if path is not None else self.files[int(rng.integers(len(self.files)))]
        audio = self.load(path)
        lo = int(region[0] * len(audio))
        hi = max(lo + 1, int(region[1] * len(audio)))
        part = audio[lo:hi]
        if len(part) < num_samples:
            part = np.tile(part, num_samples // len(part) + 1)
        offset = int(rng.integers(0, len(part) - num_samples + 1))
        return part[offset:offset + num_samples].copy(), path.relative_to(self.root).as_posix()

    def fingerprint(self) -> dict[str, object]:
        """Relative paths and byte sizes of every file."""
        return {"kind": "noise-folder",
                "files": [[p.relative_to(self.root).as_posix(), p.stat().st_size] for p in self.files]}
