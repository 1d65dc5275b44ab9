"""REST routes: health, readiness, sessions and their statistics, decoded audio, metrics.

``/healthz``, ``/readyz``, ``/metrics`` and the OpenAPI docs are open. Every route that reveals
a session needs ``Authorization: Bearer TOKEN`` with the session's token or the admin token
(:mod:`server.auth`); creating and deleting sessions needs the admin token.
"""

from __future__ import annotations

import hmac
import logging
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Header, HTTPException, Query, Request, Response
from fastapi.responses import StreamingResponse
from pydantic import ValidationError

from server.auth import Viewer, authorise, bearer_token
from server.cell import Cell
from server.manager import SessionManager, UnreadableFile
from server.recording import wav_header
from server.session import Session
from server.settings import SessionConfig, check_admin_paths
from shared.errors import UserError

log = logging.getLogger(__name__)
health = APIRouter(tags=["health"])
sessions = APIRouter(prefix="/sessions", tags=["sessions"])
metrics = APIRouter(tags=["metrics"])
cells = APIRouter(prefix="/cells", tags=["cells"])


async def get_manager(request: Request) -> SessionManager:
    manager = getattr(request.app.state, "manager", None)
    if manager is None:
        raise HTTPException(503, "receiver not ready: the model is still loading")
    return manager


Manager = Annotated[SessionManager, Depends(get_manager)]


async def get_viewer(request: Request, manager: Manager) -> Viewer:
    """Who the request's ``Authorization: Bearer`` token makes; 401 when it opens nothing."""
    viewer = authorise(request.app, bearer_token(request.headers))
    if viewer is None:
        raise HTTPException(401, "missing or wrong token: send the session's token or the admin token "
                            "as 'Authorization: Bearer TOKEN'", headers={"WWW-Authenticate": "Bearer"})
    return viewer


ViewerDep = Annotated[Viewer, Depends(get_viewer)]


async def get_session(session_id: str, manager: Manager, viewer: ViewerDep) -> Session:
    session = manager.get(session_id)
    if session is None:
        raise HTTPException(404, f"no session {session_id!r}")
    if not viewer.sees(session):
        raise HTTPException(403, f"this token does not open session {session_id!r}; use its token "
                            "or the admin token")
    return session


SessionDep = Annotated[Session, Depends(get_session)]


def _cell_visible(cell: Cell, manager: SessionManager, viewer: Viewer) -> bool:
    """A cell is open to the admin, and to a token that opens every room it has had."""
    rooms = [manager.get(name) for name in cell.rooms]
    return viewer.admin or (all(s is not None for s in rooms) and viewer.sees_all(rooms))  # type: ignore[arg-type]


async def require_admin(request: Request, authorization: Annotated[str | None, Header()] = None) -> None:
    expected = request.app.state.settings.admin_token
    if not expected:
        raise HTTPException(403, "session management over REST is disabled: set NDPCA_ADMIN_TOKEN")
    given = (authorization or "").removeprefix("Bearer ").strip()
    if not given or not hmac.compare_digest(given.encode(), expected.encode()):
        raise HTTPException(401, "missing or wrong admin token", headers={"WWW-Authenticate": "Bearer"})


@health.get("/healthz")
async def healthz() -> dict[str, str]:
    """Liveness: the process answers."""
    return {"status": "ok"}


@health.get("/readyz")
async def readyz(request: Request, response: Response) -> dict[str, Any]:
    """Readiness: the model is loaded and the decoder runs."""
    state = request.app.state
    if not getattr(state, "ready", False):
        response.status_code = 503
        return {"ready": False}
    codec = state.codec
    return {"ready": True, "arch": codec.cfg.arch, "sha256": codec.sha256,
            "device": str(codec.device), "enhancer": state.enhancer.name,
            "enhancement": state.enhancer.describe() if hasattr(state.enhancer, "describe") else {},
            "sessions": len(state.manager.sessions)}


@sessions.get("")
async def list_sessions(manager: Manager, viewer: ViewerDep) -> list[dict[str, Any]]:
    """The sessions this token opens (the admin token: all), with a summary of their statistics."""
    return [s.summary() for s in manager.sessions.values() if viewer.sees(s)]


@sessions.post("", status_code=201, dependencies=[Depends(require_admin)])
async def create_session(body: dict[str, Any], manager: Manager, request: Request) -> dict[str, Any]:
    """Create a session (admin token as ``Authorization: Bearer``).

    Files it names must lie in the receiver's ``trace_dirs`` and ``reference_dirs``; errors
    say what is wrong without quoting the files."""
    try:
        cfg = SessionConfig(**body)
    except ValidationError as exc:
        raise HTTPException(422, exc.errors(include_url=False, include_context=False, include_input=False)) from None
    try:
        cfg = check_admin_paths(cfg, request.app.state.settings)
        session = manager.create(cfg)
    except UnreadableFile as exc:
        log.warning("POST /sessions %s refused: %s", cfg.id, exc)
        raise HTTPException(422, exc.public) from None
    except UserError as exc:
        raise HTTPException(409 if "already exists" in str(exc) else 422, str(exc)) from None
    return {"id": session.id, "config": cfg.public()}


@sessions.delete("/{session_id}", status_code=204, dependencies=[Depends(require_admin)])
async def delete_session(session_id: str, manager: Manager) -> Response:
    """Stop a session (its edges are closed with 1001) and forget it (admin token)."""
    if not await manager.remove(session_id):
        raise HTTPException(404, f"no session {session_id!r}")
    return Response(status_code=204)


@sessions.get("/{session_id}")
async def session_summary(session: SessionDep) -> dict[str, Any]:
    return {"config": session.cfg.public(), **session.summary()}


@sessions.get("/{session_id}/stats")
async def session_stats(session: SessionDep, since: Annotated[int, Query(ge=0)] = 0) -> dict[str, Any]:
    """Per-step statistics (from step entry ``since`` on) and the session summary."""
    return session.stats(since)


@sessions.get("/{session_id}/audio", response_class=Response)
async def session_audio(session: SessionDep) -> Response:
    """The decoded audio recorded so far, as a float WAV with one channel per microphone,
    streamed from the session's recording on disk (server/recording.py)."""
    rec = session.recording
    if rec is None or not rec.started:  # nothing decoded yet: an empty WAV
        return Response(wav_header(0, session.out_channels, session.codec.sample_rate), media_type="audio/wav")
    frames = await rec.sync()
    return StreamingResponse(rec.wav_chunks(frames), media_type="audio/wav",
                             headers={"Content-Length": str(rec.wav_bytes(frames))})


@cells.get("")
async def list_cells(manager: Manager, viewer: ViewerDep) -> list[dict[str, Any]]:
    """The cells this token opens (all of their rooms): name, split rule, rooms, capacity now."""
    return [c.summary() for c in manager.cells.values() if _cell_visible(c, manager, viewer)]


@cells.get("/{name}/stats")
async def cell_stats(name: str, manager: Manager, viewer: ViewerDep,
                     since: Annotated[int, Query(ge=0)] = 0) -> dict[str, Any]:
    """Per cell step: capacity, budget, each room's allocation and bits received, fit in C_t T."""
    cell = manager.cells.get(name)
    if cell is None:
        raise HTTPException(404, f"no cell {name!r}")
    if not _cell_visible(cell, manager, viewer):
        raise HTTPException(403, f"this token does not open every room of cell {name!r}; use the "
                            "admin token")
    return cell.stats(since)


@metrics.get("/metrics", response_class=Response)
async def prometheus(request: Request) -> Response:
    """Prometheus exposition format."""
    from prometheus_client import CONTENT_TYPE_LATEST

    return Response(request.app.state.metrics.render(), media_type=CONTENT_TYPE_LATEST)
