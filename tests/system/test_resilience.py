"""A source killed and restarted mid-stream; the receiver stopped and restarted."""

import math
import signal
import time

import numpy as np
import soundfile as sf
import torch
from conftest import tiny_codec
from streaming_harness import (  # noqa: F401
    Edges,
    Receiver,
    free_port,
    one_torch_thread,
    spawn_edge,
    wait_for,
)

from server.settings import ReceiverSettings

TOKEN = "resilience-token"



def test_killed_source_budget_goes_to_others_and_it_rejoins(tmp_path):
    """Kill -9 one edge process: its budget goes to the others from the next step; restarted, it
    gets components again; the output continues without a gap. (Eq. 3's budget: the uniform
    step profile, which the receiver's welcome tells the edge process to use.)"""
    codec = tiny_codec(step_profile="uniform")
    ckpt = tmp_path / "codec.ckpt"
    codec.save(ckpt)
    torch.manual_seed(2)
    n = 120 * codec.chunk_samples
    audio = torch.randn(4, n) * 0.1
    wav = tmp_path / "room.wav"
    sf.write(wav, audio.T.numpy(), codec.sample_rate, subtype="FLOAT")
    settings = ReceiverSettings(session="room", token=TOKEN, capacity_bps=1000.0, grace_s=0.4)
    with Receiver(settings, codec) as rx:
        proc = spawn_edge(rx.url, "room", TOKEN, ckpt, wav, source=1)
        edges = Edges(rx.url, "room", TOKEN, codec, audio, [0, 2, 3]).start()
        wait_for(lambda: rx.stats("room")["sources"]["1"]["chunks"] >= 5, 30, "source 1 never streamed")
        proc.send_signal(signal.SIGKILL)
        proc.wait(5)
        wait_for(lambda: sum(1 not in s["active"] for s in rx.stats("room")["steps"]) >= 4, 10,
              "source 1 still active after the kill")
        proc2 = spawn_edge(rx.url, "room", TOKEN, ckpt, wav, source=1)
        results = edges.join(60)
        out, _ = proc2.communicate(timeout=60)
        rx.wait_state("room", "finished", 20)
        stats = rx.stats("room")
        decoded = rx.audio("room")
    assert proc2.returncode == 0, out.decode()[-2000:]
    assert all(isinstance(r, dict) for r in results), results
    steps = stats["steps"]
    assert [s["step"] for s in steps] == list(range(len(steps)))
    i_joined = next(i for i, s in enumerate(steps) if 1 in s["active"])
    i_gone = next(i for i, s in enumerate(steps) if i > i_joined and 1 not in s["active"])
    i_back = next(i for i, s in enumerate(steps) if i > i_gone and 1 in s["active"])
    # before the kill: source 1 gets components
    assert steps[i_gone - 1]["allocation"]["1"] > 0
    # the step it died in falls back to the mean; after that it is neither waited for nor missing
    assert 1 in steps[i_gone - 1]["missing"] or 1 in steps[i_gone - 2]["missing"]
    # Eq. 3 at 1000 bit/s: L coefficients per step, floor(L / n_v) components per vector
    r, n_v = codec.rate, codec.cfg.vectors_per_step
    budget = math.floor(2 * 1000.0 * r.chunk_seconds / (r.eta * math.log2(r.sigma2 / r.distortion)))
    assert budget // n_v < sum(codec.latent_sizes[s] for s in (0, 2, 3))  # the budget binds
    for st in steps[i_gone:i_back]:
        assert st["allocation"]["1"] == 0 and st["k_received"]["1"] == 0 and 1 not in st["missing"]
        assert st["budget_coefficients"] == budget
        assert sum(st["allocation"].values()) == budget // n_v
        assert st["bits_total"] <= st["budget_bits"]
    # source 1's components go to the others: none of them loses any, together they gain
    before, after = steps[i_gone - 1]["allocation"], steps[i_gone]["allocation"]
    assert all(after[s] >= before[s] for s in "023")
    assert sum(after[s] for s in "023") == sum(before[s] for s in "023") + before["1"]
    back = steps[i_back:-1]
    assert len(back) >= 5 and all(s["allocation"]["1"] > 0 for s in back)
    # it sends components again (a chunk may miss its deadline on a loaded machine)
    assert sum(s["k_received"]["1"] > 0 for s in back) >= 0.8 * len(back)
    assert decoded.shape == (4, n) and np.isfinite(decoded).all()


def test_receiver_restart_edges_reconnect_and_session_resumes(tmp_path):
    """Stop the receiver mid-stream and start it again: edges reconnect and the session resumes
    at the same step numbering (the clock's epoch travels in the edges' hello)."""
    codec = tiny_codec()
    torch.manual_seed(3)
    n = 60 * codec.chunk_samples
    audio = torch.randn(4, n) * 0.1
    port = free_port()
    settings = ReceiverSettings(session="room", token=TOKEN, capacity_bps=1500.0, grace_s=0.4)
    rx = Receiver(settings, codec, port=port)
    rx.start()
    edges = Edges(rx.url, "room", TOKEN, codec, audio, [0, 1, 2, 3], retry_for_s=20).start()
    first = wait_for(lambda: (s := rx.stats("room"))["summary"]["steps"] >= 12 and s, 20, "no steps")
    rx.stop()
    time.sleep(0.3)
    rx2 = Receiver(settings, codec, port=port)
    rx2.start()
    try:
        results = edges.join(60)
        rx2.wait_state("room", "finished", 20)
        stats = rx2.stats("room")
        decoded = rx2.audio("room")
    finally:
        rx2.stop()
    assert all(isinstance(r, dict) for r in results), results
    assert all(r["connects"] == 2 for r in results)
    summary = stats["summary"]
    assert summary["epoch"] == first["summary"]["epoch"]
    assert summary["first_step"] > first["summary"]["steps"] - 1
    steps = stats["steps"]
    assert steps[0]["step"] == summary["first_step"] and steps[-1]["step"] == 60
    # edges come back one by one (exponential backoff with jitter, at most 2 s between tries);
    # from then on every step is complete
    i_all = next(i for i, s in enumerate(steps) if len(s["active"]) == 4)
    assert i_all * codec.chunk_seconds < 2.5
    assert all(len(s["k_applied"]) == 4 and not s["missing"] for s in steps[i_all:])
    assert all(set(s["k_applied"]) == {str(a) for a in s["active"]} for s in steps)
    assert decoded.shape == (4, n - summary["first_step"] * codec.chunk_samples)
