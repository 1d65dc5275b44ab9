"""The classical baseline against the learned enhancer, on the same microphones.

``python -m training.classical_eval`` scores, against each example's clean reference (the
direct path and first 50 ms of reflections at microphone 0), the reference microphone of each
input as it is and enhanced three ways:

* ``mic 0``: the microphone itself;
* ``classical``: :func:`shared.classical.classical_enhance` of all microphones (WPE, MVDR
  toward microphone 0, Wiener post-filter);
* ``sgmse <sampler>``: the score-based enhancer (:class:`shared.enhancer.ScoreEnhancer`) on
  microphone 0's whole spectrogram, one row per sampler preset.

Inputs: the noisy microphones of each example and, with ``--codec``, the same microphones
coded and decoded by that codec at ``--bandwidth`` components per latent vector (what the
receiver's enhancement stage sees). Metrics (:mod:`training.metrics`): PESQ-WB, STOI, SI-SDR,
their means over the examples, and the seconds of one CPU thread per second of audio.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from shared.classical import classical_enhance
from shared.errors import UserError
from shared.stft import from_channels, get_preset, istft, stft, to_channels
from training.metrics import pesq_wb, si_sdr_db, stoi

REPO = Path(__file__).resolve().parents[1]

Method = Callable[[np.ndarray], np.ndarray]  # [M, N] float32 -> [N] float32


def sgmse_method(checkpoint: Path, sampler: str) -> Method:
    """Microphone 0 through the score-based enhancer with a sampler preset, whole signal at once."""
    from shared.enhancer import ScoreEnhancer, sampler_from_name

    enhancer = ScoreEnhancer.load(checkpoint)
    preset, cfg = get_preset(enhancer.stft), sampler_from_name(sampler)

    def run(mics: np.ndarray) -> np.ndarray:
        x = torch.from_numpy(np.ascontiguousarray(mics[0], dtype=np.float32))
        y = to_channels(stft(x, preset), "complex")
        out = enhancer.enhance(y, cfg)
        return istft(from_channels(out, "complex"), preset, x.shape[-1]).numpy().astype(np.float32)

    return run


def score(clean: np.ndarray, estimate: np.ndarray) -> dict[str, float]:
    """PESQ-WB, STOI and SI-SDR of ``estimate`` ``[N]`` against ``clean`` ``[N]`` at 16 kHz."""
    return {"pesq": pesq_wb(clean, estimate), "stoi": stoi(clean, estimate), "si_sdr_db": si_sdr_db(clean, estimate)}


def evaluate(
    examples: Sequence[dict[str, Any]],
    methods: dict[str, Method],
    inputs: dict[str, Callable[[np.ndarray], np.ndarray]],
    sample_rate: int = 16000,
) -> list[dict[str, Any]]:
    """One row per (input, method): the mean scores over ``examples`` (dicts with ``mics``
    ``[M, N]`` and ``clean`` ``[N]``) and ``cpu_rtf``, the seconds per second of audio.
    ``inputs`` map a name to a function of the noisy microphones ``[M, N]`` (e.g. a codec)."""
    per: dict[tuple[str, str], list[dict[str, float]]] = {}
    for ex in examples:
        mics = np.asarray(ex["mics"], dtype=np.float32)
        clean = np.asarray(ex["clean"], dtype=np.float32)
        seconds = mics.shape[-1] / sample_rate
        for in_name, make_input in inputs.items():
            x = np.asarray(make_input(mics), dtype=np.float32)
            for name, method in methods.items():
                t0 = time.perf_counter()
                est = method(x)
                rtf = (time.perf_counter() - t0) / seconds
                if est.shape != clean.shape:
                    raise ValueError(f"method {name!r} returned shape {est.shape}, expected {clean.shape}")
                per.setdefault((in_name, name), []).append({**score(clean, est), "cpu_rtf": rtf})
    rows = []
    for (in_name, name), scores in per.items():
        row: dict[str, Any] = {"input": in_name, "method": name, "examples": len(scores)}
        for key in scores[0]:
            row[key] = float(np.nanmean([s[key] for s in scores]))
        rows.append(row)
    return rows


def markdown(rows: list[dict[str, Any]]) -> str:
    """The rows as a Markdown table."""
    lines = ["| input | method | PESQ-WB | STOI | SI-SDR (dB) | CPU s per s of audio |",
             "|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['input']} | {r['method']} | {r['pesq']:.2f} | {r['stoi']:.3f} | "
                     f"{r['si_sdr_db']:.2f} | {r['cpu_rtf']:.3f} |")
    return "\n".join(lines)


def _codec_input(path: Path, bandwidth: int, rates_bps: list[float]
                 ) -> tuple[str, Callable[[np.ndarray], np.ndarray]]:
    """The microphones coded and decoded step by step by the codec at ``path``; appends each
    example's measured room bit rate to ``rates_bps``."""
    from shared.codec import Codec

    codec = Codec.load(path)

    def run(mics: np.ndarray) -> np.ndarray:
        with torch.no_grad():
            decoded, stats = codec.code_signal(torch.from_numpy(mics), bandwidth)
        rates_bps.append(float(stats["bitrate_bps"]))
        return decoded.cpu().numpy()

    return f"decoded ({path.name}, L = {bandwidth})", run


def held_out_examples(data: Path, split: str, limit: int) -> list[dict[str, Any]]:
    """The first ``limit`` examples of ``split`` in the data set folder ``data``.

    Raises:
        UserError: no manifest there, or no example in the split.
    """
    from training.evaluate import load_examples

    manifest = data / "manifest.json"
    if not manifest.is_file():
        raise UserError(f"no {manifest}; build the held-out real-speech rooms first (docs/enhancer.md)")
    examples = load_examples(data, split, limit)
    if not examples:
        raise UserError(f"no {split!r} examples in {manifest}")
    return examples


def main(argv: Sequence[str] | None = None) -> int:
    from shared.streaming import find_checkpoint

    p = argparse.ArgumentParser(prog="python -m training.classical_eval", description=__doc__.split("\n\n")[0])
    p.add_argument("--data", type=Path, default=REPO / "data" / "rooms_real",
                   help="data set folder with manifest.json (default data/rooms_real)")
    p.add_argument("--split", default="test")
    p.add_argument("--limit", type=int, default=8, help="examples (default 8)")
    p.add_argument("--enhancer-checkpoint", type=Path, default=None,
                   help="default: the newest checkpoints/enhancer-*.ckpt")
    p.add_argument("--samplers", default="realtime,fast",
                   help="comma-separated sampler presets of the learned enhancer; empty: skip it")
    p.add_argument("--codec", type=Path, default=None, help="also score the microphones decoded by this codec")
    p.add_argument("--bandwidth", type=int, default=128, help="components per latent vector for --codec (default 128)")
    p.add_argument("--threads", type=int, default=1)
    args = p.parse_args(argv)

    torch.set_num_threads(args.threads)
    examples = held_out_examples(args.data, args.split, args.limit)
    samplers = [s for s in args.samplers.split(",") if s]
    methods: dict[str, Method] = {"mic 0": lambda m: m[0], "classical": classical_enhance}
    if samplers:
        ckpt = args.enhancer_checkpoint or find_checkpoint("enhancer", REPO / "checkpoints")
        if ckpt is None:
            raise UserError("no enhancer checkpoint in checkpoints/; pass --enhancer-checkpoint or --samplers ''")
        for s in samplers:
            methods[f"sgmse {s} ({Path(ckpt).name})"] = sgmse_method(Path(ckpt), s)
    inputs: dict[str, Callable[[np.ndarray], np.ndarray]] = {"noisy": lambda m: m}
    rates: list[float] = []
    if args.codec is not None:
        name, run = _codec_input(args.codec, args.bandwidth, rates)
        inputs[name] = run
    rows = evaluate([{"mics": e["mics"].numpy(), "clean": e["clean"].numpy()} for e in examples], methods, inputs)
    print(f"{len(examples)} {args.split} examples of {args.data}")
    if rates:
        print(f"codec room rate: {np.mean(rates) / 1000:.1f} kbit/s (mean over the examples)")
    print(markdown(rows))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
