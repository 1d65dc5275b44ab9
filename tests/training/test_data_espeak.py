"""eSpeak NG synthesis, the speaker catalogue and the sentence generator."""

from __future__ import annotations

import numpy as np
import pytest

from shared.errors import ConfigError
from training.data.audio import resample, trim_silence
from training.data.espeak import (
    BASE_VOICES,
    VARIANTS,
    EspeakSynth,
    Speaker,
    speaker_catalogue,
    synthesize,
)
from training.data.sentences import make_sentence, make_sentences


@pytest.fixture(scope="module")
def synth() -> EspeakSynth:
    """One synthesiser at 16 kHz."""
    return EspeakSynth(16000)


def test_synthesis_is_non_silent_16k(synth: EspeakSynth) -> None:
    """A sentence gives float32 16 kHz audio of plausible length and level."""
    text = "The quick brown fox jumps over the lazy dog."
    audio = synth.synthesize(text, "en-us+f3", 160, 50)
    assert audio.dtype == np.float32 and audio.ndim == 1
    assert synth.native_rate == 22050
    seconds = len(audio) / 16000
    assert 1.5 < seconds < 5.0
    assert 0.05 < np.abs(audio).max() <= 1.0
    assert np.sqrt(np.mean(audio**2)) > 0.01
    # resampled, not relabelled: the native-rate signal is 22050/16000 times longer
    native = EspeakSynth(22050).synthesize(text, "en-us+f3", 160, 50)
    assert abs(len(audio) - len(native) * 16000 / 22050) <= 1


def test_output_is_band_limited_to_8k(synth: EspeakSynth) -> None:
    """Resampling to 16 kHz keeps the spectrum below Nyquist (energy mostly under 5 kHz)."""
    audio = synth.synthesize("Sally sells seashells by the seashore.", "en-us+m3", 160, 50)
    spec = np.abs(np.fft.rfft(audio)) ** 2
    freqs = np.fft.rfftfreq(len(audio), 1 / 16000)
    assert spec[freqs < 5000].sum() > 0.8 * spec.sum()


def test_different_voices_differ(synth: EspeakSynth) -> None:
    """Different variants, rates and pitches give different signals."""
    text = "Please bring the blue cup to the kitchen."
    outs = {
        "m1": synth.synthesize(text, "en-us+m1", 160, 50),
        "f3": synth.synthesize(text, "en-us+f3", 160, 50),
        "fast": synth.synthesize(text, "en-us+f3", 220, 50),
        "high": synth.synthesize(text, "en-us+f3", 160, 90),
        "scot": synth.synthesize(text, "en-gb-scotland+f3", 160, 50),
    }
    assert len(outs["fast"]) < 0.85 * len(outs["f3"])
    keys = list(outs)
    for i, a in enumerate(keys):
        for b in keys[i + 1:]:
            x, y = outs[a], outs[b]
            assert len(x) != len(y) or not np.allclose(x, y), (a, b)
    # female variants speak higher: compare the spectral centroid of the voiced energy
    def centroid(x: np.ndarray) -> float:
        spec = np.abs(np.fft.rfft(x)) ** 2
        f = np.fft.rfftfreq(len(x), 1 / 16000)
        low = f < 1000
        return float((f[low] * spec[low]).sum() / spec[low].sum())

    assert centroid(outs["f3"]) > centroid(outs["m1"])


def test_synthesis_is_reproducible(synth: EspeakSynth) -> None:
    """Same arguments, same samples, whatever was synthesised in between."""
    a = synth.synthesize("Test one, and the quick brown fox.", "en-us+m1", 150, 40, seed=3)
    synth.synthesize("Something else entirely.", "en-gb-x-rp+klatt2", 200, 70)
    b = synth.synthesize("Test one, and the quick brown fox.", "en-us+m1", 150, 40, seed=3)
    np.testing.assert_array_equal(a, b)
    c = synthesize("Test one, and the quick brown fox.", "en-us+m1", 150, 40)
    assert c.dtype == np.float32 and len(c) > 16000


def test_bad_arguments_raise_config_error(synth: EspeakSynth) -> None:
    """Unknown variants and out-of-range parameters are user errors with a hint."""
    with pytest.raises(ConfigError, match="variant"):
        synth.synthesize("hello", "en-us+nobody", 160, 50)
    with pytest.raises(ConfigError, match="unknown"):
        synth.synthesize("hello", "xx-nowhere", 160, 50)
    with pytest.raises(ConfigError, match="rate"):
        synth.synthesize("hello", "en-us", 20, 50)
    with pytest.raises(ConfigError, match="pitch"):
        synth.synthesize("hello", "en-us", 160, 150)


def test_catalogue_is_large_and_valid(synth: EspeakSynth) -> None:
    """Thousands of distinct speakers; ids round-trip; a sample of them all speak."""
    cat = speaker_catalogue()
    assert len(cat) == len(BASE_VOICES) * len(VARIANTS) * 4 * 3
    assert len({s.id for s in cat}) == len(cat)
    assert all(Speaker.from_id(s.id) == s for s in cat[:: 97])
    rng = np.random.default_rng(1)
    for i in rng.choice(len(cat), 6, replace=False):
        audio = synth.speak(cat[int(i)], "One two three.")
        assert np.abs(audio).max() > 0.05, cat[int(i)].id
    with pytest.raises(ConfigError):
        Speaker.from_id("not-a-speaker")


def test_sentences_are_seeded_and_varied() -> None:
    """The generator is deterministic per seed and makes many distinct sentences."""
    a = make_sentences(np.random.default_rng(5), 300)
    b = make_sentences(np.random.default_rng(5), 300)
    c = make_sentences(np.random.default_rng(6), 300)
    assert a == b and a != c
    assert len(set(a)) > 280
    s = make_sentence(np.random.default_rng(0))
    assert s[0].isupper() and s[-1] in ".?" and "{" not in s


def test_trim_and_resample_helpers() -> None:
    """Silence trimming keeps the tone; resampling changes the length by the rate ratio."""
    t = np.arange(16000) / 16000
    tone = np.sin(2 * np.pi * 440 * t).astype(np.float32)
    padded = np.concatenate([np.zeros(8000, np.float32), tone, np.zeros(8000, np.float32)])
    trimmed = trim_silence(padded, 16000, pad_s=0.0)
    assert abs(len(trimmed) - 16000) <= 160
    up = resample(tone, 16000, 22050)
    assert len(up) == 22050 and up.dtype == np.float32
