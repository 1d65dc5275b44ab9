"""REST routes, readiness, model loading in lifespan, device choice, batching across sessions."""

import numpy as np
import pytest
import torch
from conftest import tiny_codec
from streaming_harness import Edges, Receiver, one_torch_thread  # noqa: F401

from server.decoder import BatchDecoder
from server.enhance import IdentityEnhancer
from server.metrics import ReceiverMetrics
from server.model import resolve_device
from server.settings import ReceiverSettings
from shared.errors import UserError


@pytest.fixture(scope="module")
def receiver(tmp_path_factory):
    """A receiver that loads its checkpoint from disk in lifespan, with an admin token."""
    codec = tiny_codec()
    ckpt = tmp_path_factory.mktemp("ckpt") / "ndpca-e4d1.ckpt"
    codec.save(ckpt)
    settings = ReceiverSettings(checkpoint=str(ckpt), device="auto", admin_token="admin-secret",
                                session="room", token="tok", capacity_bps=800.0)
    with Receiver(settings) as rx:
        yield rx, codec


def test_health_and_readiness(receiver):
    """/healthz answers; /readyz reports the loaded model (same hash as the file) and device."""
    rx, codec = receiver
    assert rx.get("/healthz").json() == {"status": "ok"}
    ready = rx.get("/readyz").json()
    assert ready["ready"] and ready["sha256"] == codec.sha256 and ready["device"] == "cpu"
    assert ready["enhancer"] == "identity"


def test_sessions_listing_and_stats(receiver):
    """Configured sessions are listed; stats carry rate config, trace, model; 404 for others."""
    rx, _ = receiver
    listed = rx.get("/sessions", "tok").json()
    assert [s["id"] for s in listed] == ["room"] and listed[0]["state"] == "waiting"
    stats = rx.get("/sessions/room/stats", "tok").json()
    assert stats["rate"]["sigma2"] == 1.0 and stats["trace"]["kind"] == "constant"
    assert "token" not in stats["config"] and stats["steps"] == []
    assert rx.get("/sessions/none/stats", "tok").status_code == 404


def test_create_session_needs_admin_token(receiver):
    """POST /sessions: 401 without or with a wrong admin token, 201 with it, 409 on repeat."""
    rx, _ = receiver
    import httpx

    body = {"id": "new", "token": "t2", "capacity_bps": 1000.0, "mode": "lockstep"}
    url = rx.http + "/sessions"
    assert httpx.post(url, json=body).status_code == 401
    assert httpx.post(url, json=body, headers={"Authorization": "Bearer nope"}).status_code == 401
    ok = httpx.post(url, json=body, headers={"Authorization": "Bearer admin-secret"})
    assert ok.status_code == 201 and "token" not in ok.json()["config"]
    again = httpx.post(url, json=body, headers={"Authorization": "Bearer admin-secret"})
    assert again.status_code == 409
    bad = httpx.post(url, json={"id": "x y", "token": "t"}, headers={"Authorization": "Bearer admin-secret"})
    assert bad.status_code == 422 and "t" not in str(bad.json().get("detail", [{}])[0].get("input", ""))
    tmp = httpx.post(url, json={"id": "tmp", "token": "t"}, headers={"Authorization": "Bearer admin-secret"})
    assert tmp.status_code == 201
    assert httpx.delete(url + "/tmp").status_code == 401
    assert httpx.delete(url + "/tmp", headers={"Authorization": "Bearer admin-secret"}).status_code == 204
    assert rx.get("/sessions/tmp", "admin-secret").status_code == 404


def test_metrics_and_openapi(receiver):
    """/metrics is Prometheus text with the receiver's series; the OpenAPI docs are served."""
    rx, _ = receiver
    text = rx.get("/metrics").text
    assert "ndpca_sessions" in text and "ndpca_decode_seconds_bucket" in text
    spec = rx.get("/openapi.json").json()
    for route in ("/healthz", "/readyz", "/sessions", "/sessions/{session_id}/stats", "/metrics"):
        assert route in spec["paths"]
    assert rx.get("/docs").status_code == 200


def test_lockstep_session_streams_fast(receiver):
    """A lockstep session created over REST runs as fast as its edges (--fast) go."""
    rx, codec = receiver
    audio = torch.randn(4, 30 * codec.chunk_samples) * 0.1
    import time

    t0 = time.time()
    Edges(rx.url, "new", "t2", codec, audio, [0, 1, 2, 3], realtime=False).start().join(30)
    rx.wait_state("new", "finished", 10)
    assert time.time() - t0 < 30 * codec.rate.chunk_seconds  # faster than real time
    stats = rx.stats("new")
    assert stats["summary"]["steps"] == 31 and stats["summary"]["missing_chunks"] == 0
    assert rx.audio("new").shape == (4, 30 * codec.chunk_samples)


def test_device_choice():
    """auto picks CUDA only when present; asking for CUDA without one is a user error."""
    assert resolve_device("auto") == ("cuda" if torch.cuda.is_available() else "cpu")
    assert resolve_device("cpu") == "cpu"
    if not torch.cuda.is_available():
        with pytest.raises(UserError, match="no CUDA"):
            resolve_device("cuda")


@pytest.mark.parametrize("rate_input", [False, True])
def test_batched_decode_equals_single_decodes(rate_input):
    """Steps of sessions with different allocations decoded in one batch equal one-by-one
    decoding (also for a decoder that sees each row's allocation)."""
    codec = tiny_codec(decoder_rate_input=rate_input)
    dec = BatchDecoder(codec, IdentityEnhancer(), ReceiverMetrics())
    n_v = codec.cfg.vectors_per_step
    rng = np.random.default_rng(0)
    rows = [[rng.standard_normal((n_v, k)).astype(np.float32) if k is not None else None for k in ks]
            for ks in ([3, 0, 8, None], [1, 5, None, 2], [None, None, None, None], [8, 8, 8, 8])]
    batch = dec.decode_batch(rows)
    assert batch.shape == (4, 4, 2, codec.preset.n_bins, codec.frames_per_step)
    for b, row in enumerate(rows):
        single = codec.decode_coefficients(
            [torch.zeros(1, n_v, 0) if c is None else torch.from_numpy(c)[None] for c in row])
        torch.testing.assert_close(batch[b : b + 1], single, atol=1e-5, rtol=1e-4)
