"""Offline speech synthesis with eSpeak NG, loaded through the ``espeakng_loader`` wheel.

The wheel ships ``libespeak-ng`` and its voice data; we drive the C API with ``ctypes``:
``espeak_Initialize`` in synchronous mode, a synth callback that collects int16 samples,
``espeak_SetVoiceByName("<base>+<variant>")``, ``espeak_SetParameter`` for rate and pitch,
``espeak_Synth`` and ``espeak_Synchronize``. eSpeak speaks at 22.05 kHz; the result is
resampled to 16 kHz (or any other rate asked for).

A *speaker* is a combination (base voice, variant, rate in words per minute, pitch 0-100):
the base voice sets the accent (``en-us``, ``en-gb-scotland``, ...), the variant the timbre
(``m1``..``m8``, ``f1``..``f5``, ``klatt``..., and named variants), rate and pitch the
prosody. :func:`speaker_catalogue` lists several thousand of them. Variants are the unit of
identity used for held-out splits (two speakers that share a variant sound alike).

Reproducibility and threading: libespeak-ng keeps global wave-generator state that makes
repeated calls differ, so every utterance runs on a freshly loaded private copy of the
library (see :class:`_Engine`); the same arguments always give the same samples. Calls are
serialised by a lock (thread-safe, not parallel): use processes to synthesise in parallel.
"""

from __future__ import annotations

import _ctypes
import ctypes
import itertools
import shutil
import tempfile
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

import espeakng_loader
import numpy as np

from shared.errors import ConfigError

from .audio import resample

AUDIO_OUTPUT_SYNCHRONOUS = 2
ESPEAK_RATE = 1  # espeak_PARAMETER: words per minute, 80..450
ESPEAK_PITCH = 3  # 0..100, 50 is the voice's normal pitch
ESPEAK_RANGE = 4  # pitch range, 0 (monotone)..100
EE_OK = 0

BASE_VOICES: tuple[str, ...] = (
    "en-us", "en", "en-gb-scotland", "en-gb-x-rp", "en-us-nyc", "en-029",
    "en-gb-x-gbclan", "en-gb-x-gbcwmd",
)
"""English accents shipped with eSpeak NG (the language of the sentence generator)."""

VARIANTS: tuple[str, ...] = (
    "m1", "m2", "m3", "m4", "m5", "m6", "m7", "m8",
    "f1", "f2", "f3", "f4", "f5",
    "klatt", "klatt2", "klatt3", "klatt4", "klatt5", "klatt6",
    "Alex", "Andy", "Denis", "Gene", "Lee", "Michael", "Mike", "Storm", "antonio", "david",
    "ed", "edward", "gustave", "iven", "marcelo", "michel", "paul", "quincy", "robert",
    "travis", "Andrea", "Annie", "anika", "aunty", "belinda", "grandma", "linda", "steph",
)
"""Timbre variants that sound like a plain human talker (robotic, whispering and heavy-echo
variants of the eSpeak data are left out)."""

RATES_WPM: tuple[int, ...] = (130, 150, 170, 190)
PITCHES: tuple[int, ...] = (35, 50, 65)

_CALLBACK = ctypes.CFUNCTYPE(
    ctypes.c_int, ctypes.POINTER(ctypes.c_short), ctypes.c_int, ctypes.c_void_p
)


@dataclass(frozen=True)
class Speaker:
    """One synthetic talker: eSpeak base voice, variant, speaking rate and pitch."""

    base: str
    variant: str
    rate_wpm: int
    pitch: int

    @property
    def voice(self) -> str:
        """The name given to ``espeak_SetVoiceByName``, e.g. ``"en-us+f3"``."""
        return f"{self.base}+{self.variant}"

    @property
    def id(self) -> str:
        """A stable, unique, file-name-safe identifier, e.g. ``"espeak-en-us+f3-r150-p50"``."""
        return f"espeak-{self.voice}-r{self.rate_wpm}-p{self.pitch}"

    @classmethod
    def from_id(cls, speaker_id: str) -> Speaker:
        """Parse an identifier made by :attr:`id`.

        Raises:
            ConfigError: the string is not such an identifier.
        """
        try:
            head, rate, pitch = speaker_id.removeprefix("espeak-").rsplit("-", 2)
            base, variant = head.split("+", 1)
            if not (rate.startswith("r") and pitch.startswith("p")):
                raise ValueError(speaker_id)
            return cls(base, variant, int(rate[1:]), int(pitch[1:]))
        except ValueError as err:
            raise ConfigError(
                f"{speaker_id!r} is not an eSpeak speaker id (expected e.g. "
                "'espeak-en-us+f3-r150-p50')"
            ) from err


def speaker_catalogue(
    bases: tuple[str, ...] = BASE_VOICES,
    variants: tuple[str, ...] = VARIANTS,
    rates: tuple[int, ...] = RATES_WPM,
    pitches: tuple[int, ...] = PITCHES,
) -> list[Speaker]:
    """All combinations of base voice, variant, rate and pitch, in a fixed order.

    With the defaults: 8 accents x 47 variants x 4 rates x 3 pitches = 4512 speakers.
    """
    return [Speaker(b, v, r, p) for v, b, r, p in itertools.product(variants, bases, rates, pitches)]


def _dlclose(handle: int) -> None:
    """Unload a shared library opened by ``ctypes.CDLL`` (POSIX ``dlclose``/Windows ``FreeLibrary``)."""
    closer = getattr(_ctypes, "dlclose", None) or getattr(_ctypes, "FreeLibrary", None)
    if closer is not None:
        closer(handle)


class _Engine:
    """Runs libespeak-ng with a pristine state for every utterance.

    libespeak-ng keeps wave-generator state (flutter index, glottal phase, resonator memory)
    across calls and no API resets it: measured here, the same text with the same voice gave
    outputs whose lengths differed by up to 30 ms from one call to the next, even after
    ``espeak_ng_SetRandSeed`` and ``espeak_Terminate``/``espeak_Initialize``. So each
    :meth:`speak` loads a private copy of the library (copied once per process to a temporary
    folder, so nobody else holds a reference to it), initialises it, synthesises, terminates
    and unloads it: about 10 ms of overhead, and the output depends only on the arguments.
    """

    _instance: ClassVar[_Engine | None] = None
    _create_lock: ClassVar[threading.Lock] = threading.Lock()

    def __init__(self) -> None:
        self.data_path = espeakng_loader.get_data_path()
        self._tmp = tempfile.TemporaryDirectory(prefix="ndpca-espeak-")
        source = Path(espeakng_loader.get_library_path())
        self.lib_path = Path(self._tmp.name) / source.name
        shutil.copyfile(source, self.lib_path)
        self.lock = threading.Lock()
        self.chunks: list[np.ndarray] = []
        self.callback = _CALLBACK(self._collect)  # keep a reference: C holds the pointer
        variants_dir = Path(self.data_path) / "voices" / "!v"
        self.variants = {p.name for p in variants_dir.iterdir()} if variants_dir.is_dir() else set()
        lib = self._open()
        self.native_rate = self._initialise(lib)
        lib.espeak_Info.restype = ctypes.c_char_p
        lib.espeak_Info.argtypes = [ctypes.c_void_p]
        self.version = (lib.espeak_Info(None) or b"?").decode()
        self._close(lib)

    @classmethod
    def get(cls) -> _Engine:
        """The engine of this process, created on first call."""
        with cls._create_lock:
            if cls._instance is None:
                cls._instance = cls()
            return cls._instance

    def _open(self) -> ctypes.CDLL:
        """Load the private copy of libespeak-ng and declare the C signatures we use."""
        lib = ctypes.CDLL(str(self.lib_path))
        lib.espeak_Initialize.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_char_p, ctypes.c_int]
        lib.espeak_Initialize.restype = ctypes.c_int
        lib.espeak_SetVoiceByName.argtypes = [ctypes.c_char_p]
        lib.espeak_SetVoiceByName.restype = ctypes.c_int
        lib.espeak_SetParameter.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_int]
        lib.espeak_SetParameter.restype = ctypes.c_int
        lib.espeak_ng_SetRandSeed.argtypes = [ctypes.c_long]
        lib.espeak_Synth.argtypes = [
            ctypes.c_char_p, ctypes.c_size_t, ctypes.c_uint, ctypes.c_int, ctypes.c_uint,
            ctypes.c_uint, ctypes.c_void_p, ctypes.c_void_p,
        ]
        lib.espeak_Synth.restype = ctypes.c_int
        lib.espeak_Synchronize.restype = ctypes.c_int
        lib.espeak_Terminate.restype = ctypes.c_int
        return lib

    def _initialise(self, lib: ctypes.CDLL) -> int:
        """``espeak_Initialize`` in synchronous mode; returns the native sample rate in Hz."""
        native = lib.espeak_Initialize(AUDIO_OUTPUT_SYNCHRONOUS, 0, self.data_path.encode(), 0)
        if native <= 0:
            raise ConfigError(
                f"eSpeak NG failed to initialise with data path {self.data_path}; "
                "reinstall the espeakng-loader package"
            )
        lib.espeak_SetSynthCallback(self.callback)
        return int(native)

    @staticmethod
    def _close(lib: ctypes.CDLL) -> None:
        """``espeak_Terminate`` and unload, so the next :meth:`_open` starts from scratch."""
        lib.espeak_Terminate()
        _dlclose(lib._handle)

    def _collect(self, wav: ctypes._Pointer, numsamples: int, events: int) -> int:
        """Synth callback: copy ``numsamples`` int16 samples; returning 0 means carry on."""
        if wav and numsamples > 0:
            self.chunks.append(np.ctypeslib.as_array(wav, shape=(numsamples,)).copy())
        return 0

    def speak(self, text: str, voice: str, rate_wpm: int, pitch: int, seed: int) -> np.ndarray:
        """Synthesise at the native rate; int16 ``[N]`` (empty when eSpeak failed)."""
        with self.lock:
            lib = self._open()
            try:
                self._initialise(lib)
                if lib.espeak_SetVoiceByName(voice.encode()) != EE_OK:
                    raise ConfigError(f"eSpeak voice {voice!r} is unknown; use e.g. 'en-us+f3'")
                lib.espeak_SetParameter(ESPEAK_RATE, int(rate_wpm), 0)
                lib.espeak_SetParameter(ESPEAK_PITCH, int(pitch), 0)
                lib.espeak_ng_SetRandSeed(int(seed))
                self.chunks = []
                payload = text.encode("utf-8") + b"\0"
                err = lib.espeak_Synth(payload, len(payload), 0, 0, 0, 0, None, None)
                lib.espeak_Synchronize()
                chunks, self.chunks = self.chunks, []
            finally:
                self._close(lib)
        if err != EE_OK or not chunks:
            return np.zeros(0, dtype=np.int16)
        return np.concatenate(chunks)


class EspeakSynth:
    """Text to speech with libespeak-ng at a chosen output rate.

    Args:
        sample_rate: output rate in Hz (eSpeak's native 22.05 kHz is resampled to it).

    libespeak-ng is loaded and initialised once per process, on the first instance; all
    instances share it and a lock serialises their calls (thread-safe, not parallel).
    """

    def __init__(self, sample_rate: int = 16000) -> None:
        self.sample_rate = int(sample_rate)
        self._engine = _Engine.get()

    @property
    def native_rate(self) -> int:
        """eSpeak's own output rate in Hz (22050)."""
        return self._engine.native_rate

    @property
    def version(self) -> str:
        """Version of the loaded libespeak-ng, e.g. ``"1.52.0"``."""
        return self._engine.version

    def synthesize(
        self, text: str, voice: str = "en-us+f3", rate_wpm: int = 160, pitch: int = 50, seed: int = 0
    ) -> np.ndarray:
        """Speak ``text`` with the given voice, rate and pitch.

        Args:
            text: the words to speak (plain text, no SSML).
            voice: ``"<base>"`` or ``"<base>+<variant>"``, e.g. ``"en-us+m3"``.
            rate_wpm: speaking rate in words per minute (80-450).
            pitch: base pitch, 0-100 (50 is the voice's own).
            seed: seed of eSpeak's random generator (voicing noise, flutter).

        Returns:
            float32 mono ``[N]`` in [-1, 1] at :attr:`sample_rate` Hz; the same arguments
            always give the same samples.

        Raises:
            ConfigError: unknown voice or variant, parameter out of range, or no audio came out.
        """
        if not 80 <= rate_wpm <= 450:
            raise ConfigError(f"eSpeak rate {rate_wpm} wpm is out of range: use 80-450")
        if not 0 <= pitch <= 100:
            raise ConfigError(f"eSpeak pitch {pitch} is out of range: use 0-100")
        variant = voice.split("+", 1)[1] if "+" in voice else None
        known = self._engine.variants
        if variant is not None and known and variant not in known:
            raise ConfigError(f"eSpeak variant {variant!r} (voice {voice!r}) does not exist; "
                              f"pick one of {', '.join(VARIANTS)}")
        pcm = self._engine.speak(text, voice, rate_wpm, pitch, seed)
        if pcm.size == 0:
            raise ConfigError(f"eSpeak produced no audio for voice {voice!r} and text {text[:40]!r}")
        return resample(pcm.astype(np.float32) / 32768.0, self.native_rate, self.sample_rate)

    def speak(self, speaker: Speaker, text: str, seed: int = 0) -> np.ndarray:
        """:meth:`synthesize` with the voice, rate and pitch of ``speaker``; ``[N]`` float32."""
        return self.synthesize(text, speaker.voice, speaker.rate_wpm, speaker.pitch, seed)


def synthesize(text: str, voice: str = "en-us+f3", rate_wpm: int = 160, pitch: int = 50,
               sample_rate: int = 16000) -> np.ndarray:
    """Module-level shortcut for ``EspeakSynth(sample_rate).synthesize(...)``; ``[N]``."""
    return EspeakSynth(sample_rate).synthesize(text, voice, rate_wpm, pitch)
