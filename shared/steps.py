"""Quantiser step profiles: the step each component of a payload is coded with.

Two profiles, chosen per session by the receiver (``Welcome.step_profile``) and echoed by every
chunk:

* ``uniform`` (the paper's): every normalised coefficient gets the step
  ``Delta = sqrt(12 D)``, so every kept component costs the same (about 3.4-3.6 bits) and
  Eq. 3's budget in coefficients is exact in expectation.
* ``water`` (reverse water-filling, the default): every kept component gets the same
  *absolute* error, set by the last one kept. With ``k`` components allocated to a source
  whose coefficients have training-set standard deviations ``sigma_0 >= sigma_1 >= ...``,
  component ``j < k`` is quantised (normalised, as on the wire) with the step
  ``Delta_j = b(k) sigma_{k-1} / sigma_j``, rounded to the grid ``1/256`` and clipped to
  ``[1/32, b(k)]``. ``b(k) = 1.2`` until the last sixteenth of the source's width and falls
  geometrically to ``sqrt(12 D)`` at full width, so that full width stays near-transparent.
  Large components are coded finely, the last few coarsely: for speech at about 24 kbit/s
  this buys about 40 % more components than the uniform step at the same rate (E4D1 on
  held-out real rooms: 320 components at 23.2 kbit/s against 224 at 23.3).

Nothing new travels: the steps are a function of the checkpoint's ``std`` (the same float32
numbers at both ends), the chunk's ``k_allocated`` and ``D``; ``docs/protocol.md``
("Per-component steps") gives the arithmetic. Each step ``g / 256`` has its own prefix code
of the Laplace table (:func:`shared.entropy.code_for_step` with :data:`SHAPE`), and a
component's expected code length under that code (of a unit-Gaussian coefficient,
:data:`PRICE_DATA`) is what the receiver pays for it when it fits an allocation to a bit
budget (:func:`fit_allocation`), the profile's form of Eq. 3. Sources other than the
reference's get nothing or at least :func:`min_block` components (:func:`allocation_table`).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from functools import lru_cache

import numpy as np

from shared import entropy

PROFILES = ("uniform", "water")
#: the receiver's default profile
DEFAULT_PROFILE = "water"
#: the probability table each profile codes with (:mod:`shared.entropy`): the paper's profile
#: keeps the Gaussian; the water profile uses the Laplace table, which fits the heavier tails
#: of the normalised coefficients of speech (6 % fewer bits for the same indices on held-out
#: real speech, docs/codec.md)
SHAPE = {"uniform": "gauss", "water": "laplace"}
#: water steps are multiples of ``1 / GRID``
GRID = 256
#: the finest water step, ``8 / 256``
MIN_GRID = 8
#: the largest grid numerator the water profile may use (steps up to 4)
MAX_GRID = 1024
#: The water profile's allocation gives a source other than the reference microphone's either
#: nothing or at least this many components. The pooled NDPCA order hands the other sources
#: their first 1-7 components from about 20 kbit/s on: payloads of a few bytes per step whose
#: microphones decode to little more than their mean, and which do not change the reference's
#: quality. On held-out real speech (docs/codec.md) those bytes spent on the reference source
#: instead raise STOI from 0.903 at 24.4 kbit/s to 0.905 at 23.7.
MIN_BLOCK = 8
#: b(k): the normalised step of the last component kept
WATER_LEVEL = 1.2
#: b(k) falls to sqrt(12 D) over the last ``1 / TAIL`` of the width (measured: over the last
#: eighth, 24-30 kbit/s went to finer steps of the reference source instead of more components)
TAIL = 16


def check_profile(name: str) -> str:
    if name not in PROFILES:
        raise ValueError(f"unknown step profile {name!r}; choose one of {', '.join(PROFILES)}")
    return name


def level_grid(k: int, width: int, uniform_step: float) -> int:
    """Grid numerator of ``b(k)``: 1.2 until ``width - width // 16`` components, then falling
    geometrically to ``sqrt(12 D)`` at ``k = width``."""
    start = width - width // TAIL
    if k <= start or width == start:
        level = WATER_LEVEL
    else:
        t = (k - start) / (width - start)
        level = math.exp((1.0 - t) * math.log(WATER_LEVEL) + t * math.log(uniform_step))
    return int(min(MAX_GRID, max(MIN_GRID, round(level * GRID))))


def water_grid(std: np.ndarray, k: int, uniform_step: float) -> np.ndarray:
    """Grid numerators ``[k]`` of the water profile for an allocation of ``k`` components.

    ``g_j = clip(rint(G sigma_{k-1} / sigma_j), 8, G)`` with ``G = level_grid(k)``, in binary64
    from the checkpoint's float32 ``std`` (``rint``: ties to even)."""
    if k <= 0:
        return np.zeros(0, dtype=np.int64)
    if k > len(std):
        raise ValueError(f"allocation of {k} components exceeds the source's {len(std)}")
    s = np.asarray(std[:k], dtype=np.float64)
    top = level_grid(k, len(std), uniform_step)
    g = np.rint(top * (s[k - 1] / s))
    return np.clip(g, MIN_GRID, top).astype(np.int64)


# --------------------------------------------------------------------------- code lengths


@lru_cache(maxsize=64)
def expected_length(step: float, shape: str = "gauss", data: str | None = None) -> float:
    """Expected code length (bits) of one coefficient at step ``step`` under the format's
    prefix code for that step and table ``shape``, the coefficient distributed as the table
    ``data`` says (default ``shape``'s own: unit Gaussian or unit-variance Laplace)."""
    f = entropy.frequencies(step, data or shape).astype(np.float64)
    return float((f / f.sum()) @ entropy.code_for_step(step, shape).lengths)


#: What the water profile's price assumes of the coefficients: a unit Gaussian, coded with the
#: Laplace table. The code fits speech's heavy tails on average, but loud steps carry more
#: large coefficients than it expects; a price at the Laplace's own expected length had the
#: edges drop 3.6 % of the allocated components to fit (the loud steps', where STOI is decided),
#: the Gaussian's cross-entropy 1.8 % (docs/codec.md).
PRICE_DATA = "gauss"


def expected_bits(g: int) -> float:
    """The water profile's price of one component at the grid step ``g / 256``:
    :func:`expected_length` under the Laplace table of a unit-Gaussian coefficient."""
    return expected_length(g / GRID, SHAPE["water"], PRICE_DATA)


_EXPECTED = np.zeros(MAX_GRID + 1)
_EXPECTED_DONE = np.zeros(MAX_GRID + 1, dtype=bool)


def expected_bits_table(grids: np.ndarray) -> np.ndarray:
    """:func:`expected_bits` of many grid numerators at once."""
    need = np.unique(grids[~_EXPECTED_DONE[grids]])
    for g in need.tolist():
        _EXPECTED[g] = expected_bits(g)
        _EXPECTED_DONE[g] = True
    return _EXPECTED[grids]


class SourceSteps:
    """One source's steps under a profile, and what ``k`` components cost per vector.

    Args:
        std: the source's coefficient standard deviations (checkpoint ``ndpca.<s>.std``).
        uniform_step: ``sqrt(12 D)``.
        profile: ``uniform`` or ``water``.
    """

    def __init__(self, std: np.ndarray, uniform_step: float, profile: str) -> None:
        self.std = np.asarray(std, dtype=np.float32).astype(np.float64)
        self.uniform_step = float(uniform_step)
        self.profile = check_profile(profile)
        self._costs: np.ndarray | None = None

    @property
    def width(self) -> int:
        return len(self.std)

    def grid(self, k: int) -> np.ndarray:
        """Water profile: grid numerators ``[k]`` for an allocation of ``k``."""
        return water_grid(self.std, k, self.uniform_step)

    def costs(self) -> np.ndarray:
        """``[width + 1]``: expected bits of one vector when ``k = 0 .. width`` are allocated
        and sent (coefficients distributed as the profile's table says)."""
        if self._costs is None:
            if self.profile == "uniform":
                per = expected_length(self.uniform_step, SHAPE["uniform"])
                self._costs = per * np.arange(self.width + 1, dtype=np.float64)
            else:
                out = np.zeros(self.width + 1)
                for k in range(1, self.width + 1):
                    out[k] = expected_bits_table(self.grid(k)).sum()
                self._costs = out
        return self._costs


# --------------------------------------------------------------------------- fitting


def min_block(width: int) -> int:
    """The smallest non-empty allocation of a non-reference source of ``width`` components:
    :data:`MIN_BLOCK`, or ``width // 32`` for narrower sources (8 for the shipped 384)."""
    return min(MIN_BLOCK, width // 32)


def allocation_table(values: Sequence[np.ndarray], rule: str = "ndpca", blocks: bool = False,
                     exempt: Sequence[int] = ()) -> np.ndarray:
    """``[L + 1, S]``: the allocation of ``L = 0 .. sum d_s`` components per vector.

    ``values`` are the (task-weighted) singular values NDPCA pools, per source; rule
    ``ndpca`` takes the top ``L`` of them (ties by source, then component, as
    :func:`shared.rate.allocate_ndpca`), ``uniform`` gives ``floor(L / S)`` to each source.
    ``blocks`` (``ndpca``): a source not in ``exempt`` (positions in ``values``) that the
    pooled order gives fewer than :func:`min_block` components gets none (row ``L`` then
    holds fewer than ``L``); every column stays non-decreasing, so a larger budget never buys
    less."""
    sizes = [len(v) for v in values]
    n_src = len(sizes)
    total = sum(sizes)
    if rule == "uniform":
        ls = np.arange(total + 1)[:, None] // max(n_src, 1)
        return np.minimum(ls, np.asarray(sizes)[None, :]).astype(np.int64)
    if n_src == 0:
        return np.zeros((1, 0), dtype=np.int64)
    vals = np.concatenate([np.asarray(v, dtype=np.float64) for v in values])
    owner = np.concatenate([np.full(n, i) for i, n in enumerate(sizes)])
    order = np.lexsort((np.arange(total), owner, -vals))
    onehot = np.zeros((total + 1, n_src), dtype=np.int64)
    onehot[np.arange(1, total + 1), owner[order]] = 1
    table = np.cumsum(onehot, axis=0)
    if blocks:
        for s in sorted(set(range(n_src)) - set(exempt)):
            block = min_block(sizes[s])
            if block > 1:
                table[table[:, s] < block, s] = 0
    return table


def payload_bits(cost: np.ndarray | float, n_v: int) -> np.ndarray:
    """Expected bits of a payload of ``n_v`` vectors that cost ``cost`` each, in whole bytes
    (a payload is padded to bytes; an empty one costs nothing)."""
    return 8.0 * np.ceil(n_v * np.asarray(cost, dtype=np.float64) / 8.0)


def allocation_bits(costs: Sequence[np.ndarray], alloc: Sequence[int], n_v: int) -> list[float]:
    """Expected payload bits (whole bytes) of each source for an allocation ``alloc``."""
    return [float(payload_bits(np.asarray(c)[k], n_v)) for c, k in zip(costs, alloc)]


def table_bits(table: np.ndarray, costs: Sequence[np.ndarray], n_v: int) -> np.ndarray:
    """``[L + 1]``: expected bits of every source's payload (``n_v`` vectors, whole bytes)
    for each row of an allocation ``table``; ``costs[s][k]`` is one vector's cost."""
    out = np.zeros(table.shape[0])
    for s, c in enumerate(costs):
        out += payload_bits(np.asarray(c)[table[:, s]], n_v)
    return out


def fit_allocation(row_bits: np.ndarray, budget_bits: int) -> int:
    """The largest row ``L`` of an allocation table whose expected bits fit ``budget_bits``
    (0 when none does)."""
    ok = np.flatnonzero(row_bits <= budget_bits)
    return int(ok[-1]) if ok.size else 0


def split_by_cost(total_bits: int, costs: Sequence[float]) -> list[int]:
    """Share ``total_bits`` among parts whose expected bits are ``costs`` (summing to at most
    ``total_bits``): each part gets its cost, rounded down to whole bits, and the rest is shared
    in proportion to the costs (floors; the sum never exceeds ``total_bits``)."""
    base = [int(math.floor(c)) for c in costs]
    tot = float(sum(costs))
    if tot <= 0:
        return [0] * len(costs)
    slack = max(0, int(total_bits) - sum(base))
    return [b + int(math.floor(slack * c / tot)) for b, c in zip(base, costs)]
