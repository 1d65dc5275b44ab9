"""Per-step statistics, session summaries and quality scores (plain functions over a session)."""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING, Any

import numpy as np

from shared.codec import Plan
from shared.streaming import percentiles

if TYPE_CHECKING:
    from server.session import Received, Session


def step_entry(step: int, t: float, plan: Plan, active: Iterable[int], items: Mapping[int, Received],
               missing: list[int], closed_by: str, frames: int, n_sources: int,
               quality_names: list[str]) -> dict[str, Any]:
    """The statistics of one closed step (sources are string keys, as in JSON).

    Later filled in: ``late`` (chunks arriving after the close), ``decode_ms`` (close ->
    audio), ``e2e_ms`` (capture of the chunk's first sample -> audio) and the quality scores.
    """
    keys = [str(s) for s in range(n_sources)]
    bits = {str(s): items[s].bits if s in items else 0 for s in range(n_sources)}
    return {
        "step": step,
        "t": t,
        "capacity_bps": plan.capacity_bps,
        "budget_coefficients": plan.budget_coefficients,
        "budget_bits": plan.budget_bits,
        "allocation": dict(zip(keys, plan.allocation)),
        "bits_allocated": dict(zip(keys, plan.bits_per_source)),
        "bits_received": bits,
        "bits_total": sum(bits.values()),
        "frame_bits_total": 8 * sum(it.frame_bytes for it in items.values()),
        "k_received": {str(s): items[s].k if s in items else 0 for s in range(n_sources)},
        "k_applied": {str(s): items[s].k_allocated for s in items},
        "alloc_step_applied": {str(s): items[s].alloc_step for s in items},
        # tuples, not lists: the collector stops tracking them (and the dicts of numbers above),
        # so a step's record is one tracked object and full collections stay short as
        # sessions grow
        "active": tuple(sorted(active)),
        "missing": tuple(missing),
        "late": (),
        "closed_by": closed_by,
        "frames": frames,
        "decode_ms": None,
        "e2e_ms": None,
        **{name: None for name in quality_names},
    }


def snr_energies(block: np.ndarray, reference: np.ndarray, start: int) -> tuple[float, float] | None:
    """Signal and error energies of decoded audio ``[M, n]`` against a reference ``[R, N]``
    from sample ``start``: all microphones pooled when R == M; otherwise decoded microphone 0
    against reference channel 0. None where the reference has no samples there."""
    n = block.shape[-1]
    ref = reference[:, start : start + n].astype(np.float64)
    if ref.shape[-1] == 0:
        return None
    if ref.shape[0] == block.shape[0]:
        dec = block[:, : ref.shape[-1]]
    else:
        ref, dec = ref[:1], block[:1, : ref.shape[-1]]
    return float(np.sum(ref**2)), float(np.sum((ref - dec) ** 2))


def db(signal: float, noise: float) -> float | None:
    """``10 log10(signal / noise)``; None without signal energy."""
    if signal <= 0:
        return None
    return 10 * math.log10(signal / max(noise, 1e-20))


def snr_db(block: np.ndarray, reference: np.ndarray, start: int) -> float | None:
    """SNR (dB) of decoded audio ``[M, n]`` against a reference ``[R, N]`` from sample ``start``
    (see :func:`snr_energies`). None where the reference has no samples or no energy."""
    energies = snr_energies(block, reference, start)
    return None if energies is None else db(*energies)


def session_summary(s: Session) -> dict[str, Any]:
    steps = s.steps
    return {
        "id": s.id,
        "state": s.state,
        "mode": s.cfg.mode,
        "epoch": s.clock.epoch,
        "first_step": s.first_step,
        "steps": s.previous_steps + len(steps),
        "connected": sorted(s.links),
        "expected": sorted(s.expected),
        "output_samples": s.samples_out,
        "output_offset_samples": s.output_offset,
        "late_chunks": s.late,
        "missing_chunks": s.missing,
        "duplicate_chunks": s.duplicates,
        "outage_steps": s.outage_steps,
        "restarts": s.restarts,
        "recorded_samples": s.recorded,
        "bits_received": int(s.bits_received),
        "steps_within_budget": int(s.steps_within_budget),
        "decode_ms": percentiles(s.decode_ms),
        "e2e_ms": percentiles(s.e2e_ms),
        "quality": s.quality_summary(),
        "error": s.error,
    }


def session_stats(s: Session, since: int = 0) -> dict[str, Any]:
    """Everything ``GET /sessions/{id}/stats`` returns: configuration, summary, steps."""
    rate, codec = s.codec.rate, s.codec
    return {
        "session": s.id,
        "config": s.cfg.public(),
        "rate": {
            "sigma2": rate.sigma2, "distortion": rate.distortion, "eta": rate.eta,
            "chunk_seconds": rate.chunk_seconds,
            "bits_per_coefficient": rate.bits_per_coefficient, "quant_step": rate.quant_step,
            "step_profile": codec.step_profile,
        },
        "trace": s.trace_info,
        "model": {
            "arch": codec.cfg.arch, "sha256": codec.sha256, "latent_sizes": codec.latent_sizes,
            "mic_groups": codec.mic_groups, "sample_rate": codec.sample_rate,
        },
        "sources": {str(k): vars(st) for k, st in s.sources.items()},
        "summary": session_summary(s),
        "steps": [{k: v for k, v in st.items() if not k.startswith("_")} for st in s.steps[since:]],
    }
