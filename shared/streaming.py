"""Pure streaming logic shared by the edge client and the receiver (no sockets, no clocks).

* :class:`StreamingFramer` (edge): audio arriving in pieces -> STFT chunks identical to
  framing the whole signal with ``torch.stft(center=True)`` and :meth:`Codec.chunk`.
* :class:`StreamingISTFT` (receiver): spectra arriving a chunk at a time -> audio whose
  concatenation equals :func:`shared.stft.istft` of the whole signal (incremental
  overlap-add, normalised by the window envelope of the frames that exist).
* :class:`SessionClock`: step times and deadlines of a session's replay clock.
* :class:`JitterBuffer`: collects chunk ``t`` from every source until it is complete or its
  deadline passes; counts late and duplicate chunks.
* :func:`plan_for_active`: capacity -> budget -> NDPCA allocation over the sources that are
  connected (an absent source's budget goes to the others).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Generic, Literal, TypeVar

import numpy as np
import torch

from shared.codec import Codec, Plan
from shared.stft import StftPreset, stft_frames


def lookahead_samples(preset: StftPreset) -> int:
    """Samples past a chunk's end needed to compute its last frame (127 for ``stream``).

    The last frame of chunk ``c`` is centred on sample ``(c + 1) * frames * hop - hop`` and
    reaches ``n_fft - n_fft // 2`` samples past its centre.
    """
    return preset.n_fft - preset.n_fft // 2 - preset.hop


class StreamingFramer:
    """Cut a growing signal into STFT chunks of ``frames`` frames.

    Args:
        preset: the STFT preset.
        frames: frames per chunk.
        channels: C, microphones of the signal.

    ``push`` audio ``[C, n]`` as it arrives; each returned chunk is complex ``[C, F, frames]``.
    ``finish`` reflect-pads the end as ``torch.stft(center=True)`` does and returns the rest,
    the last chunk zero-padded after the signal's last frame (as :meth:`Codec.chunk`).
    """

    def __init__(self, preset: StftPreset, frames: int, channels: int) -> None:
        self.preset = preset
        self.frames = frames
        self.channels = channels
        self.pad = preset.n_fft // 2
        self.n_input = 0
        self._head: list[torch.Tensor] = []  # raw samples before the start pad is possible
        self._buf = torch.zeros(channels, 0)  # padded signal from padded index `_base` on
        self._base = 0
        self._started = False
        self.chunks_out = 0

    @property
    def span(self) -> int:
        """Padded samples one chunk needs: ``(frames - 1) * hop + n_fft``."""
        return (self.frames - 1) * self.preset.hop + self.preset.n_fft

    def push(self, audio: torch.Tensor) -> list[torch.Tensor]:
        """Add samples ``[C, n]``; return the chunks that became complete."""
        audio = audio.detach().float().reshape(self.channels, -1)
        self.n_input += audio.shape[-1]
        if not self._started:
            self._head.append(audio)
            head = torch.cat(self._head, dim=-1)
            if head.shape[-1] <= self.pad:
                return []
            self._head = []
            self._started = True
            start = head[:, 1 : self.pad + 1].flip(-1)
            self._buf = torch.cat([start, head], dim=-1)
        else:
            self._buf = torch.cat([self._buf, audio], dim=-1)
        return self._drain(self._buf.shape[-1] + self._base, n_frames=None)

    def finish(self) -> list[torch.Tensor]:
        """Signal ended: reflect-pad the end and return the remaining chunks."""
        if not self._started:
            head = torch.cat(self._head, dim=-1) if self._head else torch.zeros(self.channels, 0)
            if head.shape[-1] <= self.pad:
                raise ValueError(
                    f"signal of {head.shape[-1]} samples is too short to frame "
                    f"(needs more than {self.pad})"
                )
            self._head, self._started = [], True
            self._buf = torch.cat([head[:, 1 : self.pad + 1].flip(-1), head], dim=-1)
        n = self.n_input
        # the last pad+1 raw samples are still in the buffer: span >= n_fft > pad + 1
        tail = self._buf[:, -(self.pad + 1) : -1].flip(-1)
        self._buf = torch.cat([self._buf, tail], dim=-1)
        return self._drain(self._buf.shape[-1] + self._base, n_frames=self.preset.frames_for(n))

    def _drain(self, available: int, n_frames: int | None) -> list[torch.Tensor]:
        hop, out = self.preset.hop, []
        while True:
            j = self.chunks_out * self.frames
            if n_frames is None:
                if j * hop + self.span > available:
                    break
                valid = self.frames
            else:
                if j >= n_frames:
                    break
                valid = min(self.frames, n_frames - j)
            start = j * hop - self._base
            seg = self._buf[:, start : start + (valid - 1) * hop + self.preset.n_fft]
            spec = stft_frames(seg, self.preset)
            if valid < self.frames:
                spec = torch.nn.functional.pad(spec, (0, self.frames - valid))
            out.append(spec)
            self.chunks_out += 1
        # drop what no later chunk needs
        keep_from = self.chunks_out * self.frames * hop
        if keep_from > self._base:
            self._buf = self._buf[:, keep_from - self._base :]
            self._base = keep_from
        return out


class StreamingISTFT:
    """Incremental inverse STFT (``center=True``) by overlap-add.

    Args:
        preset: the STFT preset.
        channels: C.

    ``push`` complex spectra ``[C, F, T]`` (consecutive frames); it returns the output samples
    that no later frame can change, ``[C, n]``. ``finish(length)`` returns the rest so that
    everything returned has exactly ``length`` samples, equal to
    ``istft(all_frames, preset, length)`` up to float error.
    """

    def __init__(self, preset: StftPreset, channels: int) -> None:
        self.preset = preset
        self.channels = channels
        self.pad = preset.n_fft // 2
        self.window = torch.hann_window(preset.n_fft, periodic=True, dtype=torch.float64)
        self.frames_in = 0
        self._acc = torch.zeros(channels, preset.n_fft, dtype=torch.float64)
        self._env = torch.zeros(preset.n_fft, dtype=torch.float64)
        self._base = 0  # padded index of _acc[:, 0]
        self.samples_out = 0
        self._env_cache: dict[int, torch.Tensor] = {}

    def push(self, spec: torch.Tensor) -> torch.Tensor:
        """Frames ``[C, F, T]`` -> newly completed samples ``[C, n]`` (float32)."""
        hop, n_fft = self.preset.hop, self.preset.n_fft
        t = spec.shape[-1]
        if t == 0:
            return torch.zeros(self.channels, 0)
        frames = torch.fft.irfft(spec.to(torch.complex128), n=n_fft, dim=-2)  # [C, n_fft, T]
        frames = frames * self.window[:, None]
        end = (self.frames_in + t - 1) * hop + n_fft  # padded index after the last frame
        need = end - self._base
        if need > self._acc.shape[-1]:
            grow = need - self._acc.shape[-1]
            self._acc = torch.nn.functional.pad(self._acc, (0, grow))
            self._env = torch.nn.functional.pad(self._env, (0, grow))
        s = self.frames_in * hop - self._base
        span = (t - 1) * hop + n_fft
        self._acc[:, s : s + span] += _overlap_add(frames, hop)
        self._env[s : s + span] += self._envelope(t)
        self.frames_in += t
        return self._emit(self.frames_in * hop)

    def _envelope(self, t: int) -> torch.Tensor:
        """Overlap-added squared window of ``t`` consecutive frames (cached)."""
        if t not in self._env_cache:
            wsq = (self.window**2)[None, :, None].expand(1, -1, t)
            self._env_cache[t] = _overlap_add(wsq, self.preset.hop)[0]
        return self._env_cache[t]

    def finish(self, length: int | None = None) -> torch.Tensor:
        """The remaining samples; with ``length`` the total output is cut or zero-padded to it."""
        end = (self.frames_in - 1) * self.preset.hop + self.preset.n_fft if self.frames_in else 0
        if length is not None:
            end = self.pad + length
        out = self._emit(end)
        if length is not None and self.samples_out < length:
            extra = torch.zeros(self.channels, length - self.samples_out)
            self.samples_out = length
            out = torch.cat([out, extra], dim=-1)
        return out

    def _emit(self, complete: int) -> torch.Tensor:
        """Output padded positions ``[pad + samples_out, complete)``."""
        start = self.pad + self.samples_out
        if complete <= start:
            return torch.zeros(self.channels, 0)
        a, b = start - self._base, complete - self._base
        avail = self._acc.shape[-1]
        acc = self._acc[:, a : min(b, avail)]
        env = self._env[a : min(b, avail)]
        out = torch.where(env > 1e-11, acc / env.clamp_min(1e-11), torch.zeros_like(acc))
        if b > avail:  # past the last frame: nothing was added there
            out = torch.nn.functional.pad(out, (0, b - avail))
        self.samples_out += b - a
        drop = min(b, avail)
        self._acc = self._acc[:, drop:]
        self._env = self._env[drop:]
        self._base += drop
        return out.float()


def _overlap_add(frames: torch.Tensor, hop: int) -> torch.Tensor:
    """``[C, n_fft, T]`` frames -> ``[C, (T - 1) * hop + n_fft]`` by overlap-add."""
    c, n_fft, t = frames.shape
    out = torch.nn.functional.fold(
        frames, output_size=(1, (t - 1) * hop + n_fft), kernel_size=(1, n_fft), stride=(1, hop)
    )
    return out.reshape(c, -1)


# --------------------------------------------------------------------------- session clock


@dataclass
class SessionClock:
    """Step times of a session's replay clock (all times in unix seconds).

    Step ``t`` covers capture ``[epoch + t T, epoch + (t + 1) T)``. Its allocation is sent
    when it opens (``open_time``), a whole step before the edge can encode it; its chunks are
    due at ``epoch + (t + 1) T + lookahead``; the receiver waits ``grace_s`` more
    (``deadline``) and then decodes what arrived.
    """

    period_s: float
    lookahead_s: float = 0.0
    grace_s: float = 0.1
    epoch: float | None = None

    @property
    def started(self) -> bool:
        return self.epoch is not None

    def step_at(self, now: float) -> int:
        """The step whose capture interval contains ``now`` (0 before the epoch)."""
        assert self.epoch is not None
        return max(0, math.floor((now - self.epoch) / self.period_s))

    def open_time(self, step: int) -> float:
        assert self.epoch is not None
        return self.epoch + step * self.period_s

    def due_time(self, step: int) -> float:
        """When the edge can send chunk ``step`` (captured plus look-ahead)."""
        return self.open_time(step + 1) + self.lookahead_s

    def deadline(self, step: int) -> float:
        return self.due_time(step) + self.grace_s


# --------------------------------------------------------------------------- jitter buffer

T = TypeVar("T")
AddResult = Literal["ok", "late", "duplicate", "ahead"]


@dataclass
class JitterBuffer(Generic[T]):
    """Per-step collection of one item per source.

    ``next_step`` is the oldest step not yet decoded; items for earlier steps are late.
    Items more than ``max_ahead`` steps ahead are refused (``"ahead"``) to bound memory.
    """

    n_sources: int
    max_ahead: int = 64
    next_step: int = 0
    _steps: dict[int, dict[int, T]] = field(default_factory=dict)
    late: int = 0
    duplicates: int = 0
    refused_ahead: int = 0

    def add(self, step: int, source: int, item: T) -> AddResult:
        if not 0 <= source < self.n_sources:
            raise ValueError(f"source {source} out of range [0, {self.n_sources})")
        if step < self.next_step:
            self.late += 1
            return "late"
        if step >= self.next_step + self.max_ahead:
            self.refused_ahead += 1
            return "ahead"
        slot = self._steps.setdefault(step, {})
        if source in slot:
            self.duplicates += 1
            return "duplicate"
        slot[source] = item
        return "ok"

    def arrived(self, step: int) -> set[int]:
        """Sources whose item for ``step`` is here."""
        return set(self._steps.get(step, {}))

    def complete(self, step: int, waiting_for: Iterable[int]) -> bool:
        """Whether every source in ``waiting_for`` has delivered ``step``."""
        return set(waiting_for) <= self.arrived(step)

    def pop(self) -> tuple[int, dict[int, T]]:
        """Close the oldest open step: ``(step, items by source)``; later items are late."""
        step = self.next_step
        items = self._steps.pop(step, {})
        self.next_step += 1
        return step, items

    def skip_to(self, step: int) -> None:
        """Jump ahead (session start or resume): earlier steps are dropped."""
        for s in [s for s in self._steps if s < step]:
            del self._steps[s]
        self.next_step = max(self.next_step, step)


# --------------------------------------------------------------------------- planning


def plan_for_active(codec: Codec, capacity_bps: float, active: Iterable[int]) -> Plan:
    """The step's budget and allocation over the ``active`` sources only (:meth:`Codec.plan`):
    inactive sources get no component and the budget is capped at the active sources' widths.
    With every source active this equals ``codec.plan(capacity_bps)``."""
    return codec.plan(capacity_bps, active=list(active))


# --------------------------------------------------------------------------- small helpers


def percentiles(values: Sequence[float], qs: Sequence[float] = (50, 95, 99)) -> dict[str, Any]:
    """``{"p50": ..., ...}`` of ``values`` (None when empty)."""
    if not len(values):
        return {f"p{q:g}": None for q in qs}
    arr = np.asarray(values, dtype=np.float64)
    return {f"p{q:g}": float(np.percentile(arr, q)) for q in qs}


def find_checkpoint(arch: str, directory: str | Path = "checkpoints") -> Path | None:
    """The newest ``<directory>/<arch>-<hash8>.ckpt`` (or ``<arch>.ckpt``), else None."""
    folder = Path(directory)
    if not folder.is_dir():
        return None
    found = [p for p in folder.glob(f"{arch}-*.ckpt") if len(p.stem) == len(arch) + 9]
    found += [p for p in [folder / f"{arch}.ckpt"] if p.is_file()]
    return max(found, key=lambda p: p.stat().st_mtime) if found else None
