"""A second implementation of the chunk payload format, written from docs/protocol.md alone.

It imports nothing from the project: the table T is read from the document itself, and the
quantiser, Huffman code, bit packer and CRC follow the document's "Payload" section step by
step (plain Python integers; no numpy). Tests check it against the test vectors and against
the project's coder, and a third-party edge client is built on it.
"""

from __future__ import annotations

import bisect
import math
import re
import struct
import zlib
from dataclasses import dataclass
from pathlib import Path

DOC = Path(__file__).resolve().parents[1] / "docs" / "protocol.md"


def table_from_docs(name: str = "T", doc: Path = DOC) -> list[int]:
    """The integers of the document's "Table T" block (or "Table L", the water profile's)."""
    text = doc.read_text()
    block = re.search(rf"### Table {name}\n.*?```text\n(.*?)```", text, re.S)
    if block is None:
        raise ValueError(f"{doc} has no 'Table {name}' block")
    table = [int(v) for v in block.group(1).split()]
    if len(table) != 257:
        raise ValueError(f"Table {name} in {doc} has {len(table)} entries, expected 257")
    return table


@dataclass
class DocsCoder:
    """The payload coder for one quantiser step ``delta``, given the table ``T``."""

    delta: float
    T: list[int]

    def __post_init__(self) -> None:
        self.U = math.floor(self.delta * 2**24)
        self.R = (6 * 2**24 + self.U - 1) // self.U
        self.lengths = self._lengths(self._weights())
        self.codewords = self._canonical(self.lengths)
        self.by_code = {(n, c): s for s, (n, c) in enumerate(zip(self.lengths, self.codewords))}

    # ---------------------------------------------------------------- "Probability table"
    def _G(self, i: int) -> int:
        p = (2 * i + 1) * self.U
        j, w = p >> 20, p & (2**20 - 1)
        if j >= 256:
            return self.T[256]
        return self.T[j] + (((self.T[j + 1] - self.T[j]) * w) >> 20)

    def _weights(self) -> list[int]:
        R = self.R
        f = [0] * (R + 1)
        f[0] = 2 * self._G(0)
        for i in range(1, R):
            f[i] = self._G(i) - self._G(i - 1)
        f[R] = self.T[256] - self._G(R - 1)
        f = [max(v, 1) for v in f]
        return [f[abs(s - R)] for s in range(2 * R + 1)]

    # ---------------------------------------------------------------- "Code lengths"
    def _lengths(self, weights: list[int]) -> list[int]:
        n = len(weights)
        nodes = sorted((w, s) for s, w in enumerate(weights))  # ascending keys
        parent: dict[int, int] = {}
        m = 0
        while len(nodes) > 1:
            (wa, a), (wb, b) = nodes[0], nodes[1]
            del nodes[:2]
            new_id = n + m  # 2R + 1 + m
            parent[a] = parent[b] = new_id
            bisect.insort(nodes, (wa + wb, new_id))
            m += 1
        lengths = []
        for s in range(n):
            depth, node = 0, s
            while node in parent:
                node, depth = parent[node], depth + 1
            lengths.append(depth)
        return lengths

    # ---------------------------------------------------------------- "Codewords"
    @staticmethod
    def _canonical(lengths: list[int]) -> list[int]:
        order = sorted(range(len(lengths)), key=lambda s: (lengths[s], s))
        codes = [0] * len(lengths)
        code = prev = None
        for s in order:
            code = 0 if code is None else (code + 1) << (lengths[s] - prev)
            codes[s], prev = code, lengths[s]
        return codes

    # ---------------------------------------------------------------- "Quantisation"
    def quantise(self, x: float) -> int:
        q = round(float(x) / self.delta)  # Python's round: ties to even
        return min(self.R, max(-self.R, q))

    # ---------------------------------------------------------------- "Bit packing"
    @staticmethod
    def stream(rows: list[list[int]]) -> list[int]:
        """``[n_v][k]`` -> component-major order."""
        k = len(rows[0]) if rows else 0
        return [rows[v][c] for c in range(k) for v in range(len(rows))]

    def pack(self, indices: list[int]) -> tuple[bytes, int]:
        acc, bits = 0, 0
        for q in indices:
            s = q + self.R
            acc = (acc << self.lengths[s]) | self.codewords[s]
            bits += self.lengths[s]
        nbytes = (bits + 7) // 8
        return (acc << (8 * nbytes - bits)).to_bytes(nbytes, "big"), bits

    def unpack(self, payload: bytes, n: int) -> list[int]:
        bits = "".join(f"{b:08b}" for b in payload)
        out, pos = [], 0
        for _ in range(n):
            code, length = 0, 0
            while (length, code) not in self.by_code:
                if pos >= len(bits):
                    raise ValueError("payload ends within a codeword")
                code, length, pos = (code << 1) | int(bits[pos]), length + 1, pos + 1
            out.append(self.by_code[(length, code)] - self.R)
        if len(payload) != (pos + 7) // 8 or "1" in bits[pos:]:
            raise ValueError("trailing bytes or non-zero padding")
        return out

    # ---------------------------------------------------------------- "Integrity check"
    @staticmethod
    def crc(indices: list[int]) -> int:
        return zlib.crc32(b"".join(struct.pack("<h", q) for q in indices))

    # ---------------------------------------------------------------- a whole chunk
    def encode(self, rows: list[list[float]]) -> tuple[bytes, int, int]:
        """``[n_v][k]`` coefficients -> (payload, bits, crc)."""
        q = self.stream([[self.quantise(x) for x in row] for row in rows])
        payload, bits = self.pack(q)
        return payload, bits, self.crc(q)

    def encode_within(self, rows: list[list[float]], budget_bits: int) -> tuple[int, bytes, int]:
        """"Fitting the bit budget": the largest j whose payload fits -> (j, payload, crc)."""
        n_v, k = len(rows), len(rows[0]) if rows else 0
        q = self.stream([[self.quantise(x) for x in row] for row in rows])
        j, bits = 0, 0
        while j < k:
            more = sum(self.lengths[v + self.R] for v in q[j * n_v : (j + 1) * n_v])
            if 8 * ((bits + more + 7) // 8) > budget_bits:
                break
            j, bits = j + 1, bits + more
        payload, _ = self.pack(q[: j * n_v])
        return j, payload, self.crc(q[: j * n_v])


class DocsWaterCoder:
    """"Per-component steps": the payload coder of the ``water`` profile for an allocation of
    ``K`` components of a source whose coefficient deviations are ``sigma`` (float32 values);
    ``T``: the document's Table L (step 4 of that section)."""

    _codes: dict[tuple[int, int], DocsCoder] = {}  # (g, the table's second entry): one per table

    def __init__(self, sigma: list[float], delta0: float, K: int, T: list[int]) -> None:
        d = len(sigma)
        tail = d // 16
        if K <= d - tail:
            b = 1.2
        else:
            t = (K - (d - tail)) / tail
            b = math.exp((1 - t) * math.log(1.2) + t * math.log(delta0))
        G = min(1024, max(8, round(256 * b)))
        self.grid = [min(G, max(8, round(G * (sigma[K - 1] / sigma[c])))) for c in range(K)]
        for g in self.grid:
            if (g, T[1]) not in self._codes:
                self._codes[(g, T[1])] = DocsCoder(g / 256, T)
        self.coders = [self._codes[(g, T[1])] for g in self.grid]

    def encode_within(self, rows: list[list[float]], budget_bits: int) -> tuple[int, bytes, int]:
        """The largest j whose payload fits -> (j, payload, crc), component c with its own code."""
        n_v, k = len(rows), len(rows[0]) if rows else 0
        q = [[self.coders[c].quantise(x) for c, x in enumerate(row)] for row in rows]
        j, bits, acc = 0, 0, 0
        while j < k:
            coder = self.coders[j]
            more = [(coder.lengths[q[v][j] + coder.R], coder.codewords[q[v][j] + coder.R])
                    for v in range(n_v)]
            extra = sum(n for n, _ in more)
            if 8 * ((bits + extra + 7) // 8) > budget_bits:
                break
            for n, code in more:
                acc = (acc << n) | code
            j, bits = j + 1, bits + extra
        nbytes = (bits + 7) // 8
        payload = (acc << (8 * nbytes - bits)).to_bytes(nbytes, "big")
        return j, payload, DocsCoder.crc(DocsCoder.stream([row[:j] for row in q]))
