"""A small driver for headless Chromium over ``--remote-debugging-pipe`` (no extra package).

Used by the live view's browser test and by ``ndpca demo --screenshot``. Chromium reads Chrome
DevTools Protocol commands from file descriptor 3 and writes replies and events to file
descriptor 4, each message JSON followed by a NUL byte. Chromium is Debian's package
(``apt-get install chromium``, ``/usr/bin/chromium``); ``NDPCA_CHROMIUM`` names another
binary. It always starts with a fresh profile and without sandbox, GPU, QUIC, first-run,
background networking, component updates or sync.
"""

from __future__ import annotations

import base64
import fcntl
import json
import os
import shutil
import signal
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

FLAGS = ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--disable-dev-shm-usage", "--hide-scrollbars", "--mute-audio", "--remote-debugging-pipe")


def find_chromium() -> str | None:
    """``$NDPCA_CHROMIUM``, Debian's ``/usr/bin/chromium`` or a ``chromium`` on the PATH."""
    for path in (os.environ.get("NDPCA_CHROMIUM"), "/usr/bin/chromium", shutil.which("chromium"),
                 shutil.which("chromium-browser")):
        if path and os.path.isfile(path) and os.access(path, os.X_OK):
            return path
    return None


class CDPError(RuntimeError):
    """Chromium answered a command with an error, or a page script threw."""


class Chromium:
    """One headless Chromium process; ``open(url)`` gives a :class:`Page`."""

    def __init__(self, executable: str | None = None, width: int = 1440, height: int = 1000) -> None:
        exe = executable or find_chromium()
        if exe is None:
            raise FileNotFoundError("Chromium is not installed: apt-get install -y chromium "
                                    "(or set NDPCA_CHROMIUM to a Chromium binary)")
        self.width, self.height = width, height
        self.tmp = Path(tempfile.mkdtemp(prefix="ndpca-chromium-"))
        self.log_path = self.tmp / "chromium.log"
        cmd_r, cmd_w = os.pipe()  # we write commands, Chromium reads them on fd 3
        out_r, out_w = os.pipe()  # Chromium writes replies on fd 4
        # above 4, so that mapping them onto 3 and 4 in the child cannot clobber one another
        high = [fcntl.fcntl(fd, fcntl.F_DUPFD_CLOEXEC, 5) for fd in (cmd_r, out_w)]
        os.close(cmd_r)
        os.close(out_w)
        args = [exe, *FLAGS, f"--user-data-dir={self.tmp / 'profile'}", f"--window-size={width},{height}",
                "about:blank"]
        log = os.open(self.log_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600)
        null = os.open(os.devnull, os.O_RDONLY | os.O_CLOEXEC)
        try:
            self.pid = os.posix_spawn(exe, args, os.environ, file_actions=[
                (os.POSIX_SPAWN_DUP2, null, 0), (os.POSIX_SPAWN_DUP2, log, 1), (os.POSIX_SPAWN_DUP2, log, 2),
                (os.POSIX_SPAWN_DUP2, high[0], 3), (os.POSIX_SPAWN_DUP2, high[1], 4)])
        finally:
            for fd in (*high, log, null):
                os.close(fd)
        self.returncode: int | None = None
        self._out = os.fdopen(cmd_w, "wb", buffering=0)
        self._in = out_r
        self._next = 0
        self._replies: dict[int, dict[str, Any]] = {}
        self.events: list[dict[str, Any]] = []
        self._cond = threading.Condition()
        self._reader = threading.Thread(target=self._read, name="chromium-reader", daemon=True)
        self._reader.start()
        self.send("Browser.getVersion", timeout=60)  # Chromium is up

    def __enter__(self) -> Chromium:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def _read(self) -> None:
        buf = b""
        while True:
            try:
                data = os.read(self._in, 1 << 16)
            except OSError:
                data = b""
            if not data:
                with self._cond:
                    self._cond.notify_all()
                return
            buf += data
            *messages, buf = buf.split(b"\0")
            with self._cond:
                for raw in messages:
                    msg = json.loads(raw)
                    if "id" in msg:
                        self._replies[msg["id"]] = msg
                    else:
                        self.events.append(msg)
                        del self.events[:-2000]
                self._cond.notify_all()

    def send(self, method: str, params: dict[str, Any] | None = None, session: str | None = None,
             timeout: float = 30.0) -> dict[str, Any]:
        """Send one DevTools command and wait for its reply."""
        with self._cond:
            self._next += 1
            mid = self._next
        msg: dict[str, Any] = {"id": mid, "method": method, "params": params or {}}
        if session:
            msg["sessionId"] = session
        self._out.write(json.dumps(msg).encode() + b"\0")
        deadline = time.monotonic() + timeout
        with self._cond:
            while mid not in self._replies:
                left = deadline - time.monotonic()
                if self.poll() is not None:
                    raise CDPError(f"Chromium exited ({self.returncode}): {self.log_tail()}")
                if left <= 0:
                    raise TimeoutError(f"Chromium did not answer {method} in {timeout:.0f} s")
                self._cond.wait(min(left, 0.5))
            reply = self._replies.pop(mid)
        if "error" in reply:
            raise CDPError(f"{method}: {reply['error'].get('message')}")
        return reply.get("result", {})

    def open(self, url: str) -> Page:
        """A new tab of the browser's size, navigated to ``url``."""
        target = self.send("Target.createTarget", {"url": "about:blank"})["targetId"]
        session = self.send("Target.attachToTarget", {"targetId": target, "flatten": True})["sessionId"]
        page = Page(self, session)
        page.send("Page.enable")
        page.send("Runtime.enable")
        page.send("Emulation.setDeviceMetricsOverride", {"width": self.width, "height": self.height,
                                                         "deviceScaleFactor": 1, "mobile": False})
        page.send("Page.navigate", {"url": url})
        return page

    def log_tail(self, n: int = 2000) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-n:]
        except OSError:
            return ""

    def poll(self) -> int | None:
        """Chromium's exit status, None while it runs."""
        if self.returncode is None:
            try:
                pid, status = os.waitpid(self.pid, os.WNOHANG)
            except ChildProcessError:
                pid, status = self.pid, 0
            if pid:
                self.returncode = os.waitstatus_to_exitcode(status)
        return self.returncode

    def _wait(self, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while self.poll() is None:
            if time.monotonic() > deadline:
                return False
            time.sleep(0.05)
        return True

    def close(self) -> None:
        if self.poll() is None:
            try:
                self.send("Browser.close", timeout=5)
            except (CDPError, TimeoutError, OSError):
                pass
            if not self._wait(10):
                os.kill(self.pid, signal.SIGKILL)
                self._wait(10)
        for close in (self._out.close, lambda: os.close(self._in)):
            try:
                close()
            except OSError:
                pass
        shutil.rmtree(self.tmp, ignore_errors=True)


class Page:
    """One tab: evaluate scripts, wait for conditions, take screenshots."""

    def __init__(self, browser: Chromium, session: str) -> None:
        self.browser = browser
        self.session = session

    def send(self, method: str, params: dict[str, Any] | None = None, timeout: float = 30.0) -> dict[str, Any]:
        return self.browser.send(method, params, self.session, timeout)

    def evaluate(self, expression: str, timeout: float = 30.0) -> Any:
        """The value of a JavaScript expression (JSON-serialisable; promises are awaited)."""
        res = self.send("Runtime.evaluate", {"expression": expression, "returnByValue": True,
                                             "awaitPromise": True}, timeout)
        if "exceptionDetails" in res:
            details = res["exceptionDetails"]
            text = details.get("exception", {}).get("description") or details.get("text")
            raise CDPError(f"script failed: {text}")
        return res.get("result", {}).get("value")

    def wait_for(self, expression: str, timeout: float = 30.0, interval: float = 0.2) -> Any:
        """Evaluate ``expression`` until it is truthy; its value. TimeoutError with the console."""
        deadline = time.monotonic() + timeout
        while True:
            try:
                value = self.evaluate(expression)
            except CDPError:
                value = None  # e.g. the page is still loading its script
            if value:
                return value
            if time.monotonic() > deadline:
                raise TimeoutError(f"page never satisfied {expression!r} in {timeout:.0f} s; "
                                   f"console: {self.console()[-10:]}")
            time.sleep(interval)

    def console(self) -> list[str]:
        """Console messages and uncaught exceptions of this tab."""
        out = []
        for ev in list(self.browser.events):
            if ev.get("sessionId") != self.session:
                continue
            p = ev.get("params", {})
            if ev.get("method") == "Runtime.consoleAPICalled":
                out.append(f"{p.get('type')}: " + " ".join(str(a.get("value", a.get("description", "")))
                                                           for a in p.get("args", [])))
            elif ev.get("method") == "Runtime.exceptionThrown":
                d = p.get("exceptionDetails", {})
                out.append("exception: " + str(d.get("exception", {}).get("description") or d.get("text")))
        return out

    def screenshot(self, path: str | Path, full_page: bool = False) -> Path:
        """A PNG of the viewport (or of the whole page)."""
        params: dict[str, Any] = {"format": "png"}
        if full_page:
            size = self.send("Page.getLayoutMetrics")["cssContentSize"]
            params.update(captureBeyondViewport=True,
                          clip={"x": 0, "y": 0, "width": size["width"], "height": size["height"], "scale": 1})
        data = self.send("Page.captureScreenshot", params, timeout=60)["data"]
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(base64.b64decode(data))
        return path
