"""``ndpca bench-enhancer --out DIR``: the receiver enhancer's quality against its cost.

Every row is a receiver enhancement stage (:mod:`server.enhance`) run as the receiver runs it,
one 32 ms step at a time: ``decoded`` (no enhancement), ``classical`` (the streaming MVDR and
Wiener post-filter over the microphones that sent coefficients) and the score-based stage at
each sampler setting ``preset[:steps[:context frames]]`` (an enhancer trained after the
classical stage runs it first):

* **quality**: test rooms coded by the codec at a fixed bandwidth, every step of the decoded
  spectra through the stage (one session per room); PSNR (Eq. 13), SI-SDR, PESQ-WB and STOI of
  the output against the clean reference;
* **real-time factor**: per step of one 4-source session (decode the step, the stage, the
  streaming inverse STFT), timed with one torch thread (the receiver's default on CPU) and
  divided by the step length T; median and p95.

An RTF below 1 means one session runs in real time on this machine. Writes ``bench.csv``,
``bench.json`` and ``bench.md``.
"""

from __future__ import annotations

import argparse
import csv
import json
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from shared.argtypes import positive_int

#: (preset, steps or None for the preset's, context frames or None for the checkpoint's); for an
#: enhancer with a predictive network, :data:`PREDICTIVE_SETTINGS`
PREDICTIVE_SETTINGS = (("predictive", None, 0), ("predictive", None, 4), ("predictive", None, 12),
                       ("predictive", None, 28))
SETTINGS = (
    ("realtime", None, 0), ("realtime", None, 12), ("realtime", None, 28), ("realtime", 1, 12),
    ("fast", None, 12), ("fast", 8, 12), ("quality", 10, 12),
)


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("bench-enhancer", help="enhancer steps against PESQ, SI-SDR and real-time factor")
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--codec", help="codec checkpoint (default: the receiver's, the newest checkpoints/ndpca-e4d1-*)")
    p.add_argument("--enhancer", type=Path, help="enhancer checkpoint (default checkpoints/enhancer-*.ckpt)")
    p.add_argument("--data-dir", type=Path, help="room data set (default: the held-out real-speech rooms "
                   "data/rooms_real, built from ../shared/data when it is there, else data/rooms)")
    p.add_argument("--limit", type=positive_int, default=8, help="test examples for the quality columns")
    p.add_argument("--bandwidth", type=positive_int, default=256,
                   help="components per step shared by the sources (default 256)")
    p.add_argument("--chunks", type=positive_int, default=40, help="chunks timed per setting")
    p.add_argument("--settings", help="comma-separated preset[:steps[:context frames]] list (default: a sweep)")
    p.set_defaults(func=run)


def _command(args: argparse.Namespace, out: Path) -> str:
    """The command line that makes this table again (the options that were given)."""
    given = [f"--{name.replace('_', '-')} {value}" for name in ("codec", "enhancer", "data_dir", "settings")
             if (value := getattr(args, name, None))]
    given += [f"--limit {args.limit}", f"--bandwidth {args.bandwidth}", f"--chunks {args.chunks}"]
    return " ".join(["ndpca bench-enhancer --out", str(out), *given])


def _settings(text: str | None, predictive: bool = False) -> list[tuple[str, int | None, int | None]]:
    if not text:
        return list(PREDICTIVE_SETTINGS if predictive else SETTINGS)
    from shared.enhancer import SAMPLER_PRESETS
    from shared.errors import UserError

    out = []
    for item in text.split(","):
        parts = item.strip().split(":")
        name, steps, context = (parts + ["", ""])[:3]
        try:
            if len(parts) > 3 or name not in SAMPLER_PRESETS:
                raise ValueError
            out.append((name, int(steps) if steps else None, int(context) if context else None))
        except ValueError:
            raise UserError(f"--settings: {item!r} is not preset[:steps[:context frames]] with a preset of "
                            f"{', '.join(SAMPLER_PRESETS)} and whole numbers") from None
        steps, context = out[-1][1:]
        if (steps is not None and steps < 1) or (context is not None and context < 0):
            raise UserError(f"--settings: {item!r} needs steps >= 1 and context frames >= 0")
    return out


def _label(name: str, steps: int | None, context: int) -> str:
    label = name if steps is None else f"{name}:{steps}"
    return label + (f" +{context} frames" if context else "")


def _codec_path(name: str | None) -> Path:
    """The codec given, else the one the receiver serves by default."""
    from training.evaluate import DEFAULT_CKPT_DIR, find_checkpoint

    return Path(name) if name else find_checkpoint(DEFAULT_CKPT_DIR, "ndpca-e4d1")


def run(args: argparse.Namespace) -> int:
    from ndpca.bench import machine
    from server.enhance import (
        ClassicalStreamingEnhancer,
        IdentityEnhancer,
        ScoreBasedEnhancer,
        beamforming_mask,
    )
    from shared.codec import Codec
    from shared.errors import UserError
    from shared.stft import convert_channels, from_channels, stft, to_channels
    from shared.streaming import StreamingISTFT
    from training.data.dataset import default_data_dir
    from training.evaluate import load_examples, perceptual_scores, real_rooms
    from training.losses import psnr_db
    from training.metrics import si_sdr_db
    from training.stage_eval import run_stage
    from training.task_aware import find_enhancer

    out: Path = args.out
    out.mkdir(parents=True, exist_ok=True)
    torch.set_num_threads(1)
    codec_path = _codec_path(args.codec)
    codec = Codec.load(codec_path)
    enh_path = find_enhancer(str(args.enhancer) if args.enhancer else None)
    data_dir = args.data_dir or real_rooms(default_data_dir(), codec.cfg.num_mics, args.limit) or default_data_dir()
    if not (data_dir / "manifest.json").is_file():
        raise UserError(f"no data set in {data_dir}; run `ndpca data build`")
    examples = load_examples(data_dir, "test", args.limit)
    preset, sr, g = codec.preset, codec.sample_rate, codec.frames_per_step
    decoded = []  # (spectra [M, 2, F, T padded to steps], active mics, frames, clean)
    for ex in examples:
        _, st = codec.code_signal(ex["mics"].float(), args.bandwidth)
        spec = st["spectra"].cpu()
        frames = spec.shape[-1]
        spec = torch.nn.functional.pad(spec, (0, (-frames) % g))
        active = beamforming_mask(codec, st["allocation"])  # the receiver's rule
        decoded.append((spec, active, frames, ex["clean"].float()))
    # one session's steps: chunks of the first example, decoded coefficients as the receiver has them
    mics = examples[0]["mics"].float()
    coeffs, _ = codec.signal_coefficients(mics)
    plan = codec.plan_for_components(args.bandwidth)
    steps = [[c[i : i + 1, :, : plan.allocation[s]] for s, c in enumerate(coeffs)]
             for i in range(min(args.chunks, coeffs[0].shape[0]))]
    active_row = beamforming_mask(codec, plan.allocation)[None]
    stages: list[tuple[str, Any]] = [("decoded", IdentityEnhancer()), ("classical", ClassicalStreamingEnhancer(codec))]
    from shared.enhancer import ScoreEnhancer

    predictive = bool(ScoreEnhancer.load(enh_path).header.get("predictive", False))
    for name, n_steps, context in _settings(args.settings, predictive):
        stage = ScoreBasedEnhancer(codec, enh_path, name, n_steps, context_frames=context)
        stages.append((_label(name, n_steps, stage.context_frames), stage))
    rows: list[dict[str, Any]] = []
    for label, stage in stages:
        scores = {"psnr_db": [], "si_sdr_db": [], "pesq": [], "stoi": []}
        jobs = []
        for e, (spec, active, frames, clean) in enumerate(decoded):
            with torch.no_grad():
                est = run_stage(stage, codec, spec, active, f"bench-{e}")[:1, ..., :frames]
            est = convert_channels(est[0], codec.cfg.representation)
            ref_ch = to_channels(stft(clean, preset), "complex")
            scores["psnr_db"].append(float(psnr_db(est[None, None], ref_ch[None, None])[0]))
            wave = codec.to_audio(convert_channels(est, "complex", codec.cfg.representation)[None],
                                  clean.shape[-1])[0].cpu().numpy()
            scores["si_sdr_db"].append(si_sdr_db(clean.numpy(), wave))
            jobs.append((clean.numpy(), wave, sr))
        for pesq_v, stoi_v in perceptual_scores(jobs, workers=1, progress=False):
            scores["pesq"].append(pesq_v)
            scores["stoi"].append(stoi_v)
        istft_stream = StreamingISTFT(preset, 1)
        times = []
        stateful = getattr(stage, "stateful", False)
        with torch.no_grad():
            for row in steps:
                t0 = time.perf_counter()
                spec = codec.decode_coefficients(row)
                y = stage(spec, keys=["timed"], active=active_row) if stateful else stage(spec)
                istft_stream.push(from_channels(convert_channels(y[0, :1], codec.cfg.representation), "complex"))
                times.append(time.perf_counter() - t0)
        if hasattr(stage, "release"):
            stage.release("timed")
        rtf = np.array(times[2:] or times) / codec.chunk_seconds
        sampler = getattr(stage, "sampler", None)
        rows.append({
            "setting": label,
            "evaluations": 0 if sampler is None else stage.enhancer.evaluations(sampler),
            "context_frames": getattr(stage, "context_frames", 0),
            "sampler": "" if sampler is None else json.dumps(sampler.as_dict()),
            **{k: float(np.nanmean(v)) for k, v in scores.items()},
            "rtf_median": float(np.median(rtf)), "rtf_p95": float(np.percentile(rtf, 95)),
        })
        r = rows[-1]
        print(f"{r['setting']:>24}  evals {r['evaluations']:3d}  PSNR {r['psnr_db']:6.2f}  SI-SDR {r['si_sdr_db']:7.2f}  "
              f"PESQ {r['pesq']:.2f}  STOI {r['stoi']:.3f}  RTF {r['rtf_median']:.3f} (p95 {r['rtf_p95']:.3f})")
    with open(out / "bench.csv", "w", newline="") as fh:
        w = csv.DictWriter(fh, list(rows[0]))
        w.writeheader()
        w.writerows(rows)
    front = stages[-1][1].front_end if len(stages) > 2 else "mic"
    meta = {"machine": machine(), "codec": f"{codec_path.name} (sha256 {codec.sha256[:12]})",
            "enhancer": f"{Path(enh_path).name} (front end: {front})", "bandwidth": args.bandwidth,
            "n_examples": len(examples), "data": str(data_dir), "chunk_seconds": codec.chunk_seconds,
            "torch_threads": 1, "chunks_timed": len(steps)}
    (out / "bench.json").write_text(json.dumps({"meta": meta, "rows": rows}, indent=1))
    lines = ["# Enhancer: steps against quality and real-time factor", "",
             f"Machine: {meta['machine']}. One torch thread. Codec {meta['codec']}, enhancer {meta['enhancer']}, "
             f"{args.bandwidth} components per step, {len(examples)} test rooms of {data_dir.name}, "
             f"T = {codec.chunk_seconds * 1e3:.0f} ms, {len(steps)} steps timed per setting.", "",
             "| stage | network evaluations | PSNR (dB) | SI-SDR (dB) | PESQ-WB | STOI | RTF median | RTF p95 |",
             "|---|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['setting']} | {r['evaluations']} | {r['psnr_db']:.2f} | {r['si_sdr_db']:.2f} | "
                     f"{r['pesq']:.2f} | {r['stoi']:.3f} | {r['rtf_median']:.3f} | {r['rtf_p95']:.3f} |")
    lines += ["", "Quality: microphone 0 (the stage's output) against the clean reference, every step through "
              "the stage as the receiver runs it. RTF: per step of one 4-source session, decode + stage + "
              "streaming inverse STFT, divided by T (below 1: real time).",
              "", f"Command: `{_command(args, out)}`"]
    (out / "bench.md").write_text("\n".join(lines) + "\n")
    print(f"wrote {out / 'bench.md'}")
    return 0
