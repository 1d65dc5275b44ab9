"""The edge websocket endpoint: a thin shell around :mod:`shared.protocol` and sessions.

Every bad frame gets an :class:`~shared.protocol.Error` frame and the close code of
``shared.protocol.ERROR_CLOSE_CODES``; it only ever affects its own connection. A connection
over the receiver's limits (:mod:`server.limits`) is refused with ``too_many_connections``
(1013); one that sends no hello within ``hello_timeout_s`` with ``hello_timeout`` (1008).
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import logging

from fastapi import APIRouter, WebSocket
from starlette.websockets import WebSocketDisconnect, WebSocketState

from server.session import EdgeLink, Session
from shared import protocol as P

log = logging.getLogger(__name__)
router = APIRouter()


class _Disconnected(Exception):
    pass


async def _receive(ws: WebSocket, max_bytes: int):
    """The next message, validated, and its frame size. Raises ProtocolError or _Disconnected."""
    msg = await ws.receive()
    if msg["type"] == "websocket.disconnect":
        raise _Disconnected()
    data = msg.get("bytes")
    if data is None:
        raise P.ProtocolError("malformed", "text frames are not accepted; send binary msgpack")
    return P.decode(data, max_bytes, accept=P.EDGE_MESSAGE_TYPES), len(data)


async def _writer(ws: WebSocket, link: EdgeLink) -> None:
    """Drain the link's outbox into the socket; a (code, reason) item closes it."""
    while True:
        item = await link.outbox.get()
        if isinstance(item, tuple):
            with contextlib.suppress(Exception):
                await ws.close(code=item[0], reason=item[1][:120])
            return
        try:
            await ws.send_bytes(item)
        except Exception:
            return


async def _refuse(ws: WebSocket, err: P.ProtocolError) -> None:
    """Tell a connection why it is refused (error frame), then close it."""
    with contextlib.suppress(Exception):
        await ws.send_bytes(err.to_frame())
        await ws.close(code=err.close_code, reason=err.code)


@router.websocket("/ws")
async def edge_socket(ws: WebSocket) -> None:
    app = ws.app
    if not getattr(app.state, "ready", False):
        await ws.close(code=P.CLOSE_GOING_AWAY, reason="receiver not ready")
        return
    host = ws.client.host if ws.client else "?"
    refusal = app.state.limits.acquire(host)
    await ws.accept()
    if refusal is not None:
        app.state.metrics.errors.labels("too_many_connections").inc()
        log.warning("refused a websocket from %s: %s", host, refusal)
        await _refuse(ws, P.ProtocolError("too_many_connections", refusal))
        return
    try:
        await _serve_edge(ws)
    finally:
        app.state.limits.release(host)


async def _serve_edge(ws: WebSocket) -> None:
    app = ws.app
    manager, metrics = app.state.manager, app.state.metrics
    max_bytes = app.state.settings.max_frame_bytes
    hello_timeout = app.state.settings.hello_timeout_s
    link = EdgeLink(-1)
    writer = asyncio.create_task(_writer(ws, link))
    session: Session | None = None
    peer = f"{ws.client.host}:{ws.client.port}" if ws.client else "?"
    try:
        try:
            hello, _ = await asyncio.wait_for(_receive(ws, max_bytes), hello_timeout)
        except TimeoutError:
            raise P.ProtocolError("hello_timeout", f"no hello within {hello_timeout:g} s of connecting; "
                                  "send hello as the first frame") from None
        if not isinstance(hello, P.Hello):
            raise P.ProtocolError("unexpected_message", f"expected hello first, got {hello.type}")
        found = manager.get(hello.session)
        if found is None:
            raise P.ProtocolError("unknown_session", f"no session {hello.session!r} on this receiver")
        if not hello.token or not hmac.compare_digest(hello.token.encode(), found.cfg.token.encode()):
            log.warning("refused %s for session %s source %d: %s token", peer, hello.session,
                        hello.source, "missing" if not hello.token else "wrong")
            raise P.ProtocolError("unauthorized", "missing or wrong session token")
        codec = app.state.codec
        if hello.model_hash != codec.sha256:
            raise P.ProtocolError(
                "model_mismatch",
                f"edge model {hello.model_hash[:12]!r} differs from the receiver's {codec.sha256[:12]!r}",
            )
        if hello.sample_rate != codec.sample_rate:
            raise P.ProtocolError(
                "config_mismatch", f"sample rate {hello.sample_rate} Hz, the codec needs {codec.sample_rate}"
            )
        link.source = hello.source
        found.attach(hello, link)
        session = found
        while True:
            msg, size = await _receive(ws, max_bytes)
            if isinstance(msg, P.Chunk):
                session.on_chunk(hello.source, msg, size)
            elif isinstance(msg, P.Bye):
                session.on_bye(hello.source)
                link.close(P.CLOSE_NORMAL, "bye")
                break
            else:
                raise P.ProtocolError("unexpected_message", f"{msg.type} is not valid after hello")
    except P.ProtocolError as err:
        metrics.errors.labels(err.code).inc()
        log.info("closing %s (%s): %s", peer, err.code, err.message)
        link.send(P.Error(code=err.code, message=err.message, fatal=True))
        link.close(err.close_code, err.code)
    except (_Disconnected, WebSocketDisconnect):
        link.close(P.CLOSE_NORMAL, "")
    except Exception:
        log.exception("edge connection %s failed", peer)
        link.send(P.Error(code="internal", message="internal error", fatal=True))
        link.close(P.CLOSE_INTERNAL, "internal")
    finally:
        if session is not None:
            session.detach(link.source, link)
        link.closing = True
        if link.outbox.empty() and not writer.done():
            link.outbox.put_nowait((P.CLOSE_NORMAL, ""))
        with contextlib.suppress(Exception):
            await asyncio.wait_for(writer, 5.0)
        if ws.application_state != WebSocketState.DISCONNECTED:
            with contextlib.suppress(Exception):
                await ws.close()
