"""Trace format registry and :func:`load_trace` with format detection.

``READERS`` maps a format name to its reader ``(path, **options) -> Trace``. New formats are
added with :func:`register_reader`; nothing dispatches on type names. Detection by content
lives in :mod:`channel_traces.detect`.
"""

from __future__ import annotations

import inspect
import math
import typing
from collections.abc import Callable
from pathlib import Path

from channel_traces._parse import trace_error
from channel_traces.csi import read_esp32, read_intel5300
from channel_traces.detect import SNIFF_BYTES, sniff
from channel_traces.fivegophers import read_5gophers
from channel_traces.gnettrack import read_gnettrack
from channel_traces.native import read_capacity_csv, read_csi_npz, read_snr_csv
from channel_traces.nexmon import read_nexmon
from channel_traces.phy_log import read_phy_log
from channel_traces.picoscenes import read_picoscenes
from channel_traces.throughput import read_cooked, read_mahimahi
from channel_traces.trace import Trace
from shared.errors import ConfigError

Reader = Callable[..., Trace]

READERS: dict[str, Reader] = {
    "snr_csv": read_snr_csv,
    "capacity_csv": read_capacity_csv,
    "csi_npz": read_csi_npz,
    "mahimahi": read_mahimahi,
    "cooked": read_cooked,
    "5gophers": read_5gophers,
    "gnettrack": read_gnettrack,
    "phy_log": read_phy_log,
    "intel5300": read_intel5300,
    "esp32": read_esp32,
    "nexmon": read_nexmon,
    "picoscenes": read_picoscenes,
}

#: Extensions that decide the format without looking inside the file (ambiguous ones such
#: as .csv, .txt, .dat and .pcap are decided by content, see :mod:`channel_traces.detect`).
EXTENSIONS: dict[str, str] = {".npz": "csi_npz"}


def register_reader(name: str, reader: Reader, extensions: tuple[str, ...] = ()) -> None:
    """Add a reader under ``name`` (and claim file ``extensions`` such as ``".foo"``)."""
    if name in READERS:
        raise ValueError(f"trace format {name!r} is already registered")
    READERS[name] = reader
    for ext in extensions:
        EXTENSIONS[ext.lower()] = name


def reader_options(fmt: str) -> list[str]:
    """Keyword options accepted by the reader of ``fmt`` (besides the path)."""
    params = list(inspect.signature(READERS[fmt]).parameters.values())[1:]
    return [p.name for p in params if p.kind is inspect.Parameter.POSITIONAL_OR_KEYWORD]


def detect_format(path: Path) -> str:
    """Guess a file's format: a claimed extension, else its content (magic numbers, the first
    data line), else an extension hint (:mod:`channel_traces.detect`).

    Raises:
        TraceError: when nothing identifies a registered format.
    """
    if path.is_dir():
        raise trace_error(path, "file", "a directory, not a trace file", "name a file in it")
    if not path.is_file():
        raise trace_error(path, "file", "no such file", "check the path (relative to the cwd)")
    suffix = path.suffix.lower()
    if suffix in EXTENSIONS:
        return EXTENSIONS[suffix]
    with path.open("rb") as handle:
        head = handle.read(SNIFF_BYTES)
    name, line = sniff(head, suffix)
    if name is not None:
        return name
    if not head.strip():
        raise trace_error(path, "line 1", "the file is empty", "supply a trace with samples")
    seen = f"the first data line {line[:60]!r}" if line else "its first bytes (binary)"
    raise trace_error(
        path, "line 1",
        f"cannot tell the trace format from the extension {suffix or '(none)'!r} and {seen}",
        f"pass the format explicitly (--format / fmt=), one of: {', '.join(READERS)}",
    )


def split_run(path: str | Path) -> tuple[Path, str | None]:
    """Split ``"FILE#RUN"`` into the file and the run selector: the longest prefix before a
    ``#`` that is a file (when the whole string is not one); else ``(path, None)``."""
    text = str(path)
    if "#" in text and not Path(text).exists():
        cut = len(text)
        while (cut := text.rfind("#", 0, cut)) > 0:
            if Path(text[:cut]).is_file():
                return Path(text[:cut]), text[cut + 1:]
    return Path(path), None


def load_trace(path: str | Path, fmt: str = "auto", **options: object) -> Trace:
    """Read a channel trace file into a :class:`Trace`.

    Args:
        path: the trace file; ``"FILE#RUN"`` selects a run of a file that holds several
            (5Gophers), like ``run=RUN``.
        fmt: a name in :data:`READERS`, or ``"auto"`` to detect it (:func:`detect_format`).
        **options: reader options, e.g. ``share=0.001`` for throughput and CSI logs,
            ``bandwidth_hz`` for SNR CSV, ``window_s`` for Mahimahi, ``snr_db`` for CSI.

    Raises:
        TraceError: unreadable file or unknown format. ConfigError: an option the reader
            does not accept.
    """
    file, run = split_run(path)
    name = detect_format(file) if fmt == "auto" else fmt
    if name not in READERS:
        raise ConfigError(
            f"unknown trace format {fmt!r} for {file}. Fix: use 'auto' or one of: "
            f"{', '.join(READERS)}"
        )
    accepted = reader_options(name)
    if run is not None:
        if "run" not in accepted:
            raise ConfigError(f"{path}: '#{run}' selects a run, but format {name!r} has no runs. "
                              "Fix: drop the '#...' suffix")
        if options.get("run") not in (None, run):
            raise ConfigError(f"{path}: run given twice ('#{run}' and run={options['run']!r}). "
                              "Fix: keep one")
        options = {**options, "run": run}
    unknown = sorted(set(options) - set(accepted))
    if unknown:
        raise ConfigError(
            f"{file}: format {name!r} does not accept option(s) {', '.join(unknown)}. "
            f"Fix: drop them (accepted: {', '.join(accepted) or 'none'})"
        )
    return READERS[name](file, **_typed_options(name, file, options))


def _typed_options(fmt: str, file: Path, options: dict[str, object]) -> dict[str, object]:
    """Reader options checked against the reader's annotations: a number option given as text
    (the command line, JSON) is converted; one that is not a finite number is a ConfigError
    naming it."""
    try:
        hints = typing.get_type_hints(READERS[fmt])
    except Exception:  # a registered reader whose annotations do not resolve: options as given
        return dict(options)
    out: dict[str, object] = {}
    for key, value in options.items():
        kinds = typing.get_args(hints[key]) or (hints[key],) if key in hints else ()
        optional = type(None) in kinds
        kinds = tuple(k for k in kinds if k is not type(None))
        if not kinds or not all(isinstance(k, type) and k is not typing.Any for k in kinds):
            out[key] = value  # unannotated, Any, Literal ...: the reader checks it
        elif value is None and optional:
            out[key] = None
        elif isinstance(value, bool) or not isinstance(value, (int, float, str)):
            pass  # refused below
        elif float in kinds:
            try:
                number = float(value)
            except ValueError:
                number = math.nan
            if not math.isfinite(number):
                raise ConfigError(f"{file}: option {key}={value!r} must be a finite number (format {fmt!r})")
            out[key] = number
        elif isinstance(value, kinds):
            out[key] = value
        elif str in kinds:
            out[key] = str(value)
        if key not in out:
            names = " or ".join("a number" if k is float else k.__name__ for k in kinds)
            raise ConfigError(f"{file}: option {key}={value!r} must be {names} (format {fmt!r})")
    return out
