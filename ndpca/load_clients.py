"""The load test's other clients, in their own process (``python -m ndpca.load_clients CONFIG``).

Everything that is not a well-behaved real-time edge runs here, so that its CPU and event-loop
time never delay the well-behaved edges of ``ndpca loadtest`` (that process runs only those):

- **long**: a lockstep session of ``long_seconds`` of audio, its four edges sending as fast as
  the receiver decodes; it runs before the real-time sessions start, up to its last
  ``long_tail_s`` seconds, which it streams ``long_finish_at_s`` after they started, so that
  it finishes (and its recording is closed) while they run;
- **downloads**: ``downloaders`` clients fetching ``GET /sessions/long/audio`` (and the
  real-time sessions' audio) again and again, checking every WAV's length;
- **floods**: ``flood_rate`` bad inputs a second, in turn: a garbage binary frame, a text
  frame, a hello with a wrong token, a hello for an unknown session, a chunk before the hello,
  an oversize frame, ``POST /sessions`` with a wrong admin token, a bad query;
- **slow clients**: websockets that connect and never send a hello; downloads read at
  ``slow_read_bps``; HTTP connections that never finish their request;
- **kills**: a real-time ``churn`` session whose edges lose their connection every
  ``kill_every_s`` seconds without a close frame (the socket aborted, what the receiver sees
  when an edge process dies) and reconnect.

Runs until SIGTERM (or ``max_seconds``), then writes its counts as JSON to ``result``.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import random
import signal
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

import httpx
import websockets

from shared import protocol as P

log = logging.getLogger("ndpca.load_clients")

FLOODS = ("garbage", "text", "bad_token", "unknown_session", "chunk_first", "oversize",
          "rest_bad_admin", "rest_bad_query")


class Clients:
    """The load test's disruptive clients against one receiver (``cfg``: see ``ndpca.loadtest``)."""

    def __init__(self, cfg: dict[str, Any]) -> None:
        self.cfg = cfg
        self.base, self.url = cfg["base"], cfg["url"]
        self.auth = {"Authorization": f"Bearer {cfg['admin_token']}"}
        self.stop = asyncio.Event()
        self.t0 = time.time()
        self.floods: dict[str, Counter] = {k: Counter() for k in FLOODS}
        self.downloads: list[dict[str, Any]] = []
        self.download_errors: list[str] = []
        self.slow: dict[str, Any] = {"ws_never_hello": [], "slow_readers": [], "unfinished_requests": []}
        self.kills = 0
        self.long: dict[str, Any] = {}
        self.long_finished = asyncio.Event()
        self.edge_results: dict[str, Any] = {}

    def now(self) -> float:
        return time.time() - self.t0

    async def run(self) -> dict[str, Any]:
        loop = asyncio.get_running_loop()
        loop.add_signal_handler(signal.SIGTERM, self.stop.set)
        # the costly part first (codec, coefficients of every chunk), then tell the load test
        long_edges = await asyncio.to_thread(self._edges, "long", False, self.cfg["long_seconds"])
        churn_edges = await asyncio.to_thread(self._edges, "churn", True, self.cfg["seconds"])
        # the long session up to its last seconds, before the real-time sessions start
        gate = asyncio.Event()
        hold_at = max(0, long_edges[0].encoder.n_chunks - round(self.cfg["long_tail_s"] / long_edges[0].period))
        for e in long_edges:
            e.gate, e.hold_at = gate, hold_at
        long_task = asyncio.create_task(self._long_session(long_edges))
        t_pre = time.time()
        while not all(e.next_seq >= hold_at or e.done for e in long_edges) and not long_task.done():
            await asyncio.sleep(0.1)
        self.long["before_real_time_s"] = time.time() - t_pre
        Path(self.cfg["ready"]).write_text("ready\n")
        self.t0 = time.time()
        tasks = [long_task, *(asyncio.create_task(c) for c in (
            self._open_gate(gate), self._churn(churn_edges), self._flood(),
            *(self._downloader(i) for i in range(self.cfg["downloaders"])),
            *(self._ws_never_hello(i) for i in range(self.cfg["slow_ws"])),
            *(self._slow_reader(i) for i in range(self.cfg["slow_readers"])),
            *(self._unfinished_request(i) for i in range(self.cfg["slow_requests"])),
        ))]
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self.stop.wait(), self.cfg["max_seconds"])
        self.stop.set()
        _, pending = await asyncio.wait(tasks, timeout=15)
        for t in pending:
            t.cancel()
        await asyncio.gather(*pending, return_exceptions=True)
        return {
            "t0": self.t0, "wall_s": self.now(), "long": self.long, "kills": self.kills,
            "floods": {k: dict(v) for k, v in self.floods.items()},
            "flood_attempts": sum(sum(v.values()) for v in self.floods.values()),
            "downloads": self.downloads, "download_errors": self.download_errors[:20],
            "slow": self.slow, "edges": self.edge_results,
        }

    # ------------------------------------------------------------------ edges
    def _edges(self, session: str, realtime: bool, audio_seconds: float):
        import numpy as np
        import soundfile as sf
        import torch

        from edge_client.client import EdgeClient, EdgeConfig
        from edge_client.encoder import PrecomputedEncoder
        from shared.codec import Codec

        torch.set_num_threads(1)
        codec = Codec.load(self.cfg["checkpoint"])
        data, _ = sf.read(self.cfg["room"], dtype="float32", always_2d=True)
        n = int(audio_seconds * codec.sample_rate)
        reps = -(-n // data.shape[0])  # the room repeated to the length asked for
        mics = torch.from_numpy(np.ascontiguousarray(np.tile(data.T, (1, reps))[:, :n]))
        outer = self

        class KillableEdge(EdgeClient):
            """An edge whose current websocket the load test can abort."""

            ws: Any = None
            gate: asyncio.Event | None = None  # the long session waits here before chunk hold_at
            hold_at = 0

            async def _next_allocation(self, reader: asyncio.Task) -> Any:
                alloc = await super()._next_allocation(reader)
                if alloc is not None and self.gate is not None and self.next_seq >= self.hold_at:
                    await self.gate.wait()
                return alloc

            async def _connection(self, ws: Any) -> None:
                self.ws = ws
                try:
                    await super()._connection(ws)
                finally:
                    self.ws = None

            def kill(self) -> bool:
                if self.ws is None or self.done:
                    return False
                self.ws.transport.abort()
                outer.kills += 1
                return True

        return [KillableEdge(EdgeConfig(self.url, session, s, self.cfg["token"], realtime=realtime,
                                        retry_for_s=30), codec, PrecomputedEncoder(codec, s, mics[g]))
                for s, g in enumerate(codec.mic_groups)]

    async def _open_gate(self, gate: asyncio.Event) -> None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self.stop.wait(), self.cfg["long_finish_at_s"])
        self.long["tail_started_at_s"] = self.now()
        gate.set()

    async def _long_session(self, edges: list) -> None:
        results = await asyncio.gather(*(e.run() for e in edges), return_exceptions=True)
        self.long["edges_done_at_s"] = self.now()
        self.edge_results["long"] = [r if isinstance(r, str) else "ok" if isinstance(r, dict) else repr(r)
                                     for r in results]
        async with httpx.AsyncClient(base_url=self.base, headers=self.auth, timeout=30) as client:
            while not self.stop.is_set():
                s = (await client.get("/sessions/long")).json()
                if s["state"] == "finished":
                    self.long["finished_at_s"] = self.now()
                    self.long_finished.set()
                    self.long["summary"] = {k: s.get(k) for k in ("steps", "late_chunks", "missing_chunks",
                                                              "recorded_samples")}
                    return
                await asyncio.sleep(0.2)

    async def _churn(self, edges: list) -> None:
        runs = [asyncio.create_task(e.run()) for e in edges]
        while not all(r.done() for r in runs) and not self.stop.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.stop.wait(), self.cfg["kill_every_s"])
            alive = [e for e, r in zip(edges, runs) if not r.done() and e.ws is not None]
            if alive and not self.stop.is_set():
                random.choice(alive).kill()
        results = await asyncio.gather(*runs, return_exceptions=True)
        self.edge_results["churn"] = ["ok" if isinstance(r, dict) else repr(r) for r in results]

    # ------------------------------------------------------------------ downloads
    async def _downloader(self, i: int) -> None:
        sessions = ["long", *self.cfg["realtime_sessions"]]
        async with httpx.AsyncClient(base_url=self.base, headers=self.auth, timeout=60) as client:
            k = 0
            while not self.stop.is_set():
                sid = "long" if k % 2 == 0 else sessions[1 + (k // 2 + i) % (len(sessions) - 1)]
                k += 1
                t0 = time.time()
                try:
                    async with client.stream("GET", f"/sessions/{sid}/audio") as r:
                        size = 0
                        async for piece in r.aiter_raw():
                            size += len(piece)
                    length = int(r.headers.get("content-length", -1))
                    self.downloads.append({"session": sid, "status": r.status_code, "bytes": size,
                                           "content_length": length, "seconds": time.time() - t0,
                                           "at_s": self.now()})
                    if r.status_code != 200 or size != length:
                        self.download_errors.append(f"{sid}: {r.status_code}, {size} of {length} bytes")
                except httpx.HTTPError as exc:
                    self.download_errors.append(f"{sid}: {type(exc).__name__}: {exc}"[:200])
                    await asyncio.sleep(0.5)
                await asyncio.sleep(self.cfg["download_pause_s"])

    # ------------------------------------------------------------------ floods
    async def _flood(self) -> None:
        async with httpx.AsyncClient(base_url=self.base, timeout=10) as client:
            ready = (await client.get("/readyz")).json()
            sha = ready["sha256"]
            k = 0
            while not self.stop.is_set():
                kind = FLOODS[k % len(FLOODS)]
                k += 1
                try:
                    outcome = await asyncio.wait_for(self._one_flood(kind, client, sha), 10)
                except (TimeoutError, OSError, websockets.exceptions.WebSocketException) as exc:
                    outcome = f"client error: {type(exc).__name__}"
                self.floods[kind][outcome] += 1
                await asyncio.sleep(1.0 / self.cfg["flood_rate"])

    async def _one_flood(self, kind: str, client: httpx.AsyncClient, sha: str) -> str:
        if kind == "rest_bad_admin":
            r = await client.post("/sessions", json={"id": "x", "token": "y"},
                                  headers={"Authorization": "Bearer wrong"})
            return f"http {r.status_code}"
        if kind == "rest_bad_query":
            r = await client.get(f"/sessions/{self.cfg['realtime_sessions'][0]}/stats",
                                 params={"since": -1}, headers=self.auth)
            return f"http {r.status_code}"
        hello = dict(session=self.cfg["realtime_sessions"][0], source=0, token="wrong", sample_rate=16000,
                     model_hash=sha)
        frames: dict[str, bytes | str] = {
            "garbage": os.urandom(64),
            "text": "hello?",
            "bad_token": P.encode(P.Hello(**hello)),
            "unknown_session": P.encode(P.Hello(**{**hello, "session": "no-such-session"})),
            "chunk_first": P.encode(P.Chunk(seq=0, capture_time=time.time(), k=0, k_allocated=0,
                                            alloc_step=0, quant_step=1.0, payload=b"", crc=0)),
            "oversize": b"\x00" * (P.MAX_FRAME_BYTES + 1),
        }
        async with websockets.connect(self.url, open_timeout=5, ping_interval=None, compression=None,
                                      max_size=1 << 20) as ws:
            await ws.send(frames[kind])
            try:
                reply = P.decode(await ws.recv(), 1 << 20)
                code = reply.code if isinstance(reply, P.Error) else reply.type
            except websockets.exceptions.ConnectionClosed as exc:
                return f"closed {exc.rcvd.code if exc.rcvd else 'without close frame'}"
            with contextlib.suppress(websockets.exceptions.ConnectionClosed):
                await asyncio.wait_for(ws.recv(), 5)
            return f"error {code}, closed {ws.close_code}"

    # ------------------------------------------------------------------ slow clients
    async def _ws_never_hello(self, i: int) -> None:
        entry: dict[str, Any] = {"opened_at_s": None, "closed_by_receiver_after_s": None}
        self.slow["ws_never_hello"].append(entry)
        try:
            async with websockets.connect(self.url, open_timeout=10, ping_interval=None) as ws:
                entry["opened_at_s"] = self.now()
                t0 = time.time()
                closed = asyncio.create_task(ws.wait_closed())
                await asyncio.wait([closed, asyncio.create_task(self.stop.wait())],
                                   return_when=asyncio.FIRST_COMPLETED)
                if closed.done():
                    entry["closed_by_receiver_after_s"] = time.time() - t0
                    entry["close_code"] = ws.close_code
                closed.cancel()
        except (OSError, TimeoutError, websockets.exceptions.WebSocketException) as exc:
            entry["error"] = f"{type(exc).__name__}: {exc}"[:200]

    async def _slow_reader(self, i: int) -> None:
        entry: dict[str, Any] = {"bytes": 0, "ended": None}
        self.slow["slow_readers"].append(entry)
        # the whole recording of the finished long session, read at slow_read_bps
        await asyncio.wait([asyncio.create_task(self.long_finished.wait()),
                            asyncio.create_task(self.stop.wait())], return_when=asyncio.FIRST_COMPLETED)
        if self.stop.is_set():
            entry["ended"] = "the long session did not finish"
            return
        host, port = self.base.removeprefix("http://").split(":")
        try:
            reader, writer = await asyncio.open_connection(host, int(port))
        except OSError as exc:
            entry["ended"] = f"connect failed: {exc}"
            return
        writer.transport.set_write_buffer_limits(0)
        # a small receive buffer, so that the receiver's socket fills and its flow control acts
        sock = writer.get_extra_info("socket")
        if sock is not None:
            import socket

            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 16384)
        writer.write(f"GET /sessions/long/audio HTTP/1.1\r\nHost: {host}\r\n"
                     f"Authorization: {self.auth['Authorization']}\r\n\r\n".encode())
        piece = max(1, int(self.cfg["slow_read_bps"] / 4))
        try:
            while not self.stop.is_set():
                data = await reader.read(piece)
                if not data:
                    entry["ended"] = "closed by the receiver"
                    break
                entry["bytes"] += len(data)
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self.stop.wait(), 0.25)
            entry["ended"] = entry["ended"] or "stopped by the load test"
        except OSError as exc:
            entry["ended"] = f"{type(exc).__name__}: {exc}"[:200]
        finally:
            writer.close()

    async def _unfinished_request(self, i: int) -> None:
        entry: dict[str, Any] = {"ended": None}
        self.slow["unfinished_requests"].append(entry)
        host, port = self.base.removeprefix("http://").split(":")
        try:
            reader, writer = await asyncio.open_connection(host, int(port))
            writer.write(f"GET /sessions HTTP/1.1\r\nHost: {host}\r\n".encode())  # never the blank line
            t0 = time.time()
            read = asyncio.create_task(reader.read())
            await asyncio.wait([read, asyncio.create_task(self.stop.wait())],
                               return_when=asyncio.FIRST_COMPLETED)
            entry["ended"] = f"closed by the receiver after {time.time() - t0:.1f} s" if read.done() \
                else "stopped by the load test"
            read.cancel()
            writer.close()
        except OSError as exc:
            entry["ended"] = f"{type(exc).__name__}: {exc}"[:200]


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    cfg = json.loads(Path(argv[0]).read_text())
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    result = asyncio.run(Clients(cfg).run())
    Path(cfg["result"]).write_text(json.dumps(result, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
