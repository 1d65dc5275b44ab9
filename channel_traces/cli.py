"""The ``traces`` command: ``show`` a trace's statistics and plot, ``generate`` the committed
synthetic traces.

The top-level ``ndpca`` command calls :func:`register`; ``python -m channel_traces`` runs the
same commands through :func:`main`.
"""

from __future__ import annotations

import argparse
import sys
import warnings
from pathlib import Path
from typing import Any

from channel_traces._parse import TraceWarning
from channel_traces.generate import TRACES_DIR, regenerate
from channel_traces.registry import READERS, load_trace
from channel_traces.summary import DEFAULT_MAX_TOTAL, format_summary, plot_trace, summarize
from shared.argtypes import positive_float, positive_int
from shared.errors import UserError
from shared.rate import RateConfig

#: Reader options that ``show`` forwards when given on the command line.
_READER_OPTIONS = ("share", "bandwidth_hz", "snr_db", "window_s", "column", "rx_combine", "run",
                   "metric", "chip", "noise_dbm")


def _option_value(text: str) -> Any:
    """A ``--option`` value: an int, a float, or the text itself."""
    for kind in (int, float):
        try:
            return kind(text)
        except ValueError:
            pass
    return text


def _options(args: argparse.Namespace) -> dict[str, Any]:
    """Reader options from the named flags and the generic ``--option KEY=VALUE``."""
    options: dict[str, Any] = {
        name: getattr(args, name) for name in _READER_OPTIONS if getattr(args, name) is not None
    }
    for item in args.option:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise UserError(f"--option {item!r} is not KEY=VALUE. Fix: e.g. --option states=D")
        options[key.strip().replace("-", "_")] = _option_value(value.strip())
    return options


#: steps ``traces show`` computes at most (about 100 s of a 10 us period; each is a few floats)
MAX_STEPS = 10_000_000


def _show(args: argparse.Namespace) -> int:
    """Print summary statistics of a trace (and plot it with ``--plot``)."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", TraceWarning)
        trace = load_trace(args.file, fmt=args.format, **_options(args))
    for warning in caught:
        if issubclass(warning.category, TraceWarning):
            print(f"warning    {warning.message}")
        else:
            warnings.showwarning(warning.message, warning.category, warning.filename,
                                 warning.lineno)
    steps = trace.duration_s / args.period
    if steps > MAX_STEPS:
        raise UserError(f"--period {args.period:g} s cuts this {trace.duration_s:g} s trace into {steps:.3g} steps "
                        f"(at most {MAX_STEPS:.0e}); pass a period of at least {trace.duration_s / MAX_STEPS:.3g} s")
    cfg = RateConfig(chunk_seconds=args.period)
    print(format_summary(trace, summarize(trace, cfg, args.max_total)))
    if args.plot is not None:
        plot = args.plot if args.plot.suffix else args.plot.with_suffix(".png")  # what matplotlib writes
        if plot.parent.exists() and not plot.parent.is_dir():
            raise UserError(f"--plot {args.plot}: {plot.parent} is a file; name a path in a directory")
        print(f"plot       {plot_trace(trace, plot, cfg, args.max_total)}")
    return 0


def _generate(args: argparse.Namespace) -> int:
    """Regenerate the committed synthetic traces into ``--out``."""
    for path in regenerate(args.out):
        print(path)
    return 0


def register(subparsers: Any) -> None:
    """Add the ``traces`` command (``show``, ``generate``) to an argparse subparsers object.

    Every leaf parser sets ``func(args) -> int`` (0 on success).
    """
    traces = subparsers.add_parser("traces", help="inspect and generate channel traces",
                                   description="Inspect (show) and generate channel traces.")
    def _usage(_args: argparse.Namespace) -> int:
        traces.print_help()
        return 2

    traces.set_defaults(func=_usage)
    sub = traces.add_subparsers(dest="traces_command", metavar="{show,generate}")

    show = sub.add_parser("show", help="print statistics of a trace and plot it")
    show.add_argument("file", type=Path, help="trace file")
    show.add_argument("--format", default="auto", choices=["auto", *READERS],
                      help="trace format (default: detect from extension and content)")
    show.add_argument("--period", type=positive_float, default=0.032,
                      help="replay step T in seconds (default 0.032, the default codec's step)")
    show.add_argument("--plot", type=Path, default=None, metavar="OUT.png",
                      help="write a PNG of capacity and budget over time")
    show.add_argument("--share", type=float, default=None,
                      help="fraction of a measured link given to this room (throughput, CSI)")
    show.add_argument("--bandwidth-hz", dest="bandwidth_hz", type=float, default=None,
                      help="uplink bandwidth W for SNR traces (overrides the file)")
    show.add_argument("--snr-db", dest="snr_db", type=float, default=None,
                      help="SNR for CSI logs (default: from the log, or an assumption)")
    show.add_argument("--window", dest="window_s", type=float, default=None,
                      help="Mahimahi binning window in seconds (default 1)")
    show.add_argument("--column", default=None, help="5Gophers throughput column or carrier")
    show.add_argument("--run", default=None,
                      help="5Gophers run: N (1-based) or key=value,... (or FILE#RUN)")
    show.add_argument("--metric", choices=["throughput", "snr", "cqi"], default=None,
                      help="G-NetTrack column to derive capacity from (default throughput)")
    show.add_argument("--chip", default=None, help="Nexmon chip: 4339, 43455c0, 4358, 4366c0")
    show.add_argument("--noise-dbm", dest="noise_dbm", type=float, default=None,
                      help="PicoScenes noise power (default thermal + 7 dB noise figure)")
    show.add_argument("--option", action="append", default=[], metavar="KEY=VALUE",
                      help="any other reader option, e.g. states=all, nr_tti_ms=1, "
                           "td_unit=ms (see channel_traces/README.md)")
    show.add_argument("--rx-combine", dest="rx_combine", choices=["mean", "mrc"], default=None,
                      help="CSI receive antennas: mean capacity or MRC")
    show.add_argument("--max-total", dest="max_total", type=positive_int, default=DEFAULT_MAX_TOTAL,
                      help="budget cap: coefficients per step at full width (default 1536)")
    show.set_defaults(func=_show)

    gen = sub.add_parser("generate", help="regenerate the committed synthetic traces")
    gen.add_argument("--out", type=Path, default=TRACES_DIR,
                     help=f"output folder (default {TRACES_DIR})")
    gen.set_defaults(func=_generate)


def main(argv: list[str] | None = None) -> int:
    """Stand-alone entry point: ``python -m channel_traces traces show FILE``."""
    parser = argparse.ArgumentParser(prog="channel_traces")
    register(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(argv)
    try:
        return int(args.func(args))
    except UserError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
