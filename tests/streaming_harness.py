"""Test helpers for the streaming system: a real receiver (uvicorn in a thread, real port) and
real edge clients (in a thread with their own event loop, or as ``ndpca edge`` processes)."""

from __future__ import annotations

import asyncio
import os
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
import soundfile as sf
import torch
import uvicorn

from edge_client.client import EdgeClient, EdgeConfig
from edge_client.encoder import LiveEncoder
from server.app import create_app
from server.enhance import BEAMFORM_MIN_SHARE, beamforming_mask
from server.serving import uvicorn_config
from server.settings import ReceiverSettings

REPO = Path(__file__).resolve().parents[1]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Receiver:
    """The real receiver app served by uvicorn on 127.0.0.1 in a background thread."""

    def __init__(self, settings: ReceiverSettings, codec=None, port: int = 0) -> None:
        self.settings = settings
        self.codec = codec
        self.port = port
        self.server: uvicorn.Server | None = None
        self.thread: threading.Thread | None = None

    def __enter__(self) -> Receiver:
        self.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.stop()

    def start(self) -> None:
        app = create_app(self.settings, codec=self.codec)
        config = uvicorn_config(app, self.settings, host="127.0.0.1", port=self.port,
                                log_level="warning", lifespan="on")
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, daemon=True)
        self.thread.start()
        deadline = time.time() + 30
        while not self.server.started:
            if time.time() > deadline or not self.thread.is_alive():
                raise RuntimeError("receiver did not start")
            time.sleep(0.01)
        self.port = self.server.servers[0].sockets[0].getsockname()[1]
        self.app = app

    def stop(self) -> None:
        if self.server is not None:
            self.server.should_exit = True
            assert self.thread is not None
            self.thread.join(15)
            self.server = None

    @property
    def url(self) -> str:
        return f"ws://127.0.0.1:{self.port}/ws"

    @property
    def http(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def get(self, path: str, token: str | None = None, **kw: Any) -> httpx.Response:
        """GET ``path``; with ``token``, as ``Authorization: Bearer token``."""
        if token is not None:
            kw["headers"] = {**kw.get("headers", {}), "Authorization": f"Bearer {token}"}
        return httpx.get(self.http + path, timeout=10, **kw)

    def token(self, session: str) -> str:
        """The token that opens ``session``: the admin token if there is one, else its own."""
        if self.settings.admin_token:
            return self.settings.admin_token
        found = self.app.state.manager.get(session)
        return found.cfg.token if found is not None else ""

    def stats(self, session: str) -> dict[str, Any]:
        r = self.get(f"/sessions/{session}/stats", self.token(session))
        r.raise_for_status()
        return r.json()

    def wait_state(self, session: str, state: str, timeout: float = 30) -> dict[str, Any]:
        deadline = time.time() + timeout
        while time.time() < deadline:
            r = self.get(f"/sessions/{session}", self.token(session))
            if r.status_code == 200 and r.json()["state"] == state:
                return r.json()
            time.sleep(0.05)
        raise TimeoutError(f"session {session} not {state} after {timeout} s: {r.text[:300]}")

    def audio(self, session: str) -> np.ndarray:
        import io

        r = self.get(f"/sessions/{session}/audio", self.token(session))
        r.raise_for_status()
        data, _ = sf.read(io.BytesIO(r.content), dtype="float32", always_2d=True)
        return data.T


class Edges:
    """Real edge clients for some sources, run in one background thread's event loop."""

    def __init__(self, url: str, session: str, token: str, codec, audio: torch.Tensor,
                 sources: list[int], realtime: bool = True, retry_for_s: float = 20.0) -> None:
        self.clients = []
        for s in sources:
            cfg = EdgeConfig(url, session, s, token, realtime=realtime, retry_for_s=retry_for_s)
            enc = LiveEncoder(codec, s, audio[codec.mic_groups[s]])
            self.clients.append(EdgeClient(cfg, codec, enc))
        self.results: list[Any] = []
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        async def main():
            return await asyncio.gather(*(c.run() for c in self.clients), return_exceptions=True)

        self.results = asyncio.run(main())

    def start(self) -> Edges:
        self.thread.start()
        return self

    def join(self, timeout: float = 60) -> list[Any]:
        self.thread.join(timeout)
        if self.thread.is_alive():
            raise TimeoutError("edges did not finish")
        return self.results


def spawn_edge(url: str, session: str, token: str, checkpoint: Path, wav: Path, source: int,
               fast: bool = False, stats_out: Path | None = None) -> subprocess.Popen:
    """An ``ndpca edge`` process (the token travels in the environment, not the command line)."""
    cmd = [sys.executable, "-m", "edge_client", "edge", "--url", url, "--session", session,
           "--source", str(source), "--input", str(wav), "--checkpoint", str(checkpoint),
           "--retry-for", "20"]
    if fast:
        cmd.append("--fast")
    if stats_out:
        cmd += ["--stats-out", str(stats_out)]
    env = dict(os.environ, NDPCA_TOKEN=token, PYTHONPATH=str(REPO))
    return subprocess.Popen(cmd, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)


def write_capacity_trace(path: Path, rows: list[tuple[float, float]]) -> Path:
    path.write_text("time_s,capacity_bps\n" + "".join(f"{t},{c}\n" for t, c in rows))
    return path


def offline_decode(codec, audio: torch.Tensor, steps: list[dict[str, Any]], stage=None,
                   min_share: float = BEAMFORM_MIN_SHARE) -> torch.Tensor:
    """Decode what the receiver received, offline: per step, each source's coefficients
    (``[n_v, k_s]``) coded with the step's allocation and bit budget (None where nothing arrived) -> audio ``[M, N]``
    (``[C, N]`` after an enhancement ``stage`` applied to each step on its own; a stateful stage
    beamforms with the microphones of the sources that sent ``min_share`` of their components)."""
    n = audio.shape[-1]
    spec = codec.spectra(audio)
    chunks = codec.chunk(spec)
    full = [codec.source_coefficients(s, chunks[:, g]) for s, g in enumerate(codec.mic_groups)]
    by_step = {st["step"]: st for st in steps}
    rows = []
    for i in range(chunks.shape[0]):
        st = by_step[i]
        per = []
        for s in range(codec.n_sources):
            k = st["k_received"][str(s)]
            if str(s) not in st["k_applied"]:
                per.append(torch.zeros(1, codec.cfg.vectors_per_step, 0))
                continue
            enc = codec.encode_payload(full[s][i], st["allocation"][str(s)], st["bits_allocated"][str(s)],
                                       source=s)
            assert enc.k == k
            per.append(torch.from_numpy(codec.decode_payload(enc.payload, enc.k, source=s,
                                                             k_allocated=enc.k_allocated))[None])
        row = codec.decode_coefficients(per)
        if getattr(stage, "stateful", False):  # one state for this stream, the receiver's beamformer rule
            active = beamforming_mask(codec, [p.shape[-1] for p in per], min_share)[None]
            row = stage(row, keys=["offline"], active=active)
        elif stage is not None:
            row = stage(row)
        rows.append(row)
    out = torch.cat(rows)
    return codec.to_audio(codec.unchunk(out, spec.shape[-1]), n)


@pytest.fixture(autouse=True)
def one_torch_thread():
    """Run with one torch thread, as edges and the receiver's decoder do: on a busy two-core
    machine two OpenMP threads made the tiny encoder 100 times slower."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def wait_for(pred, timeout: float, what: str):
    """Poll ``pred`` every 50 ms until it returns something true (returned) or ``timeout``."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        value = pred()
        if value:
            return value
        time.sleep(0.05)
    raise TimeoutError(what)


def expect_error(ws, code: str, close: int):
    """The next frame other than welcome/allocation is an error ``code``; then the receiver
    closes with ``close``."""
    from websockets.exceptions import ConnectionClosed

    from shared import protocol as P

    err = P.decode(ws.recv(timeout=5))
    while isinstance(err, P.Welcome | P.Allocation):
        err = P.decode(ws.recv(timeout=5))
    assert isinstance(err, P.Error) and err.code == code, err
    with pytest.raises(ConnectionClosed) as info:
        ws.recv(timeout=5)
    assert info.value.rcvd is not None and info.value.rcvd.code == close
    return err
