"""The classical baseline (WPE, MVDR, Wiener post-filter) and its evaluation against the clean reference."""

from __future__ import annotations

import numpy as np
import pytest

from shared.classical import ClassicalConfig, classical_enhance
from shared.errors import ConfigError, UserError
from training.classical_eval import evaluate, main, markdown
from training.metrics import si_sdr_db

SR = 16000


def _speech_like(n: int) -> np.ndarray:
    """A voiced, gliding harmonic signal in syllables, with a pause in every second."""
    t = np.arange(n) / SR
    phase = 2 * np.pi * np.cumsum(140 + 30 * np.sin(2 * np.pi * 0.7 * t)) / SR
    s = sum(np.sin(k * phase) / k for k in range(1, 25))
    env = np.clip(np.sin(2 * np.pi * 2.5 * t), 0, None) ** 2 * ((t % 1.0) < 0.7)
    return 0.1 * s * env


def _room(n_mics: int, seed: int = 0, seconds: float = 2.0, snr_db: float = 5.0,
          rt60: float = 0.4) -> tuple[np.ndarray, np.ndarray]:
    """Noisy reverberant microphones ``[M, N]`` float32 and microphone 0's clean reference
    ``[N]`` (direct path + first 50 ms of its impulse response, as in the data sets): one
    talker through random exponentially decaying 0.3 s impulse responses with a direct path
    1-12 ms late, white noise independent per microphone at ``snr_db``."""
    rng = np.random.default_rng(seed)
    n = int(seconds * SR)
    s = _speech_like(n)
    length = int(0.3 * SR)
    decay = np.exp(-6.9 * np.arange(length) / (rt60 * SR))
    mics, clean = [], np.zeros(n)
    for m in range(n_mics):
        d = int(rng.integers(20, 200))
        h = rng.standard_normal(length) * decay * 0.15
        h[:d] = 0
        h[d] = 1.0
        mics.append(np.convolve(s, h)[:n])
        if m == 0:
            early = h.copy()
            early[d + int(0.05 * SR):] = 0
            clean = np.convolve(s, early)[:n]
    x = np.array(mics)
    noise = rng.standard_normal(x.shape) * np.sqrt(np.mean(x[0] ** 2) / 10 ** (snr_db / 10))
    return (x + noise).astype(np.float32), clean.astype(np.float32)


@pytest.mark.parametrize("seed", [0, 1])
def test_four_microphones_improve_si_sdr_against_the_clean_reference(seed):
    """WPE + MVDR + post-filter of four noisy reverberant microphones gains over 3 dB SI-SDR on microphone 0."""
    mics, clean = _room(4, seed)
    out = classical_enhance(mics)
    assert out.shape == (mics.shape[1],) and out.dtype == np.float32
    assert np.all(np.isfinite(out))
    before, after = si_sdr_db(clean, mics[0]), si_sdr_db(clean, out)
    assert after > before + 3.0, (before, after)


def test_one_microphone_falls_back_to_single_channel_processing():
    """With M = 1 WPE and the post-filter still improve SI-SDR, and four microphones do better."""
    mics, clean = _room(4, 0)
    one = classical_enhance(mics[:1])
    assert one.shape == (mics.shape[1],) and one.dtype == np.float32
    before = si_sdr_db(clean, mics[0])
    assert si_sdr_db(clean, one) > before + 0.7
    assert si_sdr_db(clean, classical_enhance(mics)) > si_sdr_db(clean, one) + 1.0


def test_each_stage_contributes_on_four_microphones():
    """Dropping WPE, the beamformer or the post-filter each gives a lower SI-SDR than the full chain."""
    mics, clean = _room(4, 0)
    full = si_sdr_db(clean, classical_enhance(mics))
    for part in ("dereverb", "beamformer", "postfilter"):
        reduced = si_sdr_db(clean, classical_enhance(mics, cfg=ClassicalConfig(**{part: False})))
        assert reduced < full, (part, reduced, full)


def test_reference_microphone_selects_the_output():
    """ref_mic = 2 returns an estimate aligned with microphone 2, not microphone 0."""
    mics, _ = _room(4, 0)
    out0, out2 = classical_enhance(mics, ref_mic=0), classical_enhance(mics, ref_mic=2)
    assert si_sdr_db(mics[2], out2) > si_sdr_db(mics[2], out0) + 3.0


def test_silence_and_integer_input():
    """All-zero microphones give zeros; int16 samples are accepted like floats."""
    out = classical_enhance(np.zeros((3, 4000), np.float32))
    assert out.shape == (4000,) and out.dtype == np.float32 and not np.any(out)
    mics, _ = _room(2, 0, seconds=0.5)
    ints = np.round(mics * 10000).astype(np.int16)
    np.testing.assert_allclose(classical_enhance(ints), classical_enhance(ints.astype(np.float32)),
                               rtol=0, atol=1e-3)


@pytest.mark.parametrize(("mics", "message"), [
    (np.zeros(16000, np.float32), r"expected microphone signals \[M, N\].*x\[None, :\]"),
    (np.zeros((0, 16000), np.float32), "at least one microphone"),
    (np.zeros((4, 100), np.float32), "at least 1024 samples"),
    (np.full((2, 4000), np.nan, np.float32), "NaN or infinite"),
    (np.zeros((2, 4000), np.complex64), "real samples"),
])
def test_bad_input_is_refused_with_a_clear_message(mics, message):
    """Wrong shapes, too short, non-finite or complex signals raise ValueError saying what is wrong."""
    with pytest.raises(ValueError, match=message):
        classical_enhance(mics)


def test_bad_reference_microphone_and_settings():
    """A reference microphone out of range and invalid settings are refused by name."""
    with pytest.raises(ValueError, match="reference microphone 4 is not one of the 4"):
        classical_enhance(np.zeros((4, 4000), np.float32), ref_mic=4)
    with pytest.raises(ConfigError, match="noise_quantile"):
        ClassicalConfig(noise_quantile=1.5)
    with pytest.raises(ConfigError, match="hop"):
        ClassicalConfig(n_fft=512, hop=400)


def test_evaluate_scores_each_method_against_the_clean_reference():
    """The evaluation's rows rank the classical chain above the bare microphone on a simulated room."""
    examples = [dict(zip(("mics", "clean"), _room(4, s), strict=True)) for s in (0, 1)]
    rows = evaluate(examples, {"mic 0": lambda m: m[0], "classical": classical_enhance},
                    {"noisy": lambda m: m})
    by = {r["method"]: r for r in rows}
    assert set(by) == {"mic 0", "classical"} and all(r["examples"] == 2 for r in rows)
    assert by["classical"]["si_sdr_db"] > by["mic 0"]["si_sdr_db"] + 3.0
    assert by["classical"]["pesq"] > by["mic 0"]["pesq"]
    assert by["classical"]["cpu_rtf"] > 0
    table = markdown(rows)
    assert table.count("\n") == 3 and "| noisy | classical |" in table


def test_evaluation_without_data_says_how_to_build_it(tmp_path):
    """Pointing the evaluation at a folder without a manifest raises UserError naming the file."""
    with pytest.raises(UserError, match=r"no .*manifest.json; build the held-out real-speech rooms"):
        main(["--data", str(tmp_path), "--samplers", ""])
