"""The receiver's live view from the command line: its address in ``ndpca demo``, ``--hold``,
``--screenshot`` (headless Chromium), and live streams opened during ``ndpca bench``.

The page and its routes are :mod:`server.live`; the protocol is in ``docs/live.md``.
"""

from __future__ import annotations

import asyncio
import json
import logging
import math
import subprocess
import threading
import time
from pathlib import Path
from typing import Any
from urllib.parse import quote

log = logging.getLogger("ndpca.liveview")


def page_url(base: str, token: str, session: str) -> str:
    """The page for ``session``; the token rides in the fragment (never sent to a server)."""
    return f"{base}/ui#token={quote(token, safe='')}&session={quote(session, safe='')}"


class Screenshot(threading.Thread):
    """Headless Chromium opens the page and saves a PNG once ``min_steps`` steps are shown
    (or the session finished): the README's picture of a running session."""

    def __init__(self, url: str, path: Path, min_steps: int, timeout: float,
                 width: int = 1440, height: int = 1100) -> None:
        super().__init__(name="live-screenshot", daemon=True)
        self.url, self.path, self.min_steps, self.timeout = url, path, min_steps, timeout
        self.size = (width, height)
        self.error: str | None = None
        self.done_path: Path | None = None

    def run(self) -> None:
        from server.headless import Chromium

        try:
            with Chromium(width=self.size[0], height=self.size[1]) as browser:
                page = browser.open(self.url)
                page.wait_for(f"(() => {{ const l = window.ndpcaLive; return l && l.summary && "
                              f"(l.steps.length >= {self.min_steps} || l.summary.state === 'finished'); }})()",
                              self.timeout)
                time.sleep(0.6)  # let the last update render
                self.done_path = page.screenshot(self.path)
        except Exception as exc:  # a screenshot must never break the demo
            self.error = f"{type(exc).__name__}: {exc}"

    def report(self) -> str:
        self.join(30)
        if self.done_path is not None:
            return f"screenshot {self.done_path}"
        return f"screenshot not taken: {self.error or 'timed out'}"


def start_screenshot(base: str, token: str, session: str, path: Path, seconds: float) -> Screenshot:
    """Take the screenshot at three quarters of a run of ``seconds``."""
    import httpx

    period_s = httpx.get(f"{base}/sessions/{session}/stats", headers={"Authorization": f"Bearer {token}"},
                         timeout=10).json()["rate"]["chunk_seconds"]
    steps = max(1, math.floor(0.75 * seconds / period_s))
    shot = Screenshot(page_url(base, token, session), path, steps, timeout=60 + 2 * seconds)
    shot.start()
    return shot


def hold(rx: subprocess.Popen, url: str, stop: Any) -> None:
    """``--hold``: keep the receiver (and its page) up until Ctrl-C, then stop it."""
    print(f"holding    the receiver stays up for the live view: {url}\n"
          "           press Ctrl-C to stop it", flush=True)
    try:
        while rx.poll() is None:
            time.sleep(0.5)
        print(f"the receiver exited ({rx.returncode})")
    except KeyboardInterrupt:
        print()
    finally:
        stop(rx)


# --------------------------------------------------------------------------- ndpca bench


class LiveStreams:
    """Open the page's live stream on some sessions, as that many browser tabs would, and read
    every update (in a thread with its own event loop) until :meth:`stop`."""

    def __init__(self, base: str, token: str, sessions: list[str]) -> None:
        self.url = base.replace("http://", "ws://", 1) + "/ui/live"
        self.token, self.sessions = token, sessions
        self.stats = {s: {"messages": 0, "bytes": 0, "steps": 0, "errors": []} for s in sessions}
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._run, name="live-streams", daemon=True)

    def start(self) -> LiveStreams:
        self._thread.start()
        self._ready.wait(10)
        return self

    def _run(self) -> None:
        asyncio.run(self._main())

    async def _main(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._stop = asyncio.Event()
        tasks = [asyncio.create_task(self._watch(s)) for s in self.sessions]
        self._ready.set()
        await self._stop.wait()
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    async def _watch(self, session: str) -> None:
        import websockets

        st = self.stats[session]
        url = f"{self.url}?token={quote(self.token, safe='')}&session={quote(session, safe='')}"
        try:
            async with websockets.connect(url, max_size=None) as ws:
                async for text in ws:
                    st["messages"] += 1
                    st["bytes"] += len(text)
                    msg = json.loads(text)
                    if msg.get("type") == "session":
                        st["steps"] += len(msg["steps"])
                    elif msg.get("type") == "error":
                        st["errors"].append(msg.get("code"))
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            st["errors"].append(f"{type(exc).__name__}: {exc}")

    def stop(self) -> dict[str, Any]:
        """Close the streams; what each received."""
        if self._loop is not None and self._stop is not None:
            self._loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(10)
        total = {k: sum(v[k] for v in self.stats.values()) for k in ("messages", "bytes", "steps")}
        return {"streams": len(self.sessions), **total,
                "errors": [e for v in self.stats.values() for e in v["errors"]][:3]}
