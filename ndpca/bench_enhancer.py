"""``ndpca bench-enhancer --out DIR``: the receiver enhancer's quality against its cost.

For each sampler setting (a preset, or a preset with another number of steps):

* **quality**: test rooms coded by the codec at a fixed total bandwidth, microphone 0's decoded
  spectrogram enhanced as a whole utterance; PSNR (Eq. 13), SI-SDR, PESQ-WB and STOI against
  the clean reference (the first row, ``decoded``, is the decoder output without enhancement);
* **real-time factor**: what the receiver does for one 4-source session per step (decode one
  chunk, enhance it with this sampler, streaming inverse STFT), timed per chunk with one torch
  thread (the receiver's default on CPU) and divided by the chunk length T; median and p95.

An RTF below 1 means one session runs in real time on this machine. Writes ``bench.csv``,
``bench.json`` and ``bench.md``.
"""

from __future__ import annotations

import argparse
import csv
import dataclasses
import json
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

SETTINGS = (
    ("realtime", None), ("realtime", 1), ("fast", 2), ("fast", None), ("fast", 8),
    ("quality", 10), ("quality", None),
)


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("bench-enhancer", help="enhancer steps against PESQ, SI-SDR and real-time factor")
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--codec", help="codec checkpoint (default: checkpoints/task_aware/ndpca-e4d1-*, "
                                   "else checkpoints/ndpca-e4d1-*)")
    p.add_argument("--enhancer", type=Path, help="enhancer checkpoint (default checkpoints/enhancer-*.ckpt)")
    p.add_argument("--data-dir", type=Path, help="room data set (default data/rooms)")
    p.add_argument("--limit", type=int, default=8, help="test examples for the quality columns")
    p.add_argument("--bandwidth", type=int, default=64, help="total coefficients per chunk")
    p.add_argument("--chunks", type=int, default=40, help="chunks timed per setting")
    p.add_argument("--settings", help="comma-separated preset[:steps] list (default: a sweep)")
    p.set_defaults(func=run)


def _settings(text: str | None) -> list[tuple[str, int | None]]:
    if not text:
        return list(SETTINGS)
    out = []
    for item in text.split(","):
        name, _, steps = item.partition(":")
        out.append((name, int(steps) if steps else None))
    return out


def _codec_path(name: str | None) -> Path:
    from training.evaluate import DEFAULT_CKPT_DIR, find_checkpoint
    from training.evaluate_task import TASK_DIR

    if name:
        return Path(name)
    try:
        return find_checkpoint(TASK_DIR, "ndpca-e4d1")
    except Exception:
        return find_checkpoint(DEFAULT_CKPT_DIR, "ndpca-e4d1")


def run(args: argparse.Namespace) -> int:
    from ndpca.bench import machine
    from shared.codec import Codec
    from shared.enhancer import ScoreEnhancer, sampler_from_name
    from shared.errors import UserError
    from shared.stft import convert_channels, from_channels, istft, stft, to_channels
    from shared.streaming import StreamingISTFT
    from training.data.dataset import default_data_dir
    from training.evaluate import _load_examples, perceptual_scores
    from training.losses import psnr_db
    from training.metrics import si_sdr_db
    from training.task_aware import find_enhancer

    out: Path = args.out
    out.mkdir(parents=True, exist_ok=True)
    torch.set_num_threads(1)
    codec_path = _codec_path(args.codec)
    codec = Codec.load(codec_path)
    enh_path = find_enhancer(str(args.enhancer) if args.enhancer else None)
    enhancer = ScoreEnhancer.load(enh_path).eval()
    data_dir = args.data_dir or default_data_dir()
    if not (data_dir / "manifest.json").is_file():
        raise UserError(f"no data set in {data_dir}; run `ndpca data build`")
    examples = _load_examples(data_dir, "test", args.limit)
    preset, sr = codec.preset, codec.sample_rate
    decoded = []
    for ex in examples:
        _, st = codec.code_signal(ex["mics"].float(), args.bandwidth)
        y = convert_channels(st["spectra"][0], codec.cfg.representation)
        decoded.append((y, ex["clean"].float()))
    # one session's steps: chunks of the first example, decoded coefficients as the receiver has them
    mics = examples[0]["mics"].float()
    coeffs, _ = codec.signal_coefficients(mics)
    plan = codec.plan_for_components(args.bandwidth)
    steps = [[c[i : i + 1, :, : plan.allocation[s]] for s, c in enumerate(coeffs)]
             for i in range(min(args.chunks, coeffs[0].shape[0]))]
    rows: list[dict[str, Any]] = []
    for name, n_steps in [("decoded", None), *_settings(args.settings)]:
        sampler = None
        if name != "decoded":
            sampler = sampler_from_name(name)
            if n_steps is not None:
                sampler = dataclasses.replace(sampler, steps=n_steps)
        scores = {"psnr_db": [], "si_sdr_db": [], "pesq": [], "stoi": []}
        jobs = []
        for y, clean in decoded:
            est = y if sampler is None else enhancer.enhance(y[None], sampler)[0]
            ref_ch = to_channels(stft(clean, preset), "complex")
            scores["psnr_db"].append(float(psnr_db(est[None, None], ref_ch[None, None])[0]))
            wave = istft(from_channels(est, "complex"), preset, clean.shape[-1]).numpy()
            scores["si_sdr_db"].append(si_sdr_db(clean.numpy(), wave))
            jobs.append((clean.numpy(), wave, sr))
        for pesq_v, stoi_v in perceptual_scores(jobs, workers=1, progress=False):
            scores["pesq"].append(pesq_v)
            scores["stoi"].append(stoi_v)
        istft_stream = StreamingISTFT(preset, 1)
        times = []
        for row in steps:
            t0 = time.perf_counter()
            spec = codec.decode_coefficients(row)
            y = spec[:, :1]
            if sampler is not None:
                y = enhancer.enhance(y, sampler)
            istft_stream.push(from_channels(y[0], "complex"))
            times.append(time.perf_counter() - t0)
        rtf = np.array(times[2:] or times) / codec.chunk_seconds
        rows.append({
            "setting": name if n_steps is None else f"{name}:{n_steps}",
            "evaluations": 0 if sampler is None else enhancer.evaluations(sampler),
            "sampler": "" if sampler is None else json.dumps(sampler.as_dict()),
            **{k: float(np.nanmean(v)) for k, v in scores.items()},
            "rtf_median": float(np.median(rtf)), "rtf_p95": float(np.percentile(rtf, 95)),
        })
        r = rows[-1]
        print(f"{r['setting']:>12}  evals {r['evaluations']:3d}  PSNR {r['psnr_db']:6.2f}  SI-SDR {r['si_sdr_db']:7.2f}  "
              f"PESQ {r['pesq']:.2f}  STOI {r['stoi']:.3f}  RTF {r['rtf_median']:.3f} (p95 {r['rtf_p95']:.3f})")
    with open(out / "bench.csv", "w", newline="") as fh:
        w = csv.DictWriter(fh, list(rows[0]))
        w.writeheader()
        w.writerows(rows)
    meta = {"machine": machine(), "codec": f"{codec_path.name} (sha256 {codec.sha256[:12]})",
            "enhancer": f"{enh_path.name} (sha256 {enhancer.sha256[:12]})", "bandwidth": args.bandwidth,
            "n_examples": len(examples), "chunk_seconds": codec.chunk_seconds, "torch_threads": 1,
            "chunks_timed": len(steps)}
    (out / "bench.json").write_text(json.dumps({"meta": meta, "rows": rows}, indent=1))
    lines = ["# Enhancer: steps against quality and real-time factor", "",
             f"Machine: {meta['machine']}. One torch thread. Codec {meta['codec']}, enhancer {meta['enhancer']}, "
             f"total bandwidth {args.bandwidth} coefficients per chunk, {len(examples)} test rooms, "
             f"T = {codec.chunk_seconds * 1e3:.0f} ms, {len(steps)} chunks timed per setting.", "",
             "| setting | network evaluations | PSNR (dB) | SI-SDR (dB) | PESQ-WB | STOI | RTF median | RTF p95 |",
             "|---|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['setting']} | {r['evaluations']} | {r['psnr_db']:.2f} | {r['si_sdr_db']:.2f} | "
                     f"{r['pesq']:.2f} | {r['stoi']:.3f} | {r['rtf_median']:.3f} | {r['rtf_p95']:.3f} |")
    lines += ["", "Quality: microphone 0 against the clean reference, whole utterances. RTF: per step of one "
              "4-source session, decode + enhancement + streaming inverse STFT, divided by T (below 1: real time).",
              "", f"Command: `ndpca bench-enhancer --out {out}`"]
    (out / "bench.md").write_text("\n".join(lines) + "\n")
    print(f"wrote {out / 'bench.md'}")
    return 0
