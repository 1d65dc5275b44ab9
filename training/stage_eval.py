"""The receiver's enhancement stages, run step by step exactly as the receiver runs them.

``python -m training.stage_eval`` codes each held-out room with a codec at several bandwidths
(allocation, quantisation and entropy coding as edges and receiver do), then passes every
32 ms step of the decoded spectra through each enhancement stage of :mod:`server.enhance`
(built by :func:`server.enhance.build_enhancer`, one session per room, told which microphones
carry signal), and scores the reference microphone's output against the clean reference
(PESQ-WB, STOI, SI-SDR, :mod:`training.metrics`). The noisy microphones as captured go
through the same stages (all microphones active). Stages are named ``identity``,
``classical``, ``sgmse`` or ``sgmse:<sampler>:<context frames>``; ``--enhancer-checkpoint``
picks the score model (an enhancer trained after the classical stage runs it first).
``--varying`` adds an input whose budget changes from step to step among the bandwidths, as a
live channel's does (the microphones the beamformer may use then come and go).

Unlike ``training.classical_eval`` (whole signals, the offline WPE chain), this measures what
a listener of the receiver hears: causal stages, the allocation's active microphones, and the
score model's view limited to its step and context.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from shared.errors import UserError
from training.metrics import pesq_wb, si_sdr_db, stoi

REPO = Path(__file__).resolve().parents[1]


def parse_stage(spec: str, checkpoint: Path | None) -> tuple[str, dict[str, Any]]:
    """``name[:sampler[:context]]`` -> (stage name, build_enhancer options)."""
    name, *rest = spec.split(":")
    options: dict[str, Any] = {}
    if name == "sgmse":
        options = {"checkpoint": str(checkpoint) if checkpoint else None,
                   "sampler": rest[0] if rest and rest[0] else None,
                   "context": int(rest[1]) if len(rest) > 1 and rest[1] else None}
    elif rest:
        raise UserError(f"stage {spec!r}: only sgmse takes a sampler and context (sgmse:<sampler>:<frames>)")
    return name, options


def run_stage(stage, codec, spectra: torch.Tensor, active: torch.Tensor, key: str) -> torch.Tensor:
    """Spectra ``[M, 2, F, T]`` (T a multiple of the step) -> the stage's output ``[C, 2, F, T]``,
    one call per step as the receiver's decoder makes them. ``active``: the microphones that
    carry signal, ``[M]`` for every step or ``[steps, M]`` step by step."""
    g = codec.frames_per_step
    rows = []
    for j, i in enumerate(range(0, spectra.shape[-1], g)):
        x = spectra[None, ..., i : i + g]
        act = active if active.dim() == 1 else active[min(j, active.shape[0] - 1)]
        rows.append(stage(x, keys=[key], active=act[None]) if getattr(stage, "stateful", False) else stage(x))
    if hasattr(stage, "release"):
        stage.release(key)
    return torch.cat(rows, dim=-1)[0]


def varying_schedule(n_steps: int, levels: int, seed: int, stay: float = 0.7) -> np.ndarray:
    """Which of ``levels`` budgets each step gets: a seeded random walk that keeps its level with
    probability ``stay`` and otherwise moves one level up or down, as a fading channel moves the
    receiver's budget from step to step."""
    rng = np.random.default_rng(seed)
    out = np.empty(n_steps, dtype=int)
    j = int(rng.integers(levels))
    for i in range(n_steps):
        if i and rng.random() > stay:
            j = int(np.clip(j + rng.choice((-1, 1)), 0, levels - 1))
        out[i] = j
    return out


def evaluate_stages(examples: Sequence[dict[str, Any]], codec, bandwidths: Sequence[int],
                    stages: dict[str, Any], noisy: bool = True,
                    min_share: float | None = None, varying: bool = False) -> list[dict[str, Any]]:
    """Mean scores per (input, stage) over ``examples`` (``mics`` ``[M, N]``, ``clean`` ``[N]``
    tensors), with each input's measured room rate and each stage's CPU seconds per second.
    ``min_share``: the beamformer's rule (:func:`server.enhance.beamforming_mask`; None: the
    receiver's default). ``varying``: one more input whose budget changes from step to step
    among ``bandwidths`` (:func:`varying_schedule`, seeded per room), so that the allocation, and
    with it the microphones the beamformer may use, changes as it does on a live channel. Each
    step is coded and decoded on its own, so that input is exact: step ``i`` of the decoded
    spectra at its step's budget."""
    from server.enhance import BEAMFORM_MIN_SHARE, beamforming_mask

    share = BEAMFORM_MIN_SHARE if min_share is None else min_share
    per: dict[tuple[str, str], list[dict[str, float]]] = {}
    g = codec.frames_per_step
    for e, ex in enumerate(examples):
        mics, clean = ex["mics"].float(), ex["clean"].float().numpy()
        n = mics.shape[-1]
        seconds = n / codec.sample_rate
        n_frames = codec.spectra(mics[:1]).shape[-1]
        inputs = []
        if noisy:
            spec = codec.spectra(mics)
            pad = (-spec.shape[-1]) % g
            spec = torch.nn.functional.pad(spec, (0, pad))
            inputs.append(("noisy", spec, torch.ones(mics.shape[0], dtype=torch.bool), float("nan")))
        coeffs = codec.signal_coefficients(mics)
        fixed = []
        for bw in bandwidths:
            with torch.no_grad():
                _, stats = codec.code_signal(mics, bw, coefficients=coeffs)
            spec = stats["spectra"].cpu()
            pad = (-spec.shape[-1]) % g
            spec = torch.nn.functional.pad(spec, (0, pad))
            active = beamforming_mask(codec, stats["allocation"], share)
            fixed.append((spec, active, stats["bits_per_chunk"]))
            inputs.append((f"decoded L={bw}", spec, active, stats["bitrate_bps"] / 1e3))
        if varying:
            sched = varying_schedule(fixed[0][0].shape[-1] // g, len(fixed), seed=e)
            spec = torch.cat([fixed[j][0][..., i * g : (i + 1) * g] for i, j in enumerate(sched)], dim=-1)
            active = torch.stack([fixed[j][1] for j in sched])
            kbps = float(np.mean([fixed[j][2] for j in sched])) / codec.chunk_seconds / 1e3  # mean bits of each level
            inputs.append((f"decoded, L varying over {','.join(map(str, bandwidths))}", spec, active, kbps))
        for in_name, spec, active, kbps in inputs:
            for name, stage in stages.items():
                t0 = time.perf_counter()
                with torch.no_grad():
                    out = run_stage(stage, codec, spec, active, f"{e}-{in_name}")
                rtf = (time.perf_counter() - t0) / seconds
                est = codec.to_audio(out[:1, ..., :n_frames], n)[0].cpu().numpy()
                per.setdefault((in_name, name), []).append(
                    {"room_kbps": kbps, "pesq": pesq_wb(clean, est), "stoi": stoi(clean, est),
                     "si_sdr_db": si_sdr_db(clean, est), "cpu_rtf": rtf})
    rows = []
    for (in_name, name), scores in per.items():
        row: dict[str, Any] = {"input": in_name, "stage": name, "examples": len(scores)}
        for key in scores[0]:
            row[key] = float(np.nanmean([s[key] for s in scores])) if key != "room_kbps" or in_name != "noisy" else None
        rows.append(row)
    return rows


def markdown(rows: list[dict[str, Any]]) -> str:
    lines = ["| input | room kbit/s | stage | PESQ-WB | STOI | SI-SDR (dB) | CPU s per s |",
             "|---|---|---|---|---|---|---|"]
    for r in rows:
        kbps = "-" if r["room_kbps"] is None else f"{r['room_kbps']:.1f}"
        lines.append(f"| {r['input']} | {kbps} | {r['stage']} | {r['pesq']:.2f} | {r['stoi']:.3f} | "
                     f"{r['si_sdr_db']:.2f} | {r['cpu_rtf']:.3f} |")
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    from server.enhance import build_enhancer
    from shared.codec import Codec
    from shared.streaming import find_checkpoint
    from training.classical_eval import held_out_examples

    p = argparse.ArgumentParser(prog="python -m training.stage_eval", description=__doc__.split("\n\n")[0])
    p.add_argument("--data", type=Path, default=REPO / "data" / "rooms_real",
                   help="data set folder with manifest.json (default data/rooms_real)")
    p.add_argument("--split", default="test")
    p.add_argument("--limit", type=int, default=8, help="examples (default 8)")
    p.add_argument("--codec", type=Path, default=None, help="codec checkpoint (default checkpoints/ndpca-e4d1-*.ckpt)")
    p.add_argument("--bandwidths", default="128,256,1024", help="components per latent vector (default 128,256,1024)")
    p.add_argument("--stages", default="identity,classical,sgmse",
                   help="comma-separated stages: identity, classical, sgmse[:<sampler>[:<context frames>]]")
    p.add_argument("--enhancer-checkpoint", type=Path, default=None,
                   help="score model for the sgmse stages (default the newest checkpoints/enhancer-*.ckpt)")
    p.add_argument("--no-noisy", action="store_true", help="skip the captured microphones")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--beamform-min-share", type=float, default=None,
                   help="share of a source's components it must send for its microphones to join the "
                        "beamformer (default: the receiver's)")
    p.add_argument("--varying", action="store_true",
                   help="also an input whose budget changes from step to step among --bandwidths (a seeded "
                        "random walk), as on a live channel")
    p.add_argument("--csv", type=Path, default=None, help="also write the rows here")
    args = p.parse_args(argv)

    torch.set_num_threads(args.threads)
    examples = held_out_examples(args.data, args.split, args.limit)
    codec_path = args.codec or find_checkpoint("ndpca-e4d1", REPO / "checkpoints")
    if codec_path is None:
        raise UserError("no codec checkpoint; pass --codec")
    codec = Codec.load(codec_path)
    stages = {}
    for spec in [s for s in args.stages.split(",") if s]:
        name, options = parse_stage(spec, args.enhancer_checkpoint)
        stages[spec] = build_enhancer(name, codec, options)
    bandwidths = [int(b) for b in args.bandwidths.split(",") if b]
    rows = evaluate_stages(examples, codec, bandwidths, stages, noisy=not args.no_noisy,
                           min_share=args.beamform_min_share, varying=args.varying)
    print(f"{len(examples)} {args.split} examples of {args.data}; codec {Path(codec_path).name}; "
          f"enhancer {args.enhancer_checkpoint or 'newest in checkpoints/'}")
    print(markdown(rows))
    if args.csv:
        import csv

        args.csv.parent.mkdir(parents=True, exist_ok=True)
        with open(args.csv, "w", newline="") as f:
            w = csv.DictWriter(f, fieldnames=list(rows[0]))
            w.writeheader()
            w.writerows(rows)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
