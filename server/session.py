"""One session (room): replay clock, allocation feedback, jitter buffer, decode, statistics.

Step ``t`` of a session (see :class:`shared.streaming.SessionClock`):

1. **open**: capacity ``C_t`` from the trace -> budget ``L_t`` (Eq. 3) -> NDPCA allocation
   over the connected sources -> an :class:`~shared.protocol.Allocation` to every edge;
2. chunks for ``t`` arrive, are checked (components and bits within the allocation, payload
   decodable) and parked in the jitter buffer;
3. **close**: when every source allocated at the open that is still connected has delivered,
   or at the deadline, whichever comes first; missing sources decode as their mean; chunks
   arriving later are counted late and dropped;
4. **decode** in the shared batch decoder, enhancement, streaming inverse STFT, output.

``realtime`` sessions open a step every T seconds of wall time; ``lockstep`` sessions open the
next step as soon as the previous one closed (simulation as fast as the edges go).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from server.cell import Cell
from server.decoder import BatchDecoder, DecodeJob
from server.metrics import ReceiverMetrics
from server.recording import RecordingStore, max_frames
from server.report import db, session_stats, session_summary, snr_energies, step_entry
from server.settings import SessionConfig
from shared import protocol as P
from shared.codec import Codec, Plan
from shared.stft import from_channels
from shared.streaming import (
    JitterBuffer,
    SessionClock,
    StreamingISTFT,
    lookahead_samples,
    plan_for_active,
)

log = logging.getLogger(__name__)

#: steps whose plans are kept after closing, to check late chunks against their allocation
PLAN_HISTORY = 256
#: lockstep: steps closed but not yet decoded before the next opens (a simulation as fast as the
#: decoder goes never queues ahead of the real-time sessions sharing the decoder)
LOCKSTEP_IN_FLIGHT = 2
#: seconds of the newest output kept for the live view's player even past ``record_seconds``
TAIL_SECONDS = 30.0
#: a chunk's capture time may be this far (s) from the receiver's clock
MAX_CLOCK_SKEW_S = 86400.0


@dataclass
class Received:
    """A checked chunk waiting in the jitter buffer."""

    coeffs: np.ndarray
    k: int
    k_allocated: int
    alloc_step: int
    bits: int
    capture_time: float
    received_at: float
    frame_bytes: int = 0


@dataclass
class OpenPlan:
    plan: Plan
    active: frozenset[int]
    opened_at: float


class EdgeLink:
    """The receiver's handle on one connected edge: a non-blocking outbox.

    ``send`` and ``close`` never wait for the network; the websocket handler's writer task
    drains the outbox, so a slow edge cannot stall a session's clock.
    """

    def __init__(self, source: int) -> None:
        self.source = source
        self.outbox: asyncio.Queue[bytes | tuple[int, str]] = asyncio.Queue()
        self.closing = False

    def send(self, msg: Any) -> None:
        if not self.closing:
            self.outbox.put_nowait(P.encode(msg))

    def close(self, code: int, reason: str = "") -> None:
        if not self.closing:
            self.closing = True
            self.outbox.put_nowait((code, reason))


@dataclass
class SourceStats:
    chunks: int = 0
    bits: int = 0
    late: int = 0
    connects: int = 0
    connected: bool = False
    finished: bool = False


class Session:
    """A room: expected sources, a replay clock, and everything received and decoded."""

    def __init__(self, cfg: SessionConfig, codec: Codec, decoder: BatchDecoder,
                 metrics: ReceiverMetrics, capacity: Callable[[int], tuple[float, float]],
                 trace_info: dict[str, Any], references: dict[str, np.ndarray] | None = None,
                 record_seconds: float = 900.0, on_finish: Callable[[Session], None] | None = None,
                 cell: Cell | None = None, store: RecordingStore | None = None) -> None:
        self.cfg = cfg
        self.cell = cell
        self.id = cfg.id
        self.codec = codec
        self.decoder = decoder
        self.metrics = metrics
        self.capacity = capacity
        self.trace_info = trace_info
        self.references = references or {}
        self.on_finish = on_finish
        self.n_sources = codec.n_sources
        self.expected = set(cfg.sources) if cfg.sources is not None else set(range(self.n_sources))
        self.period = codec.rate.chunk_seconds
        self.frames = codec.frames_per_step
        self.lookahead = lookahead_samples(codec.preset)
        self.clock = SessionClock(self.period, self.lookahead / codec.sample_rate, cfg.grace_s)
        self.buffer: JitterBuffer[Received] = JitterBuffer(self.n_sources)
        out_channels = getattr(decoder.enhancer, "out_channels", None)
        self.out_channels = out_channels(codec.cfg.num_mics) if out_channels else codec.cfg.num_mics
        self.istft = StreamingISTFT(codec.preset, self.out_channels)
        self.record_limit = min(int(record_seconds * codec.sample_rate), max_frames(self.out_channels))
        # decoded audio goes to disk as it is produced (server/recording.py), never kept whole
        self.recording = store.open(self.id, codec.sample_rate, self.out_channels, codec.sha256) \
            if store is not None else None
        if self.recording is not None:
            self.recording.meta = self._record_meta
        self.state = "waiting"
        self.created = time.time()
        self.links: dict[int, EdgeLink] = {}
        self.sources = {s: SourceStats() for s in range(self.n_sources)}
        self.joined: set[int] = set()
        self.final_seq: dict[int, int] = {}
        self.length: int | None = None
        self.first_join_at: float | None = None
        self.last_link_at = time.time()
        self.first_step = 0
        self.opened = -1
        self.plans: dict[int, OpenPlan] = {}
        self.step_stats: dict[int, dict[str, Any]] = {}
        self.steps: list[dict[str, Any]] = []
        self.samples_out = 0
        self.recorded = 0
        self.output_offset = 0
        self.decode_ms: list[float] = []
        self.e2e_ms: list[float] = []
        self.quality: dict[str, list[float]] = {name: [] for name in self.references}
        # per reference: signal and error energies summed over the whole output (final SNR)
        self.quality_energy: dict[str, list[float]] = {name: [0.0, 0.0] for name in self.references}
        self.final_quality: dict[str, float | None] = {}
        self.late = self.missing = self.duplicates = 0
        self.error: str | None = None  # why the session could not go on (None: it did not fail)
        self.bits_received = self.steps_within_budget = 0
        # the step after the last decoded one, and the sources still streaming in it
        self.decoded_next = 0
        self.decoded_active: list[int] = []
        # earlier runs of this recording (receiver restarts, see _resume)
        self.previous_steps = self.outage_steps = 0
        self.restarts: list[dict[str, int]] = []
        self.finished_event = asyncio.Event()
        # live view (server/live.py): the newest output blocks, and events set on every change
        self.tail: deque[np.ndarray] = deque()
        self.tail_samples = 0
        self.watchers: set[asyncio.Event] = set()
        self._ending = False
        self._finish_submitted = False
        self._wake = asyncio.Event()
        self._task: asyncio.Task | None = None

    # ------------------------------------------------------------------ lifecycle
    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name=f"session-{self.id}")

    async def stop(self, code: int = P.CLOSE_GOING_AWAY, reason: str = "receiver shutting down") -> None:
        if self.cell is not None:
            self.cell.leave(self.id)
        for link in list(self.links.values()):
            link.close(code, reason)
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    async def release(self) -> None:
        """Close the recording (after :meth:`stop`, once the decoder delivered what it had) and
        wait until it is on disk; a finished session closed it when it finished."""
        if self.recording is not None and not self.recording.closed:
            done = self.recording.close("stopped")
            if done is not None:
                await asyncio.wrap_future(done)

    def wake(self) -> None:
        self._wake.set()

    def _notify(self) -> None:
        """Tell the live views (``watchers``) that a step was decoded or the state changed."""
        for event in self.watchers:
            event.set()

    # ------------------------------------------------------------------ edges
    def check_join(self, hello: P.Hello) -> None:
        """Refuse a hello for a finished session, an unexpected source or a duplicate."""
        if self.state == "finished" or self._ending:
            raise P.ProtocolError("session_closed", f"session {self.id!r} has finished")
        if hello.source not in self.expected:
            raise P.ProtocolError(
                "unknown_source",
                f"source {hello.source} is not part of session {self.id!r} "
                f"(expected {sorted(self.expected)})",
            )
        if hello.source in self.links:
            raise P.ProtocolError(
                "duplicate_source", f"source {hello.source} of session {self.id!r} is already connected"
            )
        if self.sources[hello.source].finished:
            raise P.ProtocolError("session_closed", f"source {hello.source} already ended its stream")

    def attach(self, hello: P.Hello, link: EdgeLink) -> None:
        self.check_join(hello)
        s = hello.source
        now = time.time()
        self.links[s] = link
        self.joined.add(s)
        st = self.sources[s]
        st.connects += 1
        st.connected = True
        self.last_link_at = now
        self.metrics.connections.inc()
        if self.state == "waiting":
            self.first_join_at = self.first_join_at or now
            if hello.epoch is not None and now - 86400 < hello.epoch <= now + 5:
                first = hello.resume_seq or 0
                if self.cfg.mode == "realtime":
                    first = max(0, math.floor((now - hello.epoch) / self.period))
                log.info("session %s resumes at step %d (epoch from source %d)", self.id, first, s)
                self._start(hello.epoch, first)
        link.send(P.Welcome(
            session=self.id, source=s, epoch=self.clock.epoch,
            step=self.opened + 1 if self.state == "running" else None,
            period_s=self.period, mode=self.cfg.mode, n_sources=self.n_sources,
            quant_step=self.codec.coder.step, step_profile=self.codec.step_profile,
            lookahead_samples=self.lookahead,
        ))
        log.info("session %s: source %d connected (%d/%d)", self.id, s, len(self.links), len(self.expected))
        self.wake()
        self._notify()

    def detach(self, source: int, link: EdgeLink) -> None:
        if self.links.get(source) is link:
            del self.links[source]
            self.sources[source].connected = False
            self.last_link_at = time.time()
            self.metrics.connections.dec()
            log.info("session %s: source %d disconnected", self.id, source)
            self.wake()
            self._notify()

    def on_bye(self, source: int) -> None:
        self.sources[source].finished = True
        self.final_seq.setdefault(source, self.buffer.next_step - 1)
        self.wake()

    def check_bounds(self, source: int, chunk: P.Chunk, now: float) -> None:
        """Refuse values the session cannot hold (``out_of_range``): a chunk for a step not
        opened yet, an applied allocation past the chunk or wider than the source, a stream
        length that does not end in this chunk, a capture time far from the receiver's clock."""
        seq, cs = chunk.seq, self.codec.chunk_samples
        problem = None
        if seq > self.opened:
            problem = (f"chunk {seq} is for a step not opened yet (the newest is {self.opened}); "
                       "send chunk t after the allocation of step t")
        elif chunk.alloc_step > seq:
            problem = f"chunk {seq} names alloc_step {chunk.alloc_step}, after the chunk itself"
        elif chunk.k_allocated > self.codec.latent_sizes[source]:
            problem = (f"chunk {seq} names k_allocated {chunk.k_allocated}; source {source} has "
                       f"{self.codec.latent_sizes[source]} components")
        elif abs(chunk.capture_time - now) > MAX_CLOCK_SKEW_S:
            problem = (f"chunk {seq} has capture_time {chunk.capture_time:.0f}, more than a day from the "
                       f"receiver's clock ({now:.0f}); send the unix time of the chunk's first sample")
        elif chunk.end_samples is not None and not seq * cs <= chunk.end_samples < (seq + 1) * cs:
            problem = (f"chunk {seq} has end_samples {chunk.end_samples}, but chunk {seq} holds samples "
                       f"[{seq * cs}, {(seq + 1) * cs}); send the stream's length on its last chunk")
        if problem is not None:
            raise P.ProtocolError("out_of_range", f"source {source}: {problem}")

    def on_chunk(self, source: int, chunk: P.Chunk, frame_bytes: int = 0) -> None:
        """Check a chunk against its step's allocation and park it. Raises ProtocolError.

        ``frame_bytes``: size of the websocket message (payload plus msgpack framing)."""
        now = time.time()
        if chunk.quant_step != self.codec.coder.step:  # equal bit for bit: it selects the code
            raise P.ProtocolError(
                "config_mismatch",
                f"quantiser step {chunk.quant_step!r} differs from the receiver's {self.codec.coder.step!r}",
            )
        if chunk.step_profile != self.codec.step_profile:
            raise P.ProtocolError(
                "config_mismatch",
                f"chunk coded with step profile {chunk.step_profile!r}; this session uses "
                f"{self.codec.step_profile!r} (the welcome's step_profile)",
            )
        self.check_bounds(source, chunk, now)
        open_plan = self.plans.get(chunk.seq)
        if open_plan is None and chunk.seq <= self.opened:
            self._count_late(source, chunk.seq)  # so old that its plan is gone
            return
        k_max = open_plan.plan.allocation[source] if open_plan else 0
        bits_max = open_plan.plan.bits_per_source[source] if open_plan else 0
        bits = 8 * len(chunk.payload)
        if chunk.k > k_max:
            raise P.ProtocolError(
                "over_allocation",
                f"chunk {chunk.seq} of source {source} has {chunk.k} components; {k_max} allocated",
            )
        if bits > bits_max:
            raise P.ProtocolError(
                "over_allocation",
                f"chunk {chunk.seq} of source {source} has {bits} bits; {bits_max} allocated",
            )
        if chunk.k > chunk.k_allocated:
            raise P.ProtocolError(
                "out_of_range",
                f"source {source}: chunk {chunk.seq} has k {chunk.k} above its k_allocated "
                f"{chunk.k_allocated}; send at most the allocation's components",
            )
        try:
            coeffs = self.codec.decode_payload(chunk.payload, chunk.k, chunk.crc, source=source,
                                               k_allocated=chunk.k_allocated)
        except ValueError as exc:
            raise P.ProtocolError("bad_payload", str(exc)) from None
        item = Received(coeffs, chunk.k, chunk.k_allocated, chunk.alloc_step, bits,
                        chunk.capture_time, now, frame_bytes)
        outcome = self.buffer.add(chunk.seq, source, item)
        self.metrics.chunks.labels(self.id, outcome).inc()
        st = self.sources[source]
        if outcome == "late":
            self._count_late(source, chunk.seq, counted=True)
        elif outcome == "duplicate":
            self.duplicates += 1
        elif outcome == "ok":
            st.chunks += 1
            st.bits += bits
            self.metrics.payload_bits.labels(self.id).inc(bits)
        if chunk.end_samples is not None:
            self.final_seq[source] = chunk.seq
            self.sources[source].finished = True
            self.length = max(self.length or 0, chunk.end_samples)
        self.wake()

    def _count_late(self, source: int, seq: int, counted: bool = False) -> None:
        if not counted:
            self.metrics.chunks.labels(self.id, "late").inc()
        self.late += 1
        self.sources[source].late += 1
        entry = self.step_stats.get(seq)
        if entry is not None:
            entry["late"] = (*entry["late"], source)

    # ------------------------------------------------------------------ clock
    def _start(self, epoch: float, first_step: int = 0) -> None:
        self.clock.epoch = epoch
        self.first_step = self.opened + 1 if self.opened >= 0 else first_step
        self.opened = self.first_step - 1
        self.buffer.skip_to(self.first_step)
        self.output_offset = self.first_step * self.codec.chunk_samples
        self.decoded_next = self.first_step
        self.state = "running"
        rec = self.recording
        if rec is not None and not rec.started:
            prev = rec.previous
            if (prev is not None and prev.get("epoch") == epoch and prev.get("state") != "finished"
                    and isinstance(prev.get("next_step"), int) and prev["next_step"] <= self.first_step):
                self._resume(prev)
            else:
                rec.start(self.output_offset)
        log.info("session %s started (%s, step %d)", self.id, self.cfg.mode, self.first_step)
        self._notify()

    def _resume(self, prev: dict[str, Any]) -> None:
        """Append to the recording an earlier run of the receiver left for this clock (same
        epoch): its samples stay, the steps it did not decode before the restart are recorded
        as silence and counted missing (one chunk per source active at its last step), and
        its counters carry over."""
        assert self.recording is not None
        self.recording.start(0, resume=True)
        stopped = prev["next_step"]
        outage = self.first_step - stopped
        lost = outage * len(prev.get("active", []))
        self.previous_steps = int(prev.get("steps", 0))
        self.late += int(prev.get("late", 0))
        self.missing += int(prev.get("missing", 0)) + lost
        self.duplicates += int(prev.get("duplicates", 0))
        self.bits_received += int(prev.get("bits_received", 0))
        self.steps_within_budget += int(prev.get("steps_within_budget", 0))
        self.outage_steps = int(prev.get("outage_steps", 0)) + outage
        self.restarts = [*prev.get("restarts", []),
                         {"stopped_at_step": stopped, "resumed_at_step": self.first_step, "missing_chunks": lost}]
        energy = prev.get("quality_energy", {})
        for name in self.quality_energy:
            if isinstance(energy.get(name), list) and len(energy[name]) == 2:
                self.quality_energy[name] = [float(v) for v in energy[name]]
        if lost:
            self.metrics.missing.labels(self.id).inc(lost)
        self.output_offset = self.recording.offset
        self.samples_out = self.recorded = self.recording.samples
        self._pad(self.first_step * self.codec.chunk_samples - self.output_offset - self.samples_out)
        log.info("session %s resumes its recording at step %d: %d steps lost to the restart "
                 "(from step %d), %d chunks counted missing", self.id, self.first_step, outage, stopped, lost)

    def _record_meta(self) -> dict[str, Any]:
        """The counters the recording's side file keeps (see server/recording.py)."""
        return {
            "epoch": self.clock.epoch, "state": self.state, "next_step": self.decoded_next,
            "active": self.decoded_active, "steps": self.previous_steps + len(self.steps),
            "late": self.late, "missing": self.missing, "duplicates": self.duplicates,
            "bits_received": self.bits_received, "steps_within_budget": self.steps_within_budget,
            "outage_steps": self.outage_steps, "restarts": self.restarts,
            "quality_energy": self.quality_energy,
        }

    def _active(self) -> frozenset[int]:
        return frozenset(s for s in self.links if not self.sources[s].finished)

    def _open(self, step: int, now: float) -> None:
        active = self._active()
        if self.cell is not None:  # the cell's split of its shared capacity (server/cell.py)
            plan = self.cell.plan(self.id, step)
            cap = plan.capacity_bps
        else:
            t, cap = self.capacity(step)
            plan = plan_for_active(self.codec, cap, active)
        self.plans[step] = OpenPlan(plan, active, now)
        self.opened = step
        self.metrics.capacity.labels(self.id).set(cap)
        self.metrics.budget.labels(self.id).set(plan.budget_coefficients)
        assert self.clock.epoch is not None
        for s, link in self.links.items():
            link.send(P.Allocation(
                step=step, epoch=self.clock.epoch, k=plan.allocation[s],
                budget_bits=plan.bits_per_source[s],
                bits_per_coefficient=self.codec.rate.bits_per_coefficient, capacity_bps=cap,
                total_coefficients=plan.budget_coefficients, total_bits=plan.budget_bits,
            ))
        for old in [k for k in self.plans if k < step - PLAN_HISTORY]:
            del self.plans[old]

    def _waiting_for(self, step: int) -> set[int]:
        p = self.plans[step]
        return {s for s in p.active if s in self.links and self.final_seq.get(s, math.inf) >= step}

    def _all_done(self) -> bool:
        """Every source that joined has ended its stream and none is still streaming."""
        return bool(self.joined) and all(self.sources[s].finished for s in self.joined) and not self._active()

    async def _run(self) -> None:
        try:
            while self.state != "finished":
                now = time.time()
                timeout = self._tick(now)
                if self.state == "finished":
                    break
                self._wake.clear()
                with contextlib.suppress(asyncio.TimeoutError):
                    await asyncio.wait_for(self._wake.wait(), timeout)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            log.exception("session %s failed", self.id)
            self.fail(f"its clock stopped ({type(exc).__name__}: {exc})")

    def fail(self, reason: str) -> None:
        """End a session that cannot go on: its edges get a ``session_failed`` error frame
        with ``reason`` and close 1011; the summary keeps ``reason`` as ``error``."""
        if self.state == "finished":
            return
        self.error = reason
        log.error("session %s cannot go on: %s", self.id, reason)
        for link in list(self.links.values()):
            link.send(P.Error(code="session_failed", message=f"session {self.id!r} cannot go on: {reason}"))
            link.close(P.CLOSE_INTERNAL, "session_failed")
        self._finish_now()

    def _tick(self, now: float) -> float | None:
        """Advance the clock; return how long to sleep at most (None: until woken)."""
        if self.state == "waiting":
            if not self.first_join_at:
                return None
            if self.joined >= self.expected or now - self.first_join_at >= self.cfg.start_timeout_s:
                self._start(now)
            else:
                return self.first_join_at + self.cfg.start_timeout_s - now
        if self._finish_submitted:
            return None
        if not self._ending and self._all_done():
            self._ending = True
        if not self._ending and not self.links and now - self.last_link_at >= self.cfg.idle_timeout_s:
            log.info("session %s: no edge for %.0f s, ending", self.id, self.cfg.idle_timeout_s)
            self._ending = True
        if self.cfg.mode == "realtime":
            wake = self._tick_realtime(now)
        else:
            wake = self._tick_lockstep(now)
        if self._ending and self.buffer.next_step > self.opened:
            self._submit_finish()
            return None
        if not self.links and not self._ending:
            idle = self.last_link_at + self.cfg.idle_timeout_s - now
            wake = idle if wake is None else min(wake, idle)
        return None if wake is None else max(0.0, wake)

    def _tick_realtime(self, now: float) -> float | None:
        while not self._ending and self.clock.open_time(self.opened + 1) <= now:
            self._open(self.opened + 1, now)
        while self.buffer.next_step <= self.opened:
            n = self.buffer.next_step
            waiting = self._waiting_for(n)
            if (waiting and self.buffer.complete(n, waiting)) or (self._ending and not waiting):
                self._close(n, "complete", now)
            elif now >= self.clock.deadline(n):
                self._close(n, "deadline", now)
            else:
                break
        wakes = [] if self._ending else [self.clock.open_time(self.opened + 1) - now]
        if self.buffer.next_step <= self.opened:
            wakes.append(self.clock.deadline(self.buffer.next_step) - now)
        return min(wakes) if wakes else None

    def _tick_lockstep(self, now: float) -> float | None:
        while True:
            n = self.buffer.next_step
            if n > self.opened:
                if self._ending or not self._active():
                    return None
                if n - self.decoded_next >= LOCKSTEP_IN_FLIGHT:
                    return None  # woken when the decoder delivers: no backlog for other sessions
                self._open(n, now)
            waiting = self._waiting_for(n)
            timed_out = now - self.plans[n].opened_at >= self.cfg.lockstep_timeout_s
            if self.buffer.complete(n, waiting) and (waiting or self._ending) or timed_out:
                self._close(n, "complete" if not timed_out else "deadline", now)
                continue
            return self.plans[n].opened_at + self.cfg.lockstep_timeout_s - now

    # ------------------------------------------------------------------ close and decode
    def _valid_frames(self, step: int) -> int:
        if self.length is None:
            return self.frames
        n_frames = self.codec.preset.frames_for(self.length)
        return int(min(self.frames, max(0, n_frames - step * self.frames)))

    def _close(self, step: int, reason: str, now: float) -> None:
        n, items = self.buffer.pop()
        assert n == step
        op = self.plans[n]
        plan = op.plan
        valid = self._valid_frames(n)
        if valid == 0:
            return  # past the end of every stream
        coeffs: list[np.ndarray | None] = [None] * self.n_sources
        for s, item in items.items():
            coeffs[s] = item.coeffs
        missing = sorted(s for s in op.active if s not in items and self.final_seq.get(s, math.inf) >= n)
        self.missing += len(missing)
        if missing:
            self.metrics.missing.labels(self.id).inc(len(missing))
        entry = step_entry(n, n * self.period, plan, op.active, items, missing, reason, valid,
                           self.n_sources, list(self.references))
        self.step_stats[n] = entry
        self.steps.append(entry)
        self.bits_received += entry["bits_total"]
        self.steps_within_budget += entry["bits_total"] <= entry["budget_bits"]
        for old in [k for k in self.step_stats if k < n - PLAN_HISTORY]:
            del self.step_stats[old]
        if self.cell is not None:
            self.cell.received(self.id, n, sum(it.bits for it in items.values()))
        captures = [it.capture_time for it in items.values()]
        self.decoder.submit(DecodeJob(
            key=self.id, step=n, coeffs=coeffs, valid_frames=valid,
            postprocess=self._inverse, finish=None, done=self._decoded,
            closed_at=time.time(),
        ))
        entry["_capture"] = min(captures) if captures else None

    def _inverse(self, spec: torch.Tensor) -> torch.Tensor:
        """Worker thread: one step's spectra ``[M, 2, F, frames]`` -> new audio ``[M, n]``."""
        return self.istft.push(from_channels(spec, self.codec.cfg.representation))

    def _decoded(self, job: DecodeJob, audio: torch.Tensor, done: float) -> None:
        if job.error is not None:
            self.fail(f"decoding step {job.step} failed ({job.error})")
            return
        start = self._append(audio)
        scores = self._score(audio.numpy(), start)
        self.decoded_next = job.step + 1
        if self.cfg.mode == "lockstep":
            self.wake()
        entry = self.step_stats.get(job.step)
        if entry is None:
            return
        self.decoded_active = [s for s in entry["active"] if self.final_seq.get(s, math.inf) > job.step]
        for name, value in scores.items():
            entry[name] = value
            if value is not None:
                self.quality[name].append(value)
        entry["decode_ms"] = (done - job.closed_at) * 1e3
        entry["decode_wait_ms"] = (job.started_at - job.closed_at) * 1e3
        entry["decode_compute_ms"] = job.compute_s * 1e3
        entry["decode_batch"] = job.batch
        self.decode_ms.append(entry["decode_ms"])
        self.metrics.decode_seconds.observe(done - job.closed_at)
        capture = entry.pop("_capture", None)
        if capture is not None:
            entry["e2e_ms"] = (done - capture) * 1e3
            self.e2e_ms.append(entry["e2e_ms"])
            self.metrics.e2e_seconds.observe(done - capture)
        self.metrics.steps.labels(self.id).inc()
        self._notify()

    def _score(self, block: np.ndarray, start: int) -> dict[str, float | None]:
        """SNR (dB) of a decoded block ``[M, n]`` against each reference; adds its energies to
        the whole output's (the final score)."""
        out: dict[str, float | None] = {}
        for name, ref in self.references.items():
            energies = snr_energies(block, ref, start) if block.shape[-1] else None
            out[name] = None
            if energies is not None:
                total = self.quality_energy[name]
                total[0] += energies[0]
                total[1] += energies[1]
                out[name] = db(*energies)
        return out

    def _append(self, audio: torch.Tensor) -> int:
        """Record a decoded block ``[M, n]``; returns its first sample's index in the stream."""
        block = audio.numpy()
        start = self.output_offset + self.samples_out
        self.samples_out += block.shape[-1]
        if self.recorded < self.record_limit and block.shape[-1]:
            keep = block[:, : self.record_limit - self.recorded]
            if self.recording is not None:
                self.recording.append(keep)
            self.recorded += keep.shape[-1]
        if block.shape[-1]:  # the live view's player: the newest TAIL_SECONDS (the same arrays)
            self.tail.append(block)
            self.tail_samples += block.shape[-1]
            while self.tail_samples - self.tail[0].shape[-1] >= TAIL_SECONDS * self.codec.sample_rate:
                self.tail_samples -= self.tail.popleft().shape[-1]
        return start

    def _pad(self, n: int) -> None:
        """``n`` samples of silence in the output (steps lost to a receiver restart)."""
        if n <= 0:
            return
        self.samples_out += n
        keep = min(n, max(0, self.record_limit - self.recorded))
        if self.recording is not None:
            self.recording.pad(keep)
        self.recorded += keep

    def _submit_finish(self) -> None:
        self._finish_submitted = True
        # this run's inverse STFT started at its first step (after a restart, not where the
        # recording starts)
        length = None if self.length is None else self.length - self.first_step * self.codec.chunk_samples
        self.decoder.submit(DecodeJob(
            key=self.id, step=-1, coeffs=[], valid_frames=0, postprocess=None,
            finish=lambda: self.istft.finish(length), done=self._finished,
        ))

    def _finished(self, job: DecodeJob, audio: torch.Tensor, done: float) -> None:
        if job.error is not None:
            self.fail(f"flushing the decoded audio failed ({job.error})")
            return
        start = self._append(audio)
        self._score(audio.numpy(), start)
        self._finish_now()

    def _finish_now(self) -> None:
        self.state = "finished"
        if self.cell is not None:
            self.cell.leave(self.id)
        for name, energies in self.quality_energy.items():
            self.final_quality[f"{name}_overall"] = db(*energies)
        if self.recording is not None:
            # the audio is on disk: the player of a finished session reads it from there
            self.recording.close("finished")
            self.tail.clear()
            self.tail_samples = 0
        for link in list(self.links.values()):
            link.send(P.Bye(reason="session finished"))
            link.close(P.CLOSE_NORMAL, "session finished")
        log.info("session %s finished: %d steps, %.1f s of audio", self.id, len(self.steps),
                 self.samples_out / self.codec.sample_rate)
        self.finished_event.set()
        if self.on_finish is not None:
            self.on_finish(self)
        self.wake()
        self._notify()

    # ------------------------------------------------------------------ reporting
    def summary(self) -> dict[str, Any]:
        return session_summary(self)

    def quality_summary(self) -> dict[str, Any]:
        """Mean per-step SNR, and over the whole output once finished (dB)."""
        out: dict[str, Any] = {}
        for name, values in self.quality.items():
            out[f"{name}_mean_of_steps"] = float(np.mean(values)) if values else None
        return {**out, **self.final_quality}

    def stats(self, since: int = 0) -> dict[str, Any]:
        return session_stats(self, since)
