"""Summary statistics and plots of a trace and of the coefficient budget it yields.

The budget per step is paper Eq. 3 (:func:`shared.rate.budget_coefficients`) applied to the
mean capacity of each replay step (:meth:`Trace.steps`). A step is an *outage* when its
budget is 0 coefficients (the channel cannot carry even one coefficient in that step).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from channel_traces.trace import Trace
from shared.rate import RateConfig, budget_coefficients

#: Coefficients per step at full width of the default codec (E4D1: 4 sources x 384 floats per
#: latent vector, one vector per 32 ms step), the budget cap.
DEFAULT_MAX_TOTAL = 1536
#: Median budget that :func:`suggest_share` aims for.
DEFAULT_TARGET_COEFFICIENTS = 384
#: Kinds measured on a whole link, whose readers take a ``share``.
SHARED_KINDS = ("throughput", "csi")


@dataclass(frozen=True)
class TraceSummary:
    """What ``ndpca traces show`` prints.

    Attributes:
        duration_s: length of one pass.
        samples: number of samples N.
        cap_min, cap_median, cap_mean, cap_max: capacity in bit/s (mean is time-weighted).
        outage_fraction: fraction of steps whose budget is 0.
        budget_min, budget_median, budget_max: coefficients per step.
        steps: number of replay steps in one pass.
        cfg: the rate configuration used.
        max_total: the budget cap (sum of latent sizes).
    """

    duration_s: float
    samples: int
    cap_min: float
    cap_median: float
    cap_mean: float
    cap_max: float
    outage_fraction: float
    budget_min: int
    budget_median: float
    budget_max: int
    steps: int
    cfg: RateConfig
    max_total: int


def step_budgets(trace: Trace, cfg: RateConfig, max_total: int = DEFAULT_MAX_TOTAL) -> np.ndarray:
    """Coefficients per step over one pass, shape ``[n_steps]`` (step = ``cfg.chunk_seconds``)."""
    caps = trace.steps(cfg.chunk_seconds)
    return np.array([budget_coefficients(float(c), cfg, max_total) for c in caps], dtype=int)


def summarize(
    trace: Trace, cfg: RateConfig | None = None, max_total: int = DEFAULT_MAX_TOTAL
) -> TraceSummary:
    """Compute :class:`TraceSummary` for ``trace`` under ``cfg`` (default RateConfig())."""
    cfg = cfg or RateConfig()
    budgets = step_budgets(trace, cfg, max_total)
    cap = trace.capacity_bps
    return TraceSummary(
        duration_s=trace.duration_s,
        samples=len(trace),
        cap_min=float(cap.min()),
        cap_median=float(np.median(cap)),
        cap_mean=float(trace.integral_bits(trace.duration_s) / trace.duration_s),
        cap_max=float(cap.max()),
        outage_fraction=float(np.mean(budgets == 0)),
        budget_min=int(budgets.min()),
        budget_median=float(np.median(budgets)),
        budget_max=int(budgets.max()),
        steps=int(budgets.size),
        cfg=cfg,
        max_total=max_total,
    )


def suggest_share(
    trace: Trace, cfg: RateConfig | None = None, target: int = DEFAULT_TARGET_COEFFICIENTS
) -> float:
    """Share of the link that puts the median step budget at ``target`` coefficients.

    The capacity for L coefficients per step is ``L x bits_per_coefficient / T``; the share is
    that over the median step capacity (it may exceed 1 on a link that is too slow).
    """
    cfg = cfg or RateConfig()
    median = float(np.median(trace.steps(cfg.chunk_seconds)))
    needed = (target + 0.5) * cfg.bits_per_coefficient / cfg.chunk_seconds
    return float("inf") if median <= 0 else needed / median


def note_parts(notes: str) -> list[str]:
    """Split ``Trace.notes`` at ``"; "`` outside parentheses: the derivation first, then what
    was done to the data (skipped rows, repaired times...), one item per printed line."""
    parts, depth, start = [], 0, 0
    for i, char in enumerate(notes):
        depth += {"(": 1, ")": -1}.get(char, 0)
        if depth == 0 and notes.startswith("; ", i):
            parts.append(notes[start:i].strip())
            start = i + 2
    parts.append(notes[start:].strip())
    return [part for part in parts if part]


def format_summary(trace: Trace, summary: TraceSummary) -> str:
    """Human-readable report: source, derivation, rate config, capacity and budget stats."""
    cfg = summary.cfg
    share = suggest_share(trace, cfg)
    lines = [
        f"trace      {trace.source} (kind {trace.kind})",
        "derived    " + "\n           ".join(note_parts(trace.notes)),
        f"rate       sigma2 {cfg.sigma2:g}, D {cfg.distortion:g}, eta {cfg.eta:g}, "
        f"T {cfg.chunk_seconds:g} s -> {cfg.bits_per_coefficient:.3f} bits/coefficient, "
        f"cap {summary.max_total}",
        f"duration   {summary.duration_s:.3f} s, {summary.samples} samples, "
        f"{summary.steps} steps",
        f"capacity   min {summary.cap_min:.6g}  median {summary.cap_median:.6g}  "
        f"mean {summary.cap_mean:.6g}  max {summary.cap_max:.6g} bit/s",
        f"outage     {summary.outage_fraction:.1%} of steps carry 0 coefficients",
        f"budget     min {summary.budget_min}  median {summary.budget_median:g}  "
        f"max {summary.budget_max} coefficients per step",
    ]
    if trace.kind in SHARED_KINDS and share < 1:
        lines.append(f"share      scaling this capacity by {share:.3g} gives a median budget of "
                     f"{DEFAULT_TARGET_COEFFICIENTS} coefficients: --share = that x the "
                     "share used here")
    return "\n".join(lines)


def plot_trace(
    trace: Trace, out: Path, cfg: RateConfig | None = None, max_total: int = DEFAULT_MAX_TOTAL
) -> Path:
    """Plot capacity (samples and step means) and the budget per step into a PNG.

    Uses the Agg canvas directly, so no display and no global backend switch are needed.
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    cfg = cfg or RateConfig()
    period = cfg.chunk_seconds
    means = trace.steps(period)
    budgets = step_budgets(trace, cfg, max_total)
    edges = np.arange(means.size + 1) * period
    fig = Figure(figsize=(10, 6), constrained_layout=True)
    FigureCanvasAgg(fig)
    ax_cap, ax_bud = fig.subplots(2, 1, sharex=True)
    ax_cap.step(np.append(trace.times_s, trace.duration_s),
                np.append(trace.capacity_bps, trace.capacity_bps[-1]),
                where="post", lw=0.6, alpha=0.6, label="samples")
    ax_cap.stairs(means, edges, baseline=None, lw=1.4, label=f"mean per {period:g} s step")
    ax_cap.set_ylabel("capacity (bit/s)")
    ax_cap.set_title(f"{Path(trace.source).name} ({trace.kind}): "
                     f"{trace.notes.split(';')[0]}"[:120], fontsize=9)
    ax_cap.legend(loc="upper right", fontsize=8)
    ax_bud.stairs(budgets, edges, baseline=None, color="tab:green", lw=1.4)
    for level in (8, max_total):
        ax_bud.axhline(level, color="grey", ls=":", lw=0.8)
    ax_bud.set_yscale("symlog", linthresh=8)
    ax_bud.set_ylim(0, max_total * 1.5)  # a budget is never negative (symlog would mirror the axis)
    ax_bud.set_ylabel("budget (coefficients/step)")
    ax_bud.set_xlabel("time (s)")
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=110)
    return out
