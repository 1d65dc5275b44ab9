"""Websocket connection limits: in total and per client address.

Both websocket routes (edges on ``/ws``, live views on ``/ui/live``) count against the same
limits (``NDPCA_MAX_CONNECTIONS``, ``NDPCA_MAX_CONNECTIONS_PER_IP``). A connection over a
limit is accepted only to be told why (an error frame, then close code 1013, "try again
later"), so a flood from one address cannot take the slots of everyone else.
"""

from __future__ import annotations

from collections import Counter


class ConnectionLimits:
    """Counts open websockets; :meth:`acquire` refuses one over a limit.

    Args:
        total: open websockets at most. per_ip: open websockets from one address at most.
    """

    def __init__(self, total: int, per_ip: int) -> None:
        self.total, self.per_ip = total, per_ip
        self.by_ip: Counter[str] = Counter()
        self.open = 0
        self.refused = 0

    def acquire(self, host: str) -> str | None:
        """Count a new connection from ``host``; or, over a limit, count nothing and return
        why it is refused."""
        if self.open >= self.total:
            self.refused += 1
            return (f"the receiver holds its maximum of {self.total} websocket connections; "
                    "try again later")
        if self.by_ip[host] >= self.per_ip:
            self.refused += 1
            return (f"{self.per_ip} websocket connections from {host} are open already (the limit "
                    "per address); close one or try again later")
        self.open += 1
        self.by_ip[host] += 1
        return None

    def release(self, host: str) -> None:
        """A connection counted by :meth:`acquire` has ended."""
        self.open -= 1
        self.by_ip[host] -= 1
        if self.by_ip[host] <= 0:
            del self.by_ip[host]
