"""The payload's probability model and prefix code: integers only, fixed by the format.

Everything here is a pure function of the quantiser step ``Delta`` through one integer,
``U = floor(Delta * 2**24)`` (exact in binary64: scaling by a power of two is exact), and of
the committed table :data:`HALF_CDF_Q31`. No floating-point value enters the probability
table or the code, so every implementation that follows ``docs/protocol.md`` builds the same
code and writes the same bytes. The steps, in the order ``docs/protocol.md`` gives them:

1. radius ``R = ceil(6 * 2**24 / U)``: indices run over ``[-R, R]`` (clipping at about 6
   standard deviations), symbols ``s = q + R`` over ``[0, 2R]``;
2. ``G(i)``, the unit Gaussian's mass between 0 and ``(i + 1/2) Delta`` in units of
   ``2**-32``: linear interpolation of :data:`HALF_CDF_Q31` in integer arithmetic;
3. integer frequencies: ``f(0) = 2 G(0)``, ``f(i) = G(i) - G(i - 1)``, the tail folded into
   ``f(R) = 2**31 - G(R - 1)``, each at least 1, ``f(-i) = f(i)``;
4. Huffman code lengths from the frequencies, ties broken by node id;
5. canonical codewords (sorted by length, then symbol), written most significant bit first,
   packed into bytes from the most significant bit, the last byte padded with zero bits.
"""

from __future__ import annotations

import heapq
from dataclasses import dataclass
from functools import lru_cache

import numpy as np

#: Smallest and largest quantiser step the format allows.
MIN_STEP = 2.0**-10
MAX_STEP = 16.0
#: Fixed-point scale of the step: ``U = floor(Delta * 2**STEP_BITS)``.
STEP_BITS = 24
#: The model clips at this many standard deviations: ``R = ceil(CLIP_SIGMAS * 2**24 / U)``.
CLIP_SIGMAS = 6
#: Table spacing: entry ``j`` of :data:`HALF_CDF_Q31` is at ``x = j / TABLE_DENSITY``.
TABLE_DENSITY = 32
#: The edge ``(i + 1/2) Delta`` is ``x = (2i + 1) U / 2**25``, that is ``(2i + 1) U / 2**20``
#: table entries: its integer part picks the entry, its low 20 bits weigh the next one.
FRACTION_BITS = 20


def step_units(step: float) -> int:
    """``U = floor(step * 2**24)``, the integer the model is built from.

    Raises:
        ValueError: if ``step`` is outside ``[MIN_STEP, MAX_STEP]`` (or not a finite number).
    """
    if not MIN_STEP <= step <= MAX_STEP:
        raise ValueError(
            f"quantiser step {step!r} outside the range the payload format allows "
            f"[{MIN_STEP:g}, {MAX_STEP:g}]; choose a distortion D with sqrt(12 D) in that range"
        )
    return int(step * (1 << STEP_BITS))


def radius(step: float) -> int:
    """Largest index magnitude: ``R = ceil(6 * 2**24 / U)``."""
    u = step_units(step)
    return -(-(CLIP_SIGMAS << STEP_BITS) // u)


def half_cdf(positions: np.ndarray) -> np.ndarray:
    """``Phi(x) - 1/2`` in units of ``2**-32`` at ``x = p / 2**25`` for integer ``p >= 0``,
    by linear interpolation of :data:`HALF_CDF_Q31` (integer arithmetic, floor)."""
    p = np.asarray(positions, dtype=np.int64)
    j = p >> FRACTION_BITS
    w = p & ((1 << FRACTION_BITS) - 1)
    last = len(HALF_CDF_Q31) - 1
    inside = j < last
    jc = np.minimum(j, last - 1)
    lo, hi = _TABLE[jc], _TABLE[jc + 1]
    return np.where(inside, lo + (((hi - lo) * w) >> FRACTION_BITS), _TABLE[last])


def frequencies(step: float) -> np.ndarray:
    """Integer symbol frequencies ``[2R + 1]`` (symbol ``s`` is index ``s - R``); they sum to
    about ``2**32``."""
    r = radius(step)
    u = step_units(step)
    g = half_cdf((2 * np.arange(r, dtype=np.int64) + 1) * u)  # G(0) .. G(R - 1)
    half = np.empty(r + 1, dtype=np.int64)  # f(0) .. f(R)
    half[0] = 2 * g[0]
    half[1:r] = np.diff(g)
    half[r] = _TABLE[-1] - g[r - 1]
    half = np.maximum(half, 1)
    return np.concatenate([half[:0:-1], half])


def huffman_lengths(freqs: np.ndarray) -> np.ndarray:
    """Huffman code lengths ``[n]`` of positive integer frequencies ``[n]`` (``n >= 2``).

    Nodes are keyed ``(weight, id)``: leaf ``s`` has id ``s``, the m-th parent (from 0) id
    ``n + m``. The two nodes of smallest keys get a parent, until one node is left; a
    symbol's length is its leaf's depth. The tie-break by id makes the lengths a function
    of the integers alone.
    """
    n = len(freqs)
    if n < 2:
        raise ValueError("a Huffman code needs at least two symbols")
    heap = [(int(f), s) for s, f in enumerate(freqs)]
    heapq.heapify(heap)
    parent = [0] * (2 * n - 1)
    next_id = n
    while len(heap) > 1:
        wa, a = heapq.heappop(heap)
        wb, b = heapq.heappop(heap)
        parent[a] = parent[b] = next_id
        heapq.heappush(heap, (wa + wb, next_id))
        next_id += 1
    depth = [0] * (2 * n - 1)
    for node in range(2 * n - 3, -1, -1):  # parents have larger ids than their children
        depth[node] = depth[parent[node]] + 1
    return np.asarray(depth[:n], dtype=np.int64)


def canonical_codes(lengths: np.ndarray) -> np.ndarray:
    """Canonical codewords ``[n]`` for code lengths ``[n]``: symbols sorted by (length,
    symbol) get consecutive codes, shifted left when the length grows (as DEFLATE's)."""
    order = np.lexsort((np.arange(len(lengths)), lengths))
    codes = np.zeros(len(lengths), dtype=np.int64)
    code, prev = 0, int(lengths[order[0]])
    for i, s in enumerate(order.tolist()):
        length = int(lengths[s])
        if i:
            code = (code + 1) << (length - prev)
        codes[s] = code
        prev = length
    return codes


#: Bits the decoder looks up at once; longer codewords are decoded length by length.
_LOOKUP_BITS = 10


@dataclass(frozen=True)
class PrefixCode:
    """A canonical prefix code: ``lengths[s]`` bits, codeword ``codes[s]`` for symbol ``s``.

    Build with :func:`code_for_step`. Bit packing: codewords in stream order, each most
    significant bit first, filling bytes from their most significant bit; the last byte is
    padded with zero bits.
    """

    lengths: np.ndarray
    codes: np.ndarray

    def __post_init__(self) -> None:
        lengths = self.lengths.tolist()
        max_len = max(lengths)
        look = min(_LOOKUP_BITS, max_len)
        sym_of = [-1] * (1 << look)
        len_of = [0] * (1 << look)
        for s, (length, code) in enumerate(zip(lengths, self.codes.tolist())):
            if length <= look:
                first = code << (look - length)
                for w in range(first, first + (1 << (look - length))):
                    sym_of[w], len_of[w] = s, length
        # canonical decoding of the longer codewords, length by length (as zlib's puff.c)
        order = sorted(range(len(lengths)), key=lambda s: (lengths[s], s))
        count = [0] * (max_len + 1)
        for length in lengths:
            count[length] += 1
        object.__setattr__(self, "_look", look)
        object.__setattr__(self, "_max_len", max_len)
        object.__setattr__(self, "_sym_of", sym_of)
        object.__setattr__(self, "_len_of", len_of)
        object.__setattr__(self, "_sorted", order)
        object.__setattr__(self, "_count", count)

    @property
    def max_length(self) -> int:
        return int(self._max_len)

    def bits(self, symbols: np.ndarray) -> np.ndarray:
        """Codeword lengths of ``[n]`` symbols."""
        return self.lengths[np.asarray(symbols, dtype=np.int64)]

    def encode(self, symbols: np.ndarray) -> tuple[bytes, int]:
        """Symbols ``[n]`` -> (payload, bits before the zero padding of the last byte)."""
        sym = np.asarray(symbols, dtype=np.int64)
        return pack_codewords(self.codes[sym], self.lengths[sym])

    def decode(self, payload: bytes, n: int, exact: bool = True) -> np.ndarray:
        """The first ``n`` symbols of ``payload``.

        Args:
            exact: also require that the symbols fill the payload: ``ceil(bits / 8)`` bytes,
                padding bits zero (what the receiver demands of a chunk).
        Raises:
            ValueError: the payload ends before ``n`` symbols, or (``exact``) has trailing
                bytes or non-zero padding.
        """
        return decode_segments(payload, [(self, n)], exact)

    def _run(self, val: int, total: int, nbits: int, pos: int, n: int, out: list[int],
             first: int, of: int) -> int:
        """Decode ``n`` symbols of the bit string ``val`` (``total`` bits, the payload's
        ``nbits`` then zero padding) from bit ``pos`` into ``out``; returns the new position."""
        look, look_mask = self._look, (1 << self._look) - 1
        sym_of, len_of = self._sym_of, self._len_of
        for i in range(first, first + n):
            w = (val >> (total - pos - look)) & look_mask
            length = len_of[w]
            if length:
                out.append(sym_of[w])
            else:
                sym, length = self._decode_long(val, total - pos)
                out.append(sym)
            pos += length
            if pos > nbits:
                raise ValueError(
                    f"payload of {nbits // 8} bytes too short: it ends within symbol {i} of {of}"
                )
        return pos

    def _decode_long(self, val: int, remaining: int) -> tuple[int, int]:
        code = first = index = 0
        for length in range(1, self._max_len + 1):
            code |= (val >> (remaining - length)) & 1
            count = self._count[length]
            if code - count < first:
                return self._sorted[index + code - first], length
            index += count
            first = (first + count) << 1
            code <<= 1
        raise AssertionError("a complete prefix code always decodes")  # Huffman codes are complete


def pack_codewords(codes: np.ndarray, lengths: np.ndarray) -> tuple[bytes, int]:
    """Codewords ``[n]`` of ``lengths[n]`` bits, in order, most significant bit first ->
    (payload, bits before the zero padding of the last byte)."""
    lens = np.asarray(lengths, dtype=np.int64)
    total = int(lens.sum())
    if total == 0:
        return b"", 0
    ends = np.cumsum(lens)
    owner = np.repeat(np.arange(lens.size), lens)
    shift = ends[owner] - 1 - np.arange(total)
    bits = ((np.asarray(codes, dtype=np.int64)[owner] >> shift) & 1).astype(np.uint8)
    return np.packbits(bits).tobytes(), total


def decode_segments(payload: bytes, segments: list[tuple[PrefixCode, int]],
                    exact: bool = True) -> np.ndarray:
    """Symbols of a payload written with several codes in turn: ``segments`` lists
    ``(code, count)`` in stream order (one code for a whole payload, or one per component).

    Raises ValueError as :meth:`PrefixCode.decode`."""
    nbits = 8 * len(payload)
    pad = max((code.max_length for code, _ in segments), default=0)
    total = nbits + pad
    val = int.from_bytes(payload, "big") << pad  # zeros past the end: no reads out of range
    n = sum(count for _, count in segments)
    out: list[int] = []
    pos = 0
    for code, count in segments:
        pos = code._run(val, total, nbits, pos, count, out, len(out), n)
    if exact:
        if (pos + 7) // 8 != len(payload):
            raise ValueError(
                f"payload has {len(payload)} bytes but its {n} symbols take {pos} bits "
                f"({(pos + 7) // 8} bytes)"
            )
        if (val >> pad) & ((1 << (nbits - pos)) - 1):
            raise ValueError("padding bits of the payload's last byte are not zero")
    return np.asarray(out, dtype=np.int64)


@lru_cache(maxsize=2048)
def code_for_step(step: float) -> PrefixCode:
    """The format's prefix code for quantiser step ``step``."""
    lengths = huffman_lengths(frequencies(step))
    return PrefixCode(lengths, canonical_codes(lengths))


def model_entropy_bits(step: float) -> float:
    """Entropy (bits per symbol) of the integer model: the ideal cost of one coefficient."""
    f = frequencies(step).astype(np.float64)
    p = f / f.sum()
    return float(-(p * np.log2(p)).sum())


#: ``round(2**31 erf(j / (32 sqrt 2))) = round(2**32 (Phi(j / 32) - 1/2))`` for
#: ``j = 0 .. 256``: the unit Gaussian's mass between 0 and ``j / 32``, in units of 2**-32.
#: Normative (the same table is in docs/protocol.md); no entry is within 0.006 of a rounding
#: tie, so math.erf and scipy's ndtr both reproduce it.
HALF_CDF_Q31 = (
    0, 53536413, 107020574, 160400384, 213624049, 266640232, 319398199, 371847965,
    423940441, 475627562, 526862429, 577599431, 627794368, 677404563, 726388972, 774708284,
    822325010, 869203566, 915310351, 960613812, 1005084500, 1048695115, 1091420552, 1133237923,
    1174126581, 1214068131, 1253046430, 1291047582, 1328059925, 1364074003, 1399082539, 1433080394,
    1466064521, 1498033915, 1528989550, 1558934318, 1587872958, 1615811980, 1642759586, 1668725589,
    1693721325, 1717759567, 1740854428, 1763021276, 1784276636, 1804638095, 1824124209, 1842754408,
    1860548903, 1877528595, 1893714977, 1909130056, 1923796256, 1937736340, 1950973325, 1963530406,
    1975430879, 1986698071, 1997355270, 2007425661, 2016932268, 2025897896, 2034345075, 2042296019,
    2049772575, 2056796185, 2063387850, 2069568096, 2075356946, 2080773896, 2085837890, 2090567305,
    2094979938, 2099092987, 2102923050, 2106486117, 2109797564, 2112872158, 2115724052, 2118366796,
    2120813339, 2123076034, 2125166657, 2127096407, 2128875924, 2130515303, 2132024106, 2133411378,
    2134685662, 2135855020, 2136927043, 2137908874, 2138807224, 2139628388, 2140378265, 2141062376,
    2141685880, 2142253591, 2142769997, 2143239276, 2143665313, 2144051715, 2144401827, 2144718748,
    2145005344, 2145264265, 2145497953, 2145708663, 2145898468, 2146069276, 2146222837, 2146360759,
    2146484514, 2146595447, 2146694792, 2146783670, 2146863108, 2146934039, 2146997311, 2147053698,
    2147103899, 2147148548, 2147188222, 2147223441, 2147254673, 2147282344, 2147306835, 2147328491,
    2147347621, 2147364503, 2147379388, 2147392498, 2147404033, 2147414174, 2147423080, 2147430893,
    2147437741, 2147443738, 2147448984, 2147453568, 2147457571, 2147461062, 2147464104, 2147466752,
    2147469055, 2147471056, 2147472793, 2147474299, 2147475604, 2147476733, 2147477709, 2147478552,
    2147479280, 2147479907, 2147480447, 2147480912, 2147481311, 2147481654, 2147481949, 2147482201,
    2147482417, 2147482602, 2147482759, 2147482894, 2147483009, 2147483107, 2147483190, 2147483261,
    2147483321, 2147483372, 2147483416, 2147483452, 2147483484, 2147483510, 2147483532, 2147483551,
    2147483566, 2147483580, 2147483591, 2147483600, 2147483608, 2147483615, 2147483620, 2147483625,
    2147483629, 2147483632, 2147483635, 2147483637, 2147483639, 2147483640, 2147483642, 2147483643,
    2147483644, 2147483645, 2147483645, 2147483646, 2147483646, 2147483646, 2147483647, 2147483647,
    2147483647, 2147483647, 2147483647, 2147483648, 2147483648, 2147483648, 2147483648, 2147483648,
    2147483648, 2147483648, 2147483648, 2147483648, 2147483648, 2147483648, 2147483648, 2147483648,
    2147483648, 2147483648, 2147483648, 2147483648, 2147483648, 2147483648, 2147483648, 2147483648,
    2147483648, 2147483648, 2147483648, 2147483648, 2147483648, 2147483648, 2147483648, 2147483648,
    2147483648, 2147483648, 2147483648, 2147483648, 2147483648, 2147483648, 2147483648, 2147483648,
    2147483648, 2147483648, 2147483648, 2147483648, 2147483648, 2147483648, 2147483648, 2147483648,
    2147483648, 2147483648, 2147483648, 2147483648, 2147483648, 2147483648, 2147483648, 2147483648,
    2147483648,
)
_TABLE = np.asarray(HALF_CDF_Q31, dtype=np.int64)
