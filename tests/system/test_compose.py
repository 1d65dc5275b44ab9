"""docker-compose.yml (Docker cannot run here): commands, ports, routes and healthcheck are real."""

import asyncio
import re
from pathlib import Path
from urllib.parse import urlparse

import pytest
import yaml

from ndpca.cli import build_parser
from server.app import create_app
from server.settings import ReceiverSettings

REPO = Path(__file__).resolve().parents[2]
_VAR = re.compile(r"\$\{(\w+)(?::?[-?]([^}]*))?\}")


def _expand(value):
    """Compose-style ${VAR:-default} interpolation with the defaults."""
    if isinstance(value, str):
        return _VAR.sub(lambda m: m.group(2) or "", value)
    if isinstance(value, list):
        return [_expand(v) for v in value]
    if isinstance(value, dict):
        return {k: _expand(v) for k, v in value.items()}
    return value


@pytest.fixture(scope="module")
def compose():
    return _expand(yaml.safe_load((REPO / "docker-compose.yml").read_text()))


@pytest.fixture(scope="module")
def routes():
    """The receiver's HTTP paths (OpenAPI) and a probe for websocket paths."""
    app = create_app(ReceiverSettings())
    http = set(app.openapi()["paths"])

    def is_ws(path: str) -> bool:
        # an ASGI websocket connect; before lifespan the receiver is not ready, so the real
        # endpoint closes with 1001, while the router closes an unknown path with 1000
        sent, inbox = [], [{"type": "websocket.connect"}]

        async def receive():
            return inbox.pop(0) if inbox else {"type": "websocket.disconnect", "code": 1000}

        async def send(message):
            sent.append(message)

        scope = {"type": "websocket", "path": path, "raw_path": path.encode(), "query_string": b"",
                 "headers": [], "scheme": "ws", "server": ("receiver", 8000), "client": ("edge", 1),
                 "root_path": "", "subprotocols": [], "asgi": {"version": "3.0"}}
        asyncio.run(app(scope, receive, send))
        return sent[-1] == {"type": "websocket.close", "code": 1001, "reason": "receiver not ready"}

    return http, is_ws


def _parse(command):
    assert command[0] == "ndpca", command
    return build_parser().parse_args(command[1:])


def test_every_command_is_a_real_cli_invocation(compose):
    """Each service's command parses with the project's own `ndpca` parser."""
    services = compose["services"]
    assert {"prepare", "receiver", "edge-0", "edge-1", "edge-2", "edge-3"} <= set(services)
    for name, svc in services.items():
        args = _parse(svc["command"])
        assert args.command == {"prepare": "demo", "receiver": "serve"}.get(name, "edge"), name
        assert callable(args.func)


def test_receiver_port_healthcheck_and_routes(compose, routes):
    """The published port is the receiver's --port; the healthcheck calls /readyz on it."""
    http, ws = routes
    rx = compose["services"]["receiver"]
    args = _parse(rx["command"])
    assert args.host == "0.0.0.0"
    published = [p.split(":") for p in rx["ports"]]
    assert [int(p[-1]) for p in published] == [args.port]
    test = " ".join(rx["healthcheck"]["test"])
    url = urlparse(re.search(r"https?://[^'\" ]+", test).group(0))
    assert url.port == args.port and url.path in http and url.path == "/readyz"
    assert {"/healthz", "/sessions", "/sessions/{session_id}/stats", "/metrics"} <= http
    assert rx["depends_on"]["prepare"]["condition"] == "service_completed_successfully"
    assert "NDPCA_TRACE" in rx["environment"] and "NDPCA_SESSION" in rx["environment"]


def test_edges_wait_for_healthy_receiver_and_cover_every_source(compose, routes):
    """Four edges, sources 0-3, connect to the receiver's websocket route once it is healthy."""
    _, ws = routes
    rx_port = _parse(compose["services"]["receiver"]["command"]).port
    sources = []
    for name, svc in compose["services"].items():
        if not name.startswith("edge-"):
            continue
        args = _parse(svc["command"])
        sources.append(args.source)
        assert svc["depends_on"]["receiver"]["condition"] == "service_healthy"
        url = urlparse(svc["environment"]["NDPCA_RECEIVER_URL"])
        assert url.scheme == "ws" and url.hostname == "receiver" and url.port == rx_port
        assert ws(url.path) and not ws("/nowhere")
        assert str(args.input).startswith("/data/") and args.checkpoint.startswith("/data/")
    assert sorted(sources) == [0, 1, 2, 3]


def test_files_the_services_read_are_written_by_prepare(compose):
    """prepare writes model.ckpt, room.wav, clean.wav and token into the volume the others mount."""
    services = compose["services"]
    prep = _parse(services["prepare"]["command"])
    assert prep.prepare_only and str(prep.out) == "/data"
    produced = {"/data/model.ckpt", "/data/room.wav", "/data/clean.wav", "/data/token"}
    rx = _parse(services["receiver"]["command"])
    assert {rx.checkpoint, rx.token_file, rx.reference, rx.mics_reference} <= produced
    # clean speech scores decoded microphone 0, the captured microphones the codec (as the demo)
    assert rx.reference == "/data/clean.wav" and rx.mics_reference == "/data/room.wav"
    for name in ("edge-0", "edge-3"):
        e = _parse(services[name]["command"])
        assert {e.checkpoint, str(e.input), e.token_file} <= produced
    for svc in services.values():
        assert any(v.endswith(":/data") for v in svc["volumes"])
    assert (REPO / "Dockerfile").is_file() and (REPO / ".dockerignore").is_file()
