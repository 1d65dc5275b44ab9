"""The receiver's sessions: creation from configuration (trace, reference), lookup, shutdown."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable, Collection
from pathlib import Path
from typing import Any

import numpy as np
import soundfile as sf

from server.cell import DEFAULT_RULE, Cell
from server.decoder import BatchDecoder
from server.metrics import ReceiverMetrics
from server.recording import RecordingStore
from server.session import Session
from server.settings import SessionConfig
from shared.codec import Codec
from shared.errors import ConfigError, UserError
from shared.ndpca import weighted_singular_values

log = logging.getLogger(__name__)


def capacity_schedule(cfg: SessionConfig, period_s: float) -> tuple[Callable[[int], tuple[float, float]], dict[str, Any]]:
    """Step -> ``(t, capacity_bps)`` for a session, and a description of the channel."""
    if cfg.capacity_bps is not None:
        cap = float(cfg.capacity_bps)
        return (lambda i: (i * period_s, cap)), {"kind": "constant", "capacity_bps": cap,
                                                 "notes": "constant capacity"}
    from channel_traces import TraceReplay, default_trace_path, load_trace

    path = Path(cfg.trace) if cfg.trace else default_trace_path()
    trace = load_trace(path, fmt=cfg.trace_format, **cfg.trace_options)
    replay = TraceReplay(trace, period_s, loop=True)
    info = {"kind": trace.kind, "source": str(trace.source), "notes": trace.notes,
            "duration_s": trace.duration_s, "path": str(path)}
    return replay.step, info


class UnreadableFile(ConfigError):
    """A session's trace or reference file that could not be read.

    ``str(exc)`` is the full message (with the reader's, which may quote the file: for the
    command line and the log); ``public`` says what is wrong without it (for REST answers).
    """

    def __init__(self, message: str, public: str) -> None:
        super().__init__(message)
        self.public = public


def load_reference(path: str, sample_rate: int, field: str = "reference") -> np.ndarray:
    """A reference audio file -> ``[R, N]`` float32."""
    try:
        data, sr = sf.read(path, dtype="float32", always_2d=True)
    except Exception as exc:
        raise UnreadableFile(f"reference {path} cannot be read ({exc}); pass a WAV/FLAC file",
                             f"{field}: the file cannot be read as audio; pass a WAV or FLAC file") from None
    if sr != sample_rate:
        raise ConfigError(f"{field} is at {sr} Hz; the codec needs {sample_rate} Hz")
    return np.ascontiguousarray(data.T)


def session_schedule(cfg: SessionConfig, chunk_seconds: float
                     ) -> tuple[Callable[[int], tuple[float, float]], dict[str, Any]]:
    """The session's capacity per step from its trace (or constant capacity).

    Raises:
        UnreadableFile: the trace cannot be read (the message names the file and the reader's
            complaint; ``public`` says what is wrong without quoting the file).
    """
    try:
        return capacity_schedule(cfg, chunk_seconds)
    except ConfigError as exc:  # the format or options asked for, not the file's content
        from channel_traces.registry import split_run

        public = str(exc).replace(f"{split_run(cfg.trace)[0]}", "the trace") if cfg.trace else str(exc)
        raise UnreadableFile(f"trace for session {cfg.id!r}: {exc}", f"trace: {public}") from None
    except (UserError, OSError, ValueError) as exc:
        raise UnreadableFile(
            f"trace for session {cfg.id!r}: {exc}",
            f"trace: the file cannot be read as a channel trace of format {cfg.trace_format!r}; "
            "check it with `ndpca traces show FILE` or pass trace_format (the receiver's log has the "
            "reader's message)") from None


def check_session(cfg: SessionConfig, n_sources: int, existing: Collection[str], cell_rules: dict[str, str]) -> None:
    """What a session asks for against the receiver's state: a new id, sources the codec has, and
    the rule of a cell that exists already (``cell_rules``: cell -> rule).

    Raises:
        ConfigError: with what is wrong and what to do.
    """
    if cfg.id in existing:
        raise ConfigError(f"session {cfg.id!r} already exists")
    bad = [s for s in (cfg.sources or []) if not 0 <= s < n_sources]
    if bad:
        raise ConfigError(f"sources {bad} out of range: the codec has {n_sources}")
    rule = cell_rules.get(cfg.cell) if cfg.cell else None
    if rule is not None and cfg.cell_rule is not None and cfg.cell_rule != rule:
        raise ConfigError(f"cell {cfg.cell!r} already exists with rule {rule!r}; "
                          f"create the session with cell_rule {rule!r} or another cell")


def session_references(cfg: SessionConfig, sample_rate: int, num_mics: int,
                       warn: bool = True) -> dict[str, np.ndarray]:
    """The session's reference recordings, by the statistic they score (``snr_db``: clean
    speech against decoded microphone 0; ``mics_snr_db``: the ``num_mics`` captured
    microphones). A channel count that does not fit is used as it is, with a warning
    (``warn``)."""
    refs = {name: load_reference(path, sample_rate, field)
            for name, field, path in (("snr_db", "reference", cfg.reference),
                                      ("mics_snr_db", "mics_reference", cfg.mics_reference)) if path}
    if warn and "snr_db" in refs and refs["snr_db"].shape[0] != 1:
        log.warning("session %s: reference %s has %d channels; decoded microphone 0 is scored against "
                    "its channel 0 (pass the clean speech, mono)", cfg.id, cfg.reference, refs["snr_db"].shape[0])
    if warn and "mics_snr_db" in refs and refs["mics_snr_db"].shape[0] != num_mics:
        log.warning("session %s: mics_reference %s has %d channels and the codec %d microphones; only the "
                    "first %d are scored", cfg.id, cfg.mics_reference, refs["mics_snr_db"].shape[0], num_mics,
                    min(num_mics, refs["mics_snr_db"].shape[0]))
    return refs


class SessionManager:
    def __init__(self, codec: Codec, decoder: BatchDecoder, metrics: ReceiverMetrics,
                 record_seconds: float = 900.0, record_dir: str | None = None,
                 download_bytes_per_s: float = 0.0) -> None:
        self.codec = codec
        self.decoder = decoder
        self.metrics = metrics
        self.record_seconds = record_seconds
        self.record_dir = Path(record_dir) if record_dir else None
        # decoded audio on disk, downloads paced (server/recording.py)
        self.store = RecordingStore(self.record_dir, download_bytes_per_s=download_bytes_per_s)
        self.sessions: dict[str, Session] = {}
        self.cells: dict[str, Cell] = {}

    def create(self, cfg: SessionConfig) -> Session:
        """Create and start a session. Raises UserError for a duplicate id or a bad trace."""
        check_session(cfg, self.codec.n_sources, self.sessions,
                      {name: cell.rule for name, cell in self.cells.items()})
        cell = self.cells.get(cfg.cell) if cfg.cell else None
        if cell is not None:
            schedule, info = cell.schedule, cell.info
        else:
            schedule, info = session_schedule(cfg, self.codec.rate.chunk_seconds)
        refs = session_references(cfg, self.codec.sample_rate, self.codec.cfg.num_mics)
        if cfg.cell and cell is None:
            cell = Cell(cfg.cell, cfg.cell_rule or DEFAULT_RULE, schedule, self.codec.rate,
                        self.codec.cfg.vectors_per_step, info)
            self.cells[cfg.cell] = cell
        session = Session(cfg, self.codec, self.decoder, self.metrics, schedule, info, refs,
                          self.record_seconds, on_finish=self._on_finish, cell=cell, store=self.store)
        if cell is not None:
            costs = (None if self.codec.step_profile == "uniform" else
                     [self.codec.component_costs(s) for s in range(self.codec.n_sources)])
            cell.join(cfg.id, weighted_singular_values(self.codec.bases, self.codec.source_weights),
                      session._active, costs)
        self.sessions[cfg.id] = session
        session.start()
        self._update_gauge()
        log.info("session %s created (%s, channel: %s)", cfg.id, cfg.mode, info.get("notes", ""))
        return session

    def get(self, session_id: str) -> Session | None:
        return self.sessions.get(session_id)

    async def remove(self, session_id: str) -> bool:
        """Stop and forget a session; False when there is none."""
        session = self.sessions.pop(session_id, None)
        if session is None:
            return False
        await session.stop(reason="session deleted")
        await session.release()
        self._update_gauge()
        return True

    def _on_finish(self, session: Session) -> None:
        self._update_gauge()
        if session.recording is not None:
            log.info("session %s: decoded audio in %s", session.id, session.recording.path)

    def _update_gauge(self) -> None:
        for state in ("waiting", "running", "finished"):
            n = sum(1 for s in self.sessions.values() if s.state == state)
            self.metrics.sessions.labels(state).set(n)

    async def shutdown(self) -> None:
        """Stop every session, let the decoder deliver what it has, and close the recordings
        (a restarted receiver appends to them)."""
        for session in self.sessions.values():
            await session.stop()
        with contextlib.suppress(TimeoutError):
            await self.decoder.drain(5.0)
        for session in self.sessions.values():
            await session.release()
        await self.store.close()
