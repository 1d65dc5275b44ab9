"""Shared parsing helpers for trace readers: located errors, skipped rows, checked columns.

Every reader reports a bad file with :func:`trace_error`, whose message names the file, the
line (or array index, record, frame) and field, what is wrong, and how to fix it, as
``shared.errors`` asks of a :class:`~shared.errors.UserError`. Readers of measured logs
skip a few malformed rows with :class:`SkippedRows` (one :class:`TraceWarning` counting
them by reason) and reject a log with more than :data:`MAX_BAD_FRACTION` of them.
"""

from __future__ import annotations

import csv
import math
import warnings
from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from shared.errors import ConfigError, TraceError

#: Largest fraction of malformed rows (or records) a measured log may hold and still load:
#: up to this many are skipped with a :class:`TraceWarning`, more is a :class:`TraceError`.
MAX_BAD_FRACTION = 0.1


class TraceWarning(UserWarning):
    """A recoverable problem in a trace file (for example rows skipped as truncated)."""


class LocatedTraceError(TraceError):
    """A :class:`TraceError` that keeps its parts, so a reader can skip the row it names."""

    def __init__(self, path: Path | str, where: str, problem: str, fix: str) -> None:
        super().__init__(f"{path}:{where}: {problem}. Fix: {fix}")
        self.path, self.where, self.problem, self.fix = str(path), where, problem, fix


def trace_error(path: Path | str, where: str, problem: str, fix: str) -> TraceError:
    """Build a :class:`TraceError` reading ``"<file>:<where>: <problem>. Fix: <fix>"``.

    Args:
        path: the trace file.
        where: the location, e.g. ``"line 12, field 'time_s'"`` or ``"array 'h', index 3"``.
        problem: what is wrong with the value found there.
        fix: what the user should do about it.
    """
    return LocatedTraceError(path, where, problem, fix)


@dataclass
class SkippedRows:
    """The malformed rows (or binary records) of one measured log, skipped while reading.

    A reader calls :meth:`skip` with the :class:`LocatedTraceError` a row raised, then
    :meth:`finish` once with the number of rows read: a few bad rows (at most
    :data:`MAX_BAD_FRACTION`) give one :class:`TraceWarning` counting them by reason and naming
    their lines; more, or no good row at all, raise the first error, with the count.

    Attributes:
        path: the log.
        unit: what a row is called in messages (``"rows"``, ``"records"``, ``"frames"``).
    """

    path: Path | str
    unit: str = "rows"
    errors: list[tuple[int, str, LocatedTraceError]] = field(default_factory=list)

    def skip(self, number: int, err: TraceError, reason: str | None = None) -> None:
        """Record that row ``number`` (a line, or a record index) was skipped.

        ``reason`` (for the count in the warning) defaults to ``"bad <field>"`` when the
        error names a field, else to the error's problem.
        """
        located = err if isinstance(err, LocatedTraceError) else LocatedTraceError(
            self.path, f"{self.unit[:-1]} {number}", str(err), "repair or remove it")
        if reason is None:
            field_at = located.where.find("field '")
            reason = (f"bad {located.where[field_at + 7:].rstrip(chr(39))}" if field_at >= 0
                      else located.problem.split(" (")[0])
        self.errors.append((number, reason, located))

    def __len__(self) -> int:
        """Number of rows skipped so far."""
        return len(self.errors)

    def finish(self, total: int) -> str:
        """Raise if too many rows are bad, else warn once; return a note for ``Trace.notes``.

        Args:
            total: rows read (good and bad).
        """
        if not self.errors:
            return ""
        count = len(self.errors)
        if count > MAX_BAD_FRACTION * total or count >= total:
            first = self.errors[0][2]
            raise trace_error(
                first.path, first.where,
                f"{first.problem} ({count} of {total} {self.unit} are bad, more than "
                f"{MAX_BAD_FRACTION:.0%}: the log is not loaded)", first.fix)
        reasons = Counter(reason for _, reason, _ in self.errors)
        why = "; ".join(f"{n} {reason}" for reason, n in reasons.items())
        numbers = [number for number, _, _ in self.errors]
        label = "line" if self.unit == "rows" else self.unit[:-1]
        warn_skipped(self.path, numbers, total, why, unit=self.unit, label=label)
        return f"{count} of {total} {self.unit} skipped ({why})"


def warn_skipped(
    path: Path | str, skipped: Sequence[int], total: int, reason: str,
    unit: str = "rows", label: str = "line",
) -> None:
    """Emit one :class:`TraceWarning` counting the rows skipped and naming their lines."""
    if not skipped:
        return
    shown = ", ".join(str(n) for n in skipped[:10]) + (" ..." if len(skipped) > 10 else "")
    warnings.warn(
        TraceWarning(f"{path}: skipped {len(skipped)} of {total} {unit} ({reason}): "
                     f"{label} {shown}"),
        stacklevel=3,
    )


def read_text_lines(path: Path) -> list[str]:
    """Read a text trace as lines; a missing, binary or empty file is a :class:`TraceError`."""
    if not path.is_file():
        raise trace_error(path, "file", "no such file", "check the path (relative to the cwd)")
    try:
        text = path.read_text(encoding="utf-8-sig")  # a byte-order mark (spreadsheet exports) is dropped
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


#: Cells that real logs write for "no value" (G-NetTrack writes '-').
MISSING_CELLS = frozenset({"", "-", "--", "na", "n/a", "nan", "null", "none"})


def optional_float(path: Path, lineno: int, field: str, text: str | None) -> float | None:
    """Parse a cell that may be missing: ``None`` for :data:`MISSING_CELLS`, else a finite
    number; anything else raises a :class:`LocatedTraceError` naming the line and field."""
    cell = (text or "").strip()
    if cell.lower() in MISSING_CELLS:
        return None
    return parse_float(path, lineno, field, cell)


def guess_delimiter(header: str) -> str | None:
    """The column separator of a delimited text log from its header line (``None``: spaces)."""
    for delimiter in (",", "\t", ";"):
        if delimiter in header:
            return delimiter
    return None


def read_table(path: Path, lines: Sequence[str]) -> tuple[list[str], list[tuple[int, list[str]]]]:
    """Split a delimited text log into its header cells and ``(line number, cells)`` rows.

    The header is the first non-blank, non-``#`` line; its separator (comma, tab, semicolon,
    else whitespace) is used for every row; quoted cells follow the CSV rules.
    """
    rows = numbered_rows(lines)
    first = next(rows, None)
    if first is None:
        raise trace_error(path, "line 1", "the file has no header line", "keep the log's header")
    delimiter = guess_delimiter(first[1])

    def cells(line: str) -> list[str]:
        if delimiter is None:
            return line.split()
        return [cell.strip() for cell in next(csv.reader([line], delimiter=delimiter))]

    return cells(first[1]), [(lineno, cells(line)) for lineno, line in rows]


def find_column(header: Sequence[str], *names: str) -> int | None:
    """Index of the first header cell equal to one of ``names`` (case-insensitive), or None."""
    lowered = [cell.strip().lower() for cell in header]
    for name in names:
        if name.lower() in lowered:
            return lowered.index(name.lower())
    return None
