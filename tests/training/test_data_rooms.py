"""Room simulation: layouts, turn-taking timeline, noise, clean reference, SNR, levels."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from scipy.signal import correlate

from shared.errors import AudioError, ConfigError
from training.data.espeak import EspeakSynth
from training.data.noise import NOISE_KINDS, synthetic_noise
from training.data.rooms import (
    PEAK,
    compute_rirs,
    direct_path_index,
    early_rir,
    place_utterances,
    sample_layout,
    simulate_room,
)
from training.data.sources import NoiseFolder

SR = 16000
SMALL = {"room_low": (4.0, 3.5, 2.5), "room_high": (5.0, 4.5, 2.7), "rt60_range": (0.2, 0.3)}


@pytest.fixture(scope="module")
def speech() -> np.ndarray:
    """Two seconds of eSpeak speech, dry, 16 kHz."""
    audio = EspeakSynth(SR).synthesize("Could the quiet neighbour bring seven blue cups?", "en-us+m3")
    return audio[: 2 * SR]


def _nxc(a: np.ndarray, b: np.ndarray, max_lag: int) -> tuple[float, int]:
    """Peak normalised cross-correlation within +-max_lag and its lag (a relative to b)."""
    xc = correlate(a.astype(np.float64), b.astype(np.float64), mode="full")
    xc /= np.sqrt(np.sum(a.astype(np.float64) ** 2) * np.sum(b.astype(np.float64) ** 2))
    mid = len(b) - 1
    window = xc[mid - max_lag: mid + max_lag + 1]
    k = int(np.argmax(np.abs(window)))
    return float(abs(window[k])), k - max_lag


def test_layout_mics_distinct_and_inside() -> None:
    """Mics, talkers and noise sources lie inside the room, mics >= 0.5 m apart."""
    for seed in range(8):
        rng = np.random.default_rng(seed)
        lay = sample_layout(rng, num_mics=6, num_talkers=3, num_noise_sources=4)
        assert lay.mics.shape == (6, 3) and lay.talkers.shape == (3, 3)
        assert lay.noise_sources.shape == (4, 3)
        for pts in (lay.mics, lay.talkers, lay.noise_sources):
            assert np.all(pts > 0) and np.all(pts < lay.dims)
        d = np.linalg.norm(lay.mics[:, None, :2] - lay.mics[None, :, :2], axis=-1)
        assert d[~np.eye(6, dtype=bool)].min() >= 0.5
        assert 0.15 <= lay.rt60 <= 0.6 and 0 < lay.absorption < 1 and lay.max_order > 0
        assert set(lay.mic_styles) <= {"wall", "table"}
    with pytest.raises(ConfigError):
        sample_layout(np.random.default_rng(0), num_mics=40, room_low=(3, 3, 2.5), room_high=(3, 3, 2.5))
    with pytest.raises(ConfigError):
        sample_layout(np.random.default_rng(0), min_mic_spacing=0.1)


def test_timeline_turn_taking() -> None:
    """Every talker speaks, nobody overlaps itself, turns stay inside the timeline."""
    n = 8 * SR
    saw_overlap = saw_gap = False
    for seed in range(6):
        rng = np.random.default_rng(seed)
        tracks, segs = place_utterances(rng, 3, lambda t: np.ones(SR, np.float32) * (t + 1), n, SR,
                                        overlap_prob=0.5)
        assert tracks.shape == (3, n) and tracks.dtype == np.float32
        assert {s.talker for s in segs} == {0, 1, 2}
        for s in segs:
            assert 0 <= s.start < s.end <= n
        for t in range(3):
            mine = sorted((s.start, s.end) for s in segs if s.talker == t)
            assert all(a[1] <= b[0] for a, b in zip(mine, mine[1:], strict=False))
            active = np.zeros(n, bool)
            for a, b in mine:
                active[a:b] = True
            assert np.all(tracks[t, ~active] == 0) and np.all(tracks[t, active] != 0)
        order = sorted(segs, key=lambda s: s.start)
        for a, b in zip(order, order[1:], strict=False):
            saw_overlap |= b.start < a.end
            saw_gap |= b.start > a.end
    assert saw_overlap and saw_gap
    # turns longer than max_turn_samples become faded excerpts, so three talkers fit in 4 s
    rng = np.random.default_rng(0)
    tracks, segs = place_utterances(rng, 3, lambda t: np.ones(3 * SR, np.float32), 4 * SR, SR,
                                    max_turn_samples=SR)
    assert {s.talker for s in segs} == {0, 1, 2}
    assert all(s.end - s.start <= SR for s in segs)
    first = segs[0]
    assert tracks[first.talker, first.start] == 0 and tracks[first.talker, first.start + 200] > 0
    # a long utterance is cut to fit and ends the timeline
    tracks, segs = place_utterances(np.random.default_rng(0), 1, lambda t: np.ones(10 * SR, np.float32), SR)
    assert len(segs) == 1 and segs[0].end == SR


@pytest.mark.parametrize("kind", NOISE_KINDS)
def test_synthetic_noise_kinds(kind: str) -> None:
    """Each kind is seeded, unit-RMS, and has its expected spectral character."""
    a = synthetic_noise(kind, SR, np.random.default_rng(1))
    b = synthetic_noise(kind, SR, np.random.default_rng(1))
    c = synthetic_noise(kind, SR, np.random.default_rng(2))
    np.testing.assert_array_equal(a, b)
    assert not np.allclose(a, c)
    assert a.dtype == np.float32 and abs(np.sqrt(np.mean(a.astype(np.float64) ** 2)) - 1) < 1e-3
    spec = np.abs(np.fft.rfft(a)) ** 2
    f = np.fft.rfftfreq(SR, 1 / SR)
    low = spec[f < 1000].sum() / spec.sum()
    if kind == "white":
        assert 0.08 < low < 0.18
    if kind in ("brown", "hum", "fan"):
        assert low > 0.8
    if kind == "hum":
        assert f[np.argmax(spec)] in (50.0, 60.0)
    with pytest.raises(ValueError):
        synthetic_noise("nope", SR, np.random.default_rng(0))


def test_simulated_mics_correlated_not_identical(speech: np.ndarray) -> None:
    """S distinct mic signals that share the talker (high cross-correlation, not equal)."""
    rng = np.random.default_rng(3)
    lay = sample_layout(rng, num_mics=4, num_talkers=1, num_noise_sources=1, **SMALL)
    mix = simulate_room(lay, speech[None], None, 30.0, SR)
    assert mix.mics.shape == (4, len(speech)) and mix.clean.shape == (len(speech),)
    assert mix.mics.dtype == np.float32 and mix.clean.dtype == np.float32
    assert abs(float(np.abs(mix.mics).max()) - PEAK) < 1e-4
    max_lag = int(np.linalg.norm(lay.dims) / 343 * SR) + 50
    for i in range(4):
        for j in range(i + 1, 4):
            assert not np.allclose(mix.mics[i], mix.mics[j])
            peak, _ = _nxc(mix.mics[i], mix.mics[j], max_lag)
            assert 0.2 < peak < 0.99, (i, j, peak)


def test_clean_reference_definition_and_alignment(speech: np.ndarray) -> None:
    """clean = talker * (direct path + 50 ms) at mic 0, aligned at lag 0, independent of noise."""
    rng = np.random.default_rng(5)
    lay = sample_layout(rng, num_mics=3, num_talkers=2, num_noise_sources=1, **SMALL)
    n = len(speech)
    tracks = np.zeros((2, n), np.float32)
    tracks[0, : n // 2] = speech[: n // 2]
    tracks[1, n // 2:] = speech[n // 2:]
    noise = synthetic_noise("pink", n, np.random.default_rng(9))[None]
    noisy = simulate_room(lay, tracks, noise, 5.0, SR)
    quiet = simulate_room(lay, tracks, None, 5.0, SR)
    # the reference does not depend on the noise
    np.testing.assert_allclose(noisy.clean / noisy.gain, quiet.clean / quiet.gain, atol=2e-6)
    # ... and follows the documented definition exactly
    rirs = compute_rirs(lay, SR)
    expected = np.zeros(n)
    for t in range(2):
        dist = float(np.linalg.norm(lay.talkers[t] - lay.mics[0]))
        idx = direct_path_index(rirs[0][t], dist, SR)
        assert idx == noisy.direct_index[t]
        assert idx == int(np.argmax(np.abs(rirs[0][t][: idx + 30])))
        e = early_rir(rirs[0][t], idx, SR)
        assert np.count_nonzero(e[idx + 801:]) == 0 and np.array_equal(e[: idx + 801], rirs[0][t][: idx + 801])
        expected += np.convolve(tracks[t].astype(np.float64), e)[:n]
    np.testing.assert_allclose(quiet.clean / quiet.gain, expected, atol=1e-5)
    # aligned with mic 0 at lag 0, and less reverberant than mic 0
    peak, lag = _nxc(quiet.mics[0], quiet.clean, 400)
    assert lag == 0 and peak > 0.7
    late = quiet.mics[0] - quiet.clean
    assert 0 < np.sum(late**2) < np.sum(quiet.mics[0] ** 2)


def test_snr_is_applied_at_mic0(speech: np.ndarray) -> None:
    """Noise is scaled to the requested SNR at the reference mic, one scale for all mics."""
    lay = sample_layout(np.random.default_rng(7), num_mics=2, num_talkers=1, num_noise_sources=4, **SMALL)
    n = len(speech)
    noise = np.stack([synthetic_noise("babble", n, np.random.default_rng(k)) for k in range(4)])
    for snr in (0.0, 12.0):
        noisy = simulate_room(lay, speech[None], noise, snr, SR)
        quiet = simulate_room(lay, speech[None], None, snr, SR)
        s = quiet.mics.astype(np.float64) / quiet.gain
        v = noisy.mics.astype(np.float64) / noisy.gain - s
        measured = 10 * np.log10(np.sum(s[0] ** 2) / np.sum(v[0] ** 2))
        assert abs(measured - snr) < 0.2
        assert np.sum(v[1] ** 2) > 0


def test_noise_folder(tmp_path: Path) -> None:
    """Real noise files: resampled, excerpted from a region, looped; clear errors otherwise."""
    rng = np.random.default_rng(0)
    (tmp_path / "sub").mkdir()
    sf.write(tmp_path / "sub" / "hiss.wav", rng.standard_normal(44100).astype(np.float32) * 0.1, 44100)
    folder = NoiseFolder(tmp_path, SR)
    x, name = folder.excerpt(8000, rng, region=(0.8, 1.0))
    assert x.shape == (8000,) and name == "sub/hiss.wav" and np.abs(x).max() > 0
    assert len(folder.load(folder.files[0])) == SR  # 1 s at 44.1 kHz -> 16000 samples
    long, _ = folder.excerpt(3 * SR, rng)  # longer than the file: looped
    assert long.shape == (3 * SR,)
    (tmp_path / "bad.wav").write_bytes(b"not audio at all")
    with pytest.raises(AudioError, match="bad.wav"):
        NoiseFolder(tmp_path, SR).load(tmp_path / "bad.wav")
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(AudioError, match="no .wav"):
        NoiseFolder(empty, SR)
    with pytest.raises(AudioError, match="does not exist"):
        NoiseFolder(tmp_path / "missing", SR)
