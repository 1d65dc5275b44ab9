"""Capacity, budget (paper Eqs. 1-3) and allocation."""

import math

import numpy as np
import pytest

from shared.rate import (
    RateConfig,
    allocate_ndpca,
    allocate_uniform,
    budget_bits,
    budget_coefficients,
    capacity_from_csi,
    capacity_from_snr,
    capacity_from_throughput,
    rate_distortion_bits,
    split_bits,
)


def test_capacity_from_snr_matches_shannon():
    """C = W log2(1 + SNR) with SNR in dB."""
    assert capacity_from_snr(0.0, 1000.0) == pytest.approx(1000.0)
    assert capacity_from_snr(30.0, 2e4) == pytest.approx(2e4 * math.log2(1001.0))
    np.testing.assert_allclose(capacity_from_snr(np.array([0.0, 10.0]), 1.0), [1.0, math.log2(11)])


def test_capacity_from_csi_sums_subcarriers():
    """C = sum_k df log2(1 + |H_k|^2 SNR), over the last axis."""
    h = np.array([[1.0, 1j * 2.0], [0.0, 1.0]])
    c = capacity_from_csi(h, 0.0, 312.5e3)
    np.testing.assert_allclose(c, [312.5e3 * (1 + math.log2(5)), 312.5e3])


def test_capacity_from_throughput_share():
    assert capacity_from_throughput(2.0, share=0.25) == pytest.approx(0.5e6)
    with pytest.raises(ValueError):
        capacity_from_throughput(1.0, share=0.0)


def test_budget_equation_3():
    """L = floor(2 C T / (eta log2(sigma^2 / D))), capped."""
    cfg = RateConfig(sigma2=1.0, distortion=0.01, eta=1.1, chunk_seconds=0.256)
    c = 1000.0
    expected = math.floor(2 * c * 0.256 / (1.1 * math.log2(100.0)))
    assert budget_coefficients(c, cfg, 10_000) == expected
    assert budget_coefficients(1e9, cfg, 256) == 256
    assert budget_coefficients(0.0, cfg, 256) == 0
    assert budget_bits(c, cfg) == 256
    assert rate_distortion_bits(1.0, 0.25) == pytest.approx(1.0)
    # L coefficients at eta R(D) bits each fit in C T
    L = budget_coefficients(c, cfg, 10_000)
    assert L * cfg.bits_per_coefficient <= c * cfg.chunk_seconds + 1e-9


def test_rate_config_rejects_nonsense():
    with pytest.raises(ValueError):
        RateConfig(sigma2=1.0, distortion=2.0)
    with pytest.raises(ValueError):
        budget_coefficients(float("nan"), RateConfig(), 10)


def test_ndpca_allocation_takes_top_singular_values():
    """Pool (value, source) pairs, sort descending, take the top L; count per source."""
    s = [np.array([10.0, 5.0, 1.0]), np.array([8.0, 7.0, 0.5]), np.array([0.1, 0.05])]
    assert allocate_ndpca(s, 0) == [0, 0, 0]
    assert allocate_ndpca(s, 1) == [1, 0, 0]
    assert allocate_ndpca(s, 3) == [1, 2, 0]
    assert allocate_ndpca(s, 5) == [3, 2, 0]
    assert allocate_ndpca(s, 100) == [3, 3, 2]
    assert sum(allocate_ndpca(s, 6)) == 6


def test_uniform_and_bit_split():
    assert allocate_uniform([64, 64, 64, 64], 10) == [2, 2, 2, 2]
    assert allocate_uniform([4, 64], 100) == [4, 50]
    assert split_bits(100, [1, 3]) == [25, 75]
    assert split_bits(100, [0, 0]) == [0, 0]
    assert sum(split_bits(101, [1, 1, 1])) <= 101
