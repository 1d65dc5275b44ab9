"""``ndpca edge``: one edge device process (one source of a session)."""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
from pathlib import Path
from urllib.parse import urlparse

from shared.errors import UserError

log = logging.getLogger(__name__)


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "edge", help="stream one microphone group to the receiver",
        description="One edge device: reads its microphones from a file, paces them in real "
        "time (or --fast), sends the allocated NDPCA components. Token from --token, "
        "--token-file or NDPCA_TOKEN.",
    )
    p.add_argument("--url", default=os.environ.get("NDPCA_RECEIVER_URL", "ws://127.0.0.1:8000/ws"),
                   help="receiver websocket (env NDPCA_RECEIVER_URL)")
    p.add_argument("--session", default=os.environ.get("NDPCA_SESSION"), help="session id (env NDPCA_SESSION)")
    p.add_argument("--source", type=int, required=True, help="source index s (one encoder)")
    p.add_argument("--input", required=True, type=Path, help="WAV/FLAC: every microphone, or this source's")
    p.add_argument("--channel", type=int, action="append",
                   help="channel(s) of --input to use (default: the codec's microphones of the source)")
    p.add_argument("--token", help="session token (prefer NDPCA_TOKEN or --token-file)")
    p.add_argument("--token-file", help="file whose first line is the session token")
    p.add_argument("--checkpoint", default=os.environ.get("NDPCA_CHECKPOINT"),
                   help="codec checkpoint (default: newest checkpoints/<arch>-*.ckpt)")
    p.add_argument("--arch", default=os.environ.get("NDPCA_ARCH", "ndpca-e4d1"))
    p.add_argument("--checkpoint-dir", default=os.environ.get("NDPCA_CHECKPOINT_DIR", "checkpoints"))
    p.add_argument("--fast", action="store_true", help="do not pace in real time (simulation)")
    p.add_argument("--retry-for", type=float, default=60.0,
                   help="give up after the receiver is unreachable this many seconds")
    p.add_argument("--stats-out", type=Path, help="write the edge's statistics (JSON) here")
    p.set_defaults(func=run)


def resolve_token(token: str | None, token_file: str | None) -> str:
    """The session token: --token, else the first line of --token-file, else NDPCA_TOKEN."""
    if token and token_file:
        raise UserError(f"the session token is given twice (--token and --token-file {token_file}); keep one")
    if token:
        return token
    if token_file:
        try:
            return Path(token_file).read_text().strip().splitlines()[0].strip()
        except (OSError, IndexError):
            raise UserError(f"token file {token_file} is missing or empty") from None
    return os.environ.get("NDPCA_TOKEN", "")


def run(args: argparse.Namespace) -> int:
    import torch

    from edge_client.audio import read_source_audio
    from edge_client.client import EdgeClient, EdgeConfig
    from edge_client.encoder import LiveEncoder
    from shared.codec import Codec
    from shared.streaming import find_checkpoint

    torch.set_num_threads(1)
    url = urlparse(args.url)
    if url.scheme not in ("ws", "wss") or not url.hostname:
        raise UserError(f"--url {args.url!r} is not a websocket URL; the receiver's edge endpoint is "
                        "ws://HOST:PORT/ws (wss:// behind a TLS proxy)")
    if not args.session:
        raise UserError("no session given; pass --session or set NDPCA_SESSION")
    path = args.checkpoint or find_checkpoint(args.arch, args.checkpoint_dir)
    if path is None:
        raise UserError(f"no checkpoint for {args.arch} in {args.checkpoint_dir}/; pass --checkpoint FILE")
    codec = Codec.load(path, device="cpu")
    if not 0 <= args.source < codec.n_sources:
        raise UserError(f"--source {args.source} out of range: the codec has {codec.n_sources} sources")
    channels = args.channel or codec.mic_groups[args.source]
    if len(channels) != len(codec.mic_groups[args.source]):
        raise UserError(f"source {args.source} has {len(codec.mic_groups[args.source])} microphone(s); "
                        f"{len(channels)} channel(s) given")
    audio = read_source_audio(args.input, channels, codec.sample_rate, min_samples=codec.preset.n_fft // 2 + 1,
                              room_mics=codec.cfg.num_mics)
    cfg = EdgeConfig(args.url, args.session, args.source, resolve_token(args.token, args.token_file),
                     realtime=not args.fast, retry_for_s=args.retry_for)
    encoder = LiveEncoder(codec, args.source, audio)
    encoder.warm_up()
    client = EdgeClient(cfg, codec, encoder)
    stats = asyncio.run(client.run())
    log.info("source %d done: %d chunks, %d bits, encoder RTF %.4f", args.source, stats["chunks_sent"],
             stats["bits_sent"], stats["encoder_rtf_mean"] or 0.0)
    if args.stats_out:
        args.stats_out.parent.mkdir(parents=True, exist_ok=True)
        args.stats_out.write_text(json.dumps(stats, indent=1))
    return 0
