"""The spectral encoder and its mirrored decoder (paper section 3.2).

Encoder: frequency projection ``C*F -> 256 -> 128`` (ReLU) per frame, a temporal
convolution, residual blocks with layer norm, strided temporal downsampling, then the
feature map is flattened and projected to the latent. The decoder mirrors it.
"""

from __future__ import annotations

import torch
from torch import nn

from shared.models.blocks import FrequencyExpansion, FrequencyProjection, ResBlock1d


class SpectralEncoder(nn.Module):
    """Spectral chunk -> latent vector.

    Args:
        in_channels: real input channels C (2 per microphone).
        bins: frequency bins F.
        frames: frames per chunk T (must be divisible by ``2 ** n_down``).
        latent_dim: size d of the latent.
        channels: width of the temporal convolutions.
        n_res: residual blocks.
        n_down: stride-2 temporal downsamplings.
        bottleneck_channels: channels of the feature map before flattening.
    """

    def __init__(
        self,
        in_channels: int,
        bins: int,
        frames: int,
        latent_dim: int,
        channels: int = 128,
        n_res: int = 2,
        n_down: int = 2,
        bottleneck_channels: int = 32,
    ) -> None:
        super().__init__()
        if frames % (2**n_down):
            raise ValueError(f"frames ({frames}) must be divisible by 2**n_down ({2**n_down})")
        self.proj = FrequencyProjection(in_channels * bins, 256, 128)
        layers: list[nn.Module] = [nn.Conv1d(128, channels, 3, padding=1)]
        layers += [ResBlock1d(channels, dilation=2**i) for i in range(n_res)]
        for _ in range(n_down):
            layers += [nn.ReLU(), nn.Conv1d(channels, channels, 4, stride=2, padding=1)]
        layers += [ResBlock1d(channels), nn.Conv1d(channels, bottleneck_channels, 1)]
        self.temporal = nn.Sequential(*layers)
        self.flat = bottleneck_channels * (frames // 2**n_down)
        self.out = nn.Linear(self.flat, latent_dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``[B, C, F, T]`` -> ``[B, d]``."""
        h = self.temporal(self.proj(x))
        return self.out(h.flatten(1))


class SpectralDecoder(nn.Module):
    """Latent vector -> spectral chunk, the mirror of :class:`SpectralEncoder`.

    Args:
        latent_dim: size of the (joint) latent it decodes.
        out_channels: real output channels C (2 per reconstructed microphone).
        bins, frames, channels, n_res, n_down, bottleneck_channels: as the encoder.
    """

    def __init__(
        self,
        latent_dim: int,
        out_channels: int,
        bins: int,
        frames: int,
        channels: int = 128,
        n_res: int = 2,
        n_down: int = 2,
        bottleneck_channels: int = 32,
    ) -> None:
        super().__init__()
        self.t0 = frames // 2**n_down
        self.bottleneck_channels = bottleneck_channels
        self.inp = nn.Linear(latent_dim, bottleneck_channels * self.t0)
        layers: list[nn.Module] = [nn.Conv1d(bottleneck_channels, channels, 1), ResBlock1d(channels)]
        for _ in range(n_down):
            layers += [nn.ConvTranspose1d(channels, channels, 4, stride=2, padding=1), nn.ReLU()]
        layers += [ResBlock1d(channels, dilation=2**i) for i in reversed(range(n_res))]
        layers += [nn.Conv1d(channels, 128, 3, padding=1), nn.ReLU()]
        self.temporal = nn.Sequential(*layers)
        self.expand = FrequencyExpansion(out_channels, bins, 256, 128)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        """``[B, d]`` -> ``[B, C, F, T]``."""
        h = self.inp(z).reshape(z.shape[0], self.bottleneck_channels, self.t0)
        return self.expand(self.temporal(h))
