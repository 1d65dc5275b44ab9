"""`ndpca demo` end to end: receiver and four edge processes, outputs in the promised format."""

import json
import os
import subprocess
import sys
from pathlib import Path

import soundfile as sf

REPO = Path(__file__).resolve().parents[2]


def test_demo_writes_decoded_audio_stats_and_plot(tmp_path):
    """A short --fast demo: decoded.wav of the room's length, stats.json steps, Fig. 3a plot."""
    out = tmp_path / "demo"
    env = dict(os.environ, PYTHONPATH=str(REPO))
    proc = subprocess.run(
        [sys.executable, "-m", "ndpca", "demo", "--out", str(out), "--seconds", "3", "--fast", "--enhancer", "identity"],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=300,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    text = proc.stdout + proc.stderr
    for name in ("decoded.wav", "stats.json", "allocation.png"):
        assert (out / name).is_file() and str(out / name) in text
    if not list((REPO / "checkpoints").glob("ndpca-e4d1-*.ckpt")):
        assert "no trained checkpoint found; using an untrained model" in text
    assert "step    0" in text  # live progress
    assert "live view  http://127.0.0.1:" in text and "/ui#token=" in text  # the page's address
    stats = json.loads((out / "stats.json").read_text())
    steps = stats["steps"]
    frames_per_step = round(stats["rate"]["chunk_seconds"] * 16000 / 128)  # G n_v frames of hop 128
    assert len(steps) == -(-(3 * 16000 // 128 + 1) // frames_per_step)
    for st in steps:
        for key in ("t", "capacity_bps", "budget_coefficients", "budget_bits", "allocation", "bits_received"):
            assert key in st
        assert set(st["allocation"]) == set(st["bits_received"]) == {"0", "1", "2", "3"}
        assert sum(st["bits_received"].values()) <= st["budget_bits"]
    assert stats["rate"]["eta"] > 0 and stats["trace"]["notes"]
    audio, sr = sf.read(out / "decoded.wav", always_2d=True)
    room, _ = sf.read(out / "room.wav", always_2d=True)
    # the identity stage: the four decoded microphones
    assert sr == 16000 and room.shape == (48000, 4) and audio.shape == (48000, 4)
    assert stats["demo"]["enhancer"] == "identity"
    # the quality report: room rate and PESQ/STOI against the clean speech and the microphone
    q = stats["demo"]["quality"]
    assert q["room_kbps"] > 0 and q["room_kbps"] <= q["budget_kbps"] + 1e-9
    for key in ("output_vs_clean", "output_vs_mic", "mic_vs_clean"):
        assert 1.0 <= q[key]["pesq"] <= 4.7 and 0.0 <= q[key]["stoi"] <= 1.0
    assert "room rate" in text and "vs clean reference: PESQ-WB" in text
    assert (out / "token").stat().st_mode & 0o077 == 0
    # what the demo prints beside an enhancer's output: the same chunks decoded again offline
    # from the edges' records equal the receiver's decoded microphones
    from ndpca.demo import replay_decoded

    sent = [json.loads((out / "edges" / f"edge-{s}.json").read_text())["sent"] for s in range(4)]
    assert all(len(s) == len(steps) for s in sent)
    replay = replay_decoded(Path(stats["demo"]["checkpoint"]), room.T, sent, stats["rate"]["step_profile"])
    assert stats["rate"]["step_profile"] == "water"
    assert replay.shape == (4, 48000)
    err = float(((replay - audio.T) ** 2).sum() / max((audio**2).sum(), 1e-12))
    assert err < 1e-6, err


def test_demo_runs_the_receivers_enhancer_by_default(tmp_path):
    """Without --enhancer the demo's receiver runs its real-time enhancer when a trained codec and
    an enhancer checkpoint are shipped (enhanced microphone 0 out, and beside it the decoder's own
    output of the same chunks), and the decoded microphones otherwise."""
    out = tmp_path / "demo"
    env = dict(os.environ, PYTHONPATH=str(REPO))
    proc = subprocess.run([sys.executable, "-m", "ndpca", "demo", "--out", str(out), "--seconds", "2", "--fast"],
                          cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    stats = json.loads((out / "stats.json").read_text())
    audio, _ = sf.read(out / "decoded.wav", always_2d=True)
    shipped = (list((REPO / "checkpoints").glob("ndpca-e4d1-*.ckpt"))
               and list((REPO / "checkpoints").glob("enhancer-*.ckpt")))
    if not shipped:
        assert stats["demo"]["enhancer"] == "identity" and audio.shape[1] == 4
        return
    assert stats["demo"]["enhancer"] == "sgmse" and audio.shape[1] == 1
    q = stats["demo"]["quality"]
    assert q["output"] == "enhanced microphone 0"
    assert 1.0 <= q["decoded_vs_clean"]["pesq"] <= 4.7 and 0.0 <= q["decoded_vs_clean"]["stoi"] <= 1.0
    assert "decoded microphone 0 (the same chunks, not enhanced)" in proc.stdout
