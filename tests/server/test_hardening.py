"""The receiver's limits against hostile input: tokens on every route that reveals a session,
bounded wire fields, per-job decode failures, admin paths and numbers, hello timeout,
connection limits, slow HTTP clients, and the compose file's published address."""

import asyncio
import contextlib
import json
import socket
import time
from pathlib import Path

import httpx
import msgpack
import numpy as np
import pytest
import torch
import yaml
from conftest import tiny_codec
from streaming_harness import (  # noqa: F401
    Edges,
    Receiver,
    expect_error,
    one_torch_thread,
    write_capacity_trace,
)
from websockets.sync.client import connect

from server.decoder import BatchDecoder, DecodeJob
from server.enhance import IdentityEnhancer
from server.metrics import ReceiverMetrics
from server.settings import ReceiverSettings, SessionConfig
from shared import protocol as P
from shared.stft import from_channels
from shared.streaming import StreamingISTFT

ADMIN, TOKEN_A, TOKEN_B = "admin-of-the-receiver", "token-of-room-a", "token-of-room-b"
REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    """Room A (one source, for abuse), room B (four well-behaved edges) and room C (a trace of
    absurd capacity), an admin token, a trace directory for REST sessions, a short hello timeout."""
    codec = tiny_codec()
    tmp = tmp_path_factory.mktemp("hardening")
    traces = tmp / "traces"
    traces.mkdir()
    write_capacity_trace(traces / "ok.csv", [(0.0, 3000.0), (1.0, 3000.0)])
    (traces / "secret.csv").write_text("secret-line-nobody-may-read\n")
    huge = write_capacity_trace(tmp / "huge.csv", [(0.0, 1e300), (1.0, 1e300)])
    sessions = tmp / "sessions.json"
    sessions.write_text(json.dumps({"sessions": [
        SessionConfig(id="A", token=TOKEN_A, capacity_bps=2000.0, sources=[0], start_timeout_s=0.0,
                      idle_timeout_s=60).model_dump(),
        SessionConfig(id="B", token=TOKEN_B, capacity_bps=1000.0, grace_s=0.4).model_dump(),
        SessionConfig(id="C", token=TOKEN_A, trace=str(huge), sources=[0], start_timeout_s=0.0).model_dump(),
    ]}))
    settings = ReceiverSettings(sessions_file=str(sessions), admin_token=ADMIN, trace_dirs=[str(traces)],
                                reference_dirs=[str(tmp / "refs")], hello_timeout_s=0.5)
    rx = Receiver(settings, codec)
    rx.start()
    audio = torch.randn(4, 40 * codec.chunk_samples) * 0.1  # ~2.6 s of streaming in room B
    edges = Edges(rx.url, "B", TOKEN_B, codec, audio, [0, 1, 2, 3]).start()
    yield rx, codec, edges, traces
    rx.stop()


def hello(codec, **kw):
    base = dict(v=P.PROTOCOL_VERSION, type="hello", session="A", source=0, token=TOKEN_A, sample_rate=codec.sample_rate,
                model_hash=codec.sha256)
    base.update(kw)
    return msgpack.packb(base, use_bin_type=True)



def room_b_unaffected(rx) -> None:
    """Room B still has its four edges (or they finished their streams) and has lost nothing."""
    stats = rx.stats("B")
    summary = stats["summary"]
    if summary["state"] != "finished":  # edges that sent their last chunk leave before the session ends
        done = {int(s) for s, st in stats["sources"].items() if st.get("finished")}
        assert sorted(set(summary["connected"]) | done) == [0, 1, 2, 3], summary
    assert summary["missing_chunks"] == 0 and summary["late_chunks"] == 0


def join(ws, codec, session="A", token=TOKEN_A):
    """Hello as source 0; returns the first allocation with components."""
    ws.send(hello(codec, session=session, token=token))
    assert isinstance(P.decode(ws.recv(timeout=5)), P.Welcome)
    while True:
        msg = P.decode(ws.recv(timeout=5))
        if isinstance(msg, P.Allocation) and msg.k > 0:
            return msg


def chunk(codec, alloc, **kw):
    zeros = np.zeros((codec.cfg.vectors_per_step, alloc.k), dtype=np.float32)
    enc = codec.encode_payload(zeros, alloc.k, None, source=0)
    base = dict(seq=alloc.step, capture_time=time.time(), k=alloc.k, k_allocated=alloc.k,
                alloc_step=alloc.step, quant_step=codec.coder.step, step_profile=codec.step_profile,
                payload=enc.payload, crc=enc.crc)
    base.update(kw)
    return msgpack.packb(dict(v=P.PROTOCOL_VERSION, type="chunk", **base), use_bin_type=True)


# --------------------------------------------------------------------------- tokens


@pytest.mark.parametrize("route", ["/sessions/B", "/sessions/B/stats", "/sessions/B/audio"])
def test_session_routes_need_the_session_or_admin_token(setup, route):
    """401 without or with a wrong token, 403 with another session's token, 200 with its own or
    the admin token."""
    rx = setup[0]
    assert rx.get(route).status_code == 401
    assert rx.get(route, "not-a-token").status_code == 401
    assert rx.get(route, headers={"Authorization": f"Basic {TOKEN_B}"}).status_code == 401
    assert rx.get(route, TOKEN_A).status_code == 403
    assert rx.get(route, TOKEN_B).status_code == 200
    assert rx.get(route, ADMIN).status_code == 200


def test_listings_show_only_what_a_token_opens_and_health_stays_open(setup):
    """GET /sessions and /cells need a token and list only its sessions; health, readiness,
    metrics and the docs need none."""
    rx = setup[0]
    assert rx.get("/sessions").status_code == 401 and rx.get("/cells").status_code == 401
    assert sorted(s["id"] for s in rx.get("/sessions", TOKEN_A).json()) == ["A", "C"]
    assert [s["id"] for s in rx.get("/sessions", TOKEN_B).json()] == ["B"]
    assert sorted(s["id"] for s in rx.get("/sessions", ADMIN).json()) == ["A", "B", "C"]
    for route in ("/healthz", "/readyz", "/metrics", "/docs", "/openapi.json"):
        assert rx.get(route).status_code == 200, route


# --------------------------------------------------------------------------- wire fields


def test_end_samples_of_2_to_the_62_is_refused(setup):
    """end_samples = 2**62 on a one-source session is refused (invalid_message, 1003: over the
    protocol's bound) before it reaches the decoder; the other room loses nothing."""
    rx, codec, _, _ = setup
    with connect(rx.url) as ws:
        alloc = join(ws, codec)
        ws.send(chunk(codec, alloc, end_samples=2**62))
        err = expect_error(ws, "invalid_message", 1003)
    assert "end_samples" in err.message
    with connect(rx.url) as ws:  # within the protocol's bound, past the chunk: out_of_range
        alloc = join(ws, codec)
        ws.send(chunk(codec, alloc, end_samples=2**40))
        err = expect_error(ws, "out_of_range", 1007)
    assert "end_samples" in err.message and "last chunk" in err.message
    room_b_unaffected(rx)


@pytest.mark.parametrize("field, value, needle", [
    ("end_samples", 10**9, "end_samples"),
    ("seq", 10**6, "not opened yet"),
    ("k_allocated", 10**6, "k_allocated"),
    ("alloc_step", 10**6, "alloc_step"),
    ("capture_time", 1e15, "capture_time"),
])
def test_chunk_fields_beyond_the_session_are_refused(setup, field, value, needle):
    """Every number a chunk carries is bounded by what the session holds: out_of_range (1007)."""
    rx, codec, _, _ = setup
    with connect(rx.url) as ws:
        alloc = join(ws, codec)
        ws.send(chunk(codec, alloc, **{field: value}))
        err = expect_error(ws, "out_of_range", 1007)
    assert needle in err.message
    room_b_unaffected(rx)


@pytest.mark.parametrize("field, value", [("source", "0"), ("source", True), ("sample_rate", 16000.0),
                                          ("resume_seq", 2**40)])
def test_hello_integers_are_strict_and_bounded(setup, field, value):
    """A string, a boolean or a float where an integer belongs, or an index past 2**31: invalid_message."""
    rx, codec, _, _ = setup
    with connect(rx.url) as ws:
        ws.send(hello(codec, **{field: value}))
        err = expect_error(ws, "invalid_message", 1003)
    assert field in err.message


def test_chunk_booleans_are_not_integers(setup):
    """k = true in a chunk: invalid_message (1003), not a chunk of one component."""
    rx, codec, _, _ = setup
    with connect(rx.url) as ws:
        alloc = join(ws, codec)
        ws.send(chunk(codec, alloc, k=True))
        err = expect_error(ws, "invalid_message", 1003)
    assert "k" in err.message


def test_a_session_that_cannot_go_on_gets_an_error_frame(setup):
    """A trace of capacity 1e300 stops room C's clock: its edge gets session_failed (1011) with
    the reason, the summary keeps it, and room B loses nothing."""
    rx, codec, _, _ = setup
    with connect(rx.url) as ws:
        ws.send(hello(codec, session="C"))
        err = expect_error(ws, "session_failed", 1011)
    assert "cannot go on" in err.message
    summary = rx.wait_state("C", "finished", 10)
    assert summary["error"] and "clock" in summary["error"]
    room_b_unaffected(rx)


def test_a_failing_job_leaves_the_other_jobs_of_its_batch_intact():
    """One job with more coefficients than its source has fails alone; the jobs batched with it
    decode exactly as they would on their own."""
    codec = tiny_codec()
    n_v = codec.cfg.vectors_per_step
    rng = np.random.default_rng(1)

    def rows():
        return [[rng.standard_normal((n_v, d)).astype(np.float32) for d in codec.latent_sizes] for _ in range(3)]

    good = rows()
    bad = [np.zeros((n_v, d + 7), dtype=np.float32) for d in codec.latent_sizes]

    async def run(jobs_coeffs):
        dec = BatchDecoder(codec, IdentityEnhancer(), ReceiverMetrics())
        await dec.start()
        jobs, results = [], {}
        for i, coeffs in enumerate(jobs_coeffs):
            istft = StreamingISTFT(codec.preset, codec.cfg.num_mics)
            jobs.append(DecodeJob(
                key=f"s{i}", step=0, coeffs=coeffs, valid_frames=codec.frames_per_step,
                postprocess=lambda spec, f=istft: f.push(from_channels(spec, codec.cfg.representation)),
                finish=None, done=lambda job, audio, t: results.__setitem__(job.key, (job, audio))))
        for job in jobs:  # queued together: one batch
            dec.submit(job)
        await dec.drain()
        await dec.stop()
        return results, dec.batches

    together, batches = asyncio.run(run([good[0], bad, good[1], good[2]]))
    assert batches == 1
    alone = [asyncio.run(run([g]))[0]["s0"][1] for g in good]
    for key, ref in zip(("s0", "s2", "s3"), alone):
        job, audio = together[key]
        assert audio.shape[-1] > 0
        torch.testing.assert_close(audio, ref)
        assert job.error is None
    assert together["s1"][0].error and together["s1"][1].shape[-1] == 0


# --------------------------------------------------------------------------- admin requests


def post(rx, body):
    return httpx.post(rx.http + "/sessions", json=body, headers={"Authorization": f"Bearer {ADMIN}"}, timeout=10)


@pytest.mark.parametrize("field, path", [("trace", "/proc/self/environ"), ("trace", "/etc/passwd"),
                                         ("trace", "../../../etc/passwd"), ("reference", "/etc/passwd"),
                                         ("mics_reference", "/proc/self/environ")])
def test_admin_paths_outside_the_allowed_directories_are_refused(setup, field, path):
    """A path outside trace_dirs / reference_dirs: 422 naming the field and the allowed
    directories, never the file's contents (nor the admin token from the environment)."""
    rx, _, _, traces = setup
    r = post(rx, {"id": "p1", "token": "t", field: path})
    assert r.status_code == 422
    detail = r.json()["detail"]
    assert detail.startswith(field) and "outside the allowed directories" in detail
    assert "root:" not in detail and ADMIN not in detail and path.lstrip("./") not in detail
    if field == "trace":
        assert str(traces.resolve()) in detail


def test_admin_trace_errors_do_not_quote_the_file(setup):
    """A file in the trace directory that is no trace: 422 without its first line; a good one: 201."""
    rx, _, _, traces = setup
    r = post(rx, {"id": "p2", "token": "t", "trace": str(traces / "secret.csv")})
    assert r.status_code == 422 and "secret-line" not in r.text and "cannot be read" in r.text
    missing = post(rx, {"id": "p2", "token": "t", "trace": str(traces / "none.csv")})
    assert missing.status_code == 422 and "no such file" in missing.text
    ok = post(rx, {"id": "p3", "token": "t", "trace": str(traces / "ok.csv")})
    assert ok.status_code == 201, ok.text
    # what the admin asked for (a format, an option and its type) is named; never a 500
    for extra, says in (({"trace_format": "bogus"}, "unknown trace format 'bogus'"),
                        ({"trace_options": {"foo": 1}}, "does not accept option(s) foo"),
                        ({"trace_format": "cooked", "trace_options": {"share": "abc"}},
                         "share='abc' must be a finite number")):
        r = post(rx, {"id": "p4", "token": "t", "trace": str(traces / "ok.csv"), **extra})
        assert r.status_code == 422 and says in r.text, r.text
    assert httpx.delete(rx.http + "/sessions/p3", headers={"Authorization": f"Bearer {ADMIN}"}).status_code == 204


@pytest.mark.parametrize("field, value", [
    ("capacity_bps", 1e300), ("capacity_bps", -1.0), ("capacity_bps", "1000"), ("capacity_bps", True),
    ("sources", ["1"]), ("sources", [True]), ("sources", [1.0]), ("sources", [10**6]),
    ("idle_timeout_s", 1e12), ("grace_s", 3600.0), ("start_timeout_s", True), ("lockstep_timeout_s", 0),
])
def test_admin_numbers_are_bounded_and_typed(setup, field, value):
    """Out-of-range or wrongly typed numbers in POST /sessions: 422 naming the field."""
    rx = setup[0]
    r = post(rx, {"id": "n1", "token": "t", field: value})
    assert r.status_code == 422, r.text
    assert r.json()["detail"][0]["loc"][0] == field


# --------------------------------------------------------------------------- connections


def test_a_websocket_without_hello_is_closed_after_the_hello_timeout(setup):
    """No hello within hello_timeout_s (0.5 s here): hello_timeout, close 1008."""
    rx = setup[0]
    t0 = time.time()
    with connect(rx.url) as ws:
        err = expect_error(ws, "hello_timeout", 1008)
    assert 0.4 < time.time() - t0 < 3.0 and "hello" in err.message
    room_b_unaffected(rx)


def test_zz_other_session_unaffected(setup):
    """Room B, streamed during everything above, lost no chunk and decoded all its audio."""
    rx, codec, edges, _ = setup
    results = edges.join(60)
    assert all(isinstance(r, dict) for r in results), results
    rx.wait_state("B", "finished", 20)
    summary = rx.stats("B")["summary"]
    assert summary["missing_chunks"] == 0 and summary["late_chunks"] == 0 and summary["error"] is None
    assert rx.audio("B").shape == (4, 40 * codec.chunk_samples)


def _ws_from(rx, source_ip: str):
    """A websocket to the receiver from the local address ``source_ip`` (127.0.0.0/8)."""
    sock = socket.create_connection(("127.0.0.1", rx.port), source_address=(source_ip, 0))
    return connect(rx.url, sock=sock)


def test_connection_limits_per_address_and_in_total():
    """Per address and in total: a websocket over a limit gets too_many_connections and close
    1013; a slot freed is usable again."""
    codec = tiny_codec()
    settings = ReceiverSettings(session="room", token=TOKEN_A, capacity_bps=2000.0, max_connections=3,
                                max_connections_per_ip=2, hello_timeout_s=30)
    with Receiver(settings, codec) as rx, contextlib.ExitStack() as held:
        first = held.enter_context(_ws_from(rx, "127.0.0.1"))
        held.enter_context(_ws_from(rx, "127.0.0.1"))
        with _ws_from(rx, "127.0.0.1") as third:
            err = expect_error(third, "too_many_connections", 1013)
        assert "per address" in err.message
        held.enter_context(_ws_from(rx, "127.0.0.2"))  # another address: the last slot of the total
        with _ws_from(rx, "127.0.0.3") as fourth:
            err = expect_error(fourth, "too_many_connections", 1013)
        assert "maximum of 3" in err.message
        first.close()
        time.sleep(0.3)
        with _ws_from(rx, "127.0.0.1") as again:
            again.send(hello(codec, session="room"))
            assert isinstance(P.decode(again.recv(timeout=5)), P.Welcome)
        metrics = rx.get("/metrics").text
    assert 'ndpca_protocol_errors_total{code="too_many_connections"} 2.0' in metrics


def test_a_request_whose_headers_never_finish_is_closed():
    """A client that sends half a request line and waits is disconnected after
    http_header_timeout_s; complete requests on keep-alive connections still work."""
    codec = tiny_codec()
    settings = ReceiverSettings(http_header_timeout_s=0.5)
    with Receiver(settings, codec) as rx:
        with socket.create_connection(("127.0.0.1", rx.port)) as sock:
            sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n")
            sock.settimeout(5)
            t0 = time.time()
            assert sock.recv(1024) == b""  # closed by the receiver
            assert time.time() - t0 < 3
        with httpx.Client(base_url=rx.http) as client:  # keep-alive: two requests, one connection
            assert client.get("/healthz").status_code == 200
            time.sleep(0.8)  # longer than the header timeout, shorter than keep-alive
            assert client.get("/healthz").status_code == 200


def test_compose_publishes_the_receiver_on_loopback_only():
    """docker compose publishes the receiver on 127.0.0.1, not on every host interface."""
    compose = yaml.safe_load((REPO / "docker-compose.yml").read_text())
    ports = compose["services"]["receiver"]["ports"]
    assert ports and all(str(p).startswith("127.0.0.1:") for p in ports), ports
