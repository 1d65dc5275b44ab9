"""The edge's coefficient sources: live framing + encoder, or precomputed (benchmarks).

Both give, for chunk (step) ``i`` of the source's signal, all ``d_s`` normalised coefficients
of each of its ``n_v`` latent vectors (``[n_v, d_s]``); the client keeps the allocated first
``k`` of every vector and codes them. Chunk ``i`` is framed exactly as the
offline :meth:`Codec.chunk` of the whole signal would frame it.
"""

from __future__ import annotations

import time

import torch

from shared.codec import Codec
from shared.stft import to_channels
from shared.streaming import StreamingFramer, lookahead_samples


class LiveEncoder:
    """Frames the signal as it is "captured" and encodes chunk by chunk.

    Args:
        codec: the loaded codec. source: s. audio: the source's microphones ``[M_s, N]``.
    """

    def __init__(self, codec: Codec, source: int, audio: torch.Tensor) -> None:
        self.codec = codec
        self.source = source
        self.audio = audio
        self.n_samples = audio.shape[-1]
        self.framer = StreamingFramer(codec.preset, codec.frames_per_step, audio.shape[0])
        self.lookahead = lookahead_samples(codec.preset)
        self.n_chunks = -(-codec.preset.frames_for(self.n_samples) // codec.frames_per_step)
        self._pos = 0
        self._ready: list[torch.Tensor] = []
        self._index = 0  # index of _ready[0]
        self._finished = False
        self.encode_seconds: list[float] = []

    def warm_up(self) -> None:
        """Run the encoder and the coder once on silence: first calls allocate and initialise."""
        preset, cfg = self.codec.preset, self.codec.cfg
        x = torch.zeros(1, self.audio.shape[0], 2, preset.n_bins, cfg.frames_per_step)
        for _ in range(2):
            c = self.codec.source_coefficients(self.source, x)[0]
            self.codec.encode_payload(c, c.shape[-1], 10_000, source=self.source)

    def samples_needed(self, i: int) -> int:
        """Samples that must have been captured to frame chunk ``i``."""
        return min(self.n_samples, (i + 1) * self.codec.chunk_samples + self.lookahead)

    def coefficients(self, i: int) -> torch.Tensor | None:
        """All coefficients ``[n_v, d_s]`` of chunk ``i`` (None past the end of the signal)."""
        if i >= self.n_chunks:
            return None
        t0 = time.perf_counter()
        while self._index + len(self._ready) <= i and not self._finished:
            end = min(self.n_samples, max(self.samples_needed(self._index + len(self._ready)),
                                          self._pos + 1))
            self._ready += self.framer.push(self.audio[:, self._pos : end])
            self._pos = end
            if self._pos >= self.n_samples:
                self._ready += self.framer.finish()
                self._finished = True
        drop = i - self._index
        del self._ready[:drop]
        self._index = i
        spec = self._ready.pop(0)
        self._index += 1
        x = to_channels(spec, self.codec.cfg.representation)[None]
        coeffs = self.codec.source_coefficients(self.source, x)[0].cpu()
        self.encode_seconds.append(time.perf_counter() - t0)
        return coeffs

    def is_last(self, i: int) -> bool:
        return i == self.n_chunks - 1


class PrecomputedEncoder:
    """Coefficients of every chunk computed up front (benchmarks of the receiver)."""

    def __init__(self, codec: Codec, source: int, audio: torch.Tensor) -> None:
        spec = codec.spectra(audio)
        chunks = codec.chunk(spec)
        self.coeffs = codec.source_coefficients(source, chunks).cpu()
        self.n_samples = audio.shape[-1]
        self.n_chunks = self.coeffs.shape[0]
        self.encode_seconds: list[float] = []

    def coefficients(self, i: int) -> torch.Tensor | None:
        return self.coeffs[i] if i < self.n_chunks else None

    def is_last(self, i: int) -> bool:
        return i == self.n_chunks - 1
