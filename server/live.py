"""The live view: a web page of the receiver's sessions, updated as steps are decoded.

Routes (see ``docs/live.md``):

- ``GET /ui`` (and ``GET /``, a redirect): the page; ``GET /ui/assets/{name}`` its script and
  style; ``GET /ui/plotly.min.js``: plotly.js as the installed ``plotly`` Python package ships
  it (no network at run time, nothing third-party in the repository). These hold no data and
  need no token.
- ``WS /ui/live``: JSON text frames pushed by the receiver: the list of sessions (at most once
  a second, when it changed) and, for the session the page watches, every decoded step and a
  summary, at most every ``interval`` seconds (default 0.25: a few updates per second, steps
  batched in between, nothing sent while nothing changes).
- ``GET /ui/sessions``: the same list as JSON; ``GET /ui/sessions/{id}/recent.wav``: the last
  seconds of the session's decoded (or enhanced) output, for the page's player.

Every data route needs a token, as ``Authorization: Bearer TOKEN`` or ``?token=TOKEN`` (a
browser cannot set headers on a websocket or an ``<audio>`` source): the admin token
(``NDPCA_ADMIN_TOKEN``) opens every session, a session's own token (the one its edges present)
opens the sessions that have that token (the rules are :mod:`server.auth`).

Sessions publish through two small hooks in :class:`server.session.Session`: ``watchers``
(events set when a step is decoded or the state changes; empty unless a page watches) and
``tail`` (the newest ``TAIL_SECONDS`` of output while the session runs; a finished session's
player reads the end of its recording on disk).
"""

from __future__ import annotations

import asyncio
import contextlib
import gzip
import importlib.metadata
import importlib.util
import io
import json
import logging
import math
from pathlib import Path
from typing import Annotated, Any

import numpy as np
import soundfile as sf
from fastapi import APIRouter, HTTPException, Query, Request, WebSocket
from fastapi.responses import FileResponse, RedirectResponse, Response
from starlette.websockets import WebSocketDisconnect

from server.auth import Viewer, authorise, given_token
from server.manager import SessionManager
from server.session import TAIL_SECONDS, Session
from shared.streaming import percentiles

log = logging.getLogger(__name__)
router = APIRouter(tags=["live view"])

STATIC = Path(__file__).resolve().parent / "static"
ASSETS = {"live.js": "text/javascript", "live.css": "text/css"}
#: most steps a page receives when it starts watching a session (about 2 min at T = 32 ms)
HISTORY = 4096
#: the session list is re-sent at most this often (and only when it changed)
LIST_INTERVAL_S = 1.0
#: the per-step fields a page gets (plus the session's quality scores)
STEP_KEYS = ("step", "t", "capacity_bps", "budget_coefficients", "budget_bits", "allocation",
             "bits_allocated", "bits_received", "bits_total", "k_received", "missing", "late",
             "closed_by", "decode_ms", "e2e_ms")
CLOSE_POLICY, CLOSE_TRY_AGAIN = 1008, 1013


# --------------------------------------------------------------------------- authorisation


def _manager(request: Request) -> SessionManager:
    manager = getattr(request.app.state, "manager", None)
    if manager is None:
        raise HTTPException(503, "receiver not ready: the model is still loading")
    return manager


def require_viewer(request: Request) -> Viewer:
    _manager(request)
    viewer = authorise(request.app, given_token(request.headers, request.query_params))
    if viewer is None:
        raise HTTPException(401, "missing or wrong token: pass a session token or the admin token "
                            "as 'Authorization: Bearer TOKEN' or '?token=TOKEN'",
                            headers={"WWW-Authenticate": "Bearer"})
    return viewer


def visible_session(request: Request, session_id: str) -> Session:
    viewer = require_viewer(request)
    session = _manager(request).get(session_id)
    if session is None:
        raise HTTPException(404, f"no session {session_id!r}")
    if not viewer.sees(session):
        raise HTTPException(403, f"this token does not open session {session_id!r}")
    return session


# --------------------------------------------------------------------------- what a page gets


def _finite(value: Any) -> Any:
    """JSON for a browser: NaN and infinities become null, recursively."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_finite(v) for v in value]
    return value


def dumps(message: dict[str, Any]) -> str:
    try:
        return json.dumps(message, separators=(",", ":"), allow_nan=False)
    except ValueError:
        return json.dumps(_finite(message), separators=(",", ":"), allow_nan=False)


def cell_of(session: Session) -> str | None:
    """The cell a session (room) belongs to; None until rooms can share a cell."""
    cell = getattr(session, "cell", None)
    return getattr(cell, "id", cell)


def session_card(s: Session) -> dict[str, Any]:
    """One line of the session list."""
    return {"id": s.id, "state": s.state, "mode": s.cfg.mode, "cell": cell_of(s),
            "steps": len(s.steps), "connected": sorted(s.links), "expected": sorted(s.expected),
            "late_chunks": s.late, "missing_chunks": s.missing, "created": s.created}


def session_list(manager: SessionManager, viewer: Viewer) -> dict[str, Any]:
    """The sessions a viewer sees, and their cells (none yet: every card's ``cell`` is null)."""
    cards = [session_card(s) for s in manager.sessions.values() if viewer.sees(s)]
    cells: dict[str, list[str]] = {}
    for card in cards:
        if card["cell"] is not None:
            cells.setdefault(card["cell"], []).append(card["id"])
    return {"type": "sessions", "sessions": cards,
            "cells": [{"id": c, "sessions": ids} for c, ids in cells.items()]}


def session_header(s: Session) -> dict[str, Any]:
    """What does not change while a session runs: configuration, rate, codec, channel."""
    codec, rate = s.codec, s.codec.rate
    sr = codec.sample_rate
    return {
        "id": s.id, "config": s.cfg.public(), "mode": s.cfg.mode, "cell": cell_of(s),
        "period_s": s.period, "n_sources": s.n_sources, "sources": sorted(s.expected),
        "vectors_per_step": codec.cfg.vectors_per_step, "latent_sizes": list(codec.latent_sizes),
        "sample_rate": sr, "arch": codec.cfg.arch, "sha256": codec.sha256,
        "rate": {"sigma2": rate.sigma2, "distortion": rate.distortion, "eta": rate.eta,
                 "bits_per_coefficient": rate.bits_per_coefficient},
        "trace": s.trace_info,
        "lookahead_ms": 1e3 * s.lookahead / sr,
        "deadline_ms": 1e3 * (s.period + s.lookahead / sr + s.cfg.grace_s),
        "quality": list(s.references),
        "enhancer": getattr(s.decoder.enhancer, "name", "identity"),
        "out_channels": s.out_channels,
        "tail_seconds": TAIL_SECONDS,
    }


def step_view(entry: dict[str, Any], quality: list[str]) -> dict[str, Any]:
    view = {k: entry.get(k) for k in STEP_KEYS}
    for name in quality:
        view[name] = entry.get(name)
    return view


def live_summary(s: Session, recent: int) -> dict[str, Any]:
    """The summary a page shows; percentiles overall and over the ``recent`` newest steps.

    Unlike ``GET /sessions/{id}/stats`` it never loops over every step in Python (bits and
    steps within budget are summed by the stream as steps arrive)."""
    return {
        "state": s.state, "steps": len(s.steps), "first_step": s.first_step,
        "connected": sorted(s.links), "expected": sorted(s.expected),
        "late_chunks": s.late, "missing_chunks": s.missing, "duplicate_chunks": s.duplicates,
        "output_samples": s.samples_out,
        "e2e_ms": percentiles(s.e2e_ms), "decode_ms": percentiles(s.decode_ms),
        "e2e_ms_recent": percentiles(s.e2e_ms[-recent:]),
        "decode_ms_recent": percentiles(s.decode_ms[-recent:]),
        "quality": s.quality_summary(),
    }


def recent_audio(s: Session, seconds: float) -> np.ndarray:
    """The newest ``seconds`` of output ``[C, n]`` (at most ``TAIL_SECONDS``)."""
    want = int(seconds * s.codec.sample_rate)
    blocks, have = [], 0
    for block in reversed(s.tail):
        blocks.append(block)
        have += block.shape[-1]
        if have >= want:
            break
    if not blocks:
        return np.zeros((s.out_channels, 0), dtype=np.float32)
    return np.concatenate(blocks[::-1], axis=-1)[:, -want:]


# --------------------------------------------------------------------------- the live stream


#: error answers a page's bad requests queue at most between two refreshes
MAX_PENDING_ERRORS = 4

class LiveStream:
    """One page's websocket: pushes the session list and the watched session's steps."""

    def __init__(self, ws: WebSocket, manager: SessionManager, viewer: Viewer,
                 interval: float, watch: str | None) -> None:
        self.ws, self.manager, self.viewer, self.interval = ws, manager, viewer, interval
        self.event = asyncio.Event()
        self.want: str | None = watch  # the session the page asked for
        self.session: Session | None = None
        self.sent = 0  # entries of session.steps already sent
        self.late_seen = 0
        self.last_state: Any = None
        self.bits_total = self.within_budget = self.decoded = 0  # over the decoded steps sent
        self.list_text = ""
        self.list_at = -math.inf
        self.errors: list[dict[str, Any]] = []
        self.requests: list[str | None] = []  # watch requests, applied by _refresh
        self.messages = 0

    async def run(self) -> None:
        loop = asyncio.get_running_loop()
        reader = asyncio.create_task(self._read())
        try:
            await self._send({"type": "hello", "admin": self.viewer.admin, "interval_s": self.interval,
                              "list_interval_s": LIST_INTERVAL_S, "history": HISTORY})
            while not reader.done():
                self.event.clear()
                sent_at = loop.time()
                await self._refresh(sent_at)
                waiter = asyncio.create_task(self.event.wait())
                until_list = max(0.0, self.list_at + LIST_INTERVAL_S - loop.time())
                await asyncio.wait({waiter, reader}, timeout=until_list, return_when=asyncio.FIRST_COMPLETED)
                waiter.cancel()
                rest = sent_at + self.interval - loop.time()  # a few updates per second at most
                if rest > 0 and not reader.done():
                    await asyncio.wait({reader}, timeout=rest)
        except (WebSocketDisconnect, RuntimeError, OSError):
            pass  # the page went away (or the receiver is shutting down: close 1012)
        finally:
            reader.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await reader
            self._unwatch()

    async def _read(self) -> None:
        """Requests from the page: ``{"type": "watch", "session": ID or null}``."""
        while True:
            msg = await self.ws.receive()
            if msg["type"] == "websocket.disconnect":
                return
            try:
                req = json.loads(msg.get("text") or msg.get("bytes") or b"")
                if req.get("type") != "watch" or not isinstance(req.get("session"), str | None):
                    raise ValueError
            except (ValueError, AttributeError, RecursionError):  # not JSON, not a watch, nested too deep
                if len(self.errors) < MAX_PENDING_ERRORS:  # a flood is answered once per refresh, not queued
                    self.errors.append({"code": "bad_request", "message":
                                        'send {"type": "watch", "session": "<id>"} (or null)'})
            else:
                self.requests.append(req["session"])
            self.event.set()

    async def _send(self, message: dict[str, Any]) -> None:
        await self.ws.send_text(dumps(message))
        self.messages += 1

    async def _refresh(self, now: float) -> None:
        while self.errors:
            await self._send({"type": "error", **self.errors.pop(0)})
        if self.requests:  # a fresh start, even for the session already watched
            self._unwatch()
            self.session, self.want = None, self.requests[-1]
            self.requests.clear()
        if now - self.list_at >= LIST_INTERVAL_S:
            self.list_at = now
            text = dumps(session_list(self.manager, self.viewer))
            if text != self.list_text:
                self.list_text = text
                await self.ws.send_text(text)
                self.messages += 1
        if self.want is None:
            return
        current = self.manager.get(self.want)
        if self.session is not None and current is not self.session:
            await self._send({"type": "gone", "id": self.want})
            self._unwatch()
            self.session = None
            if current is None:
                self.want = None
                return
        if current is None or not self.viewer.sees(current):
            code = "unknown_session" if current is None else "forbidden"
            await self._send({"type": "error", "code": code, "session": self.want,
                              "message": f"no session {self.want!r}" if current is None
                              else f"this token does not open session {self.want!r}"})
            self.want = None
            return
        if self.session is None:
            await self._start(current)
        else:
            await self._update(current)

    def _unwatch(self) -> None:
        if self.session is not None:
            self.session.watchers.discard(self.event)

    def _decoded(self, s: Session) -> int:
        """How many leading entries of ``s.steps`` are decoded (steps decode in order)."""
        n = len(s.steps)
        if s.state == "finished":
            return n
        i = n
        while i > self.sent and s.steps[i - 1]["decode_ms"] is None:
            i -= 1
        return i

    def _count(self, steps: list[dict[str, Any]]) -> None:
        self.decoded += len(steps)
        for st in steps:
            self.bits_total += st["bits_total"]
            self.within_budget += st["bits_total"] <= st["budget_bits"]

    def _summary(self, s: Session) -> dict[str, Any]:
        recent = max(1, round(10.0 / s.period))  # the last 10 s
        return {**live_summary(s, recent), "steps_decoded": self.decoded,
                "bits_received": self.bits_total, "steps_within_budget": self.within_budget}

    def _late(self, s: Session) -> dict[str, list[int]]:
        """Late chunks per step (they arrive after a step closed, maybe after it was sent)."""
        return {str(n): list(e["late"]) for n, e in s.step_stats.items() if e["late"]}

    async def _start(self, s: Session) -> None:
        s.watchers.add(self.event)
        self.session = s
        self.bits_total = self.within_budget = self.decoded = 0
        n = self._decoded(s)
        self._count(s.steps[:n])
        quality = list(s.references)
        self.sent, self.late_seen = n, s.late
        self.last_state = (s.state, tuple(s.links))
        await self._send({"type": "session", "reset": True, "id": s.id, "header": session_header(s),
                          "first_index": max(0, n - HISTORY),
                          "steps": [step_view(e, quality) for e in s.steps[max(0, n - HISTORY):n]],
                          "late": self._late(s), "summary": self._summary(s)})

    async def _update(self, s: Session) -> None:
        n = self._decoded(s)
        state = (s.state, tuple(s.links))
        if n == self.sent and s.late == self.late_seen and state == self.last_state:
            return  # nothing new: send nothing
        new = s.steps[self.sent:n]
        self._count(new)
        quality = list(s.references)
        message = {"type": "session", "reset": False, "id": s.id,
                   "steps": [step_view(e, quality) for e in new], "summary": self._summary(s)}
        if s.late != self.late_seen:
            message["late"] = self._late(s)
        self.sent, self.late_seen, self.last_state = n, s.late, state
        await self._send(message)


@router.websocket("/ui/live")
async def live_socket(ws: WebSocket, interval: float = 0.25, session: str | None = None) -> None:
    """The page's live stream (token as ``?token=`` or ``Authorization: Bearer``)."""
    app = ws.app
    host = ws.client.host if ws.client else "?"
    refusal = app.state.limits.acquire(host)
    await ws.accept()
    if refusal is not None:
        await _refuse(ws, "too_many_connections", refusal, CLOSE_TRY_AGAIN)
        return
    try:
        await _live(ws, interval, session)
    finally:
        app.state.limits.release(host)


async def _live(ws: WebSocket, interval: float, session: str | None) -> None:
    app = ws.app
    manager = getattr(app.state, "manager", None)
    if manager is None or not getattr(app.state, "ready", False):
        await _refuse(ws, "not_ready", "the receiver is still loading its model", CLOSE_TRY_AGAIN)
        return
    viewer = authorise(app, given_token(ws.headers, ws.query_params))
    if viewer is None:
        await _refuse(ws, "unauthorized", "missing or wrong token: use a session token or the "
                      "admin token", CLOSE_POLICY)
        return
    stream = LiveStream(ws, manager, viewer, min(max(interval, 0.1), 5.0), session)
    await stream.run()


async def _refuse(ws: WebSocket, code: str, message: str, close: int) -> None:
    with contextlib.suppress(Exception):
        await ws.send_text(dumps({"type": "error", "code": code, "message": message, "fatal": True}))
        await ws.close(code=close, reason=message[:120])


# --------------------------------------------------------------------------- HTTP routes


@router.get("/", include_in_schema=False)
async def root() -> RedirectResponse:
    return RedirectResponse("/ui")


@router.get("/ui", response_class=FileResponse)
async def page() -> FileResponse:
    """The live view (the token goes in the URL fragment, ``/ui#token=...``, or a prompt)."""
    return FileResponse(STATIC / "live.html", media_type="text/html",
                        headers={"Cache-Control": "no-cache"})


@router.get("/ui/assets/{name}", include_in_schema=False)
async def asset(name: str) -> FileResponse:
    if name not in ASSETS:
        raise HTTPException(404, f"no asset {name!r}")
    return FileResponse(STATIC / name, media_type=ASSETS[name], headers={"Cache-Control": "no-cache"})


class _Plotly:
    """plotly.js from the installed ``plotly`` package, gzipped once in memory."""

    path: Path | None = None
    version = ""
    gz: bytes | None = None

    @classmethod
    def locate(cls) -> Path | None:
        if cls.path is None:
            spec = importlib.util.find_spec("plotly")
            if spec is None or not spec.submodule_search_locations:
                return None
            path = Path(next(iter(spec.submodule_search_locations))) / "package_data" / "plotly.min.js"
            if not path.is_file():
                return None
            cls.path, cls.version = path, importlib.metadata.version("plotly")
        return cls.path


@router.get("/ui/plotly.min.js", include_in_schema=False)
async def plotly_js(request: Request) -> Response:
    path = _Plotly.locate()
    if path is None:
        raise HTTPException(404, "plotly.js is not installed: pip install plotly (a dependency "
                            "of ndpca-speech); the page works without charts")
    headers = {"Cache-Control": "public, max-age=86400", "X-Plotly-Package": _Plotly.version}
    if "gzip" not in request.headers.get("accept-encoding", ""):
        return FileResponse(path, media_type="text/javascript", headers=headers)
    if _Plotly.gz is None:
        _Plotly.gz = await asyncio.to_thread(lambda: gzip.compress(path.read_bytes(), 6))
    return Response(_Plotly.gz, media_type="text/javascript",
                    headers={**headers, "Content-Encoding": "gzip", "Vary": "Accept-Encoding"})


@router.get("/ui/sessions")
async def visible_sessions(request: Request) -> dict[str, Any]:
    """The sessions this token opens (the admin token: all), with their state, and their cells."""
    viewer = require_viewer(request)
    out = session_list(_manager(request), viewer)
    out.pop("type")
    return out


@router.get("/ui/sessions/{session_id}/recent.wav", response_class=Response)
async def recent_wav(request: Request, session_id: str,
                     seconds: Annotated[float, Query(gt=0, le=TAIL_SECONDS)] = 10.0,
                     channel: Annotated[int | None, Query(ge=0)] = None) -> Response:
    """The newest ``seconds`` of decoded (or enhanced) output as 16-bit WAV; ``channel`` picks
    one output channel (a microphone, or 0 for enhanced speech), default all."""
    s = visible_session(request, session_id)
    if s.state == "finished" and s.recording is not None:  # its tail was released: from disk
        audio = await s.recording.read_tail(int(seconds * s.codec.sample_rate))
    else:
        audio = recent_audio(s, seconds)
    if channel is not None:
        if channel >= audio.shape[0]:
            raise HTTPException(422, f"channel {channel} out of range: the output has {audio.shape[0]}")
        audio = audio[channel:channel + 1]
    buf = io.BytesIO()
    sf.write(buf, np.clip(audio.T, -1.0, 1.0), s.codec.sample_rate, format="WAV", subtype="PCM_16")
    return Response(buf.getvalue(), media_type="audio/wav", headers={"Cache-Control": "no-store"})
