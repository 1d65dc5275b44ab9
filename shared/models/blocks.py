"""Small building blocks: residual temporal convolution with layer norm."""

from __future__ import annotations

import torch
from torch import nn


class ChannelLayerNorm(nn.Module):
    """LayerNorm over the channel axis of a ``[B, C, T]`` tensor."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.norm(x.transpose(1, 2)).transpose(1, 2)


class ResBlock1d(nn.Module):
    """Pre-norm residual block: ``x + conv(relu(conv(norm(x))))`` on ``[B, C, T]``."""

    def __init__(self, channels: int, kernel_size: int = 3, dilation: int = 1) -> None:
        super().__init__()
        pad = dilation * (kernel_size - 1) // 2
        self.norm = ChannelLayerNorm(channels)
        self.conv1 = nn.Conv1d(channels, channels, kernel_size, padding=pad, dilation=dilation)
        self.conv2 = nn.Conv1d(channels, channels, 1)
        self.act = nn.ReLU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.conv2(self.act(self.conv1(self.norm(x))))


class FrequencyProjection(nn.Module):
    """Per-frame MLP over the frequency axis: ``[B, C, F, T] -> [B, out, T]``.

    ``C*F -> 256 -> 128`` with ReLU, as in the paper's spectral encoder (section 3.2).
    """

    def __init__(self, in_features: int, hidden: int = 256, out: int = 128) -> None:
        super().__init__()
        self.net = nn.Sequential(
            nn.Linear(in_features, hidden), nn.ReLU(), nn.Linear(hidden, out), nn.ReLU()
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c, f, t = x.shape
        h = x.permute(0, 3, 1, 2).reshape(b, t, c * f)
        return self.net(h).transpose(1, 2)


class FrequencyExpansion(nn.Module):
    """Mirror of :class:`FrequencyProjection`: ``[B, in, T] -> [B, C, F, T]``."""

    def __init__(self, channels: int, bins: int, hidden: int = 256, inp: int = 128) -> None:
        super().__init__()
        self.channels, self.bins = channels, bins
        self.net = nn.Sequential(
            nn.Linear(inp, hidden), nn.ReLU(), nn.Linear(hidden, channels * bins)
        )

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        b, _, t = h.shape
        y = self.net(h.transpose(1, 2))  # [B, T, C*F]
        return y.reshape(b, t, self.channels, self.bins).permute(0, 2, 3, 1)
