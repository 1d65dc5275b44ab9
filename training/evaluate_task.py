"""``ndpca evaluate --task-aware``: the paper's task- and perception-aware results.

* Fig. 3c: each task-aware codec (one checkpoint per architecture, every bandwidth) codes the
  room chunk by chunk exactly as in streaming; the receiver's score-based enhancer restores
  microphone 0's decoded spectrogram; PSNR (Eq. 13, single channel) of the enhanced output
  against the clean reference, with SI-SDR, PESQ and STOI of its waveform. The decoder
  output itself (inverse STFT with the decoder's phase, what the receiver would play without
  enhancement) is scored against the same reference beside it.
* Fig. 4: codecs trained with several perceptual weights ``lambda_perc``; distortion of the
  decoder output (Eq. 13 over all microphones against the input, as in Fig. 3b) against
  bandwidth, and beside it a realism measure: the Frechet distance between log-mel frame
  statistics of the decoded microphone-0 waveforms and of the original ones (lower is more
  realistic; it compares distributions, not pairs).

Outputs in ``DIR``: ``results.csv`` (Fig. 3c, enhanced output; ``decoded_*`` columns for the
decoder output), ``results_per_example.csv``, ``fig3c_psnr.png``, ``rdp.csv``, ``fig4_rdp.png``,
``summary.md`` (tables, headline ratios beside the paper's) and ``command.txt``; the same
for real speech in ``DIR/real``.
"""

from __future__ import annotations

import csv
import json
import math
import sys
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm import tqdm

from shared.codec import Codec
from shared.enhancer import SamplerConfig, ScoreEnhancer, sampler_from_name
from shared.errors import CheckpointError, UserError
from shared.stft import convert_channels, from_channels, istft, stft, to_channels
from training.evaluate import (
    BANDWIDTHS,
    METHODS,
    REPO,
    STYLES,
    codec_arch,
    find_codec,
    fmt_cell,
    headline,
    per_bandwidth_lines,
    perceptual_scores,
)
from training.losses import psnr_db
from training.metrics import si_sdr_db
from training.realism import frechet_distance, log_mel_frames

TASK_DIR = REPO / "checkpoints" / "task_aware"
PERCEPTION_DIR = REPO / "checkpoints" / "perception"
SCORE_DIR = REPO / "checkpoints" / "score"  # the score-based enhancer the task-aware codecs train with
# the paper's Fig. 3c methods: those of Fig. 3b without the uniform-split ablation
TASK_METHODS: dict[str, tuple[str, str]] = {m: METHODS[m] for m in
                                            ("jae", "ndpca-e2d1", "ndpca-e4d1", "naive-e2d1", "naive-e4d1",
                                             "naive-full-e2d1", "naive-full-e4d1")}
PAPER = {"ndpca-e4d1 gain over naive (%)": 52.2, "ndpca-e2d1 gain over naive (%)": 46.9,
         "ndpca-e4d1 gain over naive-full (%)": 52.2, "ndpca-e2d1 gain over naive-full (%)": 46.9,
         "ndpca-e2d1 share of JAE (%)": 98.1}
METRICS = ("psnr_db", "si_sdr_db", "pesq", "stoi")
FIELDS = ["method", "bandwidth", "bitrate_bps", "psnr_db", "si_sdr_db", "pesq", "stoi", "fmd",
          "decoded_psnr_db", "decoded_si_sdr_db", "decoded_pesq", "decoded_stoi", "decoded_fmd",
          "coefficients_per_chunk", "n_examples"]
RDP_FIELDS = ["lambda_perc", "bandwidth", "bitrate_bps", "distortion_psnr_db", "realism_fmd",
              "enhanced_psnr_db", "n_examples", "checkpoint"]


def _stats(frames: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    f = np.concatenate(frames).astype(np.float64)
    return f.mean(0), np.cov(f, rowvar=False)


def _fmd(frames: list[np.ndarray], ref: tuple[np.ndarray, np.ndarray]) -> float:
    mu, cov = _stats(frames)
    return float(frechet_distance(mu, cov, *ref))


@torch.no_grad()
def evaluate_task_examples(
    examples: list[dict[str, Any]],
    codecs: dict[str, Codec],
    enhancer: ScoreEnhancer,
    sampler: SamplerConfig,
    bandwidths: tuple[int, ...] = BANDWIDTHS,
    methods: tuple[str, ...] = tuple(TASK_METHODS),
    perceptual: bool = True,
    workers: int = 2,
    progress: bool = True,
) -> tuple[list[dict[str, Any]], dict[tuple[str, int], float]]:
    """Per-example rows (enhanced and decoded scores) and the Frechet mel distance of the
    enhanced (key ``(method, bw)``) and decoded (key ``("decoded:" + method, bw)``)
    waveforms to the clean references."""
    rows: list[dict[str, Any]] = []
    jobs: list[tuple[np.ndarray, np.ndarray, int]] = []
    feats: dict[tuple[str, int], list[np.ndarray]] = defaultdict(list)
    clean_feats: list[np.ndarray] = []
    any_codec = next(iter(codecs.values()))
    preset, sr = any_codec.preset, any_codec.sample_rate
    bar = tqdm(total=len(examples) * len(bandwidths) * len(methods), disable=not progress, desc="evaluate")
    for ex in examples:
        mics, clean = ex["mics"].float(), ex["clean"].float()
        n = mics.shape[-1]
        clean_np = clean.numpy()
        clean_ch = to_channels(stft(clean, preset), "complex")
        clean_feats.append(log_mel_frames(clean_np, sr))
        cache = {a: c.signal_coefficients(mics) for a, c in codecs.items()}
        for method in methods:
            ref, rule = TASK_METHODS[method]
            codec = codecs[ref]
            decoded = []
            for L in bandwidths:
                dec_audio, stats = codec.code_signal(mics, L, rule, coefficients=cache[ref])
                decoded.append((L, dec_audio[0].cpu(), stats))
            ys = torch.stack([convert_channels(s["spectra"][0].cpu(), codec.cfg.representation)
                              for _, _, s in decoded])
            enhanced = enhancer.enhance(ys.to(enhancer_device(enhancer)), sampler).cpu()
            for (L, dec_wave, stats), y, e in zip(decoded, ys, enhanced):
                e_wave = istft(from_channels(e, "complex"), preset, n).numpy()
                d_wave = dec_wave.numpy()
                rows.append({
                    "method": method, "bandwidth": L, "example": ex["id"],
                    "bitrate_bps": stats["bitrate_bps"], "coefficients_per_chunk": stats["coefficients_per_chunk"],
                    "psnr_db": float(psnr_db(e[None, None], clean_ch[None, None])[0]),
                    "decoded_psnr_db": float(psnr_db(y[None, None], clean_ch[None, None])[0]),
                    "si_sdr_db": si_sdr_db(clean_np, e_wave), "decoded_si_sdr_db": si_sdr_db(clean_np, d_wave),
                })
                jobs += [(clean_np, e_wave, sr), (clean_np, d_wave, sr)]
                feats[(method, L)].append(log_mel_frames(e_wave, sr))
                feats[("decoded:" + method, L)].append(log_mel_frames(d_wave, sr))
                bar.update()
    bar.close()
    _fill_perceptual(rows, jobs, perceptual, workers, progress, ("pesq", "stoi"), ("decoded_pesq", "decoded_stoi"))
    ref = _stats(clean_feats)
    fmd = {key: _fmd(f, ref) for key, f in feats.items()}
    return rows, fmd


def enhancer_device(enhancer: ScoreEnhancer) -> torch.device:
    return next(enhancer.parameters()).device


def _fill_perceptual(rows, jobs, perceptual, workers, progress, first, second) -> None:
    if not perceptual:
        for r in rows:
            for k in first + second:
                r[k] = float("nan")
        return
    res = perceptual_scores(jobs, workers, progress)
    for i, r in enumerate(rows):
        (r[first[0]], r[first[1]]), (r[second[0]], r[second[1]]) = res[2 * i], res[2 * i + 1]


@torch.no_grad()
def evaluate_rdp(
    examples: list[dict[str, Any]],
    codecs: dict[str, Codec],
    enhancer: ScoreEnhancer,
    sampler: SamplerConfig,
    bandwidths: tuple[int, ...],
    rule: str = "ndpca",
    progress: bool = True,
) -> list[dict[str, Any]]:
    """Fig. 4: per ``lambda_perc`` label and bandwidth, the decoder output's distortion (Eq. 13,
    all microphones, against the input) and realism (Frechet mel distance of microphone 0's
    decoded waveforms to the originals), and the enhanced output's PSNR against the clean
    reference."""
    out = []
    ref_feats = [log_mel_frames(ex["mics"][0].numpy(), 16000) for ex in examples]
    ref = _stats(ref_feats)
    for label, codec in codecs.items():
        per_bw: dict[int, dict[str, list]] = defaultdict(lambda: defaultdict(list))
        for ex in tqdm(examples, disable=not progress, desc=f"rdp lambda_perc={label}"):
            mics, clean = ex["mics"].float(), ex["clean"].float()
            spectra_in = codec.spectra(mics)[None]
            clean_ch = to_channels(stft(clean, codec.preset), "complex")
            coeffs = codec.signal_coefficients(mics)
            ys, keep = [], []
            for L in bandwidths:
                dec, stats = codec.code_signal(mics, L, rule, coefficients=coeffs)
                d = per_bw[L]
                d["psnr"].append(float(psnr_db(stats["spectra"][None], spectra_in, codec.cfg.representation)[0]))
                d["bitrate"].append(stats["bitrate_bps"])
                d["feats"].append(log_mel_frames(dec[0].cpu().numpy(), codec.sample_rate))
                ys.append(convert_channels(stats["spectra"][0].cpu(), codec.cfg.representation))
                keep.append(L)
            enhanced = enhancer.enhance(torch.stack(ys).to(enhancer_device(enhancer)), sampler).cpu()
            for L, e in zip(keep, enhanced):
                per_bw[L]["enh"].append(float(psnr_db(e[None, None], clean_ch[None, None])[0]))
        for L in bandwidths:
            d = per_bw[L]
            out.append({"lambda_perc": label, "bandwidth": L, "bitrate_bps": float(np.mean(d["bitrate"])),
                        "distortion_psnr_db": float(np.mean(d["psnr"])),
                        "realism_fmd": _fmd(d["feats"], ref),
                        "enhanced_psnr_db": float(np.mean(d["enh"])), "n_examples": len(examples),
                        "checkpoint": codec.sha256[:12]})
    return out


def aggregate(rows: list[dict[str, Any]], fmd: dict[tuple[str, int], float]) -> list[dict[str, Any]]:
    groups: dict[tuple[str, int], list[dict[str, Any]]] = defaultdict(list)
    for r in rows:
        groups[(r["method"], r["bandwidth"])].append(r)
    out = []
    for (method, bw), rs in sorted(groups.items()):
        agg: dict[str, Any] = {"method": method, "bandwidth": bw, "n_examples": len(rs),
                               "fmd": fmd.get((method, bw), float("nan")),
                               "decoded_fmd": fmd.get(("decoded:" + method, bw), float("nan"))}
        for key in FIELDS:
            if key in agg or key in ("method", "bandwidth"):
                continue
            vals = np.array([r[key] for r in rs], dtype=np.float64)
            agg[key] = float(np.nanmean(vals)) if np.isfinite(vals).any() else float("nan")
        out.append(agg)
    return out


def plot_fig3c(agg: list[dict[str, Any]], path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    styles = {m: STYLES[m] for m in TASK_METHODS}
    fig, axes = plt.subplots(1, 3, figsize=(15, 4.2))
    for ax, key, label in ((axes[0], "psnr_db", "PSNR vs clean (dB), Eq. 13"), (axes[1], "si_sdr_db", "SI-SDR (dB)"),
                           (axes[2], "pesq", "PESQ-WB")):
        for method, style in styles.items():
            for prefix, alpha, suffix in (("", 1.0, ""), ("decoded_", 0.35, " (decoder output)")):
                pts = sorted((r["bandwidth"], r[prefix + key]) for r in agg
                             if r["method"] == method and math.isfinite(r[prefix + key]))
                if pts:
                    ax.plot(*zip(*pts), style, alpha=alpha, label=method + suffix if key == "psnr_db" else None)
        ax.set_xscale("log", base=2)
        ax.set_xlabel("total bandwidth (coefficients per chunk)")
        ax.set_ylabel(label)
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=7, ncol=2)
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def plot_fig4(rdp: list[dict[str, Any]], path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 3, figsize=(15, 4.2))
    labels = sorted({r["lambda_perc"] for r in rdp}, key=float)
    for i, lab in enumerate(labels):
        pts = sorted((r["bandwidth"], r["distortion_psnr_db"], r["realism_fmd"]) for r in rdp if r["lambda_perc"] == lab)
        bw, dist, real = zip(*pts)
        axes[0].plot(bw, dist, "-o", color=f"C{i}", label=f"lambda_perc={lab}")
        axes[1].plot(bw, real, "-o", color=f"C{i}", label=f"lambda_perc={lab}")
        axes[2].plot(dist, real, "-o", color=f"C{i}", label=f"lambda_perc={lab}")
    for ax in axes[:2]:
        ax.set_xscale("log", base=2)
        ax.set_xlabel("total bandwidth (coefficients per chunk)")
        ax.grid(alpha=0.3)
    axes[0].set_ylabel("distortion: decoder PSNR (dB), higher is better")
    axes[1].set_ylabel("realism: Frechet mel distance, lower is better")
    axes[2].set_xlabel("decoder PSNR (dB)")
    axes[2].set_ylabel("Frechet mel distance")
    axes[2].grid(alpha=0.3)
    axes[0].legend(fontsize=8)
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def write_summary(path: Path, agg, head, head_dec, rdp, meta, title) -> None:
    bws = sorted({r["bandwidth"] for r in agg})
    cell = {(r["method"], r["bandwidth"]): r for r in agg}
    methods = [m for m in TASK_METHODS if any(r["method"] == m for r in agg)]
    lines = [f"# {title}", "", f"Command: `{meta['command']}`", "",
             f"Test examples: {meta['n_examples']} ({meta['data']}). Rate configuration: {meta['rate']}.",
             f"Codecs: {meta['checkpoints']}.", f"Enhancer: {meta['enhancer']}; sampler {meta['sampler']}.", ""]
    for key, name, nd in (("psnr_db", "PSNR (dB, Eq. 13) of the enhanced output against the clean reference", 2),
                          ("si_sdr_db", "SI-SDR (dB) against the clean reference", 2),
                          ("pesq", "PESQ-WB against the clean reference", 2),
                          ("stoi", "STOI against the clean reference", 3),
                          ("fmd", "Frechet mel distance to the clean references (lower is more realistic)", 2)):
        lines += [f"## {name}", "", "Each cell: enhanced / decoder output.", "",
                  "| method | " + " | ".join(str(b) for b in bws) + " |", "|---|" + "---|" * len(bws)]
        for m in methods:
            vals = [f"{fmt_cell(cell.get((m, b), {}).get(key), nd)} / {fmt_cell(cell.get((m, b), {}).get('decoded_' + key), nd)}"
                    for b in bws]
            lines.append(f"| {m} | " + " | ".join(vals) + " |")
        lines.append("")
    lines += ["## Bit rate produced (bit/s)", "", "| method | " + " | ".join(str(b) for b in bws) + " |",
              "|---|" + "---|" * len(bws)]
    for m in methods:
        lines.append(f"| {m} | " + " | ".join(fmt_cell(cell.get((m, b), {}).get("bitrate_bps"), 0) for b in bws) + " |")
    wins = {k: all(r[k] > r["decoded_" + k] for r in agg if math.isfinite(r[k]) and math.isfinite(r["decoded_" + k]))
            for k in ("si_sdr_db", "pesq")}
    lines += ["", f"Enhanced beats decoder output at every method and bandwidth: SI-SDR {wins['si_sdr_db']}, "
              f"PESQ {wins['pesq']}.", "",
              "## Headline ratios (ours beside the paper's, task- and perception-aware)", "",
              "| ratio | ours: enhanced PSNR | ours: decoder-output PSNR | paper |", "|---|---|---|---|"]
    for k, v in head["mean_below_full"].items():
        lines.append(f"| {k} | {fmt_cell(v, 1)} | {fmt_cell(head_dec['mean_below_full'].get(k), 1)} | {PAPER.get(k, '-')} |")
    lines += ["", "Per bandwidth (enhanced PSNR):", ""] + per_bandwidth_lines(head)
    if rdp:
        labels = sorted({r["lambda_perc"] for r in rdp}, key=float)
        rb = sorted({r["bandwidth"] for r in rdp})
        c = {(r["lambda_perc"], r["bandwidth"]): r for r in rdp}
        lines += ["", "## Rate-distortion-perception (Fig. 4), NDPCA-E4D1", "",
                  "Each cell: decoder PSNR (dB, distortion, higher is better) / Frechet mel distance "
                  "(realism, lower is better) / enhanced PSNR against the clean reference (dB).", "",
                  "| lambda_perc | " + " | ".join(str(b) for b in rb) + " |", "|---|" + "---|" * len(rb)]
        for lab in labels:
            lines.append(f"| {lab} | " + " | ".join(
                f"{fmt_cell(c[(lab, b)]['distortion_psnr_db'])} / {fmt_cell(c[(lab, b)]['realism_fmd'])} / "
                f"{fmt_cell(c[(lab, b)]['enhanced_psnr_db'])}" for b in rb) + " |")
    lines += ["", "Definitions: PSNR is Eq. 13 on the compressed magnitude STFT of microphone 0's output against "
              "the clean reference (direct path and early reflections at microphone 0, see training/data/rooms.py); "
              "the decoder output is scored with its own phase (what the receiver plays without enhancement). "
              "Fig. 4's distortion is Eq. 13 over all microphones against the input, as in Fig. 3b. "
              "The Frechet mel distance compares the distribution of 40-band log-mel frames of the outputs with "
              "that of the references (training/realism.py)."]
    path.write_text("\n".join(lines) + "\n")


def write_outputs(out_dir: Path, rows, fmd, rdp, meta, title, full: int) -> dict[str, Any]:
    out_dir.mkdir(parents=True, exist_ok=True)
    agg = aggregate(rows, fmd)
    with open(out_dir / "results.csv", "w", newline="") as fh:
        w = csv.DictWriter(fh, FIELDS, extrasaction="ignore")
        w.writeheader()
        w.writerows(agg)
    with open(out_dir / "results_per_example.csv", "w", newline="") as fh:
        keys = ["method", "bandwidth", "example"] + [k for k in FIELDS if k not in
                                                     ("method", "bandwidth", "n_examples", "fmd", "decoded_fmd")]
        w = csv.DictWriter(fh, keys, extrasaction="ignore")
        w.writeheader()
        w.writerows(rows)
    if rdp:
        with open(out_dir / "rdp.csv", "w", newline="") as fh:
            w = csv.DictWriter(fh, RDP_FIELDS)
            w.writeheader()
            w.writerows(rdp)
        plot_fig4(rdp, out_dir / "fig4_rdp.png", title + ": rate-distortion-perception")
    head = headline(agg, full)
    head_dec = headline(agg, full, "decoded_psnr_db")
    (out_dir / "headline.json").write_text(json.dumps({"enhanced": head, "decoded": head_dec}, indent=1))
    plot_fig3c(agg, out_dir / "fig3c_psnr.png", title)
    write_summary(out_dir / "summary.md", agg, head, head_dec, rdp, meta, title)
    return {"agg": agg, "headline": head}


def find_sweep(perception_dir: Path) -> dict[str, Path]:
    """``<dir>/lp-<value>/ndpca-e4d1-*.ckpt`` -> {value: path}."""
    out = {}
    for d in sorted(perception_dir.glob("lp-*")):
        hits = sorted(d.glob("ndpca-e4d1*.ckpt"))
        if hits:
            out[d.name[3:]] = hits[0]
    return out


def run_task_evaluation(
    out_dir: Path,
    ckpt_dir: Path = TASK_DIR,
    enhancer_path: Path | None = None,
    data_dir: Path | None = None,
    limit: int | None = None,
    bandwidths: tuple[int, ...] = BANDWIDTHS,
    methods: tuple[str, ...] = tuple(TASK_METHODS),
    sampler: str | None = None,
    perceptual: bool = True,
    workers: int = 2,
    real: bool = True,
    device: str = "cpu",
    progress: bool = True,
    perception_dir: Path | None = PERCEPTION_DIR,
    skip_missing: bool = False,
) -> dict[str, Any]:
    """Fig. 3c and Fig. 4 into ``out_dir``. ``skip_missing``: leave out (with a note on stderr
    naming the command that trains it) a method whose task-aware codec is not in ``ckpt_dir``,
    instead of stopping; at least one must be there."""
    from training.evaluate import command_line, load_examples, real_rooms, synthetic_rooms
    from training.task_aware import find_enhancer

    t0 = time.time()
    bad = [m for m in methods if m not in TASK_METHODS]
    if bad:
        raise UserError(f"unknown method(s) {bad} for --task-aware; choose from {list(TASK_METHODS)}")
    paths, missing = {}, []
    for r in dict.fromkeys(TASK_METHODS[m][0] for m in methods):  # in method order
        try:
            paths[r] = find_codec(ckpt_dir, r, "ta-")
        except CheckpointError as exc:
            if not skip_missing:
                raise
            missing.append(str(exc))
    if not paths:
        raise CheckpointError(f"no task-aware codec in {ckpt_dir}; make them all with `make weights-task`, "
                              f"or one at a time: {missing[0]}")
    for msg in missing:
        print(f"left out: {msg}", file=sys.stderr)
    methods = tuple(m for m in methods if TASK_METHODS[m][0] in paths)
    refs = list(paths)
    codecs = {r: Codec.load(paths[r], device=device, expect_arch=codec_arch(r)) for r in refs}
    # default: the score-based enhancer of the task-aware codecs (checkpoints/score), not the
    # receiver's, which enhances the classical stage's output
    enh_path = find_enhancer(str(enhancer_path) if enhancer_path else None, SCORE_DIR)
    enhancer = ScoreEnhancer.load(enh_path, device=device)
    if enhancer.header.get("front_end", "mic") != "mic":
        raise UserError(f"{enh_path} enhances the classical stage's output; the task-aware experiment "
                        "enhances decoded microphone 0 itself: pass --enhancer checkpoints/score/enhancer-3d1cc699.ckpt")
    samp = sampler_from_name(sampler) if sampler else enhancer.sampler

    def load_sweep() -> dict[str, Codec]:
        """The lambda_perc sweep (loaded when Fig. 4 is computed), plus the main NDPCA-E4D1."""
        if perception_dir is None or not perception_dir.is_dir():
            return {}
        sweep = {lab: Codec.load(p, device=device, expect_arch="ndpca-e4d1")
                 for lab, p in find_sweep(perception_dir).items()}
        if sweep and "ndpca-e4d1" in codecs:
            lp = codecs["ndpca-e4d1"].header.get("train_config", {}).get("task", {}).get("lambda_perc")
            if lp is not None and f"{lp:g}" not in sweep:
                sweep[f"{lp:g}"] = codecs["ndpca-e4d1"]
        return sweep
    any_codec = next(iter(codecs.values()))
    full = sum(any_codec.latent_sizes)
    data_dir = synthetic_rooms(data_dir, any_codec.cfg.num_mics)
    meta = {"command": command_line(),
            "rate": any_codec.rate.__dict__,
            "checkpoints": ", ".join(f"{p.relative_to(ckpt_dir)}" for p in paths.values()),
            "enhancer": f"{enh_path.name} (sha256 {enhancer.sha256[:12] if hasattr(enhancer, 'sha256') else '?'})",
            "sampler": json.dumps(samp.__dict__)}
    result: dict[str, Any] = {}
    sets = [("synthetic", data_dir, "synthetic rooms, test split", out_dir, "Task- and perception-aware coding, synthetic test rooms")]
    real_dir = real_rooms(data_dir, any_codec.cfg.num_mics, limit) if real else None
    if real_dir is not None:
        sets.append(("real", real_dir, "LibriSpeech test-other speech and real recorded noise (../shared/data) "
                     "in simulated rooms", out_dir / "real", "Task- and perception-aware coding, real speech and noise"))
    for name, ddir, desc, odir, title in sets:
        examples = load_examples(ddir, "test", limit)
        if not examples:
            raise UserError(f"no test examples in {ddir}; rebuild it with `ndpca data build`")
        rows, fmd = evaluate_task_examples(examples, codecs, enhancer, samp, bandwidths, methods, perceptual,
                                           workers, progress)
        # Fig. 4 on the synthetic test rooms only (the sweep is NDPCA-E4D1 at several lambda_perc)
        sweep = load_sweep() if name == "synthetic" else {}
        rdp = evaluate_rdp(examples, sweep, enhancer, samp, bandwidths, progress=progress) if sweep else []
        meta.update(n_examples=len(examples), data=f"{desc}, {ddir}")
        result[name] = write_outputs(odir, rows, fmd, rdp, meta, title, full)
    (out_dir / "command.txt").write_text(meta["command"] + "\n")
    result["seconds"] = time.time() - t0
    return result
