"""``ndpca evaluate``: the paper's bandwidth experiment (Fig. 3b) with one checkpoint per
architecture serving every bandwidth.

For every test example, method and total bandwidth L (coefficients per chunk), the
multi-microphone signal is coded chunk by chunk exactly as the streaming system does it
(allocation, projection, quantisation, Huffman coding within the step's bit budget) and
decoded; metrics compare the decoded microphones with the originals. Outputs in ``DIR``:
``results.csv`` (means per method and bandwidth), ``results_per_example.csv``,
``fig3b_psnr.png``, ``summary.md`` and ``command.txt``.
"""

from __future__ import annotations

import csv
import json
import math
import sys
import time
from collections import defaultdict
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm import tqdm

from shared.codec import Codec
from shared.errors import CheckpointError, UserError
from shared.stft import from_channels, griffin_lim
from training.losses import psnr_db
from training.metrics import pesq_wb, si_sdr_db, spectral_psnr_db, stoi
from training.opus import opus_at_bitrate, opus_min_bitrate

REPO = Path(__file__).resolve().parents[1]
DEFAULT_CKPT_DIR = REPO / "checkpoints"
BANDWIDTHS = (8, 16, 32, 64, 128, 256)
# method -> (codec, allocation rule); a codec is "[subfolder/]architecture" inside the
# checkpoint folder. Two naive baselines: "naive-*" trained with a random first-k truncation
# (ordered latents, a strong baseline) and "naive-full-*" trained on the full latent with
# nothing of NDPCA (the paper's "same encoders without NDPCA" taken literally).
METHODS: dict[str, tuple[str, str]] = {
    "jae": ("jae", "ndpca"),
    "ndpca-e2d1": ("ndpca-e2d1", "ndpca"),
    "ndpca-e4d1": ("ndpca-e4d1", "ndpca"),
    "uniform-e2d1": ("ndpca-e2d1", "uniform"),
    "uniform-e4d1": ("ndpca-e4d1", "uniform"),
    "naive-e2d1": ("naive-e2d1", "uniform"),
    "naive-e4d1": ("naive-e4d1", "uniform"),
    "naive-full-e2d1": ("full_latent/naive-e2d1", "uniform"),
    "naive-full-e4d1": ("full_latent/naive-e4d1", "uniform"),
}
# training config (training/configs/<name>.toml) of codecs whose config is not named after them
CODEC_CONFIGS = {"full_latent/naive-e2d1": "naive-e2d1-full", "full_latent/naive-e4d1": "naive-e4d1-full"}
# the paper's headline numbers; its naive baseline is compared with both of ours
PAPER = {"ndpca-e4d1 gain over naive (%)": 18.8, "ndpca-e2d1 gain over naive (%)": 16.1,
         "ndpca-e4d1 gain over naive-full (%)": 18.8, "ndpca-e2d1 gain over naive-full (%)": 16.1,
         "ndpca-e2d1 share of JAE (%)": 91.0}
# line style of each method in the figures
STYLES = {"jae": "k-o", "ndpca-e2d1": "C0-s", "ndpca-e4d1": "C1-^", "uniform-e2d1": "C0:s",
          "uniform-e4d1": "C1:^", "naive-e2d1": "C0--x", "naive-e4d1": "C1--x",
          "naive-full-e2d1": "C0-.+", "naive-full-e4d1": "C1-.+", "opus": "C3-d"}
FIELDS = ["method", "bandwidth", "bitrate_bps", "psnr_db", "si_sdr_db", "pesq", "stoi",
          "coefficients_per_chunk", "n_examples", "note"]


def find_checkpoint(ckpt_dir: Path, arch: str, config: str | None = None) -> Path:
    """``<dir>/<arch>-<hash8>.ckpt`` (shipped) or ``<dir>/<arch>.ckpt`` (fresh training)."""
    hits = sorted(ckpt_dir.glob(f"{arch}-*.ckpt")) + sorted(ckpt_dir.glob(f"{arch}.ckpt"))
    hits = [h for h in hits if h.stem == arch or h.stem[len(arch) + 1 :].isalnum()]
    if not hits:
        raise CheckpointError(
            f"no checkpoint for {arch!r} in {ckpt_dir}; train it with "
            f"`ndpca train --config training/configs/{config or arch}.toml --out {ckpt_dir}/{arch}.ckpt` "
            "or pass --checkpoints DIR"
        )
    return hits[0]


def codec_arch(codec: str) -> str:
    """The architecture of a codec reference ``[subfolder/]architecture``."""
    return codec.rpartition("/")[2]


def find_codec(ckpt_dir: Path, codec: str, config_prefix: str = "") -> Path:
    """The checkpoint of codec ``[subfolder/]architecture`` under ``ckpt_dir``; the hint for a
    missing one names its training config (``config_prefix`` + the codec's config name)."""
    sub, _, arch = codec.rpartition("/")
    return find_checkpoint(ckpt_dir / sub if sub else ckpt_dir, arch,
                           config_prefix + CODEC_CONFIGS.get(codec, arch))


def reference_waveform(codec: Codec, stats: dict[str, Any], decoded: torch.Tensor, phase: str,
                       gl_iters: int) -> np.ndarray:
    """Microphone 0's decoded waveform: the decoder's own phase, or Griffin-Lim on the decoded
    magnitude started from the decoder's phase."""
    if phase == "decoder":
        return decoded[0].numpy()
    spec = from_channels(stats["spectra"][0], codec.cfg.representation)
    return griffin_lim(spec.abs(), codec.preset, decoded.shape[-1], gl_iters, torch.angle(spec)).numpy()


def _perceptual(job: tuple[np.ndarray, np.ndarray, int]) -> tuple[float, float]:
    ref, est, sr = job
    return pesq_wb(ref, est, sr), stoi(ref, est, sr)


def perceptual_scores(jobs: list[tuple[np.ndarray, np.ndarray, int]], workers: int = 2,
                      progress: bool = True) -> list[tuple[float, float]]:
    """(PESQ-WB, STOI) of every (reference, estimate, rate) job, in a process pool."""
    if workers > 1:
        with ProcessPoolExecutor(workers) as pool:
            return list(tqdm(pool.map(_perceptual, jobs, chunksize=4), total=len(jobs),
                             disable=not progress, desc="pesq/stoi"))
    return [_perceptual(j) for j in tqdm(jobs, disable=not progress, desc="pesq/stoi")]


def _load_examples(data_dir: Path, split: str, limit: int | None) -> list[dict[str, Any]]:
    from training.data.dataset import RoomDataset

    ds = RoomDataset(data_dir / "manifest.json", split)
    n = len(ds) if limit is None else min(limit, len(ds))
    return [ds[i] for i in range(n)]


def evaluate_examples(
    examples: list[dict[str, Any]],
    codecs: dict[str, Codec],
    bandwidths: tuple[int, ...] = BANDWIDTHS,
    methods: tuple[str, ...] = tuple(METHODS),
    opus: bool = True,
    perceptual: bool = True,
    workers: int = 2,
    progress: bool = True,
    phase: str = "griffinlim",
    gl_iters: int = 16,
) -> list[dict[str, Any]]:
    """Per-example rows for every (method, bandwidth).

    PSNR (Eq. 13) compares the decoder's output spectra with the input spectra of all
    microphones; SI-SDR, PESQ and STOI compare microphone 0's waveform (phase from ``phase``)
    with the original microphone 0.
    """
    rows: list[dict[str, Any]] = []
    jobs: list[tuple[np.ndarray, np.ndarray, int]] = []
    any_codec = next(iter(codecs.values()))
    preset, rep, sr = any_codec.preset, any_codec.cfg.representation, any_codec.sample_rate
    total = len(examples) * len(bandwidths) * (len(methods) + (1 if opus else 0))
    bar = tqdm(total=total, disable=not progress, desc="evaluate")
    for ex in examples:
        mics = ex["mics"].float()
        ref0 = mics[0].numpy()
        cache = {a: c.signal_coefficients(mics) for a, c in codecs.items()}
        spectra_in = any_codec.spectra(mics)[None]
        for method in methods:
            ref, rule = METHODS[method]
            codec = codecs[ref]
            for L in bandwidths:
                dec, stats = codec.code_signal(mics, L, rule, coefficients=cache[ref])
                wave0 = reference_waveform(codec, stats, dec, phase, gl_iters)
                rows.append({
                    "method": method, "bandwidth": L, "example": ex["id"],
                    "bitrate_bps": stats["bitrate_bps"],
                    "coefficients_per_chunk": stats["coefficients_per_chunk"],
                    "psnr_db": float(psnr_db(stats["spectra"][None], spectra_in, rep)[0]),
                    "si_sdr_db": si_sdr_db(ref0, wave0), "note": "",
                })
                jobs.append((ref0, wave0, sr))
                bar.update()
        if opus:
            rate = any_codec.rate
            for L in bandwidths:
                target = L * rate.bits_per_coefficient / rate.chunk_seconds
                per_mic = [opus_at_bitrate(m.numpy(), sr, target / mics.shape[0]) for m in mics]
                row = {"method": "opus", "bandwidth": L, "example": ex["id"],
                       "coefficients_per_chunk": float("nan")}
                if any(r.audio is None for r in per_mic):
                    row.update(bitrate_bps=float("nan"), psnr_db=float("nan"), si_sdr_db=float("nan"),
                               note=f"not reachable: target {target:.0f} bit/s for {mics.shape[0]} mics")
                    rows.append(row)
                    jobs.append(None)  # type: ignore[arg-type]
                else:
                    dec = torch.from_numpy(np.stack([r.audio for r in per_mic]))
                    row.update(bitrate_bps=sum(r.bitrate_bps for r in per_mic),
                               psnr_db=spectral_psnr_db(mics, dec, preset, rep),
                               si_sdr_db=si_sdr_db(ref0, dec[0].numpy()), note="")
                    rows.append(row)
                    jobs.append((ref0, dec[0].numpy(), sr))
                bar.update()
            # the lowest rate Opus reaches, as a reference point beside the sweep
            per_mic = [opus_min_bitrate(m.numpy(), sr) for m in mics]
            dec = torch.from_numpy(np.stack([r.audio for r in per_mic]))
            rows.append({"method": "opus-min", "bandwidth": -1, "example": ex["id"],
                         "bitrate_bps": sum(r.bitrate_bps for r in per_mic),
                         "coefficients_per_chunk": float("nan"),
                         "psnr_db": spectral_psnr_db(mics, dec, preset, rep),
                         "si_sdr_db": si_sdr_db(ref0, dec[0].numpy()),
                         "note": "Opus at its lowest reachable rate (compression_level 1.0)"})
            jobs.append((ref0, dec[0].numpy(), sr))
    bar.close()
    if perceptual:
        it = iter(perceptual_scores([j for j in jobs if j is not None], workers, progress))
        for row, job in zip(rows, jobs):
            row["pesq"], row["stoi"] = next(it) if job is not None else (float("nan"), float("nan"))
    else:
        for row in rows:
            row["pesq"] = row["stoi"] = float("nan")
    return rows


def aggregate(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Mean over examples per (method, bandwidth), NaNs ignored."""
    groups: dict[tuple[str, int], list[dict[str, Any]]] = defaultdict(list)
    for r in rows:
        groups[(r["method"], r["bandwidth"])].append(r)
    out = []
    for (method, bw), rs in groups.items():
        agg: dict[str, Any] = {"method": method, "bandwidth": bw, "n_examples": len(rs),
                               "note": rs[0].get("note", "")}
        for key in ("bitrate_bps", "psnr_db", "si_sdr_db", "pesq", "stoi", "coefficients_per_chunk"):
            vals = np.array([r[key] for r in rs], dtype=np.float64)
            agg[key] = float(np.nanmean(vals)) if np.isfinite(vals).any() else float("nan")
        out.append(agg)
    return out


def headline(agg: list[dict[str, Any]], full: int, key: str = "psnr_db") -> dict[str, Any]:
    """The paper's ratios on ``key``: NDPCA gain over each naive baseline and over the uniform
    split (%), and NDPCA-E2D1 as a share of JAE (%), per bandwidth below ``full`` and their mean."""
    val = {(r["method"], r["bandwidth"]): r[key] for r in agg}
    bws = sorted({bw for (_, bw) in val if 0 < bw < full})
    out: dict[str, Any] = {"per_bandwidth": {}}
    for bw in bws:
        d = {}
        for e in ("e2d1", "e4d1"):
            a = val.get((f"ndpca-{e}", bw))
            for base in ("naive", "naive-full", "uniform"):
                b = val.get((f"{base}-{e}", bw))
                if a is not None and b is not None:
                    d[f"ndpca-{e} gain over {base} (%)"] = 100 * (a - b) / abs(b)
        j, n2 = val.get(("jae", bw)), val.get(("ndpca-e2d1", bw))
        if j is not None and n2 is not None:
            d["ndpca-e2d1 share of JAE (%)"] = 100 * n2 / j
        out["per_bandwidth"][bw] = d
    keys = sorted({k for d in out["per_bandwidth"].values() for k in d})
    out["mean_below_full"] = {k: float(np.mean([d[k] for d in out["per_bandwidth"].values() if k in d]))
                              for k in keys}
    return out


def write_outputs(out_dir: Path, rows: list[dict[str, Any]], meta: dict[str, Any], title: str) -> list[dict[str, Any]]:
    out_dir.mkdir(parents=True, exist_ok=True)
    agg = sorted(aggregate(rows), key=lambda r: (r["method"], r["bandwidth"]))
    with open(out_dir / "results.csv", "w", newline="") as fh:
        w = csv.DictWriter(fh, FIELDS)
        w.writeheader()
        for r in agg:
            w.writerow({k: r.get(k) for k in FIELDS})
    with open(out_dir / "results_per_example.csv", "w", newline="") as fh:
        keys = ["method", "bandwidth", "example"] + [k for k in FIELDS if k not in ("method", "bandwidth", "n_examples")]
        w = csv.DictWriter(fh, keys, extrasaction="ignore")
        w.writeheader()
        w.writerows(rows)
    full = meta["full_latent"]
    head = headline(agg, full)
    (out_dir / "headline.json").write_text(json.dumps(head, indent=1))
    plot_fig3b(agg, out_dir / "fig3b_psnr.png", title)
    write_summary(out_dir / "summary.md", agg, head, meta, title)
    return agg


def plot_fig3b(agg: list[dict[str, Any]], path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2))
    for ax, key, label in ((axes[0], "psnr_db", "PSNR (dB), Eq. 13"), (axes[1], "si_sdr_db", "SI-SDR (dB)")):
        for method, style in STYLES.items():
            pts = sorted((r["bandwidth"], r[key]) for r in agg if r["method"] == method and r["bandwidth"] > 0
                         and math.isfinite(r[key]))
            if pts:
                ax.plot(*zip(*pts), style, label=method)
        ax.set_xscale("log", base=2)
        ax.set_xlabel("total bandwidth (coefficients per chunk)")
        ax.set_ylabel(label)
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=8)
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def fmt_cell(v: Any, nd: int = 2) -> str:
    """A table cell: ``v`` with ``nd`` decimals, "n/a" for missing or non-finite values."""
    return "n/a" if v is None or (isinstance(v, float) and not math.isfinite(v)) else f"{v:.{nd}f}"


def per_bandwidth_lines(head: dict[str, Any]) -> list[str]:
    """Markdown table of the headline ratios per bandwidth (rows of :func:`headline`)."""
    keys = list(head["mean_below_full"])
    lines = ["| bandwidth | " + " | ".join(keys) + " |", "|---|" + "---|" * len(keys)]
    for bw, d in head["per_bandwidth"].items():
        lines.append(f"| {bw} | " + " | ".join(fmt_cell(d.get(k), 1) for k in keys) + " |")
    return lines


def write_summary(path: Path, agg: list[dict[str, Any]], head: dict[str, Any], meta: dict[str, Any], title: str) -> None:
    lines = [f"# {title}", "", f"Command: `{meta['command']}`", "",
             f"Test examples: {meta['n_examples']} ({meta['data']}). Rate configuration: "
             f"{meta['rate']}. Checkpoints: {meta['checkpoints']}.", "",
             "## PSNR (dB) by total bandwidth (coefficients per chunk)", ""]
    bws = sorted({r["bandwidth"] for r in agg if r["bandwidth"] >= 0})  # 0: nothing sent, sources at their means
    methods = [m for m in list(METHODS) + ["opus"] if any(r["method"] == m for r in agg)]
    cell = {(r["method"], r["bandwidth"]): r for r in agg}
    for key, name in (("psnr_db", "PSNR (dB)"), ("si_sdr_db", "SI-SDR (dB)"), ("pesq", "PESQ-WB"),
                      ("stoi", "STOI"), ("bitrate_bps", "bit rate produced (bit/s)")):
        if key != "psnr_db":
            lines += ["", f"## {name}", ""]
        lines.append("| method | " + " | ".join(str(b) for b in bws) + " |")
        lines.append("|---|" + "---|" * len(bws))
        for m in methods:
            vals = [fmt_cell(cell.get((m, b), {}).get(key), 0 if key == "bitrate_bps" else 2) for b in bws]
            lines.append(f"| {m} | " + " | ".join(vals) + " |")
    mins = [r for r in agg if r["method"] == "opus-min"]
    if mins:
        r = mins[0]
        lines += ["", f"Opus cannot reach these rates (it needs about 6 kbit/s per microphone); at its "
                  f"lowest reachable rate, {fmt_cell(r['bitrate_bps'], 0)} bit/s for all microphones, it scores "
                  f"PSNR {fmt_cell(r['psnr_db'])} dB, SI-SDR {fmt_cell(r['si_sdr_db'])} dB, PESQ {fmt_cell(r['pesq'])}, "
                  f"STOI {fmt_cell(r['stoi'])}."]
    lines += ["", "## Headline ratios (ours beside the paper's)", "",
              "| ratio | ours, mean over bandwidths below the full latent | paper |", "|---|---|---|"]
    for k, v in head["mean_below_full"].items():
        lines.append(f"| {k} | {fmt_cell(v, 1)} | {PAPER.get(k, '-')} |")
    lines += ["", "Per bandwidth:", ""] + per_bandwidth_lines(head)
    lines += ["", "Definitions: PSNR is Eq. 13 on the compressed magnitude STFT of all microphones, "
              "decoder output against input (for Opus: the STFT of its decoded audio); "
              "SI-SDR, PESQ (wide-band) and STOI on microphone 0's waveform against the original "
              f"microphone 0 signal, phase: {meta.get('phase', 'decoder')}; bit rate is the bytes the coder produced (payload, whole bytes per source and "
              "chunk). One checkpoint per architecture serves every bandwidth."]
    path.write_text("\n".join(lines) + "\n")


def run_evaluation(
    out_dir: Path,
    ckpt_dir: Path = DEFAULT_CKPT_DIR,
    data_dir: Path | None = None,
    limit: int | None = None,
    bandwidths: tuple[int, ...] = BANDWIDTHS,
    methods: tuple[str, ...] = tuple(METHODS),
    opus: bool = True,
    perceptual: bool = True,
    workers: int = 2,
    real: bool = True,
    device: str = "cpu",
    progress: bool = True,
    phase: str = "griffinlim",
    gl_iters: int = 16,
) -> dict[str, Any]:
    """The whole experiment; returns the aggregated rows (and the real-speech ones)."""
    from training.data.dataset import default_data_dir

    t0 = time.time()
    refs = list(dict.fromkeys(METHODS[m][0] for m in methods))  # in method order
    paths = {r: find_codec(ckpt_dir, r) for r in refs}
    codecs = {r: Codec.load(paths[r], device=device, expect_arch=codec_arch(r)) for r in refs}
    any_codec = next(iter(codecs.values()))
    full = sum(any_codec.latent_sizes)
    data_dir = data_dir or default_data_dir()
    if not (data_dir / "manifest.json").is_file():
        from training.data.build import DataConfig, build_dataset

        build_dataset(DataConfig(num_mics=any_codec.cfg.num_mics), data_dir)
    meta = {"phase": f"{phase}" + (f" ({gl_iters} iterations from the decoder's phase)" if phase == "griffinlim" else ""),
            "command": "ndpca " + " ".join(sys.argv[1:]) if sys.argv[0].endswith("ndpca") else " ".join(sys.argv),
            "rate": any_codec.rate.__dict__, "full_latent": full,
            "checkpoints": {r: f"{paths[r].relative_to(ckpt_dir)} (sha256 {c.sha256[:12]})"
                            for r, c in codecs.items()}}
    examples = _load_examples(data_dir, "test", limit)
    if not examples:
        raise UserError(f"no test examples in {data_dir}; rebuild it with `ndpca data build`")
    rows = evaluate_examples(examples, codecs, bandwidths, methods, opus, perceptual, workers, progress,
                             phase, gl_iters)
    meta.update(n_examples=len(examples), data=f"synthetic rooms, test split, {data_dir}")
    result = {"synthetic": write_outputs(out_dir, rows, meta, "Task-agnostic coding, synthetic test rooms")}
    (out_dir / "command.txt").write_text(meta["command"] + "\n")
    real_root = REPO.parent / "shared" / "data"
    if real and (real_root / "speech" / "librispeech").is_dir():
        from training.data.build import DataConfig, build_dataset

        real_dir = data_dir.parent / "rooms_real"
        manifest = build_dataset(
            DataConfig(num_mics=any_codec.cfg.num_mics, speech_dir=str(real_root / "speech" / "librispeech"),
                       noise_dir=str(real_root / "noise"), n_train=0, n_val=0, n_test=limit or 24, seed=7),
            real_dir)
        ex = _load_examples(manifest.parent, "test", limit)
        rows_r = evaluate_examples(ex, codecs, bandwidths, methods, opus, perceptual, workers, progress,
                                   phase, gl_iters)
        meta.update(n_examples=len(ex), data="LibriSpeech test-other speech and real recorded noise "
                    "(../shared/data) in simulated rooms")
        result["real"] = write_outputs(out_dir / "real", rows_r, meta,
                                       "Task-agnostic coding, real speech and noise in simulated rooms")
    result["seconds"] = time.time() - t0
    return result
