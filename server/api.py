"""REST routes: health, readiness, sessions and their statistics, decoded audio, metrics."""

from __future__ import annotations

import hmac
import io
from typing import Annotated, Any

import soundfile as sf
from fastapi import APIRouter, Depends, Header, HTTPException, Query, Request, Response
from pydantic import ValidationError

from server.manager import SessionManager
from server.session import Session
from server.settings import SessionConfig
from shared.errors import UserError

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


async def get_session(session_id: str, manager: Manager) -> Session:
    session = manager.get(session_id)
    if session is None:
        raise HTTPException(404, f"no session {session_id!r}")
    return session


SessionDep = Annotated[Session, Depends(get_session)]


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
async def list_sessions(manager: Manager) -> list[dict[str, Any]]:
    """Every session with its state and a summary of its statistics."""
    return [s.summary() for s in manager.sessions.values()]


@sessions.post("", status_code=201, dependencies=[Depends(require_admin)])
async def create_session(body: dict[str, Any], manager: Manager) -> dict[str, Any]:
    """Create a session (admin token as ``Authorization: Bearer``)."""
    try:
        cfg = SessionConfig(**body)
    except ValidationError as exc:
        raise HTTPException(422, exc.errors(include_url=False, include_context=False, include_input=False)) from None
    try:
        session = manager.create(cfg)
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
    """The decoded audio recorded so far, as a float WAV with one channel per microphone."""
    buf = io.BytesIO()
    sf.write(buf, session.audio().T, session.codec.sample_rate, format="WAV", subtype="FLOAT")
    return Response(buf.getvalue(), media_type="audio/wav")


@cells.get("")
async def list_cells(manager: Manager) -> list[dict[str, Any]]:
    """Every cell: name, split rule, member rooms, capacity now."""
    return [c.summary() for c in manager.cells.values()]


@cells.get("/{name}/stats")
async def cell_stats(name: str, manager: Manager, since: Annotated[int, Query(ge=0)] = 0) -> dict[str, Any]:
    """Per cell step: capacity, budget, each room's allocation and bits received, fit in C_t T."""
    cell = manager.cells.get(name)
    if cell is None:
        raise HTTPException(404, f"no cell {name!r}")
    return cell.stats(since)


@metrics.get("/metrics", response_class=Response)
async def prometheus(request: Request) -> Response:
    """Prometheus exposition format."""
    from prometheus_client import CONTENT_TYPE_LATEST

    return Response(request.app.state.metrics.render(), media_type=CONTENT_TYPE_LATEST)
