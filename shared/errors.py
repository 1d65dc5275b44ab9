"""User-facing errors: a message saying what is wrong and what to do, never a traceback."""

from __future__ import annotations

from pydantic import ValidationError


class UserError(Exception):
    """An error caused by the user's input (a file, a value, a flag).

    The command line prints ``str(err)`` and exits with status 2, without a traceback.
    The message names the offending file or value and says how to fix it.
    """


class CheckpointError(UserError):
    """A checkpoint file is missing, corrupt, or of the wrong kind."""


class ConfigError(UserError):
    """A configuration file or value is invalid."""


class AudioError(UserError):
    """An audio file cannot be read or has the wrong format (rate, channels)."""


class TraceError(UserError):
    """A channel trace file cannot be parsed."""


def describe_validation_error(exc: ValidationError, values: bool = False) -> str:
    """Pydantic errors as one line: unknown keys and bad values named by their dotted path (and,
    with ``values``, the value given)."""
    problems = []
    for err in exc.errors():
        where = ".".join(str(p) for p in err["loc"])
        if err["type"] == "extra_forbidden":
            problems.append(f"unknown key {where!r}")
        elif not where:  # a check across fields has no location; its message names the key
            problems.append(err["msg"].removeprefix("Value error, "))
        else:
            given = f" = {err.get('input')!r}" if values else ""
            problems.append(f"{where}{given}: {err['msg']}")
    return "; ".join(problems)
