"""The receiver's score-based enhancement stage: unit behaviour and a real session through it."""

import numpy as np
import pytest
import soundfile as sf
import torch
from conftest import tiny_codec
from streaming_harness import Edges, Receiver, offline_decode, one_torch_thread  # noqa: F401

from server.enhance import BEAMFORM_MIN_SHARE, ScoreBasedEnhancer, beamforming_mask, build_enhancer
from server.settings import ReceiverSettings
from shared.checkpoint import load_checkpoint
from shared.enhancer import SCORE_NET_PRESETS, ScoreEnhancer
from shared.errors import CheckpointError, ConfigError

TOKEN = "enh-token"


@pytest.fixture(scope="module")
def enhancer_file(tmp_path_factory):
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("enh") / "enhancer-tiny.ckpt"
    enhancer = ScoreEnhancer(SCORE_NET_PRESETS["tiny"])
    with torch.no_grad():  # the output layer starts at zero (score 0 = identity); make it act
        enhancer.net.out.weight.normal_(0, 0.2)
    enhancer.save(path)
    return path


def test_stage_enhances_the_reference_microphone(enhancer_file):
    codec = tiny_codec()
    stage = build_enhancer("sgmse", codec, {"checkpoint": str(enhancer_file), "sampler": "fast", "steps": 3})
    assert stage.out_channels(4) == 1 and stage.sampler.steps == 3
    spectra = torch.randn(2, 4, 2, 256, 8) * 0.2
    out = stage(spectra)
    assert out.shape == (2, 1, 2, 256, 8) and torch.isfinite(out).all()
    assert torch.equal(out, stage(spectra)), "seeded sampling must be deterministic"
    direct = stage.enhancer.enhance(spectra[:, :1], stage.sampler)
    torch.testing.assert_close(out, direct)
    every = ScoreBasedEnhancer(codec, enhancer_file, "realtime", mics="all")
    assert every.out_channels(4) == 4 and every(spectra).shape == spectra.shape
    assert stage.describe()["evaluations"] == stage.enhancer.evaluations(stage.sampler)


@pytest.fixture(scope="module")
def classical_enhancer_file(tmp_path_factory):
    """An enhancer whose checkpoint says it was trained on the classical stage's output."""
    torch.manual_seed(1)
    path = tmp_path_factory.mktemp("enh") / "enhancer-classical.ckpt"
    enhancer = ScoreEnhancer(SCORE_NET_PRESETS["tiny"])
    with torch.no_grad():
        enhancer.net.out.weight.normal_(0, 0.2)
    enhancer.save(path, {"front_end": "classical"})
    return path


def test_stage_with_context_sees_the_past_frames(enhancer_file):
    """With context, each step is enhanced after the session's previous input frames (zeros
    before the first step) and only the step's own frames come out; sessions are separate."""
    codec = tiny_codec()
    stage = ScoreBasedEnhancer(codec, enhancer_file, "fast", steps=2, context_frames=6)
    assert stage.stateful and stage.describe()["context_frames"] == 6
    torch.manual_seed(4)
    a, b = torch.randn(2, 1, 4, 2, 256, 4) * 0.2
    first, second = stage(a, keys=["s"]), stage(b, keys=["s"])
    x = lambda *parts: torch.cat(parts, dim=-1)[:, :1]  # noqa: E731
    zeros = torch.zeros(1, 4, 2, 256, 6)
    torch.testing.assert_close(first, stage.enhancer.enhance(x(zeros[:, :, :, :, :6], a), stage.sampler)[..., -4:])
    expect = stage.enhancer.enhance(x(zeros[:, :, :, :, :2], a, b), stage.sampler)[..., -4:]
    torch.testing.assert_close(second, expect)
    torch.testing.assert_close(stage(a, keys=["other"]), first)  # a new session starts afresh
    stage.release("s")
    torch.testing.assert_close(stage(a, keys=["s"]), first)
    with pytest.raises(ConfigError, match="keys"):
        stage(a)


def test_classical_front_end_runs_the_classical_stage_first(classical_enhancer_file, enhancer_file):
    """An enhancer trained after the classical stage gets the stage's output (one state per
    session, the active microphones honoured), and refuses to enhance every microphone."""
    from shared.classical import stream_classical
    from shared.stft import from_channels, to_channels

    codec = tiny_codec()
    stage = ScoreBasedEnhancer(codec, classical_enhancer_file, "fast", steps=2)
    assert stage.stateful and stage.front_end == "classical" and stage.out_channels(4) == 1
    torch.manual_seed(5)
    steps = [torch.randn(1, 4, 2, 256, 4) * 0.2 for _ in range(3)]
    active = torch.tensor([[True, True, False, True]])
    got = torch.cat([stage(x, keys=["room"], active=active) for x in steps], dim=-1)
    whole = from_channels(torch.cat(steps, dim=-1)[0].double()).numpy()
    front = to_channels(torch.from_numpy(stream_classical(whole, 4, active[0].numpy())).to(torch.complex64))
    want = torch.cat([stage.enhancer.enhance(front[None, None, ..., i : i + 4], stage.sampler)
                      for i in range(0, 12, 4)], dim=-1)
    torch.testing.assert_close(got, want, atol=1e-4, rtol=1e-3)
    stage.release("room")
    assert stage.classical.describe()["sessions"] == 0
    with pytest.raises(ConfigError, match="enhance_mics"):
        ScoreBasedEnhancer(codec, classical_enhancer_file, mics="all")
    plain = ScoreBasedEnhancer(codec, enhancer_file)
    assert not plain.stateful  # the plain stage stays stateless
    assert plain.sampler == ScoreEnhancer.load(enhancer_file).sampler  # by default the checkpoint's own


def test_stage_bad_settings(enhancer_file, tmp_path):
    codec = tiny_codec()
    with pytest.raises(ConfigError, match="unknown enhancer"):
        build_enhancer("nope", codec)
    with pytest.raises(ConfigError, match="no enhancer checkpoint"):
        build_enhancer("sgmse", codec, {"checkpoint_dir": str(tmp_path)})
    with pytest.raises(ConfigError, match="enhance_steps"):
        ScoreBasedEnhancer(codec, enhancer_file, steps=0)
    with pytest.raises(ConfigError, match="sampler|preset"):
        ScoreBasedEnhancer(codec, enhancer_file, sampler="warp-speed")
    with pytest.raises(ConfigError, match="enhance_context"):
        ScoreBasedEnhancer(codec, enhancer_file, context_frames=-1)
    odd = tmp_path / "enhancer-odd.ckpt"
    ScoreEnhancer(SCORE_NET_PRESETS["tiny"]).save(odd, {"front_end": "wpe"})
    with pytest.raises(ConfigError, match="unknown front end"):
        ScoreBasedEnhancer(codec, odd)
    codec_file = tmp_path / "codec.ckpt"
    codec.save(codec_file)
    with pytest.raises(CheckpointError, match="expected 'enhancer'"):
        ScoreBasedEnhancer(codec, codec_file)


def test_session_through_the_enhancer_matches_offline(enhancer_file, tmp_path):
    """Four real edges, a receiver with the sgmse stage: mono enhanced output, equal to the
    offline decode followed by the same stage step by step."""
    codec = tiny_codec()
    torch.manual_seed(2)
    n = 6 * codec.chunk_samples + 100
    audio = torch.randn(4, n) * 0.1
    wav = tmp_path / "mics.wav"
    sf.write(wav, audio.T.numpy(), codec.sample_rate, subtype="FLOAT")
    settings = ReceiverSettings(session="room", token=TOKEN, capacity_bps=2000.0, grace_s=0.4,
                                enhancer="sgmse", enhancer_checkpoint=str(enhancer_file), enhance_sampler="fast")
    with Receiver(settings, codec) as rx:
        ready = rx.get("/readyz").json()
        assert ready["enhancer"] == "sgmse" and ready["enhancement"]["sampler"]["mode"] == "fast"
        results = Edges(rx.url, "room", TOKEN, codec, audio, [0, 1, 2, 3]).start().join(60)
        rx.wait_state("room", "finished", 30)
        stats = rx.stats("room")
        out = rx.audio("room")
    assert all(isinstance(r, dict) for r in results), results
    assert out.shape == (1, n) and np.isfinite(out).all()
    steps = stats["steps"]
    assert all(st["missing"] == [] for st in steps)
    stage = ScoreBasedEnhancer(codec, enhancer_file, "fast")
    ref = offline_decode(codec, audio, steps, stage=stage).numpy()
    assert ref.shape == (1, n)
    if all(st.get("decode_batch", 1) == 1 for st in steps):  # one step per call: same sampling noise
        np.testing.assert_allclose(out, ref, atol=1e-4, rtol=1e-3)
    identity = offline_decode(codec, audio, steps).numpy()[:1]
    assert np.abs(out - identity).max() > 1e-3, "the stage must change the decoded audio"


def test_session_through_the_classical_front_end_and_context_matches_offline(classical_enhancer_file, tmp_path):
    """The sgmse stage after the classical stage, with context frames, in a real session: the
    receiver's output equals the offline decode through the same stage, and the session's
    states are released when it finishes."""
    codec = tiny_codec()
    torch.manual_seed(6)
    n = 6 * codec.chunk_samples + 30
    audio = torch.randn(4, n) * 0.1
    settings = ReceiverSettings(session="room", token=TOKEN, capacity_bps=3000.0, grace_s=0.4, enhancer="sgmse",
                                enhancer_checkpoint=str(classical_enhancer_file), enhance_sampler="fast",
                                enhance_context=8)
    with Receiver(settings, codec) as rx:
        ready = rx.get("/readyz").json()["enhancement"]
        assert ready["front_end"] == "classical" and ready["context_frames"] == 8
        results = Edges(rx.url, "room", TOKEN, codec, audio, [0, 1, 2, 3]).start().join(60)
        rx.wait_state("room", "finished", 30)
        stats = rx.stats("room")
        out = rx.audio("room")
    assert all(isinstance(r, dict) for r in results), results
    assert out.shape == (1, n) and np.isfinite(out).all()
    steps = stats["steps"]
    stage = ScoreBasedEnhancer(codec, classical_enhancer_file, "fast", context_frames=8)
    ref = offline_decode(codec, audio, steps, stage=stage).numpy()
    if all(st.get("decode_batch", 1) == 1 for st in steps):
        np.testing.assert_allclose(out, ref, atol=1e-4, rtol=1e-3)
    plain = offline_decode(codec, audio, steps, stage=build_enhancer("classical", codec)).numpy()
    assert np.abs(out - plain).max() > 1e-3, "the score model must change the classical stage's output"


def test_session_through_the_classical_stage_matches_offline(tmp_path):
    """The streaming classical stage keeps one state per session: four real edges give the
    offline decode followed by the same stage step by step, and the session's state is
    dropped when it finishes."""
    codec = tiny_codec()
    torch.manual_seed(3)
    n = 8 * codec.chunk_samples + 50
    audio = torch.randn(4, n) * 0.1
    settings = ReceiverSettings(session="room", token=TOKEN, capacity_bps=3000.0, grace_s=0.4,
                                enhancer="classical")
    with Receiver(settings, codec) as rx:
        ready = rx.get("/readyz").json()
        assert ready["enhancer"] == "classical"
        results = Edges(rx.url, "room", TOKEN, codec, audio, [0, 1, 2, 3]).start().join(60)
        rx.wait_state("room", "finished", 30)
        stats = rx.stats("room")
        out = rx.audio("room")
        after = rx.get("/readyz").json()["enhancement"]
    assert all(isinstance(r, dict) for r in results), results
    assert out.shape == (1, n) and np.isfinite(out).all()
    assert after["sessions"] == 0, "a finished session's state must be released"
    steps = stats["steps"]
    assert all(st["missing"] == [] for st in steps)
    ref = offline_decode(codec, audio, steps, stage=build_enhancer("classical", codec)).numpy()
    np.testing.assert_allclose(out, ref, atol=1e-5)
    identity = offline_decode(codec, audio, steps).numpy()[:1]
    assert np.abs(out - identity).max() > 1e-3, "the stage must change the decoded audio"


def test_classical_stage_needs_session_keys():
    stage = build_enhancer("classical", tiny_codec())
    assert stage.out_channels(4) == 1 and stage.stateful
    with pytest.raises(ConfigError, match="needs the sessions' keys"):
        stage(torch.zeros(1, 4, 2, 256, 4))
    a = stage(torch.randn(2, 4, 2, 256, 4) * 0.1, keys=["a", "b"])
    assert a.shape == (2, 1, 2, 256, 4) and stage.describe()["sessions"] == 2
    stage.release("a")
    assert stage.describe()["sessions"] == 1


def test_beamformer_takes_the_microphones_of_sources_that_sent_enough():
    """A source's microphones join the classical stage's beamformer when it sent at least
    ``min_share`` of its components; the reference's source counts with any component, a
    source that sent nothing never; 0 is the old rule (any component); the receiver's default
    is the measured one."""
    codec = tiny_codec()
    d = codec.latent_sizes[1]
    few, enough = max(1, d // 8), -(-d // 4)
    assert few < enough
    mask = beamforming_mask(codec, [1, few, enough, 0], 0.25)
    assert mask.tolist() == [True, False, True, False]
    assert beamforming_mask(codec, [0, d, d, d], 0.25).tolist() == [False, True, True, True]
    assert beamforming_mask(codec, [1, few, enough, 0], 0.0).tolist() == [True, True, True, False]
    assert beamforming_mask(codec, [d, d, d, d - 1], 1.0).tolist() == [True, True, True, False]
    assert ReceiverSettings(session="r", token=TOKEN).beamform_min_share == BEAMFORM_MIN_SHARE
    with pytest.raises(ValueError):
        ReceiverSettings(session="r", token=TOKEN, beamform_min_share=1.5)


def test_auto_stage_runs_the_enhancer_when_one_is_there(enhancer_file, tmp_path, caplog):
    """``auto`` (the receiver command's default): the newest enhancer checkpoint of the folder,
    in its real-time mode, when it works on the codec's STFT; otherwise the identity stage, with
    a log line that says why."""
    codec = tiny_codec()
    folder = tmp_path / "ckpts"
    folder.mkdir()
    with caplog.at_level("INFO", logger="server.enhance"):
        assert build_enhancer("auto", codec, {"checkpoint_dir": str(folder)}).name == "identity"
    assert "no enhancer checkpoint" in caplog.text
    digest = load_checkpoint(enhancer_file).header["sha256"]
    (folder / f"enhancer-{digest[:8]}.ckpt").write_bytes(enhancer_file.read_bytes())
    stage = build_enhancer("auto", codec, {"checkpoint_dir": str(folder)})
    assert isinstance(stage, ScoreBasedEnhancer)
    assert stage.sampler == ScoreEnhancer.load(enhancer_file).sampler  # the checkpoint's own mode
    other = ScoreEnhancer(SCORE_NET_PRESETS["tiny"], stft="paper")
    other.save(folder / "enhancer-zz-other-stft.ckpt")
    caplog.clear()
    with caplog.at_level("WARNING", logger="server.enhance"):
        stage = build_enhancer("auto", codec, {"checkpoint": str(folder / "enhancer-zz-other-stft.ckpt")})
    assert stage.name == "identity" and "STFT" in caplog.text
