"""Shared parsing helpers for trace readers: located errors and checked numeric columns.

Every reader reports a bad file with :func:`trace_error`, whose message names the file, the
line (or array index) and field, what is wrong, and how to fix it, as ``shared.errors``
asks of a :class:`~shared.errors.UserError`.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np

from shared.errors import ConfigError, TraceError


class TraceWarning(UserWarning):
    """A recoverable problem in a trace file (for example rows skipped as truncated)."""


def trace_error(path: Path | str, where: str, problem: str, fix: str) -> TraceError:
    """Build a :class:`TraceError` reading ``"<file>:<where>: <problem>. Fix: <fix>"``.

    Args:
        path: the trace file.
        where: the location, e.g. ``"line 12, field 'time_s'"`` or ``"array 'h', index 3"``.
        problem: what is wrong with the value found there.
        fix: what the user should do about it.
    """
    return TraceError(f"{path}:{where}: {problem}. Fix: {fix}")


def warn_skipped(path: Path | str, skipped: Sequence[int], total: int, reason: str) -> None:
    """Emit one :class:`TraceWarning` counting the rows skipped and naming their lines."""
    if not skipped:
        return
    shown = ", ".join(str(n) for n in skipped[:10]) + (" ..." if len(skipped) > 10 else "")
    warnings.warn(
        TraceWarning(f"{path}: skipped {len(skipped)} of {total} rows ({reason}): line {shown}"),
        stacklevel=3,
    )


def read_text_lines(path: Path) -> list[str]:
    """Read a text trace as lines; a missing, binary or empty file is a :class:`TraceError`."""
    if not path.is_file():
        raise trace_error(path, "file", "no such file", "check the path (relative to the cwd)")
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as err:
        raise trace_error(
            path, f"byte {err.start}", "not UTF-8 text", "pass the right --format for a binary log"
        ) from None
    lines = text.splitlines()
    if not any(line.strip() for line in lines):
        raise trace_error(path, "line 1", "the file is empty", "supply a trace with samples")
    return lines


def numbered_rows(lines: Sequence[str], start: int = 0) -> Iterator[tuple[int, str]]:
    """Yield ``(line_number, stripped_line)`` from ``lines[start:]``, 1-based, skipping blanks
    and ``#`` comments."""
    for index in range(start, len(lines)):
        line = lines[index].strip()
        if line and not line.startswith("#"):
            yield index + 1, line


def parse_float(path: Path, lineno: int, field: str, text: str, *, finite: bool = True) -> float:
    """Parse one number; non-numeric text, NaN (and inf when ``finite``) raise TraceError."""
    try:
        value = float(text)
    except ValueError:
        raise trace_error(
            path, f"line {lineno}, field '{field}'", f"{text!r} is not a number",
            "write a plain decimal number (e.g. 12.5) in this column",
        ) from None
    if math.isnan(value) or (finite and math.isinf(value)):
        raise trace_error(
            path, f"line {lineno}, field '{field}'", f"{text!r} is not a finite number",
            "remove this row or replace the value with a measured one",
        )
    return value


def check_increasing(path: Path, times: np.ndarray, linenos: Sequence[int], field: str) -> None:
    """Require strictly increasing times; the error names the first offending line."""
    if times.size == 0:
        raise trace_error(path, "line 1", "the file has no data rows", "add at least one sample")
    bad = np.flatnonzero(np.diff(times) <= 0)
    if bad.size:
        i = int(bad[0]) + 1
        raise trace_error(
            path, f"line {linenos[i]}, field '{field}'",
            f"time {times[i]:g} does not increase (previous sample {times[i - 1]:g})",
            "sort the rows by time and drop duplicated timestamps",
        )


def check_nonnegative(path: Path, values: np.ndarray, linenos: Sequence[int], field: str) -> None:
    """Require values >= 0 (capacities, throughputs); the error names the line."""
    bad = np.flatnonzero(values < 0)
    if bad.size:
        i = int(bad[0])
        raise trace_error(
            path, f"line {linenos[i]}, field '{field}'", f"negative value {values[i]:g}",
            "a capacity or throughput cannot be negative: use 0 for an outage",
        )


def check_share(share: float) -> float:
    """Validate the fraction of a measured link given to this room (0 < share <= 1)."""
    if not (isinstance(share, int | float) and 0.0 < float(share) <= 1.0):
        raise ConfigError(
            f"share must be in (0, 1], got {share!r}. Fix: pass the fraction of the link's "
            "capacity given to this room, e.g. --share 0.0005 (see channel_traces/README.md)"
        )
    return float(share)


def parse_header_comments(lines: Sequence[str]) -> dict[str, str]:
    """Collect ``# key: value`` comment lines (anywhere in the file) into a dict."""
    meta: dict[str, str] = {}
    for line in lines:
        stripped = line.strip()
        if stripped.startswith("#") and ":" in stripped:
            key, value = stripped[1:].split(":", 1)
            meta[key.strip().lower()] = value.strip()
    return meta
