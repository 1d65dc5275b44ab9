"""Channel traces: capacity over time for the simulated uplink of one room.

Public API:

* :class:`Trace`: times, capacity (bit/s), kind, source, notes; ``capacity_at``, ``steps``.
* :func:`load_trace` (format registry :data:`READERS`, :func:`detect_format`).
* :class:`TraceReplay`: per-step capacity for the receiver.
* :mod:`channel_traces.generate`: seeded synthetic traces, :func:`regenerate`.
* :func:`default_trace_path`: the committed default trace.

Formats, derivations and the choice of ``share`` are documented in ``README.md`` here.
"""

from pathlib import Path

from channel_traces._parse import TraceWarning
from channel_traces.generate import TRACES_DIR, generate, regenerate
from channel_traces.registry import READERS, detect_format, load_trace, register_reader
from channel_traces.replay import TraceReplay
from channel_traces.summary import suggest_share, summarize
from channel_traces.trace import Trace


def default_trace_path() -> Path:
    """Path of the committed default trace, ``channel_traces/traces/default.csv``."""
    return TRACES_DIR / "default.csv"


__all__ = [
    "READERS",
    "TRACES_DIR",
    "Trace",
    "TraceReplay",
    "TraceWarning",
    "default_trace_path",
    "detect_format",
    "generate",
    "load_trace",
    "regenerate",
    "register_reader",
    "summarize",
    "suggest_share",
]
