"""The edge client: one websocket to the receiver, allocation feedback, reconnects.

Per step ``t``: wait for the receiver's allocation for ``t`` (sent when the step opens);
in real time, wait until chunk ``t`` has been captured (plus the STFT look-ahead); encode it,
keep the allocated ``k`` components, code them within the step's bit budget and send. A new
allocation thus applies from the next chunk on. When the receiver goes away the client
reconnects with exponential backoff and resumes: its hello carries the session clock's epoch
and its next chunk, so even a restarted receiver continues the same step numbering.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np
import torch
import websockets
from websockets.exceptions import ConnectionClosed, InvalidHandshake, InvalidStatus

from shared import protocol as P
from shared.codec import Codec
from shared.errors import UserError
from shared.streaming import lookahead_samples, percentiles

log = logging.getLogger(__name__)

#: consecutive HTTP 4xx answers to the upgrade after which an edge stops (a wrong URL)
REFUSALS_FATAL = 3


class CoefficientSource(Protocol):
    n_samples: int
    encode_seconds: list[float]

    def coefficients(self, i: int) -> torch.Tensor | None: ...

    def is_last(self, i: int) -> bool: ...


class EdgeRefused(UserError):
    """The receiver refused this edge for a reason a retry cannot fix."""


@dataclass
class EdgeConfig:
    """Where and who the edge is, and how it behaves.

    Attributes:
        url: receiver websocket, e.g. ``ws://127.0.0.1:8000/ws``.
        realtime: pace chunks at capture time (False: send as soon as allowed, ``--fast``).
        retry_for_s: give up after the receiver has been unreachable this long.
    """

    url: str
    session: str
    source: int
    token: str
    realtime: bool = True
    retry_for_s: float = 60.0
    backoff_initial_s: float = 0.1
    backoff_max_s: float = 2.0
    open_timeout_s: float = 5.0


@dataclass
class SentChunk:
    seq: int
    k: int
    k_allocated: int
    alloc_step: int
    bits: int
    budget_bits: int


@dataclass
class EdgeStats:
    connects: int = 0
    allocations: int = 0
    skipped: int = 0
    sent: list[SentChunk] = field(default_factory=list)

    def as_dict(self, period_s: float, encode_seconds: list[float]) -> dict[str, Any]:
        enc = np.asarray(encode_seconds, dtype=np.float64)
        return {
            "connects": self.connects,
            "allocations_received": self.allocations,
            "chunks_sent": len(self.sent),
            "chunks_skipped": self.skipped,
            "bits_sent": int(sum(c.bits for c in self.sent)),
            "encode_ms": percentiles((enc * 1e3).tolist()),
            "encoder_rtf_mean": float(enc.mean() / period_s) if enc.size else None,
            "encoder_rtf_p95": float(np.percentile(enc, 95) / period_s) if enc.size else None,
            "sent": [vars(c) for c in self.sent],
        }


class EdgeClient:
    """One source's streaming client.

    Args:
        cfg: connection and behaviour. codec: the edge's codec (its hash must match the
        receiver's). encoder: gives all coefficients of chunk ``i``.
    """

    def __init__(self, cfg: EdgeConfig, codec: Codec, encoder: CoefficientSource) -> None:
        self.cfg = cfg
        self.codec = codec
        self.encoder = encoder
        self.period = codec.rate.chunk_seconds
        self.lookahead_s = lookahead_samples(codec.preset) / codec.sample_rate
        self.epoch: float | None = None
        self.next_seq = 0
        self.mode = "realtime"
        self.done = False
        self.stats = EdgeStats()
        self._allocs: dict[int, P.Allocation] = {}
        self._event = asyncio.Event()
        self._last_error: P.Error | None = None
        self._session_over = False
        self._refusals = 0  # consecutive HTTP 4xx answers to the websocket upgrade

    # ------------------------------------------------------------------ main loop
    async def run(self) -> dict[str, Any]:
        """Stream until the signal ends or the session finishes; returns statistics."""
        attempt, unreachable_since = 0, None
        while not self.done:
            self._last_error = None
            try:
                async with websockets.connect(
                    self.cfg.url, max_size=1 << 20, open_timeout=self.cfg.open_timeout_s,
                    ping_interval=None, compression=None,
                ) as ws:
                    attempt, unreachable_since, self._refusals = 0, None, 0
                    await self._connection(ws)
            except EdgeRefused:
                raise
            except (TimeoutError, OSError, ConnectionClosed, InvalidHandshake) as exc:
                if self.done:
                    break
                self._raise_if_fatal(exc)
                now = time.monotonic()
                unreachable_since = unreachable_since or now
                if now - unreachable_since > self.cfg.retry_for_s:
                    raise EdgeRefused(
                        f"receiver {self.cfg.url} unreachable for {self.cfg.retry_for_s:.0f} s "
                        f"({type(exc).__name__}); is `ndpca serve` running?"
                    ) from None
                delay = min(self.cfg.backoff_max_s, self.cfg.backoff_initial_s * 2**attempt)
                delay *= 0.5 + random.random() / 2
                attempt += 1
                log.info("source %d: connection lost (%s); retrying in %.2f s",
                         self.cfg.source, _describe(exc), delay)
                await asyncio.sleep(delay)
        return self.stats.as_dict(self.period, self.encoder.encode_seconds)

    def _raise_if_fatal(self, exc: BaseException | None) -> None:
        """Raise EdgeRefused when the receiver refused us for a reason a retry cannot fix."""
        err = self._last_error
        if err is not None and err.fatal and err.code not in P.RETRYABLE_ERRORS:
            raise EdgeRefused(f"receiver refused source {self.cfg.source}: {err.code}: {err.message}")
        status = exc.response.status_code if isinstance(exc, InvalidStatus) else None
        refused = status is not None and 400 <= status < 500 and status not in (408, 429)
        self._refusals = self._refusals + 1 if refused else 0
        if self._refusals >= REFUSALS_FATAL:  # not one answer of a proxy while the receiver restarts
            raise EdgeRefused(f"{self.cfg.url} answered HTTP {status} to the websocket upgrade {self._refusals} "
                              "times: it is not the receiver's edge endpoint, which is ws://HOST:PORT/ws")
        rcvd = exc.rcvd if isinstance(exc, ConnectionClosed) else None
        if rcvd is not None and rcvd.code in P.FATAL_CLOSE_CODES and err is None:
            raise EdgeRefused(f"receiver closed the connection with code {rcvd.code} ({rcvd.reason})")

    async def _connection(self, ws: Any) -> None:
        cfg = self.cfg
        await ws.send(P.encode(P.Hello(
            session=cfg.session, source=cfg.source, token=cfg.token,
            sample_rate=self.codec.sample_rate, model_hash=self.codec.sha256, epoch=self.epoch,
            resume_seq=self.next_seq if self.epoch is not None else None, client="ndpca-edge",
        )))
        first = P.decode(await ws.recv(), 1 << 20)
        if isinstance(first, P.Error):
            self._last_error = first
            self._raise_if_fatal(None)
            raise ConnectionResetError(f"{first.code}: {first.message}")
        if not isinstance(first, P.Welcome):
            raise EdgeRefused(f"receiver answered hello with {first.type}")
        self.stats.connects += 1
        self.mode = first.mode
        if first.step_profile != self.codec.step_profile:  # the receiver chooses the profile
            self.codec.set_step_profile(first.step_profile)
        if first.epoch is not None:
            self.epoch = first.epoch
        if first.step is not None:
            if first.step > self.next_seq and self.stats.sent:
                self.stats.skipped += first.step - self.next_seq
            self.next_seq = max(self.next_seq, first.step)
        log.info("source %d joined session %s (%s, next chunk %d)", cfg.source, cfg.session,
                 first.mode, self.next_seq)
        self._allocs.clear()
        reader = asyncio.create_task(self._reader(ws))
        try:
            await self._sender(ws, reader)
        finally:
            reader.cancel()
            with contextlib.suppress(BaseException):
                await reader

    async def _reader(self, ws: Any) -> None:
        try:
            async for frame in ws:
                try:
                    msg = P.decode(frame, 1 << 20)
                except P.ProtocolError as err:
                    log.warning("source %d: bad frame from receiver: %s", self.cfg.source, err)
                    continue
                if isinstance(msg, P.Allocation):
                    self._allocs[msg.step] = msg
                    self.epoch = msg.epoch
                    self.stats.allocations += 1
                elif isinstance(msg, P.Error):
                    self._last_error = msg
                    log.warning("source %d: receiver error %s: %s", self.cfg.source, msg.code, msg.message)
                elif isinstance(msg, P.Bye):
                    self._session_over = True
                self._event.set()
        finally:
            self._event.set()

    async def _next_allocation(self, reader: asyncio.Task) -> P.Allocation | None:
        """The allocation for ``next_seq`` (skipping ahead if the receiver moved on)."""
        while True:
            if self._session_over:
                return None
            alloc = self._allocs.get(self.next_seq)
            if alloc is not None:
                return alloc
            later = [s for s in self._allocs if s > self.next_seq]
            if later:
                self.stats.skipped += min(later) - self.next_seq
                self.next_seq = min(later)
                continue
            if reader.done():
                exc = reader.exception() if not reader.cancelled() else None
                raise exc if isinstance(exc, ConnectionClosed) else ConnectionResetError("connection closed")
            self._event.clear()
            await self._event.wait()

    async def _sender(self, ws: Any, reader: asyncio.Task) -> None:
        while True:
            alloc = await self._next_allocation(reader)
            if alloc is None:
                self.done = True
                return
            seq = self.next_seq
            if self.cfg.realtime and self.epoch is not None:
                due = self.epoch + (seq + 1) * self.period + self.lookahead_s
                delay = due - time.time()
                if delay > 0:
                    await asyncio.sleep(delay)
                capture = self.epoch + seq * self.period
            else:
                capture = time.time()
            coeffs = self.encoder.coefficients(seq)
            if coeffs is None:
                await ws.send(P.encode(P.Bye(reason="end of stream")))
                self.done = True
                return
            enc = self.codec.encode_payload(coeffs, alloc.k, alloc.budget_bits, source=self.cfg.source)
            last = self.encoder.is_last(seq)
            await ws.send(P.encode(P.Chunk(
                seq=seq, capture_time=capture, k=enc.k, k_allocated=alloc.k, alloc_step=alloc.step,
                quant_step=self.codec.coder.step, step_profile=self.codec.step_profile,
                payload=enc.payload, crc=enc.crc,
                end_samples=self.encoder.n_samples if last else None,
            )))
            self.stats.sent.append(SentChunk(seq, enc.k, alloc.k, alloc.step, enc.bits, alloc.budget_bits))
            for old in [s for s in self._allocs if s <= seq]:
                del self._allocs[old]
            self.next_seq = seq + 1
            if last:
                await ws.send(P.encode(P.Bye(reason="end of stream")))
                self.done = True
                with contextlib.suppress(Exception):
                    await asyncio.wait_for(ws.close(), 2.0)
                return


def _describe(exc: BaseException) -> str:
    if isinstance(exc, ConnectionClosed):
        rcvd = exc.rcvd
        return f"closed {rcvd.code} {rcvd.reason}" if rcvd else "closed without a close frame"
    return f"{type(exc).__name__}: {exc}"[:120]
