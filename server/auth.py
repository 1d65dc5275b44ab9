"""Who may see what: the admin token opens every session, a session's token the sessions it opens.

Tokens travel as ``Authorization: Bearer TOKEN``; the live view's routes also take
``?token=TOKEN`` (a browser cannot set headers on a websocket or an ``<audio>`` source). Every
comparison is constant-time. The REST routes (:mod:`server.api`) and the live view
(:mod:`server.live`) share these rules; ``docs/security.md`` lists which route needs what.
"""

from __future__ import annotations

import hmac
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from server.session import Session


@dataclass(frozen=True)
class Viewer:
    """Who holds a token: the admin sees every session, a session token the sessions it opens."""

    admin: bool
    token: str

    def sees(self, session: Session) -> bool:
        return self.admin or hmac.compare_digest(self.token.encode(), session.cfg.token.encode())

    def sees_all(self, sessions: Iterable[Session]) -> bool:
        """Whether every one of ``sessions`` is open to this viewer (e.g. the rooms of a cell)."""
        return all(self.sees(s) for s in sessions)


def bearer_token(headers: Any) -> str:
    """The token of an ``Authorization: Bearer TOKEN`` header ('' when there is none)."""
    auth = headers.get("authorization") or ""
    return auth[7:].strip() if auth[:7].lower() == "bearer " else ""


def given_token(headers: Any, query: Any) -> str:
    """``Authorization: Bearer TOKEN`` or ``?token=TOKEN``."""
    return bearer_token(headers) or (query.get("token") or "").strip()


def is_admin(app: Any, token: str) -> bool:
    """Whether ``token`` is the receiver's admin token (never when none is configured)."""
    admin = app.state.settings.admin_token
    return bool(token and admin) and hmac.compare_digest(token.encode(), admin.encode())


def authorise(app: Any, token: str) -> Viewer | None:
    """The viewer a token makes, or None when it opens nothing (missing or wrong)."""
    if not token:
        return None
    if is_admin(app, token):
        return Viewer(True, token)
    manager = getattr(app.state, "manager", None)
    viewer = Viewer(False, token)
    if manager is not None and any(viewer.sees(s) for s in manager.sessions.values()):
        return viewer
    return None
