"""The payload's probability model and prefix code: integers only, fixed by the format.

Everything here is a pure function of the quantiser step ``Delta`` through one integer,
``U = floor(Delta * 2**24)`` (exact in binary64: scaling by a power of two is exact), and of
a committed table: :data:`HALF_CDF_Q31` (the unit Gaussian, Table T; the ``uniform``
profile's) or :data:`HALF_CDF_LAPLACE_Q31` (the unit-variance Laplace, Table L; the
``water`` profile's, see :mod:`shared.steps`). No floating-point value enters the probability
table or the code, so every implementation that follows ``docs/protocol.md`` builds the same
code and writes the same bytes. The steps, in the order ``docs/protocol.md`` gives them:

1. radius ``R = ceil(6 * 2**24 / U)``: indices run over ``[-R, R]`` (clipping at about 6
   standard deviations), symbols ``s = q + R`` over ``[0, 2R]``;
2. ``G(i)``, the density's mass between 0 and ``(i + 1/2) Delta`` in units of
   ``2**-32``: linear interpolation of the table in integer arithmetic;
3. integer frequencies: ``f(0) = 2 G(0)``, ``f(i) = G(i) - G(i - 1)``, the tail folded into
   ``f(R) = table[256] - G(R - 1)``, each at least 1, ``f(-i) = f(i)``;
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
#: The probability tables: the unit Gaussian's (Table T, the ``uniform`` profile's) and the
#: unit-variance Laplace's (Table L, the ``water`` profile's).
SHAPES = ("gauss", "laplace")
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


def check_shape(shape: str) -> str:
    if shape not in SHAPES:
        raise ValueError(f"unknown probability table {shape!r}; choose one of {', '.join(SHAPES)}")
    return shape


def half_cdf(positions: np.ndarray, shape: str = "gauss") -> np.ndarray:
    """``F(x) - 1/2`` in units of ``2**-32`` at ``x = p / 2**25`` for integer ``p >= 0``, ``F``
    the unit-variance density's CDF, by linear interpolation of its table
    (:data:`HALF_CDF_Q31` or :data:`HALF_CDF_LAPLACE_Q31`; integer arithmetic, floor)."""
    table = _TABLES[check_shape(shape)]
    p = np.asarray(positions, dtype=np.int64)
    j = p >> FRACTION_BITS
    w = p & ((1 << FRACTION_BITS) - 1)
    last = len(table) - 1
    inside = j < last
    jc = np.minimum(j, last - 1)
    lo, hi = table[jc], table[jc + 1]
    return np.where(inside, lo + (((hi - lo) * w) >> FRACTION_BITS), table[last])


def frequencies(step: float, shape: str = "gauss") -> np.ndarray:
    """Integer symbol frequencies ``[2R + 1]`` (symbol ``s`` is index ``s - R``) under the
    ``shape``'s table; they sum to about ``2**32``."""
    r = radius(step)
    u = step_units(step)
    g = half_cdf((2 * np.arange(r, dtype=np.int64) + 1) * u, shape)  # G(0) .. G(R - 1)
    half = np.empty(r + 1, dtype=np.int64)  # f(0) .. f(R)
    half[0] = 2 * g[0]
    half[1:r] = np.diff(g)
    half[r] = _TABLES[shape][-1] - g[r - 1]
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
def code_for_step(step: float, shape: str = "gauss") -> PrefixCode:
    """The format's prefix code for quantiser step ``step`` under the ``shape``'s table."""
    lengths = huffman_lengths(frequencies(step, shape))
    return PrefixCode(lengths, canonical_codes(lengths))


def model_entropy_bits(step: float, shape: str = "gauss") -> float:
    """Entropy (bits per symbol) of the integer model: the ideal cost of one coefficient."""
    f = frequencies(step, shape).astype(np.float64)
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
#: ``round(2**31 (1 - exp(-sqrt(2) j / 32)))`` for ``j = 0 .. 256``: the same for the unit-variance
#: Laplace density, the ``laplace`` shape (Table L of docs/protocol.md; no entry is within
#: 0.0006 of a rounding tie, so math.expm1 in binary64 reproduces it). The normalised
#: coefficients of speech are heavier-tailed than a Gaussian: the ``water`` profile codes with it.
HALF_CDF_LAPLACE_Q31 = (
    0, 92839669, 181665709, 266651635, 347963464, 425760032, 500193312, 571408704,
    639545324, 704736272, 767108895, 826785036, 883881267, 938509122, 990775316, 1040781945,
    1088626696, 1134403030, 1178200369, 1220104269, 1260196586, 1298555638, 1335256358, 1370370438,
    1403966472, 1436110087, 1466864075, 1496288511, 1524440875, 1551376161, 1577146984, 1601803688,
    1625394436, 1647965313, 1669560410, 1690221911, 1709990177, 1728903825, 1746999801, 1764313454,
    1780878607, 1796727617, 1811891446, 1826399714, 1840280763, 1853561709, 1866268496, 1878425944,
    1890057804, 1901186796, 1911834663, 1922022202, 1931769315, 1941095042, 1950017602, 1958554422,
    1966722180, 1974536831, 1982013640, 1989167213, 1996011524, 2002559942, 2008825261, 2014819718,
    2020555024, 2026042382, 2031292511, 2036315668, 2041121664, 2045719888, 2050119323, 2054328562,
    2058355828, 2062208987, 2065895568, 2069422771, 2072797486, 2076026306, 2079115538, 2082071218,
    2084899117, 2087604762, 2090193436, 2092670197, 2095039884, 2097307124, 2099476348, 2101551792,
    2103537510, 2105437383, 2107255120, 2108994273, 2110658240, 2112250270, 2113773474, 2115230827,
    2116625175, 2117959244, 2119235638, 2120456852, 2121625270, 2122743175, 2123812751, 2124836088,
    2125815183, 2126751951, 2127648220, 2128505742, 2129326192, 2130111172, 2130862216, 2131580792,
    2132268301, 2132926089, 2133555439, 2134157581, 2134733691, 2135284895, 2135812270, 2136316845,
    2136799606, 2137261497, 2137703420, 2138126237, 2138530775, 2138917824, 2139288141, 2139642447,
    2139981437, 2140305771, 2140616084, 2140912982, 2141197044, 2141468825, 2141728857, 2141977647,
    2142215682, 2142443426, 2142661324, 2142869802, 2143069267, 2143260108, 2143442700, 2143617397,
    2143784543, 2143944462, 2144097467, 2144243858, 2144383920, 2144517927, 2144646141, 2144768811,
    2144886179, 2144998472, 2145105911, 2145208705, 2145307055, 2145401153, 2145491183, 2145577321,
    2145659735, 2145738586, 2145814028, 2145886209, 2145955269, 2146021344, 2146084562, 2146145047,
    2146202917, 2146258286, 2146311260, 2146361945, 2146410438, 2146456835, 2146501226, 2146543698,
    2146584334, 2146623213, 2146660411, 2146696001, 2146730052, 2146762632, 2146793802, 2146823626,
    2146852160, 2146879460, 2146905580, 2146930571, 2146954482, 2146977359, 2146999246, 2147020188,
    2147040224, 2147059394, 2147077736, 2147095284, 2147112074, 2147128137, 2147143507, 2147158212,
    2147172281, 2147185742, 2147198621, 2147210943, 2147222733, 2147234013, 2147244805, 2147255130,
    2147265010, 2147274462, 2147283505, 2147292158, 2147300436, 2147308357, 2147315935, 2147323186,
    2147330123, 2147336760, 2147343110, 2147349186, 2147354999, 2147360561, 2147365882, 2147370973,
    2147375844, 2147380505, 2147384964, 2147389230, 2147393312, 2147397217, 2147400954, 2147404529,
    2147407949, 2147411222, 2147414353, 2147417349, 2147420215, 2147422957, 2147425581, 2147428092,
    2147430493, 2147432791, 2147434990, 2147437094, 2147439106, 2147441032, 2147442874, 2147444637,
    2147446323, 2147447937, 2147449481, 2147450958, 2147452371, 2147453723, 2147455017, 2147456255,
    2147457439,
)
_TABLES = {"gauss": np.asarray(HALF_CDF_Q31, dtype=np.int64),
           "laplace": np.asarray(HALF_CDF_LAPLACE_Q31, dtype=np.int64)}
_TABLE = _TABLES["gauss"]
