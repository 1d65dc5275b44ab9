"""The ``ndpca`` command line: a thin dispatcher over the project's packages.

Subcommands register themselves (``register(subparsers)``) and set ``func(args) -> int``.
User errors (:class:`shared.errors.UserError`, and settings that fail their validation) print
one line and exit with status 2.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys
from collections.abc import Sequence

from pydantic import ValidationError
from pydantic_settings import SettingsError

from shared.errors import UserError, describe_validation_error

# modules providing register(subparsers); a missing optional module is skipped
COMMAND_MODULES = (
    "training.data.cli",
    "training.cli",
    "channel_traces.cli",
    "server.cli",
    "edge_client.cli",
    "ndpca.demo",
    "ndpca.bench_enhancer",
    "ndpca.cells_bench",
    "ndpca.loadtest",
)


def build_parser(modules: Sequence[str] = COMMAND_MODULES, prog: str = "ndpca") -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=prog,
        description="NDPCA-aided distributed speech coding: data, training, evaluation, streaming.",
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in modules:
        try:
            module = importlib.import_module(name)
        except ModuleNotFoundError as exc:
            if exc.name and name.startswith(exc.name):
                continue
            raise
        module.register(sub)
    return parser


def main(
    argv: Sequence[str] | None = None,
    modules: Sequence[str] = COMMAND_MODULES,
    prog: str = "ndpca",
) -> int:
    """Parse ``argv`` and run the chosen command; ``modules`` limits which commands load
    (``python -m server`` loads only ``server.cli``)."""
    parser = build_parser(modules, prog)
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    if not getattr(args, "func", None):
        parser.print_help()
        return 1
    try:
        return int(args.func(args) or 0)
    except UserError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except (ValidationError, SettingsError) as exc:  # an option or environment value out of its range
        if args.verbose:
            raise
        print(f"error: {describe_invalid(exc)}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


def describe_invalid(exc: ValidationError | SettingsError) -> str:
    """A settings validation error in one line: each value, what it must be, where it is set."""
    if isinstance(exc, SettingsError):  # an environment value that does not parse (e.g. a list)
        return f"{exc}; lists in NDPCA_* variables are JSON, e.g. NDPCA_TRACE_DIRS='[\"traces\"]'"
    where = ""
    if exc.title == "ReceiverSettings" and exc.errors()[0]["loc"]:
        where = f" (the command-line option, or NDPCA_{str(exc.errors()[0]['loc'][0]).upper()} in the environment)"
    return f"invalid {exc.title}{where}: {describe_validation_error(exc, values=True)}"


if __name__ == "__main__":
    sys.exit(main())
