"""Quantisation and entropy coding of normalised NDPCA coefficients.

Coefficients have unit variance (see :mod:`shared.ndpca`). They are quantised with a uniform
mid-tread quantiser of step ``Delta = sqrt(12 D)`` (error variance D), clipped to
``+-clip`` standard deviations, and Huffman-coded with constriction's bit-granular queue coder
against a discretised unit Gaussian, a model both ends compute from ``Delta`` alone (no side
information). A payload is the coder's bit stream cut to whole bytes; its size in bits
(``8 * len(payload)``) is what the channel carries and what the budget is checked against.

A step's payload holds ``k`` components of each of ``n_v`` latent vectors (``[n_v, k]``),
written component-major: component 0 of vectors 0..n_v-1, then component 1, ... so that
the first ``j n_v`` symbols are exactly the payload of ``j`` components, and dropping whole
trailing components (the least important) shortens the payload.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import lru_cache

import constriction
import numpy as np
from scipy.special import ndtr


@lru_cache(maxsize=32)
def _tables(step: float, clip: float) -> tuple[int, np.ndarray, object, object]:
    radius = max(1, int(math.ceil(clip / step)))
    edges = (np.arange(-radius, radius + 2) - 0.5) * step
    cdf = ndtr(edges)
    probs = np.diff(cdf)
    probs[0] += cdf[0]
    probs[-1] += 1.0 - cdf[-1]
    probs = np.maximum(probs, 1e-9)
    probs /= probs.sum()
    enc = constriction.symbol.huffman.EncoderHuffmanTree(probs)
    dec = constriction.symbol.huffman.DecoderHuffmanTree(probs)
    return radius, probs, enc, dec


@dataclass(frozen=True)
class CoefficientCoder:
    """Scalar quantiser plus Huffman coder for unit-variance coefficients.

    Args:
        step: quantiser step Delta.
        clip: clipping range in standard deviations.
    """

    step: float
    clip: float = 6.0

    def __post_init__(self) -> None:
        if not (self.step > 0 and math.isfinite(self.step)):
            raise ValueError(f"quantiser step must be positive and finite, got {self.step}")

    @property
    def radius(self) -> int:
        return _tables(self.step, self.clip)[0]

    def quantise(self, coeffs: np.ndarray) -> np.ndarray:
        """``[k]`` floats -> ``[k]`` integer indices in ``[-radius, radius]``."""
        c = np.asarray(coeffs, dtype=np.float64)
        if not np.all(np.isfinite(c)):
            raise ValueError("coefficients contain NaN or infinite values")
        r = self.radius
        return np.clip(np.rint(c / self.step), -r, r).astype(np.int64)

    def dequantise(self, q: np.ndarray) -> np.ndarray:
        return np.asarray(q, dtype=np.float32) * np.float32(self.step)

    def encode_indices(self, q: np.ndarray) -> tuple[bytes, int]:
        """Indices -> (payload bytes, information bits before byte padding)."""
        radius, _, enc_tree, _ = _tables(self.step, self.clip)
        encoder = constriction.symbol.QueueEncoder()
        for sym in (np.asarray(q, dtype=np.int64) + radius).tolist():
            encoder.encode_symbol(int(sym), enc_tree)
        words, nbits = encoder.get_compressed_and_bitrate()
        nbytes = (int(nbits) + 7) // 8
        return words.astype("<u4").tobytes()[:nbytes], int(nbits)

    def encode(self, coeffs: np.ndarray) -> bytes:
        """Quantise and code ``[n_v, k]`` (or ``[k]``) coefficients into a payload."""
        return self.encode_indices(_component_major(self.quantise(coeffs)))[0]

    def decode(self, payload: bytes, k: int, vectors: int = 1) -> np.ndarray:
        """Payload -> ``[vectors, k]`` dequantised coefficients. Raises ValueError if the
        payload is too short."""
        flat = self.decode_flat(payload, k * vectors)
        return flat.reshape(k, vectors).T.copy()

    def decode_flat(self, payload: bytes, k: int) -> np.ndarray:
        """Payload -> the first ``k`` dequantised symbols in stream order."""
        if k == 0:
            return np.zeros(0, dtype=np.float32)
        radius, _, _, dec_tree = _tables(self.step, self.clip)
        pad = (-len(payload)) % 4
        words = np.frombuffer(bytes(payload) + b"\0" * pad, dtype="<u4").astype(np.uint32)
        if words.size == 0:
            raise ValueError(f"empty payload cannot hold {k} coefficients")
        decoder = constriction.symbol.QueueDecoder(words)
        try:
            syms = [decoder.decode_symbol(dec_tree) for _ in range(k)]
        except Exception as exc:  # constriction raises on exhausted input
            raise ValueError(f"payload of {len(payload)} bytes too short for {k} coefficients") from exc
        return self.dequantise(np.asarray(syms, dtype=np.int64) - radius)

    def encode_within(self, coeffs: np.ndarray, budget_bits: int) -> tuple[bytes, int]:
        """Code as many leading components of ``[n_v, k]`` coefficients as fit in
        ``budget_bits`` (bytes * 8).

        Returns (payload, components sent per vector). Components are ordered by importance,
        so dropping from the end loses the least.
        """
        q = np.atleast_2d(self.quantise(coeffs))
        n_v, k = q.shape
        stream = _component_major(q)
        if budget_bits <= 0 or k == 0:
            return b"", 0
        # codes are prefix-free, so bits(j) grows with j: bisect the largest j that fits
        payload, _ = self.encode_indices(stream)
        if 8 * len(payload) <= budget_bits:
            return payload, k
        lo, hi, best = 0, k - 1, b""
        while lo < hi:
            mid = (lo + hi + 1) // 2
            p, _ = self.encode_indices(stream[: mid * n_v])
            if 8 * len(p) <= budget_bits:
                lo, best = mid, p
            else:
                hi = mid - 1
        if lo and not best:
            best = self.encode_indices(stream[: lo * n_v])[0]
        return best, lo

    def entropy_bits(self) -> float:
        """Entropy of the quantised unit Gaussian in bits per coefficient (the ideal cost)."""
        p = _tables(self.step, self.clip)[1]
        return float(-(p * np.log2(p)).sum())


def _component_major(q: np.ndarray) -> np.ndarray:
    """``[n_v, k]`` (or ``[k]``) indices -> the stream order: component by component."""
    return np.atleast_2d(q).T.reshape(-1)
