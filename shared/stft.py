"""STFT presets and spectral representations shared by codec and enhancer.

Presets (DESIGN.md section 8):

* ``stream``: n_fft 510, hop 128 at 16 kHz (256 bins), used by codec and enhancer.
* ``paper``:  n_fft 2048, hop 512 at 16 kHz (1025 bins), the paper's setting.

Representations of a complex STFT ``X`` (``[..., F, T]``) as real channels:

* ``complex``: compressed complex STFT ``beta |X|^alpha e^{i angle X}`` as (real, imag),
  alpha 0.5, beta 0.15 (SGMSE's transform).
* ``magphase``: (compressed magnitude ``beta |X|^alpha``, phase ``angle X / pi``), the
  paper's magnitude + phase input.

The framing is ``torch.stft(center=True)`` with a periodic Hann window; a signal of N samples
gives ``N // hop + 1`` frames, and :func:`istft` with ``length=N`` inverts it exactly.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

ALPHA = 0.5
BETA = 0.15


@dataclass(frozen=True)
class StftPreset:
    """An STFT configuration."""

    name: str
    n_fft: int
    hop: int
    sample_rate: int = 16000

    @property
    def n_bins(self) -> int:
        return self.n_fft // 2 + 1

    def frames_for(self, n_samples: int) -> int:
        """Number of frames ``torch.stft(center=True)`` gives for ``n_samples``."""
        return n_samples // self.hop + 1

    def seconds_per_frames(self, n_frames: int) -> float:
        return n_frames * self.hop / self.sample_rate


PRESETS: dict[str, StftPreset] = {
    "stream": StftPreset("stream", 510, 128),
    "paper": StftPreset("paper", 2048, 512),
}

REPRESENTATIONS = ("complex", "magphase")


def get_preset(name: str) -> StftPreset:
    try:
        return PRESETS[name]
    except KeyError:
        raise ValueError(f"unknown STFT preset {name!r}; choose one of {sorted(PRESETS)}") from None


def _window(preset: StftPreset, device: torch.device) -> torch.Tensor:
    return torch.hann_window(preset.n_fft, periodic=True, device=device)


def stft(audio: torch.Tensor, preset: StftPreset) -> torch.Tensor:
    """Complex STFT.

    Args:
        audio: ``[..., N]`` float waveform.

    Returns:
        ``[..., F, T]`` complex64 with ``F = n_fft // 2 + 1`` and ``T = N // hop + 1``.
    """
    return _stft(audio, preset, center=True)


def _stft(audio: torch.Tensor, preset: StftPreset, center: bool) -> torch.Tensor:
    """``torch.stft`` over the last axis of ``[..., N]`` -> ``[..., F, T]`` complex64."""
    lead = audio.shape[:-1]
    flat = audio.reshape(-1, audio.shape[-1])
    spec = torch.stft(
        flat,
        preset.n_fft,
        hop_length=preset.hop,
        window=_window(preset, audio.device),
        center=center,
        return_complex=True,
    )
    return spec.reshape(*lead, spec.shape[-2], spec.shape[-1])


def istft(spec: torch.Tensor, preset: StftPreset, length: int | None = None) -> torch.Tensor:
    """Inverse of :func:`stft`: ``[..., F, T]`` complex -> ``[..., N]`` float."""
    lead = spec.shape[:-2]
    flat = spec.reshape(-1, spec.shape[-2], spec.shape[-1])
    audio = torch.istft(
        flat,
        preset.n_fft,
        hop_length=preset.hop,
        window=_window(preset, spec.device),
        center=True,
        length=length,
    )
    return audio.reshape(*lead, audio.shape[-1])


def to_channels(spec: torch.Tensor, representation: str = "complex") -> torch.Tensor:
    """Complex STFT ``[..., F, T]`` -> real channels ``[..., 2, F, T]``."""
    mag = spec.abs()
    cmag = BETA * mag.clamp_min(0).pow(ALPHA)
    if representation == "complex":
        phase = torch.angle(spec)
        return torch.stack((cmag * torch.cos(phase), cmag * torch.sin(phase)), dim=-3)
    if representation == "magphase":
        return torch.stack((cmag, torch.angle(spec) / math.pi), dim=-3)
    raise ValueError(f"unknown representation {representation!r}; choose {REPRESENTATIONS}")


def from_channels(channels: torch.Tensor, representation: str = "complex") -> torch.Tensor:
    """Inverse of :func:`to_channels`: ``[..., 2, F, T]`` -> complex ``[..., F, T]``."""
    a, b = channels.unbind(dim=-3)
    if representation == "complex":
        cmag = torch.sqrt(a * a + b * b + 1e-12)
        phase = torch.atan2(b, a)
    elif representation == "magphase":
        cmag = a.clamp_min(0)
        phase = b * math.pi
    else:
        raise ValueError(f"unknown representation {representation!r}; choose {REPRESENTATIONS}")
    mag = (cmag / BETA).pow(1.0 / ALPHA)
    return torch.polar(mag, phase)


def convert_channels(channels: torch.Tensor, source: str, target: str = "complex") -> torch.Tensor:
    """Channels of representation ``source`` -> channels of ``target`` (a no-op when equal)."""
    if source == target:
        return channels
    return to_channels(from_channels(channels, source), target)


def compressed_magnitude(channels: torch.Tensor, representation: str = "complex") -> torch.Tensor:
    """Compressed magnitude ``beta |X|^alpha`` from channels ``[..., 2, F, T]`` -> ``[..., F, T]``."""
    a, b = channels.unbind(dim=-3)
    if representation == "complex":
        return torch.sqrt(a * a + b * b + 1e-12)
    return a.clamp_min(0)


def reflect_pad(audio: torch.Tensor, preset: StftPreset) -> torch.Tensor:
    """Pad ``[..., N]`` by ``n_fft // 2`` on both sides as ``stft(center=True)`` does.

    Frame ``j`` of the padded signal starts at sample ``j * hop``, so any crop
    ``padded[..., j*hop : j*hop + (T-1)*hop + n_fft]`` passed to :func:`stft_frames` gives
    exactly frames ``j .. j+T-1`` of the full signal's :func:`stft`.
    """
    pad = preset.n_fft // 2
    lead = audio.shape[:-1]
    flat = audio.reshape(-1, 1, audio.shape[-1])
    out = torch.nn.functional.pad(flat, (pad, pad), mode="reflect")
    return out.reshape(*lead, out.shape[-1])


def stft_frames(segment: torch.Tensor, preset: StftPreset) -> torch.Tensor:
    """Frames of an already padded segment (``center=False``): ``[..., L]`` -> ``[..., F, T]``
    with ``T = (L - n_fft) // hop + 1``."""
    return _stft(segment, preset, center=False)


def griffin_lim(
    magnitude: torch.Tensor,
    preset: StftPreset,
    length: int,
    n_iter: int = 32,
    init_phase: torch.Tensor | None = None,
    momentum: float = 0.99,
) -> torch.Tensor:
    """Fast Griffin-Lim (Perraudin et al. 2013): a waveform whose STFT magnitude approaches
    ``magnitude``.

    A decoder that cannot transmit phase outputs an inconsistent STFT; its inverse loses
    energy where frames disagree. This finds a consistent phase for the decoded magnitude.

    Args:
        magnitude: ``[..., F, T]`` linear STFT magnitude.
        length: output samples N.
        init_phase: ``[..., F, T]`` starting phase (e.g. the decoder's), zeros if None.
    Returns:
        ``[..., N]`` audio.
    """
    phase = torch.zeros_like(magnitude) if init_phase is None else init_phase
    spec = torch.polar(magnitude, phase)
    prev = spec
    for _ in range(n_iter):
        rebuilt = stft(istft(spec, preset, length), preset)
        accel = rebuilt + momentum / (1 + momentum) * (rebuilt - prev) if momentum else rebuilt
        prev = rebuilt
        spec = magnitude * torch.exp(1j * torch.angle(accel))
    return istft(spec, preset, length)
