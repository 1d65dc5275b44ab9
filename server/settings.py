"""Typed receiver settings (environment ``NDPCA_*``, command line) and session configuration."""

from __future__ import annotations

import json
import tomllib
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError
from pydantic_settings import BaseSettings, SettingsConfigDict

from shared.errors import ConfigError, describe_validation_error
from shared.protocol import MAX_FRAME_BYTES

Mode = Literal["realtime", "lockstep"]

REPO = Path(__file__).resolve().parents[1]
#: highest constant capacity a session accepts (bit/s): 10 Gbit/s, far above what the codec
#: can use, and small enough that ``floor(C_t T)`` stays an exact integer on the wire
MAX_CAPACITY_BPS = 1e10
#: sources a session may list (source indices are below this)
MAX_SOURCES = 256


class SessionConfig(BaseModel):
    """One session (room): its token, channel trace, clock mode and expected sources.

    Attributes:
        id: session id edges name in their hello.
        token: the per-session secret edges must present (never logged or returned).
        trace: channel trace file (default: ``channel_traces/traces/default.csv``).
        trace_format, trace_options: passed to :func:`channel_traces.load_trace`.
        capacity_bps: a constant channel instead of a trace.
        mode: ``realtime`` (steps every T of wall time) or ``lockstep`` (a step closes as soon
            as every connected source delivered: simulation as fast as possible).
        sources: expected source indices (default: all of the codec's).
        reference: clean speech (mono) to score decoded microphone 0 against (optional).
        mics_reference: the microphones the edges capture (``[S, N]`` file), to score the
            codec's fidelity per microphone (optional).
        grace_s: wait past a chunk's due time before decoding without it.
        start_timeout_s: after the first edge joins, start without the missing ones.
        idle_timeout_s: end the session when no edge has been connected this long.
        lockstep_timeout_s: in lockstep, close a step without a silent source after this.
        cell: sessions with the same cell name share one trace replay (the first creator's
            channel) whose capacity is split among them every step (see :mod:`server.cell`).
        cell_rule: the cell's split rule, ``equal`` or ``pooled``; the first creator sets it
            (default ``equal``), a different rule later is refused.
    """

    model_config = ConfigDict(extra="forbid")

    id: str = Field(pattern=r"^[A-Za-z0-9._-]{1,64}$")
    token: str = Field(min_length=1, max_length=512)
    trace: str | None = Field(None, max_length=4096)
    trace_format: str = Field("auto", max_length=32)
    trace_options: dict[str, Any] = Field(default_factory=dict, max_length=32)
    capacity_bps: float | None = Field(None, strict=True, ge=0, le=MAX_CAPACITY_BPS, allow_inf_nan=False)
    mode: Mode = "realtime"
    sources: list[Annotated[int, Field(strict=True, ge=0, lt=MAX_SOURCES)]] | None = Field(
        None, max_length=MAX_SOURCES)
    reference: str | None = Field(None, max_length=4096)
    mics_reference: str | None = Field(None, max_length=4096)
    grace_s: float = Field(0.1, strict=True, ge=0, le=10.0, allow_inf_nan=False)
    start_timeout_s: float = Field(5.0, strict=True, ge=0, le=3600.0, allow_inf_nan=False)
    idle_timeout_s: float = Field(10.0, strict=True, gt=0, le=86400.0, allow_inf_nan=False)
    lockstep_timeout_s: float = Field(2.0, strict=True, gt=0, le=600.0, allow_inf_nan=False)
    cell: str | None = Field(None, pattern=r"^[A-Za-z0-9._-]{1,64}$")
    cell_rule: Literal["equal", "pooled"] | None = None

    def public(self) -> dict[str, Any]:
        """The configuration without the token."""
        return self.model_dump(exclude={"token"})


class ReceiverSettings(BaseSettings):
    """Receiver settings; every field can be set as ``NDPCA_<FIELD>`` in the environment.

    One session can be configured directly (``NDPCA_SESSION``, ``NDPCA_TOKEN``,
    ``NDPCA_TRACE``, ``NDPCA_MODE``); more with ``NDPCA_SESSIONS_FILE`` (JSON or TOML with a
    list ``sessions`` of :class:`SessionConfig`) or ``POST /sessions`` (admin token).
    """

    model_config = SettingsConfigDict(env_prefix="NDPCA_", extra="ignore")

    checkpoint: str | None = None
    arch: str = "ndpca-e4d1"
    checkpoint_dir: str = "checkpoints"
    device: Literal["auto", "cpu", "cuda"] = "auto"
    host: str = "127.0.0.1"
    port: int = Field(8000, ge=0, le=65535)
    admin_token: str = ""
    sessions_file: str | None = None
    session: str | None = None
    token: str = ""
    token_file: str | None = None
    trace: str | None = None
    capacity_bps: float | None = None
    mode: Mode = "realtime"
    reference: str | None = None
    mics_reference: str | None = None
    grace_s: float = 0.1
    enhancer: str = "identity"
    enhancer_checkpoint: str | None = None  # sgmse: default the newest checkpoint_dir/enhancer-*.ckpt
    enhance_sampler: str | None = None  # sgmse sampler preset (predictive, realtime, fast, quality); None: the checkpoint's
    enhance_steps: int | None = Field(None, ge=1)  # override the preset's number of steps
    enhance_mics: Literal["ref", "all"] = "ref"  # enhance the reference microphone only, or every one
    enhance_context: int | None = Field(None, ge=0)  # sgmse: past frames enhanced with each step (None: the checkpoint's)
    # classical stage: a source's microphones join the beamformer when it sent at least this share
    # of its components in the step (server.enhance.BEAMFORM_MIN_SHARE)
    beamform_min_share: float = Field(1.0, ge=0, le=1)  # 1: full width only
    # quantiser steps (shared/steps.py); None: the codec's own (water for a loaded checkpoint)
    step_profile: Literal["uniform", "water"] | None = None
    max_batch: int = Field(64, ge=1)
    threads: int | None = Field(None, ge=1)
    max_frame_bytes: int = Field(MAX_FRAME_BYTES, ge=256)
    record_seconds: float = Field(900.0, ge=0)
    record_dir: str | None = None
    # MiB/s shared by every audio download (GET /sessions/{id}/audio); 0: unlimited
    download_rate_mib_s: float = Field(8.0, ge=0, allow_inf_nan=False)
    # what sessions created over REST (POST /sessions) may read; see check_admin_paths
    trace_dirs: list[str] = Field(default_factory=lambda: [str(REPO / "channel_traces")])
    reference_dirs: list[str] = Field(default_factory=lambda: [str(REPO / "data")])
    # limits on connections (docs/security.md)
    hello_timeout_s: float = Field(5.0, gt=0, le=300)  # a websocket must send hello within this
    max_connections: int = Field(1024, ge=1)  # open websockets (edges and live views) in total
    max_connections_per_ip: int = Field(128, ge=1)  # open websockets from one client address
    http_header_timeout_s: float = Field(10.0, gt=0, le=300)  # a request's headers must arrive within this
    http_keep_alive_s: int = Field(5, ge=1, le=300)  # idle keep-alive HTTP connections are closed after this
    http_max_concurrency: int = Field(2048, ge=1)  # connections and requests beyond this get 503

    def session_configs(self) -> list[SessionConfig]:
        """Sessions from the sessions file and from the single-session fields."""
        out: list[SessionConfig] = []
        if self.sessions_file:
            out += load_sessions_file(Path(self.sessions_file))
        if self.session:
            if self.token and self.token_file:
                raise ConfigError("the session token is given twice (--token or NDPCA_TOKEN, and --token-file "
                                  f"{self.token_file}); keep one")
            token = self.token or read_token_file(self.token_file)
            if not token:
                raise ConfigError(
                    f"session {self.session!r} has no token; set NDPCA_TOKEN, --token or "
                    "--token-file (edges must present the same token)"
                )
            try:
                out.append(SessionConfig(
                    id=self.session, token=token, trace=self.trace, mode=self.mode,
                    capacity_bps=self.capacity_bps, reference=self.reference,
                    mics_reference=self.mics_reference, grace_s=self.grace_s,
                ))
            except ValidationError as exc:
                raise ConfigError(f"session {self.session!r}: {exc.errors()[0]['msg']}") from None
        return out


def read_token_file(path: str | None) -> str:
    """The first line of a token file ('' when no file is given)."""
    if not path:
        return ""
    try:
        return Path(path).read_text().strip().splitlines()[0].strip()
    except (OSError, IndexError):
        raise ConfigError(f"token file {path} is missing or empty; write the token in it") from None


def load_sessions_file(path: Path) -> list[SessionConfig]:
    """Read ``{"sessions": [...]}`` from a JSON or TOML file."""
    try:
        text = path.read_text()
        data = tomllib.loads(text) if path.suffix == ".toml" else json.loads(text)
    except (OSError, ValueError) as exc:
        raise ConfigError(f"sessions file {path} cannot be read ({exc}); fix the file") from None
    items = data.get("sessions") if isinstance(data, dict) else None
    if not isinstance(items, list) or not all(isinstance(item, dict) for item in items):
        raise ConfigError(f"sessions file {path}: needs a list 'sessions' of tables (JSON objects), e.g. "
                          '{"sessions": [{"id": "room1", "token": "..."}]}')
    out = []
    for i, item in enumerate(items):
        try:
            out.append(SessionConfig(**item))
        except ValidationError as exc:
            raise ConfigError(f"sessions file {path}, session {i} ({item.get('id', 'no id')!r}): "
                              f"{describe_validation_error(exc)}; "
                              f"the fields are {', '.join(SessionConfig.model_fields)}") from None
    return out


ADMIN_PATH_FIELDS = {"trace": "trace_dirs", "reference": "reference_dirs", "mics_reference": "reference_dirs"}


def check_admin_paths(cfg: SessionConfig, settings: ReceiverSettings) -> SessionConfig:
    """Refuse files outside the configured directories in a session created over REST.

    ``trace`` must lie in ``trace_dirs`` (a ``FILE#RUN`` suffix is kept), ``reference`` and
    ``mics_reference`` in ``reference_dirs`` (symbolic links are resolved first). The messages
    name the field and the allowed directories, never the file's path or contents. Returns
    the configuration with the resolved paths.

    Raises:
        ConfigError: a path outside the allowed directories, or no such file.
    """
    from channel_traces.registry import split_run

    changes: dict[str, str] = {}
    for name, dirs_field in ADMIN_PATH_FIELDS.items():
        given = getattr(cfg, name)
        if given is None:
            continue
        file, run = split_run(given) if name == "trace" else (given, None)
        dirs = [Path(d).resolve() for d in getattr(settings, dirs_field)]
        allowed = ", ".join(str(d) for d in dirs) or "none"
        env = f"NDPCA_{dirs_field.upper()}"
        path = Path(file).resolve()
        if not any(path.is_relative_to(d) for d in dirs):
            raise ConfigError(f"{name}: the file is outside the allowed directories ({allowed}); put it "
                              f"in one of them, or add its directory to {env} (--{dirs_field[:-1].replace('_', '-')})")
        if not path.is_file():
            raise ConfigError(f"{name}: no such file in the allowed directories ({allowed}); "
                              "give a path to an existing file")
        changes[name] = str(path) + (f"#{run}" if run is not None else "")
    return cfg.model_copy(update=changes)
