"""Streaming framing, streaming iSTFT, jitter buffer, clock and active-source planning."""

import pytest
import torch
from conftest import tiny_codec

from shared.stft import from_channels, get_preset, istft, stft
from shared.streaming import (
    JitterBuffer,
    SessionClock,
    StreamingFramer,
    StreamingISTFT,
    lookahead_samples,
    plan_for_active,
)


@pytest.mark.parametrize("n", [4096 * 3, 4096 * 3 + 1000, 4096 + 300, 700])
@pytest.mark.parametrize("piece", [128, 1000, 5000])
def test_framer_matches_offline_chunks(n, piece):
    """Chunks framed from pieces equal framing the whole signal and Codec.chunk padding."""
    preset, frames = get_preset("stream"), 32
    audio = torch.randn(2, n)
    full = stft(audio, preset)
    t = full.shape[-1]
    n_chunks = -(-t // frames)
    ref = torch.nn.functional.pad(full, (0, n_chunks * frames - t))
    framer = StreamingFramer(preset, frames, 2)
    got = []
    for i in range(0, n, piece):
        got += framer.push(audio[:, i : i + piece])
    got += framer.finish()
    assert len(got) == n_chunks
    torch.testing.assert_close(torch.cat(got, dim=-1), ref, atol=1e-4, rtol=1e-4)


def test_framer_emits_with_only_lookahead():
    """A chunk is ready once its samples plus the look-ahead have arrived, not before."""
    preset, frames = get_preset("stream"), 32
    framer = StreamingFramer(preset, frames, 1)
    need = frames * preset.hop + lookahead_samples(preset)
    audio = torch.randn(1, need)
    assert framer.push(audio[:, : need - 1]) == []
    assert len(framer.push(audio[:, need - 1 :])) == 1


@pytest.mark.parametrize("n", [4096 * 2 + 77, 4096 * 3, 1500])
def test_streaming_istft_matches_offline(n):
    """Concatenated streaming iSTFT output equals istft of the whole signal."""
    preset, frames = get_preset("stream"), 32
    spec = stft(torch.randn(3, n), preset) * (1 + 0.1 * torch.randn(3, 256, 1))
    ref = istft(spec, preset, n)
    inv = StreamingISTFT(preset, 3)
    outs = [inv.push(spec[..., i : i + frames]) for i in range(0, spec.shape[-1], frames)]
    outs.append(inv.finish(n))
    got = torch.cat(outs, dim=-1)
    assert got.shape == ref.shape
    torch.testing.assert_close(got, ref, atol=1e-5, rtol=1e-4)


def test_streaming_istft_equals_codec_to_audio():
    """Decoded chunks through the streaming iSTFT equal Codec.to_audio of the whole signal."""
    c = tiny_codec()
    n = 5 * c.chunk_samples + 300
    spec = c.spectra(torch.randn(4, n) * 0.1)
    chunks = c.chunk(spec)
    n_v, per = c.cfg.vectors_per_step, c.frames_per_step
    decoded = torch.cat([c.decode_coefficients([torch.randn(1, n_v, 3)] * 4) for _ in chunks])
    assert decoded.shape[-1] == per
    n_frames = spec.shape[-1]
    ref = c.to_audio(c.unchunk(decoded, n_frames), n)
    inv = StreamingISTFT(c.preset, 4)
    outs = []
    for i, ch in enumerate(decoded):
        valid = min(per, n_frames - i * per)
        outs.append(inv.push(from_channels(ch[..., :valid], c.cfg.representation)))
    outs.append(inv.finish(n))
    torch.testing.assert_close(torch.cat(outs, -1), ref, atol=1e-5, rtol=1e-4)


def test_jitter_buffer_late_duplicate_ahead():
    """Items are collected per step; late, duplicate and far-ahead items are counted."""
    jb: JitterBuffer[str] = JitterBuffer(3, max_ahead=4)
    assert jb.add(0, 0, "a") == "ok"
    assert jb.add(0, 0, "a") == "duplicate"
    assert jb.add(1, 1, "b") == "ok"
    assert not jb.complete(0, {0, 1})
    assert jb.add(0, 1, "c") == "ok" and jb.complete(0, {0, 1})
    assert jb.pop() == (0, {0: "a", 1: "c"})
    assert jb.add(0, 2, "x") == "late" and jb.late == 1
    assert jb.add(9, 0, "y") == "ahead"
    jb.skip_to(5)
    assert jb.next_step == 5 and jb.arrived(1) == set()
    with pytest.raises(ValueError):
        jb.add(5, 3, "z")


def test_session_clock():
    """Steps open every T; chunks are due after capture plus look-ahead, deadline after grace."""
    clock = SessionClock(0.25, lookahead_s=0.01, grace_s=0.1, epoch=100.0)
    assert clock.step_at(100.6) == 2 and clock.step_at(99.0) == 0
    assert clock.open_time(2) == 100.5
    assert clock.due_time(2) == pytest.approx(100.76)
    assert clock.deadline(2) == pytest.approx(100.86)


def test_plan_for_active_redistributes():
    """All sources active equals Codec.plan; a missing source's budget goes to the others
    (Eq. 3's budget of the uniform profile; the water profile's is tested in test_steps)."""
    c = tiny_codec(step_profile="uniform")
    n_v = c.cfg.vectors_per_step
    for cap in (50.0, 200.0, 800.0, 1e5):
        full = c.plan(cap)
        assert plan_for_active(c, cap, range(4)).as_dict() == full.as_dict()
        part = plan_for_active(c, cap, [0, 2, 3])
        assert part.allocation[1] == 0
        active = sum(c.latent_sizes[s] for s in (0, 2, 3))
        assert part.budget_coefficients == min(full.budget_coefficients, n_v * active)
        assert sum(part.allocation) == min(full.budget_coefficients // n_v, active)
        assert sum(part.allocation) * n_v <= part.budget_coefficients
        assert sum(part.bits_per_source) <= part.budget_bits
    assert plan_for_active(c, 500.0, []).allocation == [0, 0, 0, 0]
