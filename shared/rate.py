"""Capacity, rate-distortion budget and NDPCA allocation: pure functions, no I/O.

Formulas (paper Eqs. 1-3, DESIGN.md section 3):

* capacity from an SNR:            C = W log2(1 + SNR)
* capacity from per-subcarrier CSI: C = sum_k df log2(1 + |H_k|^2 SNR)
* capacity from throughput:         C = share * throughput
* rate-distortion:                  R(D) = 1/2 log2(sigma^2 / D) bits per symbol
* budget (coefficients per step):   L_t = floor(2 C_t T / (eta log2(sigma^2 / D))),
                                    capped at the sum of the latent sizes.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np


def db_to_linear(snr_db: float | np.ndarray) -> float | np.ndarray:
    """Convert a power ratio in dB to linear scale."""
    return 10.0 ** (np.asarray(snr_db, dtype=np.float64) / 10.0)


def capacity_from_snr(snr_db: float | np.ndarray, bandwidth_hz: float) -> float | np.ndarray:
    """Shannon capacity ``W log2(1 + SNR)`` in bit/s for an SNR given in dB."""
    if bandwidth_hz <= 0:
        raise ValueError(f"bandwidth_hz must be positive, got {bandwidth_hz}")
    out = bandwidth_hz * np.log2(1.0 + db_to_linear(snr_db))
    return float(out) if np.ndim(out) == 0 else out


def capacity_from_csi(
    h: np.ndarray, snr_db: float, subcarrier_spacing_hz: float
) -> float | np.ndarray:
    """Capacity ``sum_k df log2(1 + |H_k|^2 SNR)`` in bit/s.

    Args:
        h: complex (or magnitude) channel gains, shape ``[..., K]`` over K subcarriers;
            leading axes (e.g. time) are kept.
        snr_db: transmit SNR in dB (the SNR for a unit-gain channel).
        subcarrier_spacing_hz: df, the bandwidth of one subcarrier in Hz.
    """
    if subcarrier_spacing_hz <= 0:
        raise ValueError(f"subcarrier_spacing_hz must be positive, got {subcarrier_spacing_hz}")
    gain = np.abs(np.asarray(h)) ** 2
    out = subcarrier_spacing_hz * np.log2(1.0 + gain * db_to_linear(snr_db)).sum(axis=-1)
    return float(out) if np.ndim(out) == 0 else out


def capacity_from_throughput(mbps: float | np.ndarray, share: float = 1.0) -> float | np.ndarray:
    """Capacity in bit/s from a measured throughput in Mbit/s, times an optional share."""
    if not 0 < share <= 1:
        raise ValueError(f"share must be in (0, 1], got {share}")
    out = np.asarray(mbps, dtype=np.float64) * 1e6 * share
    return float(out) if np.ndim(out) == 0 else out


def rate_distortion_bits(sigma2: float, distortion: float) -> float:
    """R(D) = 1/2 log2(sigma^2 / D) bits per symbol (0 when D >= sigma^2)."""
    if sigma2 <= 0 or distortion <= 0:
        raise ValueError("sigma2 and distortion must be positive")
    return max(0.0, 0.5 * math.log2(sigma2 / distortion))


@dataclass(frozen=True)
class RateConfig:
    """Configuration of the rate-distortion budget (printed with every result).

    Attributes:
        sigma2: variance of a coefficient (coefficients are normalised to unit variance).
        distortion: target mean squared error D per normalised coefficient.
        eta: channel symbols per float (overhead of the practical quantiser and coder).
        chunk_seconds: T, the duration covered by one step.
    """

    sigma2: float = 1.0
    distortion: float = 0.01
    eta: float = 1.1
    chunk_seconds: float = 0.032

    def __post_init__(self) -> None:
        if self.sigma2 <= self.distortion:
            raise ValueError(
                f"sigma2 ({self.sigma2}) must exceed distortion ({self.distortion}): "
                "otherwise no bits are needed and the budget is undefined"
            )
        if self.eta <= 0 or self.chunk_seconds <= 0:
            raise ValueError("eta and chunk_seconds must be positive")

    @property
    def quant_step(self) -> float:
        """Uniform quantiser step whose error variance step^2/12 equals D."""
        return math.sqrt(12.0 * self.distortion)

    @property
    def bits_per_coefficient(self) -> float:
        """eta * R(D): the bits the budget assumes for one coefficient."""
        return self.eta * rate_distortion_bits(self.sigma2, self.distortion)


def budget_coefficients(capacity_bps: float, cfg: RateConfig, max_total: int) -> int:
    """Paper Eq. 3: L = floor(2 C T / (eta log2(sigma^2 / D))), capped at ``max_total``."""
    if capacity_bps < 0 or not math.isfinite(capacity_bps):
        raise ValueError(f"capacity must be finite and >= 0, got {capacity_bps}")
    denom = cfg.eta * math.log2(cfg.sigma2 / cfg.distortion)
    total = math.floor(2.0 * capacity_bps * cfg.chunk_seconds / denom)
    return int(max(0, min(total, max_total)))


def budget_bits(capacity_bps: float, cfg: RateConfig) -> int:
    """Bits that fit on the channel in one step: floor(C T)."""
    return int(math.floor(capacity_bps * cfg.chunk_seconds))


def allocate_ndpca(singular_values: Sequence[np.ndarray], total: int) -> list[int]:
    """NDPCA allocation: pool (singular value, source) pairs, take the top ``total``.

    Args:
        singular_values: per source, its singular values in descending order, shape ``[d_s]``.
        total: the budget L in coefficients.

    Returns:
        k_s per source; ``sum(k) == min(total, sum(d_s))``. Ties are broken by source index,
        then by component index, so the result is deterministic.
    """
    sizes = [len(s) for s in singular_values]
    total = max(0, min(int(total), sum(sizes)))
    if total == 0:
        return [0] * len(sizes)
    values = np.concatenate([np.asarray(s, dtype=np.float64) for s in singular_values])
    owner = np.concatenate([np.full(n, i) for i, n in enumerate(sizes)])
    order = np.lexsort((np.arange(len(values)), owner, -values))[:total]
    return np.bincount(owner[order], minlength=len(sizes)).astype(int).tolist()


def allocate_uniform(sizes: Sequence[int], total: int) -> list[int]:
    """Uniform split: each of S sources gets floor(L / S) components (capped at its size)."""
    if not sizes:
        return []
    share = max(0, int(total)) // len(sizes)
    return [min(share, n) for n in sizes]


def split_bits(total_bits: int, allocation: Sequence[int]) -> list[int]:
    """Split a step's bit budget across sources in proportion to their components."""
    k_total = sum(allocation)
    if k_total == 0:
        return [0] * len(allocation)
    return [int(total_bits * k // k_total) for k in allocation]
