"""Tables, plots and the markdown summary of ``ndpca evaluate`` (rows: :mod:`training.evaluate`).

Aggregated rows are dicts with ``method``, ``bandwidth`` (components per latent vector; -1 for
Opus), ``target_kbps`` (Opus's room-rate target, None for codecs), ``room_kbps`` (measured),
the reference-microphone metrics ``psnr_db, si_sdr_db, pesq, stoi`` and the all-microphone
ones ``all_*``. Methods appear in the order of the rows.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import numpy as np

# the paper's headline numbers (Eq. 13 PSNR over all microphones); its naive baseline is
# compared with both of ours
PAPER = {"ndpca-e4d1 gain over naive (%)": 18.8, "ndpca-e2d1 gain over naive (%)": 16.1,
         "ndpca-e4d1 gain over naive-full (%)": 18.8, "ndpca-e2d1 gain over naive-full (%)": 16.1,
         "ndpca-e2d1 share of JAE (%)": 91.0}
# issue 9's anchors: one clean LibriSpeech test-other microphone, (coder, kbit/s, PESQ-WB, STOI)
ANCHORS = [("Opus", 5.3, 1.88, 0.88), ("Opus", 7.1, 2.41, 0.93), ("Opus", 11.5, 3.71, 0.96),
           ("Opus", 15.3, 4.13, 0.97), ("Opus", 23.3, 4.43, 0.99),
           ("linear PCA per frame", 11.8, 1.73, 0.81), ("linear PCA per frame", 24.5, 2.52, 0.92),
           ("linear PCA per frame", 51.0, 3.71, 0.98),
           ("PCA over 4-frame stacks", 12.0, 2.09, 0.85), ("PCA over 4-frame stacks", 25.3, 3.01, 0.94),
           ("PCA over 4-frame stacks", 52.8, 4.01, 0.97)]
ANCHOR_METHODS = ("jae", "ndpca-e2d1", "ndpca-e4d1", "dpca-e4d1", "naive-e4d1", "opus-ref", "opus-all")
# line style of each method in the figures
STYLES = {"jae": "k-o", "ndpca-e2d1": "C0-s", "ndpca-e4d1": "C1-^", "ndpca-equal-e2d1": "C4-s",
          "ndpca-equal-e4d1": "C4-^", "uniform-e2d1": "C0:s",
          "uniform-e4d1": "C1:^", "naive-e2d1": "C0--x", "naive-e4d1": "C1--x",
          "naive-full-e2d1": "C0-.+", "naive-full-e4d1": "C1-.+", "dpca-e2d1": "C2--v",
          "dpca-e4d1": "C2-v", "opus-ref": "C3-d", "opus-all": "C3--d"}
REF_METRICS = (("pesq", "PESQ-WB", 2), ("stoi", "STOI", 3), ("si_sdr_db", "SI-SDR (dB)", 1),
               ("psnr_db", "PSNR (dB), Eq. 13", 1))
ALL_METRICS = tuple((f"all_{k}", name, nd) for k, name, nd in REF_METRICS)
CLEAN_METRICS = (("clean_pesq", "PESQ-WB against the clean speech", 2),
                 ("clean_stoi", "STOI against the clean speech", 3),
                 ("clean_si_sdr_db", "SI-SDR (dB) against the clean speech", 1))


def fmt_cell(v: Any, nd: int = 2) -> str:
    """A table cell: ``v`` with ``nd`` decimals, "n/a" for missing or non-finite values."""
    return "n/a" if v is None or (isinstance(v, float) and not math.isfinite(v)) else f"{v:.{nd}f}"


def _finite(v: Any) -> bool:
    return v is not None and math.isfinite(v)


def headline(agg: list[dict[str, Any]], full: int, key: str = "psnr_db") -> dict[str, Any]:
    """The paper's ratios on ``key``: NDPCA gain over each naive baseline, the uniform split
    and DPCA (%), and NDPCA-E2D1 as a share of JAE (%), per bandwidth below ``full`` and their
    mean."""
    val = {(r["method"], r["bandwidth"]): r[key] for r in agg if r["bandwidth"] >= 0}
    bws = sorted({bw for (_, bw) in val if 0 < bw < full})
    out: dict[str, Any] = {"metric": key, "per_bandwidth": {}}
    for bw in bws:
        d = {}
        for e in ("e2d1", "e4d1"):
            a = val.get((f"ndpca-{e}", bw))
            for base in ("naive", "naive-full", "uniform", "dpca"):
                b = val.get((f"{base}-{e}", bw))
                if _finite(a) and _finite(b) and b != 0:
                    d[f"ndpca-{e} gain over {base} (%)"] = 100 * (a - b) / abs(b)
        j, n2 = val.get(("jae", bw)), val.get(("ndpca-e2d1", bw))
        if _finite(j) and _finite(n2) and j != 0:
            d["ndpca-e2d1 share of JAE (%)"] = 100 * n2 / j
        out["per_bandwidth"][bw] = d
    keys = sorted({k for d in out["per_bandwidth"].values() for k in d})
    out["mean_below_full"] = {k: float(np.mean([d[k] for d in out["per_bandwidth"].values() if k in d]))
                              for k in keys}
    return out


def per_bandwidth_lines(head: dict[str, Any]) -> list[str]:
    """Markdown table of the headline ratios per bandwidth (rows of :func:`headline`)."""
    keys = list(head["mean_below_full"])
    lines = ["| bandwidth | " + " | ".join(keys) + " |", "|---|" + "---|" * len(keys)]
    for bw, d in head["per_bandwidth"].items():
        lines.append(f"| {bw} | " + " | ".join(fmt_cell(d.get(k), 1) for k in keys) + " |")
    return lines


# ---------------------------------------------------------------------------- helpers


def _methods(agg: list[dict[str, Any]], opus: bool | None = None) -> list[str]:
    """Methods in row order; ``opus`` True/False keeps only Opus / only codec methods."""
    ms = list(dict.fromkeys(r["method"] for r in agg))
    return ms if opus is None else [m for m in ms if m.startswith("opus") == opus]


def _curve(agg: list[dict[str, Any]], method: str, x: str, y: str) -> list[tuple[float, float]]:
    """(x, y) points of one method with finite, positive x and finite y, sorted by x."""
    return sorted((r[x], r[y]) for r in agg if r["method"] == method and _finite(r[x]) and r[x] > 0
                  and _finite(r[y]))


def interp_log_rate(points: list[tuple[float, float]], kbps: float) -> float | None:
    """Linear interpolation of ``(kbit/s, value)`` points on a log-rate axis; None outside
    their range (no extrapolation)."""
    if not points or not _finite(kbps) or kbps <= 0 or not points[0][0] <= kbps <= points[-1][0]:
        return None
    xs, ys = zip(*points)
    return float(np.interp(math.log(kbps), np.log(xs), ys))


def _nearest(agg: list[dict[str, Any]], method: str, kbps: float) -> dict[str, Any] | None:
    """The method's row whose measured rate is nearest ``kbps`` on a log axis."""
    rs = [r for r in agg if r["method"] == method and _finite(r["room_kbps"]) and r["room_kbps"] > 0]
    return min(rs, key=lambda r: abs(math.log(r["room_kbps"] / kbps)), default=None)


# ---------------------------------------------------------------------------- plots


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def plot_quality_vs_rate(agg: list[dict[str, Any]], path: Path, title: str) -> None:
    """One panel per reference-microphone metric against the measured room rate (log axis)."""
    plt = _pyplot()
    fig, axes = plt.subplots(2, 2, figsize=(12, 8.5))
    for ax, (key, label, _) in zip(axes.flat, REF_METRICS):
        for method in _methods(agg):
            pts = _curve(agg, method, "room_kbps", key)
            if pts:
                ax.plot(*zip(*pts), STYLES.get(method, "-o"), label=method, markersize=4)
        ax.set_xscale("log")
        ax.set_xlabel("room rate (kbit/s, measured)")
        ax.set_ylabel(f"{label}, reference microphone")
        ax.grid(alpha=0.3, which="both")
    labelled = [ax for ax in axes.flat if ax.get_legend_handles_labels()[0]]
    if labelled:
        labelled[0].legend(fontsize=7, ncol=2)
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def plot_fig3b(agg: list[dict[str, Any]], path: Path, title: str) -> None:
    """The paper's Fig. 3b: Eq. 13 PSNR over all microphones against components per vector."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for method in _methods(agg, opus=False):
        pts = _curve(agg, method, "bandwidth", "all_psnr_db")
        if pts:
            ax.plot(*zip(*pts), STYLES.get(method, "-o"), label=method, markersize=4)
    ax.set_xscale("log", base=2)
    bws = sorted({r["bandwidth"] for r in agg if r["bandwidth"] > 0})
    ax.set_xticks(bws, [str(b) for b in bws])
    ax.minorticks_off()
    ax.set_xlabel("bandwidth (components per latent vector, shared by the sources)")
    ax.set_ylabel("PSNR (dB), Eq. 13, all microphones")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, ncol=2)
    ax.set_title(title, fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


# ---------------------------------------------------------------------------- tables


def _table(header: list[str], rows: list[list[str]]) -> list[str]:
    return (["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
            + ["| " + " | ".join(r) + " |" for r in rows])


def metric_tables(agg: list[dict[str, Any]]) -> list[str]:
    """The room rate, then every metric by method and bandwidth, "value (room kbit/s)"."""
    methods = _methods(agg, opus=False)
    bws = sorted({r["bandwidth"] for r in agg if r["bandwidth"] >= 0})
    cell = {(r["method"], r["bandwidth"]): r for r in agg}
    lines = ["## Room rate by bandwidth (kbit/s, measured, all sources)", ""]
    lines += _table(["method"] + [str(b) for b in bws],
                    [[m] + [fmt_cell(cell.get((m, b), {}).get("room_kbps"), 2) for b in bws] for m in methods])
    for key, name, nd in REF_METRICS + ALL_METRICS + CLEAN_METRICS:
        scope = "all microphones (mean)" if key.startswith("all_") else "reference microphone"
        lines += ["", f"## {name}, {scope}, by bandwidth: value (room kbit/s)", ""]
        rows = []
        for m in methods:
            cs = [cell.get((m, b)) for b in bws]
            rows.append([m] + [f"{fmt_cell(c[key], nd)} ({fmt_cell(c['room_kbps'], 1)})" if c else "-"
                               for c in cs])
        lines += _table(["method"] + [str(b) for b in bws], rows)
    return lines


def opus_tables(agg: list[dict[str, Any]]) -> list[str]:
    """One table per Opus kind: every target with the measured rate and all metrics."""
    lines = []
    for method in _methods(agg, opus=True):
        what = ("the reference microphone alone at the whole room rate" if method == "opus-ref"
                else "every microphone at an equal share of the room rate")
        floor = ("the rate Opus's lowest setting measures on microphone 0" if method == "opus-ref"
                 else "M times the largest rate Opus's lowest setting measures on a microphone")
        lines += ["", f"## {method}: {what}", "", f"Floor: the lowest room rate reachable, {floor} "
                  "(mean over examples); targets below it are not reachable and have no scores.", ""]
        keys = REF_METRICS + CLEAN_METRICS + (ALL_METRICS if method == "opus-all" else ())
        rows = [[fmt_cell(r["target_kbps"], 0), fmt_cell(r["room_kbps"], 2), fmt_cell(r["opus_floor_kbps"], 2)]
                + [fmt_cell(r[k], nd) for k, _, nd in keys] + [r["note"] or "-"]
                for r in agg if r["method"] == method]
        lines += _table(["target kbit/s", "measured kbit/s", "floor kbit/s"]
                        + [("all mics " if k.startswith("all_") else "") + n for k, n, _ in keys]
                        + ["note"], rows)
    return lines


def anchor_table(agg: list[dict[str, Any]]) -> list[str]:
    """Reference-microphone PESQ/STOI of our methods at the measured rate nearest each anchor."""
    methods = [m for m in ANCHOR_METHODS if m in _methods(agg)]
    rows = []
    for coder, kbps, pesq, stoi in ANCHORS:
        cells = []
        for m in methods:
            r = _nearest(agg, m, kbps)
            far = r is not None and abs(math.log(r["room_kbps"] / kbps)) > math.log(2)
            cells.append("-" if r is None else "none within 2x" if far else
                         f"{fmt_cell(r['pesq'])} / {fmt_cell(r['stoi'])} @ {fmt_cell(r['room_kbps'], 1)}")
        rows.append([coder, f"{kbps:g}", f"{pesq:.2f} / {stoi:.2f}"] + cells)
    return (["## Reference microphone at the rates nearest the anchors (PESQ-WB / STOI @ room kbit/s)", "",
             "The anchors (issue 9) are one clean LibriSpeech test-other microphone coded alone; ours "
             "code a noisy reverberant room of several microphones, score microphone 0 against its "
             "captured signal, and count the bits of every microphone (opus-ref: microphone 0 only). "
             "Each cell is the row whose measured rate is nearest the anchor's on a log axis ('none within "
             "2x': no row within a factor 2 of the anchor's rate).", ""]
            + _table(["anchor", "kbit/s", "its PESQ / STOI"] + methods, rows))


def verdict_table(agg: list[dict[str, Any]], full: int, e: str = "e4d1") -> list[str]:
    """Per bandwidth below full width: NDPCA against both naive baselines and DPCA (PESQ-WB of
    the reference microphone and Eq. 13 PSNR of all microphones, at equal bandwidth), and the
    gap to opus-ref's PESQ interpolated at NDPCA's measured room rate."""
    cell = {(r["method"], r["bandwidth"]): r for r in agg if r["bandwidth"] >= 0}
    opus = _curve(agg, "opus-ref", "room_kbps", "pesq")
    bases = [b for b in (f"naive-{e}", f"naive-full-{e}", f"dpca-{e}") if any(k[0] == b for k in cell)]
    rows = []
    for bw in sorted(b for (m, b) in cell if m == f"ndpca-{e}" and b < full):
        r = cell[(f"ndpca-{e}", bw)]
        cols = [str(bw), fmt_cell(r["room_kbps"], 2), fmt_cell(r["pesq"]), fmt_cell(r["all_psnr_db"], 1)]
        for b in bases:
            o = cell.get((b, bw))
            cols.append("-" if o is None else "; ".join(
                f"{'yes' if r[k] > o[k] else 'no'} ({r[k] - o[k]:+.{nd}f}{unit})" if _finite(r[k]) and _finite(o[k])
                else "n/a" for k, nd, unit in (("pesq", 2, ""), ("all_psnr_db", 1, " dB"))))
        ref = interp_log_rate(opus, r["room_kbps"])
        gap = ("n/a" if not opus or not _finite(r["pesq"]) else fmt_cell(r["pesq"] - ref) if ref is not None
               else "outside opus-ref's measured range")
        cols += [fmt_cell(ref), gap]
        rows.append(cols)
    return ([f"## NDPCA-{e.upper()} against the baselines, per bandwidth below full width", "",
             "Above a baseline: higher PESQ-WB (reference microphone) and higher Eq. 13 PSNR (all "
             "microphones) at the same bandwidth (the same bit budget; measured rates are in the "
             "tables above). Opus: opus-ref's PESQ-WB interpolated linearly on a log-rate axis at "
             f"NDPCA-{e.upper()}'s measured room rate (means over examples; no extrapolation), gap = "
             "NDPCA minus Opus.", ""]
            + _table(["bandwidth", "room kbit/s", "PESQ", "PSNR all (dB)"]
                     + [f"above {b}? (PESQ; PSNR)" for b in bases]
                     + ["opus-ref PESQ at this rate", "gap to opus-ref (PESQ)"], rows))


def headline_lines(head: dict[str, Any]) -> list[str]:
    rows = [[k, fmt_cell(v, 1), str(PAPER.get(k, "-"))] for k, v in head["mean_below_full"].items()]
    return (["## Headline ratios (ours beside the paper's)", "",
             f"On {head['metric']} (Eq. 13 PSNR over all microphones, as the paper's Fig. 3b), mean "
             "over the bandwidths below full width; the paper has no DPCA ratio.", ""]
            + _table(["ratio", "ours", "paper"], rows) + ["", "Per bandwidth:", ""] + per_bandwidth_lines(head))


def write_summary(path: Path, agg: list[dict[str, Any]], head: dict[str, Any], meta: dict[str, Any],
                  title: str) -> None:
    checkpoints = ", ".join(f"{k}: {v}" for k, v in meta["checkpoints"].items())
    lines = [f"# {title}", "", f"Command: `{meta['command']}`", "",
             f"Examples: {meta['n_examples']} ({meta['data']}). Rate configuration: {meta['rate']}. "
             f"Latents: {meta['vectors_per_step']} vectors per step of {meta['vector_ms']:.0f} ms each; "
             f"full width {meta['full_latent']} components per vector. Checkpoints: {checkpoints}.", "",
             "Definitions: bandwidth = components per latent vector shared by the sources (allocation "
             "per source in results.csv); room kbit/s = all bits produced by all sources per second, "
             "measured (Opus: packet bytes; opus-ref codes microphone 0 only, at the whole room rate; "
             "opus-all codes every microphone at target / M). Every metric compares a decoded "
             "microphone with its own captured signal (codec fidelity): reference microphone = "
             "microphone 0; all microphones = mean over microphones (PSNR: Eq. 13 over all their "
             "compressed magnitude spectra, peak of the input). Waveforms use the decoder's own "
             f"phase (no Griffin-Lim). PESQ/STOI computed for: {meta['perceptual']} microphones. "
             "n/a: not computed or not reachable.", ""]
    lines += metric_tables(agg) + opus_tables(agg)
    lines += [""] + anchor_table(agg) + [""] + verdict_table(agg, meta["full_latent"])
    lines += [""] + headline_lines(head)
    path.write_text("\n".join(lines) + "\n")


def write_report(out_dir: Path, agg: list[dict[str, Any]], meta: dict[str, Any], title: str) -> dict[str, Any]:
    """``quality_vs_rate.png``, ``fig3b_psnr.png``, ``headline.json`` and ``summary.md``."""
    head = headline(agg, meta["full_latent"], "all_psnr_db")
    (out_dir / "headline.json").write_text(json.dumps(head, indent=1))
    plot_quality_vs_rate(agg, out_dir / "quality_vs_rate.png", title)
    plot_fig3b(agg, out_dir / "fig3b_psnr.png", title)
    write_summary(out_dir / "summary.md", agg, head, meta, title)
    return head
