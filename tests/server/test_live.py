"""The live view's routes without a browser: page and assets, authorisation, the live stream
against the REST stats, throttling, the recent-audio route and the session hooks behind them."""

import io
import json
import time
from types import SimpleNamespace

import httpx
import numpy as np
import pytest
import soundfile as sf
import torch
from conftest import tiny_codec
from streaming_harness import Edges, Receiver, one_torch_thread, write_capacity_trace  # noqa: F401
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import connect

from server.live import recent_audio
from server.metrics import ReceiverMetrics
from server.session import TAIL_SECONDS, Session
from server.settings import ReceiverSettings, SessionConfig

ADMIN, TOKEN, OTHER = "admin-secret", "room-token", "other-token"


@pytest.fixture(scope="module")
def receiver(tmp_path_factory):
    """Two lockstep sessions with different tokens; one streamed by four real edges."""
    tmp = tmp_path_factory.mktemp("live")
    codec = tiny_codec()
    trace = write_capacity_trace(tmp / "trace.csv", [(0.0, 3000.0), (0.3, 12000.0), (0.7, 5000.0)])
    torch.manual_seed(3)
    audio = torch.randn(4, 24 * codec.chunk_samples) * 0.1
    clean = tmp / "clean.wav"
    sf.write(clean, audio[0].numpy(), codec.sample_rate, subtype="FLOAT")
    sessions = tmp / "sessions.json"
    sessions.write_text(json.dumps({"sessions": [
        {"id": "room", "token": TOKEN, "trace": str(trace), "mode": "lockstep", "reference": str(clean)},
        {"id": "other", "token": OTHER, "capacity_bps": 4000.0},
    ]}))
    settings = ReceiverSettings(admin_token=ADMIN, sessions_file=str(sessions))
    with Receiver(settings, codec) as rx:
        yield SimpleNamespace(rx=rx, codec=codec, audio=audio)


def live_url(rx, token=None, **params):
    q = "&".join(f"{k}={v}" for k, v in {"token": token, **params}.items() if v is not None)
    return rx.url.replace("/ws", "/ui/live") + ("?" + q if q else "")


def test_page_assets_and_plotly_are_served_without_a_token(receiver):
    """The page, its script and style, and plotly.js from the installed package (gzipped)."""
    rx = receiver.rx
    page = rx.get("/ui")
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    assert "/ui/assets/live.js" in page.text and "/ui/plotly.min.js" in page.text
    assert rx.get("/", follow_redirects=False).headers["location"] == "/ui"
    assert "new WebSocket" in rx.get("/ui/assets/live.js").text
    assert rx.get("/ui/assets/live.css").status_code == 200
    assert rx.get("/ui/assets/../live.py").status_code == 404
    assert rx.get("/ui/assets/secret.txt").status_code == 404
    import plotly

    js = rx.get("/ui/plotly.min.js", headers={"Accept-Encoding": "gzip"})
    assert js.status_code == 200 and js.headers["content-encoding"] == "gzip"
    shipped = (plotly.__path__[0] + "/package_data/plotly.min.js")
    assert js.content == open(shipped, "rb").read()  # httpx decoded the gzip
    assert js.headers["x-plotly-package"] == plotly.__version__


def test_data_routes_need_a_session_or_admin_token(receiver):
    """The list, the audio and the stream: 401 without or with a wrong token; a session token
    opens its sessions only; the admin token opens every one."""
    rx = receiver.rx
    assert rx.get("/ui/sessions").status_code == 401
    assert rx.get("/ui/sessions", params={"token": "nope"}).status_code == 401
    own = rx.get("/ui/sessions", headers={"Authorization": f"Bearer {TOKEN}"}).json()
    assert [s["id"] for s in own["sessions"]] == ["room"] and own["cells"] == []
    assert own["sessions"][0]["cell"] is None and "token" not in json.dumps(own)
    every = rx.get("/ui/sessions", params={"token": ADMIN}).json()
    assert {s["id"] for s in every["sessions"]} == {"room", "other"}
    assert rx.get("/ui/sessions/room/recent.wav").status_code == 401
    assert rx.get("/ui/sessions/other/recent.wav", params={"token": TOKEN}).status_code == 403
    assert rx.get("/ui/sessions/none/recent.wav", params={"token": ADMIN}).status_code == 404
    assert rx.get("/ui/sessions/room/recent.wav", params={"token": TOKEN, "seconds": 99}).status_code == 422
    for url in (live_url(rx), live_url(rx, "nope")):
        with connect(url) as ws:
            msg = json.loads(ws.recv(timeout=10))
            assert msg["type"] == "error" and msg["code"] == "unauthorized" and msg["fatal"]
            with pytest.raises(ConnectionClosed) as closed:
                ws.recv(timeout=10)
        assert closed.value.rcvd.code == 1008
    with connect(live_url(rx, TOKEN, session="other")) as ws:
        msgs = [json.loads(ws.recv(timeout=10)) for _ in range(3)]
    assert [m["type"] for m in msgs] == ["hello", "sessions", "error"] and msgs[2]["code"] == "forbidden"
    assert [s["id"] for s in msgs[1]["sessions"]] == ["room"]


def test_bad_page_requests_are_answered_and_the_stream_goes_on(receiver):
    """Garbage, nesting too deep and a flood of bad requests each get a bad_request answer (at
    most a few per refresh, not one per frame) and the page still gets what it then asks for."""
    rx = receiver.rx
    with connect(live_url(rx, TOKEN)) as ws:
        assert [json.loads(ws.recv(timeout=10))["type"] for _ in range(2)] == ["hello", "sessions"]
        ws.send("[" * 100_000)
        for _ in range(50):
            ws.send("not json")
        ws.send(json.dumps({"type": "watch", "session": "room"}))
        got = []
        deadline = time.time() + 10
        while time.time() < deadline and not any(m.get("type") == "session" for m in got):
            got.append(json.loads(ws.recv(timeout=10)))
    errors = [m for m in got if m["type"] == "error"]
    assert errors and all(m["code"] == "bad_request" for m in errors) and len(errors) < 51
    assert any(m.get("type") == "session" for m in got), [m["type"] for m in got]


def test_live_stream_holds_the_rest_steps_throttled(receiver):
    """A page's stream during a real lockstep run: every step the REST stats hold, in order,
    with the same values; a few updates per second at most; the watcher is gone after."""
    rx, codec = receiver.rx, receiver.codec
    steps: dict[int, dict] = {}
    summary, header, updates = None, None, []
    with connect(live_url(rx, TOKEN, session="room", interval=0.25)) as ws:
        hello = json.loads(ws.recv(timeout=10))
        assert hello["type"] == "hello" and not hello["admin"] and hello["interval_s"] == 0.25
        edges = Edges(rx.url, "room", TOKEN, codec, receiver.audio, [0, 1, 2, 3], realtime=False).start()
        t0 = time.monotonic()
        while summary is None or summary["state"] != "finished":
            msg = json.loads(ws.recv(timeout=30))
            if msg["type"] != "session":
                continue
            updates.append(time.monotonic())
            header = msg.get("header", header)
            for st in msg["steps"]:
                steps[st["step"]] = st
            for n, late in msg.get("late", {}).items():
                steps[int(n)]["late"] = late
            summary = msg["summary"]
        elapsed = time.monotonic() - t0
        results = edges.join(60)
        session = rx.app.state.manager.get("room")
        assert len(session.watchers) == 1
    assert all(isinstance(r, dict) for r in results), results
    stats = rx.stats("room")
    assert header["id"] == "room" and header["quality"] == ["snr_db"] and header["n_sources"] == 4
    assert header["vectors_per_step"] == codec.cfg.vectors_per_step and "token" not in json.dumps(header)
    assert sorted(steps) == [st["step"] for st in stats["steps"]] and len(steps) >= 24
    for st in stats["steps"]:
        got = steps[st["step"]]
        for key in ("t", "capacity_bps", "budget_coefficients", "budget_bits", "allocation",
                    "bits_received", "k_received", "missing", "late", "decode_ms", "e2e_ms", "snr_db"):
            assert got[key] == st[key], (st["step"], key)
    assert len({st["budget_bits"] for st in stats["steps"]}) >= 2  # the channel changed
    rest = stats["summary"]
    for key in ("steps", "late_chunks", "missing_chunks", "bits_received", "steps_within_budget",
                "e2e_ms", "decode_ms"):
        assert summary[key] == rest[key], key
    assert summary["steps_decoded"] == rest["steps"]
    # throttled: consecutive updates at least ~interval apart (the first is the reset)
    gaps = np.diff(updates[1:])
    assert len(updates) <= elapsed / 0.25 + 3 and (len(gaps) == 0 or gaps.min() > 0.2), (len(updates), elapsed)
    deadline = time.time() + 5
    while session.watchers and time.time() < deadline:
        time.sleep(0.05)
    assert not session.watchers  # the page left: nothing is published any more


def test_recent_wav_is_the_newest_output(receiver):
    """``recent.wav``: the last seconds of the output, 16-bit, one channel or all."""
    rx, codec = receiver.rx, receiver.codec
    rx.wait_state("room", "finished", 30)
    full = rx.audio("room")
    r = rx.get("/ui/sessions/room/recent.wav", params={"token": TOKEN, "seconds": 0.5, "channel": 2})
    assert r.status_code == 200 and r.headers["content-type"] == "audio/wav"
    data, sr = sf.read(io.BytesIO(r.content), dtype="float32", always_2d=True)
    info = sf.info(io.BytesIO(r.content))
    assert sr == codec.sample_rate and info.subtype == "PCM_16" and data.shape == (codec.sample_rate // 2, 1)
    np.testing.assert_allclose(data[:, 0], np.clip(full[2, -data.shape[0]:], -1, 1), atol=1 / 16000)
    both = rx.get("/ui/sessions/room/recent.wav", headers={"Authorization": f"Bearer {ADMIN}"})
    everything, _ = sf.read(io.BytesIO(both.content), always_2d=True)
    assert everything.shape == (full.shape[1], 4)  # shorter than 10 s: all of it
    assert rx.get("/ui/sessions/room/recent.wav", params={"token": TOKEN, "channel": 4}).status_code == 422


def test_tail_keeps_the_newest_seconds_past_the_recording_limit():
    """The session keeps the newest TAIL_SECONDS of output for the player, bounded, even when
    the recording (``record_seconds``) stopped long before."""
    codec = tiny_codec()
    cfg = SessionConfig(id="s", token="t", capacity_bps=1000.0)
    decoder = SimpleNamespace(enhancer=SimpleNamespace(name="identity"))
    s = Session(cfg, codec, decoder, ReceiverMetrics(), lambda i: (0.0, 1000.0), {}, record_seconds=1.0)
    rng = np.random.default_rng(0)
    blocks = [rng.standard_normal((4, 1000)).astype(np.float32) for _ in range(600)]  # 37.5 s
    for b in blocks:
        s._append(torch.from_numpy(b))
    everything = np.concatenate(blocks, axis=-1)
    assert s.recorded == codec.sample_rate  # the recording stopped after 1 s
    assert TAIL_SECONDS * codec.sample_rate <= s.tail_samples < TAIL_SECONDS * codec.sample_rate + 1000
    np.testing.assert_array_equal(recent_audio(s, 2.5), everything[:, -40000:])
    np.testing.assert_array_equal(recent_audio(s, TAIL_SECONDS), everything[:, -int(TAIL_SECONDS * 16000):])


def test_live_stream_waits_for_the_model():
    """Before the model is loaded the stream says so (close 1013: try again) and the data
    routes answer 503."""
    import threading

    import uvicorn

    from server.app import create_app

    app = create_app(ReceiverSettings(admin_token=ADMIN), codec=tiny_codec())
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=0, lifespan="off",  # never loads
                                           log_level="warning", log_config=None, ws="websockets-sansio"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    try:
        deadline = time.time() + 30
        while not server.started and time.time() < deadline:
            time.sleep(0.01)
        port = server.servers[0].sockets[0].getsockname()[1]
        r = httpx.get(f"http://127.0.0.1:{port}/ui/sessions", params={"token": ADMIN}, timeout=10)
        assert r.status_code == 503
        with connect(f"ws://127.0.0.1:{port}/ui/live?token={ADMIN}") as ws:
            assert json.loads(ws.recv(timeout=10))["code"] == "not_ready"
            with pytest.raises(ConnectionClosed) as closed:
                ws.recv(timeout=10)
        assert closed.value.rcvd.code == 1013
    finally:
        server.should_exit = True
        thread.join(15)


def test_http_client_sees_the_page_link_and_openapi(receiver):
    """The page's routes are in the OpenAPI description (the static ones are not)."""
    spec = httpx.get(receiver.rx.http + "/openapi.json", timeout=10).json()
    assert "/ui/sessions" in spec["paths"] and "/ui/sessions/{session_id}/recent.wav" in spec["paths"]
    assert "/ui/assets/{name}" not in spec["paths"]


def test_bench_live_streams_and_demo_helpers(receiver):
    """`ndpca bench --live-streams N` reads the stream as a page would; the demo's page address
    carries the token in the fragment only; `--hold` returns when the receiver exits."""
    import subprocess
    import sys

    from ndpca.liveview import LiveStreams, hold, page_url

    rx = receiver.rx
    streams = LiveStreams(rx.http, TOKEN, ["room"]).start()
    time.sleep(1.0)
    got = streams.stop()
    assert got["streams"] == 1 and got["messages"] >= 3 and got["steps"] >= 24 and not got["errors"]
    url = page_url(rx.http, "a b/c", "room")
    assert url == f"{rx.http}/ui#token=a%20b%2Fc&session=room"
    proc = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(0.3)"])
    stopped = []
    hold(proc, url, stopped.append)
    assert stopped == [proc] and proc.returncode == 0
