"""How the receiver is served: uvicorn with bounded HTTP connections.

uvicorn closes idle keep-alive connections (``timeout_keep_alive``) and answers 503 beyond
``limit_concurrency``, but it keeps a connection whose request headers never finish for as
long as the client wants, so a few slow clients could hold every slot. :func:`guarded_h11`
adds that missing deadline: a connection whose next request's headers have not arrived within
``http_header_timeout_s`` (counted from the connection, or from the first bytes of a next
request on a kept-alive connection) is closed. Websocket limits (hello timeout, connections per address) are in
:mod:`server.limits`; ``docs/security.md`` has the whole list.
"""

from __future__ import annotations

import asyncio
from typing import Any

import uvicorn
from uvicorn.protocols.http.h11_impl import H11Protocol

from server.cli import WS_HARD_LIMIT
from server.settings import ReceiverSettings


def guarded_h11(header_timeout_s: float) -> type[H11Protocol]:
    """uvicorn's h11 protocol that closes a connection whose request headers are not complete
    within ``header_timeout_s`` seconds."""

    class GuardedH11Protocol(H11Protocol):
        _header_timer: asyncio.TimerHandle | None = None
        _armed_scope: Any = None

        def _arm(self) -> None:
            self._disarm()
            self._armed_scope = self.scope
            self._header_timer = self.loop.call_later(header_timeout_s, self._header_timeout)

        def _disarm(self) -> None:
            if self._header_timer is not None:
                self._header_timer.cancel()
                self._header_timer = None

        def _header_timeout(self) -> None:
            self._header_timer = None
            # a request whose headers arrived since arming has a new scope (websocket upgrades
            # too: the connection then belongs to the websocket protocol and its own limits)
            idle = self.cycle is None or self.cycle.response_complete
            if self.scope is self._armed_scope and idle and not self.transport.is_closing():
                self.logger.info("closing a connection from %s: no complete request headers "
                                 "within %g s", self.client and self.client[0], header_timeout_s)
                self.transport.close()

        def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
            super().connection_made(transport)
            self._arm()

        def data_received(self, data: bytes) -> None:
            # the first bytes of a next request on a kept-alive connection start its deadline
            idle = self.cycle is None or self.cycle.response_complete
            if idle and (self._header_timer is None or self._armed_scope is not self.scope):
                self._arm()
            super().data_received(data)

        def connection_lost(self, exc: Exception | None) -> None:
            self._disarm()
            super().connection_lost(exc)

    return GuardedH11Protocol


def uvicorn_config(app: Any, settings: ReceiverSettings, **overrides: Any) -> uvicorn.Config:
    """The uvicorn configuration of a receiver: websockets-sansio, frame limit, HTTP limits."""
    kw: dict[str, Any] = dict(
        host=settings.host, port=settings.port, ws="websockets-sansio", ws_max_size=WS_HARD_LIMIT,
        http=guarded_h11(settings.http_header_timeout_s),
        timeout_keep_alive=settings.http_keep_alive_s,
        limit_concurrency=settings.http_max_concurrency,
        log_level="info", log_config=None, access_log=False,
    )
    kw.update(overrides)
    return uvicorn.Config(app, **kw)
