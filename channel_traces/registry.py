"""Trace format registry and :func:`load_trace` with format detection.

``READERS`` maps a format name to its reader ``(path, **options) -> Trace``. New formats are
added with :func:`register_reader`; nothing dispatches on type names.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from pathlib import Path

from channel_traces._parse import trace_error
from channel_traces.csi import read_esp32, read_intel5300
from channel_traces.native import (
    CAPACITY_HEADER,
    SNR_HEADER,
    read_capacity_csv,
    read_csi_npz,
    read_snr_csv,
)
from channel_traces.throughput import read_5gophers, read_cooked, read_mahimahi
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
    "intel5300": read_intel5300,
    "esp32": read_esp32,
}

#: Extensions that decide the format without looking inside the file.
EXTENSIONS: dict[str, str] = {".npz": "csi_npz", ".dat": "intel5300"}

_SNIFF_BYTES = 8192


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


def _first_data_line(path: Path) -> str:
    """The first non-blank, non-comment line of a text file ('' when binary or empty)."""
    with path.open("rb") as handle:
        head = handle.read(_SNIFF_BYTES)
    try:
        text = head.decode("utf-8")
    except UnicodeDecodeError:
        return ""
    for line in text.splitlines():
        stripped = line.strip()
        if stripped and not stripped.startswith("#"):
            return stripped
    return ""


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def detect_format(path: Path) -> str:
    """Guess a file's format from its extension, then its first data line.

    Raises:
        TraceError: when neither identifies a registered format.
    """
    if not path.is_file():
        raise trace_error(path, "file", "no such file", "check the path (relative to the cwd)")
    suffix = path.suffix.lower()
    if suffix in EXTENSIONS:
        return EXTENSIONS[suffix]
    line = _first_data_line(path)
    header = tuple(cell.strip().lower() for cell in line.split(","))
    tokens = line.split()
    if header == SNR_HEADER:
        return "snr_csv"
    if header == CAPACITY_HEADER:
        return "capacity_csv"
    if "csi_data" in header and "rssi" in header:
        return "esp32"
    if "seq_num" in header and any(h.endswith("throughput_mbps") for h in header):
        return "5gophers"
    if len(tokens) == 1 and tokens[0].isdigit():
        return "mahimahi"
    if len(tokens) == 2 and all(_is_number(t) for t in tokens):
        return "cooked"
    raise trace_error(
        path, "line 1",
        f"cannot tell the trace format from the extension {suffix or '(none)'!r} "
        f"and the first data line {line[:60]!r}",
        f"pass the format explicitly (--format / fmt=), one of: {', '.join(READERS)}",
    )


def load_trace(path: str | Path, fmt: str = "auto", **options: object) -> Trace:
    """Read a channel trace file into a :class:`Trace`.

    Args:
        path: the trace file.
        fmt: a name in :data:`READERS`, or ``"auto"`` to detect it (:func:`detect_format`).
        **options: reader options, e.g. ``share=0.001`` for throughput and CSI logs,
            ``bandwidth_hz`` for SNR CSV, ``window_s`` for Mahimahi, ``snr_db`` for CSI.

    Raises:
        TraceError: unreadable file or unknown format. ConfigError: an option the reader
            does not accept.
    """
    file = Path(path)
    name = detect_format(file) if fmt == "auto" else fmt
    if name not in READERS:
        raise ConfigError(
            f"unknown trace format {fmt!r} for {file}. Fix: use 'auto' or one of: "
            f"{', '.join(READERS)}"
        )
    accepted = reader_options(name)
    unknown = sorted(set(options) - set(accepted))
    if unknown:
        raise ConfigError(
            f"{file}: format {name!r} does not accept option(s) {', '.join(unknown)}. "
            f"Fix: drop them (accepted: {', '.join(accepted) or 'none'})"
        )
    return READERS[name](file, **options)
