"""Quantisation, stream order and integrity check of normalised NDPCA coefficients.

Coefficients have unit variance (see :mod:`shared.ndpca`). They are quantised with a uniform
mid-tread quantiser of step ``Delta = sqrt(12 D)`` (error variance D): index
``q = round(x / Delta)`` (binary64 division, ties to even), clipped to ``[-R, R]``. The
indices are coded with the payload format's prefix code (:mod:`shared.entropy`: integer
frequencies of a discretised unit Gaussian, a canonical Huffman code, no side information).
A payload is the code's bit stream padded to whole bytes; its size in bits
(``8 * len(payload)``) is what the channel carries and what the budget is checked against.

A step's payload holds ``k`` components of each of ``n_v`` latent vectors (``[n_v, k]``),
written component-major: component 0 of vectors 0..n_v-1, then component 1, ... so that
the first ``j n_v`` symbols are exactly the payload of ``j`` components, and dropping whole
trailing components (the least important) shortens the payload.

Every chunk carries :func:`indices_crc`, the CRC-32 of the indices it codes: a receiver
that decodes other indices than the sender coded (a corrupted payload, or a coder that does
not follow ``docs/protocol.md``) notices and refuses the chunk.
"""

from __future__ import annotations

import math
import zlib
from dataclasses import dataclass

import numpy as np

from shared import entropy, steps


def indices_crc(q: np.ndarray) -> int:
    """CRC-32 (zlib's) of ``[n_v, k]`` indices in stream order, each a little-endian int16."""
    return zlib.crc32(component_major(np.asarray(q, dtype=np.int64)).astype("<i2").tobytes())


@dataclass(frozen=True)
class CoefficientCoder:
    """Scalar quantiser plus prefix coder for unit-variance coefficients.

    Args:
        step: quantiser step Delta, in ``[entropy.MIN_STEP, entropy.MAX_STEP]``.
    """

    step: float

    def __post_init__(self) -> None:
        if not (math.isfinite(self.step) and self.step > 0):
            raise ValueError(f"quantiser step must be positive and finite, got {self.step}")
        entropy.step_units(self.step)  # raises with the allowed range

    @property
    def radius(self) -> int:
        return entropy.radius(self.step)

    @property
    def code(self) -> entropy.PrefixCode:
        return entropy.code_for_step(self.step)

    def quantise(self, coeffs: np.ndarray) -> np.ndarray:
        """Floats of any shape -> integer indices in ``[-radius, radius]`` of the same shape."""
        c = np.asarray(coeffs, dtype=np.float64)
        if not np.all(np.isfinite(c)):
            raise ValueError("coefficients contain NaN or infinite values")
        r = self.radius
        return np.clip(np.rint(c / self.step), -r, r).astype(np.int64)

    def dequantise(self, q: np.ndarray) -> np.ndarray:
        return np.asarray(q, dtype=np.float32) * np.float32(self.step)

    def checksum(self, coeffs: np.ndarray) -> int:
        """The chunk's ``crc``: :func:`indices_crc` of the quantised ``[n_v, k]`` coefficients."""
        return indices_crc(self.quantise(coeffs))

    def encode_indices(self, q: np.ndarray) -> tuple[bytes, int]:
        """Indices in stream order ``[n]`` -> (payload bytes, bits before byte padding)."""
        return self.code.encode(np.asarray(q, dtype=np.int64) + self.radius)

    def encode(self, coeffs: np.ndarray) -> bytes:
        """Quantise and code ``[n_v, k]`` (or ``[k]``) coefficients into a payload."""
        return self.encode_indices(component_major(self.quantise(coeffs)))[0]

    def decode_indices(self, payload: bytes, k: int, vectors: int = 1,
                       crc: int | None = None) -> np.ndarray:
        """A whole payload -> its ``[vectors, k]`` indices.

        Raises:
            ValueError: the payload is too short for ``k * vectors`` indices, has trailing
                bytes or non-zero padding bits, or (when ``crc`` is given) its indices'
                CRC-32 differs from ``crc``.
        """
        stream = self.code.decode(payload, k * vectors, exact=True) - self.radius
        q = stream.reshape(k, vectors).T
        if crc is not None:
            _check_crc(q, crc)
        return q

    def decode(self, payload: bytes, k: int, vectors: int = 1, crc: int | None = None) -> np.ndarray:
        """A whole payload -> ``[vectors, k]`` dequantised coefficients (see
        :meth:`decode_indices` for what raises ValueError)."""
        return self.dequantise(self.decode_indices(payload, k, vectors, crc))

    def decode_flat(self, payload: bytes, n: int) -> np.ndarray:
        """The first ``n`` dequantised symbols of a payload in stream order (a prefix: the
        payload may hold more)."""
        return self.dequantise(self.code.decode(payload, n, exact=False) - self.radius)

    def encode_within(self, coeffs: np.ndarray, budget_bits: int) -> tuple[bytes, int]:
        """Code as many leading components of ``[n_v, k]`` coefficients as fit in
        ``budget_bits`` (bytes * 8).

        Returns (payload, components sent per vector): the largest ``j`` whose payload of
        ``ceil(bits(j) / 8)`` bytes fits. Components are ordered by importance, so dropping
        from the end loses the least.
        """
        q = np.atleast_2d(self.quantise(coeffs))
        n_v, k = q.shape
        if budget_bits <= 0 or k == 0:
            return b"", 0
        stream = component_major(q)
        per_component = self.code.bits(stream + self.radius).reshape(k, n_v).sum(axis=1)
        nbytes = (np.cumsum(per_component) + 7) // 8
        j = int(np.searchsorted(8 * nbytes, budget_bits, side="right"))
        return self.encode_indices(stream[: j * n_v])[0], j

    def entropy_bits(self) -> float:
        """Entropy of the integer model in bits per coefficient (the ideal cost)."""
        return entropy.model_entropy_bits(self.step)


class ComponentCoder:
    """Quantiser plus prefix coder with a step per component (the ``water`` profile of
    :mod:`shared.steps`): component ``j`` of every vector is quantised with the step
    ``grid[j] / 256`` and coded with that step's prefix code of the Laplace table
    (``steps.SHAPE["water"]``). The same interface as
    :class:`CoefficientCoder`; a payload of fewer components than ``len(grid)`` uses the
    first steps (trailing components are dropped, not re-stepped).

    Args:
        grid: ``[k_allocated]`` grid numerators in ``[steps.MIN_GRID, steps.MAX_GRID]``.
    """

    def __init__(self, grid: np.ndarray) -> None:
        g = np.asarray(grid, dtype=np.int64)
        if g.ndim != 1 or (g.size and (g.min() < steps.MIN_GRID or g.max() > steps.MAX_GRID)):
            raise ValueError(f"step grid numerators must lie in [{steps.MIN_GRID}, {steps.MAX_GRID}]")
        self.grid = g
        self.steps = g.astype(np.float64) / steps.GRID
        _bank_fill(g)
        self.radii = _RADIUS[g]
        self.codes = [entropy.code_for_step(v / steps.GRID, steps.SHAPE["water"]) for v in g.tolist()]

    def quantise(self, coeffs: np.ndarray) -> np.ndarray:
        """``[n_v, k]`` (or ``[k]``) floats, ``k <= len(grid)`` -> integer indices."""
        c = np.asarray(coeffs, dtype=np.float64)
        if not np.all(np.isfinite(c)):
            raise ValueError("coefficients contain NaN or infinite values")
        k = c.shape[-1]
        r = self.radii[:k]
        return np.clip(np.rint(c / self.steps[:k]), -r, r).astype(np.int64)

    def dequantise(self, q: np.ndarray) -> np.ndarray:
        q = np.asarray(q, dtype=np.float32)
        return q * self.steps[: q.shape[-1]].astype(np.float32)

    def checksum(self, coeffs: np.ndarray) -> int:
        return indices_crc(self.quantise(coeffs))

    def _symbols(self, q: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """``[n_v, k]`` indices -> (per-symbol grid numerators, symbols) in stream order."""
        q = np.atleast_2d(q)
        n_v, k = q.shape
        g = np.repeat(self.grid[:k], n_v)
        return g, component_major(q) + _RADIUS[g]

    def encode_indices(self, q: np.ndarray) -> tuple[bytes, int]:
        """``[n_v, k]`` indices -> (payload bytes, bits before byte padding)."""
        g, sym = self._symbols(q)
        return entropy.pack_codewords(_BANK_CODE[g, sym], _BANK_LEN[g, sym])

    def encode(self, coeffs: np.ndarray) -> bytes:
        return self.encode_indices(self.quantise(coeffs))[0]

    def decode_indices(self, payload: bytes, k: int, vectors: int = 1,
                       crc: int | None = None) -> np.ndarray:
        """A whole payload -> ``[vectors, k]`` indices (raises ValueError as
        :meth:`CoefficientCoder.decode_indices`, and when ``k`` exceeds the steps known)."""
        if k > len(self.grid):
            raise ValueError(f"payload claims {k} components; the allocation it names has {len(self.grid)}")
        segments = [(code, vectors) for code in self.codes[:k]]
        stream = entropy.decode_segments(payload, segments, exact=True)
        q = (stream.reshape(k, vectors) - self.radii[:k, None]).T
        if crc is not None:
            _check_crc(q, crc)
        return q

    def decode(self, payload: bytes, k: int, vectors: int = 1, crc: int | None = None) -> np.ndarray:
        return self.dequantise(self.decode_indices(payload, k, vectors, crc))

    def encode_within(self, coeffs: np.ndarray, budget_bits: int) -> tuple[bytes, int]:
        """As :meth:`CoefficientCoder.encode_within`: the most leading components that fit."""
        q = np.atleast_2d(self.quantise(coeffs))
        n_v, k = q.shape
        if budget_bits <= 0 or k == 0:
            return b"", 0
        g, sym = self._symbols(q)
        per_component = _BANK_LEN[g, sym].reshape(k, n_v).sum(axis=1)
        nbytes = (np.cumsum(per_component) + 7) // 8
        j = int(np.searchsorted(8 * nbytes, budget_bits, side="right"))
        return self.encode_indices(q[:, :j])[0], j


# The prefix codes of every grid step in one table, so that a payload of many steps is coded
# with array look-ups: row g holds the code of step g / 256, symbol s = index + radius(g).
_RMAX = entropy.radius(steps.MIN_GRID / steps.GRID)
_BANK_LEN = np.zeros((steps.MAX_GRID + 1, 2 * _RMAX + 1), dtype=np.int64)
_BANK_CODE = np.zeros_like(_BANK_LEN)
_RADIUS = np.zeros(steps.MAX_GRID + 1, dtype=np.int64)
_FILLED = np.zeros(steps.MAX_GRID + 1, dtype=bool)


def _bank_fill(grid: np.ndarray) -> None:
    for g in np.unique(grid[~_FILLED[grid]]).tolist():
        code = entropy.code_for_step(g / steps.GRID, steps.SHAPE["water"])
        n = len(code.lengths)
        _BANK_LEN[g, :n] = code.lengths
        _BANK_CODE[g, :n] = code.codes
        _RADIUS[g] = (n - 1) // 2
        _FILLED[g] = True


def _check_crc(q: np.ndarray, crc: int) -> None:
    got = indices_crc(q)
    if got != crc:
        raise ValueError(
            f"CRC-32 of the decoded indices is {got:#010x}, the chunk says {crc:#010x}: "
            "the payload is corrupt or was not coded as docs/protocol.md specifies"
        )


def component_major(q: np.ndarray) -> np.ndarray:
    """``[n_v, k]`` (or ``[k]``) indices -> the stream order: component by component."""
    return np.atleast_2d(q).T.reshape(-1)
