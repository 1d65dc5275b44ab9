"""``ndpca serve``: run the receiver on uvicorn."""

from __future__ import annotations

import argparse
from typing import Any

#: uvicorn refuses frames above this itself (1009, no error frame); frames between the app's
#: ``max_frame_bytes`` and this get an error frame and 1009 from the app.
WS_HARD_LIMIT = 1 << 20
#: ``ndpca serve``'s enhancement stage when neither ``--enhancer`` nor ``NDPCA_ENHANCER`` names
#: one (``ReceiverSettings`` itself defaults to ``identity`` for embedded use)
SERVE_ENHANCER = "auto"


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("serve", help="run the receiver (FastAPI + websockets)",
                       description="Run the receiver. Every option can also be set in the "
                       "environment as NDPCA_<OPTION> (e.g. NDPCA_TOKEN).")
    p.add_argument("--host", help="bind address (default 127.0.0.1; 0.0.0.0 in containers)")
    p.add_argument("--port", type=int, help="port (default 8000; 0 picks a free one)")
    p.add_argument("--checkpoint", help="codec checkpoint (default: newest checkpoints/<arch>-*.ckpt)")
    p.add_argument("--arch", help="architecture to look for (default ndpca-e4d1)")
    p.add_argument("--checkpoint-dir", help="where to look for checkpoints (default checkpoints)")
    p.add_argument("--device", choices=["auto", "cpu", "cuda"], help="auto takes CUDA when present")
    p.add_argument("--session", help="create this session at start-up")
    p.add_argument("--token", help="the session's token (prefer NDPCA_TOKEN or --token-file)")
    p.add_argument("--token-file", help="file whose first line is the session token")
    p.add_argument("--trace", help="channel trace of the session (default: the committed default)")
    p.add_argument("--capacity-bps", type=float, help="constant capacity instead of a trace")
    p.add_argument("--mode", choices=["realtime", "lockstep"], help="session clock (default realtime)")
    p.add_argument("--reference", help="clean speech to score decoded microphone 0 against")
    p.add_argument("--mics-reference", help="the captured microphones, to score codec fidelity")
    p.add_argument("--grace", type=float, dest="grace_s", help="seconds to wait for late chunks")
    p.add_argument("--sessions-file", help="JSON/TOML file with a list 'sessions'")
    p.add_argument("--admin-token", help="enables POST /sessions (prefer NDPCA_ADMIN_TOKEN)")
    p.add_argument("--record-dir", help="keep recordings here: <session>.wav grows as the session "
                   "runs (with <session>.json); a restarted receiver appends to them (default: a "
                   "temporary directory, removed at exit)")
    p.add_argument("--record-seconds", type=float, metavar="SECONDS",
                   help="cap on each session's recording (default 900; the live view's player keeps "
                   "playing the newest seconds past it)")
    p.add_argument("--download-rate", type=float, dest="download_rate_mib_s", metavar="MIB_S",
                   help="MiB/s shared by every audio download, so bulk downloads cannot starve "
                   "real-time decoding (default 8; 0: unlimited)")
    p.add_argument("--trace-dir", action="append", dest="trace_dirs", metavar="DIR",
                   help="a directory POST /sessions may take traces from (repeat; default channel_traces/)")
    p.add_argument("--reference-dir", action="append", dest="reference_dirs", metavar="DIR",
                   help="a directory POST /sessions may take references from (repeat; default data/)")
    p.add_argument("--hello-timeout", type=float, dest="hello_timeout_s",
                   help="seconds a websocket has to send its hello (default 5)")
    p.add_argument("--max-connections", type=int, help="open websockets in total (default 1024)")
    p.add_argument("--max-connections-per-ip", type=int, help="open websockets per client address (default 128)")
    p.add_argument("--max-batch", type=int, help="steps decoded together at most (default 64)")
    p.add_argument("--threads", type=int, help="torch CPU threads for decoding (default 1)")
    p.add_argument("--enhancer", choices=["auto", "identity", "sgmse", "classical"],
                   help="enhancement stage (default auto: sgmse, the real-time enhancer, when an enhancer "
                        "checkpoint is found, else identity; classical: streaming MVDR + Wiener post-filter)")
    p.add_argument("--enhancer-checkpoint", help="sgmse: enhancer checkpoint (default checkpoints/enhancer-*.ckpt)")
    p.add_argument("--enhance-sampler",
                   help="sgmse sampler preset: predictive, realtime, fast, quality (default: the checkpoint's own)")
    p.add_argument("--enhance-steps", type=int, help="sgmse: reverse-diffusion steps (overrides the preset)")
    p.add_argument("--enhance-mics", choices=["ref", "all"], help="sgmse: enhance microphone 0 only (default) or all")
    p.add_argument("--enhance-context", type=int,
                   help="sgmse: past STFT frames the enhancer sees with each step (default: what the checkpoint "
                        "was trained for, else 0)")
    p.add_argument("--beamform-min-share", type=float,
                   help="classical stage: a source's microphones join the beamformer when it sent at least "
                        "this share of its components in the step (default 1: full width only; 0: any component)")
    p.add_argument("--step-profile", choices=["water", "uniform"],
                   help="quantiser steps (default water: a step per component, reverse water-filling; "
                        "uniform: the paper's one step sqrt(12 D) for every coefficient)")
    p.set_defaults(func=run)


def settings_from_args(args: argparse.Namespace):
    from server.settings import ReceiverSettings

    fields = ReceiverSettings.model_fields
    given: dict[str, Any] = {k: v for k, v in vars(args).items() if k in fields and v is not None}
    settings = ReceiverSettings(**given)
    if "enhancer" not in settings.model_fields_set:  # neither --enhancer nor NDPCA_ENHANCER
        settings = settings.model_copy(update={"enhancer": SERVE_ENHANCER})
    return settings


def preflight(settings, explicit_arch: str | None):
    """Everything the receiver loads at start-up, loaded before the server starts, so that a
    missing, corrupt, old-layout or wrong-architecture checkpoint, a bad enhancer setting, an
    unreadable trace or reference, or a record directory that is a file stops ``ndpca serve``
    with one line (a UserError, exit status 2) instead of a failed start-up. Returns the codec
    and the enhancement stage, which the server then uses as they are."""
    from pathlib import Path

    from server.app import build_stage
    from server.cell import DEFAULT_RULE
    from server.manager import check_session, session_references, session_schedule
    from server.model import checkpoint_path, load_codec
    from shared.errors import CheckpointError, ConfigError

    codec = load_codec(settings.checkpoint, settings.arch, settings.checkpoint_dir, settings.device)
    if explicit_arch and codec.cfg.arch != explicit_arch:
        path = checkpoint_path(settings.checkpoint, settings.arch, settings.checkpoint_dir)
        raise CheckpointError(f"{path} holds architecture {codec.cfg.arch!r}, but --arch {explicit_arch} was "
                              f"asked for; pass a checkpoint trained for {explicit_arch!r}")
    stage = build_stage(settings, codec)
    seen: list[str] = []
    rules: dict[str, str] = {}
    for cfg in settings.session_configs():
        check_session(cfg, codec.n_sources, seen, rules)
        session_schedule(cfg, codec.rate.chunk_seconds)
        session_references(cfg, codec.sample_rate, codec.cfg.num_mics, warn=False)  # the server warns
        seen.append(cfg.id)
        if cfg.cell:
            rules.setdefault(cfg.cell, cfg.cell_rule or DEFAULT_RULE)
    if settings.record_dir:
        try:
            Path(settings.record_dir).mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise ConfigError(f"--record-dir {settings.record_dir} cannot be created ({exc}); name a "
                              "directory you can write") from None
    return codec, stage


def run(args: argparse.Namespace) -> int:
    import uvicorn

    from server.app import create_app
    from server.serving import uvicorn_config

    settings = settings_from_args(args)
    codec, stage = preflight(settings, explicit_arch=args.arch)
    app = create_app(settings, codec=codec, enhancer=stage)
    uvicorn.Server(uvicorn_config(app, settings)).run()
    return 0
