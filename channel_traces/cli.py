"""The ``traces`` command: ``show`` a trace's statistics and plot, ``generate`` the committed
synthetic traces.

The top-level ``ndpca`` command calls :func:`register`; ``python -m channel_traces`` runs the
same commands through :func:`main`.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from channel_traces.generate import TRACES_DIR, regenerate
from channel_traces.registry import READERS, load_trace
from channel_traces.summary import DEFAULT_MAX_TOTAL, format_summary, plot_trace, summarize
from shared.errors import UserError
from shared.rate import RateConfig

#: Reader options that ``show`` forwards when given on the command line.
_READER_OPTIONS = ("share", "bandwidth_hz", "snr_db", "window_s", "column", "rx_combine")


def _show(args: argparse.Namespace) -> int:
    """Print summary statistics of a trace (and plot it with ``--plot``)."""
    options: dict[str, Any] = {
        name: getattr(args, name) for name in _READER_OPTIONS if getattr(args, name) is not None
    }
    trace = load_trace(args.file, fmt=args.format, **options)
    try:
        cfg = RateConfig(chunk_seconds=args.period)
    except ValueError as err:
        raise UserError(f"--period {args.period}: {err}. Fix: pass a positive period") from None
    print(format_summary(trace, summarize(trace, cfg, args.max_total)))
    if args.plot is not None:
        print(f"plot       {plot_trace(trace, args.plot, cfg, args.max_total)}")
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
    show.add_argument("--period", type=float, default=0.256,
                      help="replay step T in seconds (default 0.256)")
    show.add_argument("--plot", type=Path, default=None, metavar="OUT.png",
                      help="write a PNG of capacity and budget over time")
    show.add_argument("--share", type=float, default=None,
                      help="fraction of a measured link given to this room (throughput, CSI)")
    show.add_argument("--bandwidth-hz", dest="bandwidth_hz", type=float, default=None,
                      help="uplink bandwidth W for SNR traces (overrides the file)")
    show.add_argument("--snr-db", dest="snr_db", type=float, default=None,
                      help="transmit SNR for CSI logs (default: from the log)")
    show.add_argument("--window", dest="window_s", type=float, default=None,
                      help="Mahimahi binning window in seconds (default 1)")
    show.add_argument("--column", default=None, help="5Gophers throughput column or carrier")
    show.add_argument("--rx-combine", dest="rx_combine", choices=["mean", "mrc"], default=None,
                      help="Intel 5300 receive antennas: mean capacity or MRC")
    show.add_argument("--max-total", dest="max_total", type=int, default=DEFAULT_MAX_TOTAL,
                      help="budget cap: sum of the latent sizes (default 256)")
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
