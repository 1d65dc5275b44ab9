"""``ndpca train`` and ``ndpca evaluate``."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from shared.argtypes import non_negative_int, positive_int


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("train", help="train one codec architecture from a TOML config")
    p.add_argument("--config", required=True, help="TOML file (or a name in training/configs/)")
    p.add_argument("--run-dir", type=Path, help="where state, log and checkpoint go (default runs/<config name>)")
    p.add_argument("--out", type=Path, help="also copy the final checkpoint here")
    p.add_argument("--ship", type=Path, metavar="DIR",
                   help="also write DIR/<arch>-<hash8>.ckpt (replacing older ones of that arch)")
    p.add_argument("--resume", action="store_true", help="continue from RUN_DIR/state.pt")
    p.add_argument("--set", action="append", default=[], metavar="SECTION.KEY=VALUE",
                   help="override a config value (repeatable)")
    p.add_argument("--device", default="cpu", choices=["cpu", "cuda", "auto"])
    p.add_argument("--no-progress", action="store_true")
    p.set_defaults(func=_train)

    h = sub.add_parser("train-enhancer", help="train an enhancer (SGMSE: score-based, or its predictive network, the receiver's default)")
    h.add_argument("--config", default="enhancer.toml", help="TOML file (default training/configs/enhancer.toml)")
    h.add_argument("--run-dir", type=Path, help="default runs/<config name>")
    h.add_argument("--out", type=Path, help="also copy the final checkpoint here")
    h.add_argument("--ship", type=Path, metavar="DIR", help="also write DIR/enhancer-<hash8>.ckpt")
    h.add_argument("--resume", action="store_true")
    h.add_argument("--set", action="append", default=[], metavar="SECTION.KEY=VALUE")
    h.add_argument("--device", default="cpu", choices=["cpu", "cuda", "auto"])
    h.add_argument("--no-progress", action="store_true")
    h.set_defaults(func=_train_enhancer)

    e = sub.add_parser("evaluate", help="PESQ/STOI/SI-SDR/PSNR against the measured room rate, every "
                       "codec and Opus (paper Fig. 3b and the rate-quality curves)")
    e.add_argument("--out", type=Path, required=True)
    e.add_argument("--checkpoints", type=Path, help="folder with <arch>-*.ckpt, and full_latent/<arch>-*.ckpt "
                   "for the full-latent naive baselines (default checkpoints/)")
    e.add_argument("--data-dir", type=Path, help="room data set (default data/rooms, built if missing)")
    e.add_argument("--limit", type=positive_int, help="use only N test examples")
    e.add_argument("--bandwidths", help="comma-separated components per latent vector (default "
                   "2,4,8,...,1024; values above the full width are dropped and the full width is "
                   "always added; --task-aware: bandwidths of its sweep)")
    e.add_argument("--methods", help="comma-separated subset of the methods")
    e.add_argument("--opus-kbps", help="comma-separated room-rate targets for Opus in kbit/s "
                   "(default 6,8,12,16,24,32,48,64,96)")
    e.add_argument("--no-opus", action="store_true")
    e.add_argument("--no-perceptual", action="store_true", help="skip PESQ and STOI (fast)")
    e.add_argument("--perceptual-mics", choices=["all", "ref"], default="all",
                   help="PESQ/STOI for every microphone (default) or the reference microphone only")
    e.add_argument("--no-real", action="store_true", help="skip the real-speech evaluation")
    e.add_argument("--workers", type=non_negative_int, default=2, help="processes (0 or 1: this one)")
    e.add_argument("--step-profile", choices=["water", "uniform"], default="water",
                   help="quantiser steps of the learnt and linear codecs (default water: a step per "
                        "component; uniform: the paper's sqrt(12 D) for every coefficient)")
    e.add_argument("--device", default="cpu", choices=["cpu", "cuda", "auto"])
    e.add_argument("--task-aware", action="store_true",
                   help="the task- and perception-aware experiment (Fig. 3c, Fig. 4): task-aware codecs "
                        "(default checkpoints/task_aware/) followed by the score-based enhancer")
    e.add_argument("--enhancer", type=Path, help="--task-aware: enhancer checkpoint (default the score-based "
                   "checkpoints/score/enhancer-*.ckpt the task-aware codecs were trained with)")
    e.add_argument("--sampler", help="enhancer sampler: a preset name (quality, fast, realtime) or "
                                     "default the checkpoint's")
    e.add_argument("--perception-dir", type=Path,
                   help="lambda_perc sweep for Fig. 4: DIR/lp-<value>/ndpca-e4d1-*.ckpt (default checkpoints/perception)")
    e.set_defaults(func=_evaluate)


def _train(args: argparse.Namespace) -> int:
    from shared.device import resolve_device
    from training.config import load_config, parse_overrides
    from training.train import train

    cfg = load_config(args.config, parse_overrides(args.set))
    run_dir = args.run_dir or Path("runs") / Path(args.config).stem
    provenance = {"command": "ndpca " + " ".join(sys.argv[1:]), "config": str(args.config)}
    path = train(cfg, run_dir, out=args.out, resume=args.resume, progress=not args.no_progress,
                 device=resolve_device(args.device), provenance=provenance)
    if path is not None and args.ship is not None:
        path = ship_checkpoint(path, args.ship, cfg.model.arch)
    if path is not None:
        print(f"checkpoint: {path}")
    return 0


def _train_enhancer(args: argparse.Namespace) -> int:
    from shared.device import resolve_device
    from training.config import parse_overrides
    from training.enhancer_train import load_enhancer_config, train_enhancer

    cfg = load_enhancer_config(args.config, parse_overrides(args.set))
    run_dir = args.run_dir or Path("runs") / Path(args.config).stem
    provenance = {"command": "ndpca " + " ".join(sys.argv[1:]), "config": str(args.config)}
    path = train_enhancer(cfg, run_dir, out=args.out, resume=args.resume, progress=not args.no_progress,
                          device=resolve_device(args.device), provenance=provenance)
    if args.ship is not None:
        path = ship_checkpoint(path, args.ship, "enhancer")
    print(f"checkpoint: {path}")
    return 0


def ship_checkpoint(path: Path, ship_dir: Path, arch: str) -> Path:
    """Copy a checkpoint to ``ship_dir/<arch>-<hash8>.ckpt``, removing older ones."""
    import shutil

    from shared.checkpoint import read_header

    digest = read_header(path)["sha256"]
    ship_dir.mkdir(parents=True, exist_ok=True)
    for old in ship_dir.glob(f"{arch}-*.ckpt"):
        if old.stem[len(arch) + 1 :].isalnum() and len(old.stem) == len(arch) + 9:
            old.unlink()
    dest = ship_dir / f"{arch}-{digest[:8]}.ckpt"
    shutil.copyfile(path, dest)
    return dest


def _numbers(text: str | None, flag: str, kind: type = int) -> tuple | None:
    """A comma-separated list of numbers, or None when the flag is absent."""
    from shared.errors import UserError

    if text is None:
        return None
    try:
        values = tuple(kind(b) for b in text.split(","))
    except ValueError:
        raise UserError(f"{flag} must be comma-separated numbers, got {text!r}") from None
    if not all(v > 0 for v in values):
        raise UserError(f"{flag} must be positive numbers, got {text!r}")
    return values


def _evaluate(args: argparse.Namespace) -> int:
    from shared.device import resolve_device
    from shared.errors import UserError
    from training.evaluate import BANDWIDTHS, DEFAULT_CKPT_DIR, METHODS, OPUS_KBPS, run_evaluation

    if args.task_aware:
        return _evaluate_task(args)
    methods = tuple(args.methods.split(",")) if args.methods else tuple(METHODS)
    bad = [m for m in methods if m not in METHODS]
    if bad:
        raise UserError(f"unknown method(s) {bad}; choose from {list(METHODS)}")
    bws = _numbers(args.bandwidths, "--bandwidths") or BANDWIDTHS
    opus = () if args.no_opus else (_numbers(args.opus_kbps, "--opus-kbps", float) or OPUS_KBPS)
    res = run_evaluation(
        args.out, args.checkpoints or DEFAULT_CKPT_DIR, args.data_dir, args.limit, bws, methods,
        opus_kbps=opus, perceptual="none" if args.no_perceptual else args.perceptual_mics,
        workers=args.workers, real=not args.no_real, device=resolve_device(args.device),
        step_profile=args.step_profile,
    )
    print(f"results: {args.out / 'results.csv'}, summary: {args.out / 'summary.md'}, plots: "
          f"{args.out / 'quality_vs_rate.png'}, {args.out / 'fig3b_psnr.png'} ({res['seconds']:.0f} s)")
    if "real" in res:
        print(f"real speech: {args.out / 'real' / 'summary.md'}")
    print(json.dumps(json.loads((args.out / "headline.json").read_text())["mean_below_full"], indent=1))
    return 0


def _evaluate_task(args: argparse.Namespace) -> int:
    from shared.device import resolve_device
    from training.evaluate import BANDWIDTHS
    from training.evaluate_task import PERCEPTION_DIR, TASK_DIR, TASK_METHODS, run_task_evaluation

    methods = tuple(args.methods.split(",")) if args.methods else tuple(TASK_METHODS)
    bws = _numbers(args.bandwidths, "--bandwidths") or BANDWIDTHS
    res = run_task_evaluation(
        args.out, args.checkpoints or TASK_DIR, args.enhancer, args.data_dir, args.limit, bws, methods,
        args.sampler, perceptual=not args.no_perceptual, workers=args.workers, real=not args.no_real,
        device=resolve_device(args.device), perception_dir=args.perception_dir or PERCEPTION_DIR,
        skip_missing=not args.methods,  # the default list: whichever codecs are there
    )
    plots = [str(args.out / name) for name in ("fig3c_psnr.png", "fig4_rdp.png") if (args.out / name).is_file()]
    print(f"results: {args.out / 'results.csv'}, summary: {args.out / 'summary.md'}, "
          f"plots: {', '.join(plots)} ({res['seconds']:.0f} s)")
    print(json.dumps(res["synthetic"]["headline"]["mean_below_full"], indent=1))
    return 0
