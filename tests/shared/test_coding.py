"""Quantisation and entropy coding: round trip, stream order, exact bit counts, strict decoding."""

import math

import numpy as np
import pytest

from shared.coding import CoefficientCoder


@pytest.mark.parametrize("k", [1, 2, 7, 64, 256])
def test_round_trip_equals_quantised_values(k):
    """Decoding a payload of ``[k]`` gives exactly the dequantised indices as ``[1, k]``."""
    coder = CoefficientCoder(math.sqrt(12 * 0.01))
    x = np.random.default_rng(k).standard_normal(k)
    payload = coder.encode(x)
    y = coder.decode(payload, k)
    assert y.shape == (1, k)
    np.testing.assert_array_equal(y[0], coder.dequantise(coder.quantise(x)))
    assert np.max(np.abs(y - x)) <= coder.step / 2 + 1e-6


@pytest.mark.parametrize(("n_v", "k"), [(1, 5), (2, 1), (2, 16), (4, 7), (8, 64)])
def test_round_trip_of_vectors(n_v, k):
    """A step of ``[n_v, k]`` coefficients decodes back to the same ``[n_v, k]`` values."""
    coder = CoefficientCoder(math.sqrt(12 * 0.01))
    x = np.random.default_rng(n_v * 100 + k).standard_normal((n_v, k))
    y = coder.decode(coder.encode(x), k, n_v)
    assert y.shape == (n_v, k)
    np.testing.assert_array_equal(y, coder.dequantise(coder.quantise(x)))


def test_stream_is_component_major():
    """Component-major stream: a prefix of ``j n_v`` symbols is the first ``j`` components."""
    coder = CoefficientCoder(0.3)
    x = np.random.default_rng(3).standard_normal((3, 6))
    q = coder.dequantise(coder.quantise(x))
    payload = coder.encode(x)
    np.testing.assert_array_equal(coder.decode_flat(payload, 18), q.T.reshape(-1))
    np.testing.assert_array_equal(coder.decode_flat(payload, 6).reshape(2, 3).T, q[:, :2])
    assert coder.encode(x[:, :2]) == coder.encode_indices(coder.quantise(x).T.reshape(-1)[:6])[0]


def test_bit_count_is_payload_size_and_near_entropy():
    """Bits = 8 * payload bytes; the mean cost is close to the model's entropy."""
    coder = CoefficientCoder(math.sqrt(12 * 0.01))
    x = np.random.default_rng(0).standard_normal(4000)
    q = coder.quantise(x)
    payload, info_bits = coder.encode_indices(q)
    assert len(payload) == (info_bits + 7) // 8
    assert info_bits / len(x) == pytest.approx(coder.entropy_bits(), abs=0.1)


@pytest.mark.parametrize("n_v", [1, 2, 4])
def test_encode_within_respects_budget(n_v):
    """The coded prefix never exceeds the budget and keeps as many components per vector as fit."""
    coder = CoefficientCoder(0.3)
    x = np.random.default_rng(1).standard_normal((n_v, 64))
    for budget in (0, 7, 8, 40, 100, 400, 10_000):
        payload, k = coder.encode_within(x, budget)
        assert 8 * len(payload) <= budget
        np.testing.assert_array_equal(coder.decode(payload, k, n_v), coder.dequantise(coder.quantise(x[:, :k])))
        if k < 64:
            assert 8 * len(coder.encode(x[:, : k + 1])) > budget
    one, k1 = coder.encode_within(x[0], 100)  # a single vector may be given as [k]
    assert (one, k1) == coder.encode_within(x[:1], 100)


def test_rejects_nan_and_short_payload():
    """NaN coefficients and a payload too short for k coefficients raise ValueError."""
    coder = CoefficientCoder(0.3)
    with pytest.raises(ValueError, match="NaN"):
        coder.encode(np.array([0.0, np.nan]))
    with pytest.raises(ValueError, match="too short"):
        coder.decode(b"", 3)
    with pytest.raises(ValueError, match="too short"):
        coder.decode(coder.encode(np.zeros((2, 2))), 40, 2)


def test_decoding_is_strict_and_checks_the_crc():
    """A whole payload must hold exactly k n_v symbols with zero padding, and the CRC of the
    decoded indices must match: trailing bytes, padding bits and a wrong CRC are refused."""
    coder = CoefficientCoder(math.sqrt(12 * 0.01))
    x = np.random.default_rng(5).standard_normal((2, 9))
    payload, bits = coder.encode_indices(coder.quantise(x).T.reshape(-1))
    crc = coder.checksum(x)
    np.testing.assert_array_equal(coder.decode(payload, 9, 2, crc), coder.dequantise(coder.quantise(x)))
    with pytest.raises(ValueError, match="bytes but its 18 symbols"):
        coder.decode(payload + b"\0", 9, 2, crc)
    assert bits % 8  # this draw leaves padding bits: set the last one
    with pytest.raises(ValueError, match="padding"):
        coder.decode(payload[:-1] + bytes([payload[-1] | 1]), 9, 2, crc)
    with pytest.raises(ValueError, match="CRC-32"):
        coder.decode(payload, 9, 2, crc ^ 1)
    # other indices that decode cleanly (the stream reversed: the same bits) fail the CRC
    reversed_payload, _ = coder.encode_indices(coder.quantise(x).T.reshape(-1)[::-1])
    assert len(reversed_payload) == len(payload) and reversed_payload != payload
    with pytest.raises(ValueError, match="CRC-32"):
        coder.decode(reversed_payload, 9, 2, crc)
    assert coder.decode(b"", 0, 2, 0).shape == (2, 0)
