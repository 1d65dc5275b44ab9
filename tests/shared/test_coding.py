"""Quantisation and entropy coding: round trip and exact bit counts."""

import math

import numpy as np
import pytest

from shared.coding import CoefficientCoder


@pytest.mark.parametrize("k", [1, 2, 7, 64, 256])
def test_round_trip_equals_quantised_values(k):
    """Decoding a payload gives exactly the dequantised indices."""
    coder = CoefficientCoder(math.sqrt(12 * 0.01))
    x = np.random.default_rng(k).standard_normal(k)
    payload = coder.encode(x)
    y = coder.decode(payload, k)
    np.testing.assert_array_equal(y, coder.dequantise(coder.quantise(x)))
    assert np.max(np.abs(y - x)) <= coder.step / 2 + 1e-6


def test_bit_count_is_payload_size_and_near_entropy():
    """Bits = 8 * payload bytes; the mean cost is close to the model's entropy."""
    coder = CoefficientCoder(math.sqrt(12 * 0.01))
    x = np.random.default_rng(0).standard_normal(4000)
    q = coder.quantise(x)
    payload, info_bits = coder.encode_indices(q)
    assert len(payload) == (info_bits + 7) // 8
    assert info_bits / len(x) == pytest.approx(coder.entropy_bits(), abs=0.1)


def test_encode_within_respects_budget():
    """The coded prefix never exceeds the budget and keeps as many coefficients as fit."""
    coder = CoefficientCoder(0.3)
    x = np.random.default_rng(1).standard_normal(64)
    for budget in (0, 7, 8, 40, 100, 10_000):
        payload, k = coder.encode_within(x, budget)
        assert 8 * len(payload) <= budget
        np.testing.assert_array_equal(coder.decode(payload, k), coder.dequantise(coder.quantise(x[:k])))
        if k < 64:
            longer, _ = coder.encode_indices(coder.quantise(x[: k + 1]))
            assert 8 * len(longer) > budget


def test_rejects_nan_and_short_payload():
    coder = CoefficientCoder(0.3)
    with pytest.raises(ValueError, match="NaN"):
        coder.encode(np.array([0.0, np.nan]))
    with pytest.raises(ValueError):
        coder.decode(b"", 3)
