"""3GPP link-adaptation tables: CQI spectral efficiency, PUSCH/PDSCH MCS, transport block size.

Values are written from the specifications, as (modulation order ``Qm``, target code rate
``R x 1024``) pairs; spectral efficiency is ``Qm x R / 1024`` bit/s/Hz:

* TS 36.213 Table 7.2.3-1, LTE 4-bit CQI table;
* TS 38.214 Table 5.2.2.1-2, NR 4-bit CQI table 1 (up to 64QAM; the same entries as LTE's);
* TS 38.214 Table 5.1.3.1-1, NR MCS index table 1 (64QAM) for PDSCH and for PUSCH without
  transform precoding;
* TS 38.214 section 5.1.3.2 (with Table 5.1.3.2-1), NR transport block size.
"""

from __future__ import annotations

import math

#: TS 36.213 Table 7.2.3-1: CQI 1..15 -> (Qm, R x 1024); CQI 0 is "out of range".
LTE_CQI_TABLE: tuple[tuple[int, int], ...] = (
    (2, 78), (2, 120), (2, 193), (2, 308), (2, 449), (2, 602),
    (4, 378), (4, 490), (4, 616),
    (6, 466), (6, 567), (6, 666), (6, 772), (6, 873), (6, 948),
)
#: TS 38.214 Table 5.2.2.1-2 (CQI table 1): same entries as the LTE table.
NR_CQI_TABLE: tuple[tuple[int, int], ...] = LTE_CQI_TABLE

#: TS 38.214 Table 5.1.3.1-1: MCS 0..28 -> (Qm, R x 1024); 29..31 are reserved
#: (retransmissions reusing an earlier TBS).
NR_MCS_TABLE: tuple[tuple[int, int], ...] = (
    (2, 120), (2, 157), (2, 193), (2, 251), (2, 308), (2, 379), (2, 449), (2, 526), (2, 602),
    (2, 679),
    (4, 340), (4, 378), (4, 434), (4, 490), (4, 553), (4, 616), (4, 658),
    (6, 438), (6, 466), (6, 517), (6, 567), (6, 616), (6, 666), (6, 719), (6, 772), (6, 822),
    (6, 873), (6, 910), (6, 948),
)

#: TS 38.214 Table 5.1.3.2-1: TBS for N_info <= 3824.
NR_TBS_SMALL: tuple[int, ...] = (
    24, 32, 40, 48, 56, 64, 72, 80, 88, 96, 104, 112, 120, 128, 136, 144, 152, 160, 168, 176,
    184, 192, 208, 224, 240, 256, 272, 288, 304, 320, 336, 352, 368, 384, 408, 432, 456, 480,
    504, 528, 552, 576, 608, 640, 672, 704, 736, 768, 808, 848, 888, 928, 984, 1032, 1064,
    1128, 1160, 1192, 1224, 1256, 1288, 1320, 1352, 1416, 1480, 1544, 1608, 1672, 1736, 1800,
    1864, 1928, 2024, 2088, 2152, 2216, 2280, 2408, 2472, 2536, 2600, 2664, 2728, 2792, 2856,
    2976, 3104, 3240, 3368, 3496, 3624, 3752, 3824,
)

#: NR PUSCH resource elements per PRB assumed when a log gives only MCS and RB: 14 symbols
#: x 12 subcarriers minus one DM-RS symbol (12 REs), no xOverhead (TS 38.214 5.1.3.2).
NR_RE_PER_PRB = 12 * 14 - 12
#: LTE PUSCH resource elements per PRB pair: 14 symbols x 12 minus 2 DM-RS symbols.
LTE_RE_PER_PRB = 12 * 14 - 24


def cqi_efficiency(cqi: int, table: tuple[tuple[int, int], ...] = LTE_CQI_TABLE) -> float:
    """Spectral efficiency in bit/s/Hz of a 4-bit CQI (0 means out of range: 0 bit/s/Hz).

    Raises:
        ValueError: a CQI outside 0..15.
    """
    if not 0 <= cqi <= len(table):
        raise ValueError(f"CQI {cqi} is outside 0..{len(table)}")
    if cqi == 0:
        return 0.0
    qm, rate = table[cqi - 1]
    return qm * rate / 1024.0


def mcs_entry(mcs: int) -> tuple[int, float]:
    """``(Qm, R)`` of an NR MCS index (Table 5.1.3.1-1); ``R`` as a fraction.

    Raises:
        ValueError: an index outside 0..28 (29..31 carry no code rate).
    """
    if not 0 <= mcs < len(NR_MCS_TABLE):
        raise ValueError(f"MCS {mcs} has no code rate in TS 38.214 Table 5.1.3.1-1 (0..28)")
    qm, rate = NR_MCS_TABLE[mcs]
    return qm, rate / 1024.0


def transport_block_size(
    n_prb: int, qm: int, rate: float, layers: int = 1, re_per_prb: int = NR_RE_PER_PRB
) -> int:
    """NR transport block size in bits, TS 38.214 section 5.1.3.2.

    Args:
        n_prb: allocated PRBs.
        qm: modulation order.
        rate: target code rate ``R`` (a fraction).
        layers: number of layers ``v``.
        re_per_prb: ``N'_RE = 12 N_symb - N_DMRS - N_oh`` (capped at 156).
    """
    n_info = min(156, re_per_prb) * n_prb * rate * qm * layers
    if n_info <= 0:
        return 0
    if n_info <= 3824:
        n = max(3, math.floor(math.log2(n_info)) - 6)
        quantised = max(24, 2**n * math.floor(n_info / 2**n))
        return next(tbs for tbs in NR_TBS_SMALL if tbs >= quantised)
    n = math.floor(math.log2(n_info - 24)) - 5
    quantised = max(3840, 2**n * math.floor((n_info - 24) / 2**n + 0.5))  # ties round up
    if rate <= 0.25:
        blocks = math.ceil((quantised + 24) / 3816)
    elif quantised > 8424:
        blocks = math.ceil((quantised + 24) / 8424)
    else:
        blocks = 1
    return 8 * blocks * math.ceil((quantised + 24) / (8 * blocks)) - 24


def tbs_from_mcs(mcs: int, n_prb: int, re_per_prb: int = NR_RE_PER_PRB, layers: int = 1) -> int:
    """TBS in bits for an MCS index (Table 5.1.3.1-1) on ``n_prb`` PRBs (section 5.1.3.2)."""
    qm, rate = mcs_entry(mcs)
    return transport_block_size(n_prb, qm, rate, layers, re_per_prb)
