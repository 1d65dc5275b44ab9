"""User-facing errors: a message saying what is wrong and what to do, never a traceback."""

from __future__ import annotations


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
