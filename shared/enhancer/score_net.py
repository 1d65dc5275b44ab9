"""The score network: a small NCSN++-style U-Net over ``(x, y, t)``.

Score parametrisation: the network output ``n(x, y, t)`` is the *scaled* score
``std(t) grad_x log p_t(x | y)``; the score is ``n / std(t)``
(:meth:`shared.enhancer.ScoreEnhancer.score`). Denoising score matching then reads
``|std(t) score + z|^2 = |n + z|^2``, i.e. the network predicts ``-z``, a target of unit
scale at every ``t``.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from shared.enhancer._util import _checked_keys
from shared.errors import ConfigError


@dataclass(frozen=True)
class ScoreNetConfig:
    """Hyper-parameters of :class:`ScoreNet` (stored in every enhancer checkpoint).

    Attributes:
        base_channels: channels of the first level.
        channel_mults: one U-Net level each (channels ``base * mult``), 2x down-sampling of
            both F and T between levels.
        num_res_blocks: residual blocks per level, on the way down and on the way up.
        emb_dim: width of the time embedding.
        dropout: dropout inside residual blocks.
        attention: a self-attention block at the lowest resolution.
        fourier_scale: std of the Gaussian Fourier feature frequencies of ``t``.
    """

    base_channels: int = 32
    channel_mults: tuple[int, ...] = (1, 2, 2)
    num_res_blocks: int = 1
    emb_dim: int = 128
    dropout: float = 0.0
    attention: bool = False
    fourier_scale: float = 16.0

    def __post_init__(self) -> None:
        object.__setattr__(self, "channel_mults", tuple(int(m) for m in self.channel_mults))
        problems = []
        if self.base_channels < 1:
            problems.append("base_channels must be >= 1")
        if not self.channel_mults or min(self.channel_mults) < 1:
            problems.append("channel_mults must be a non-empty list of positive integers")
        if self.num_res_blocks < 1:
            problems.append("num_res_blocks must be >= 1")
        if self.emb_dim < 2 or self.emb_dim % 2:
            problems.append("emb_dim must be an even number >= 2")
        if not 0 <= self.dropout < 1:
            problems.append("dropout must be in [0, 1)")
        if problems:
            raise ConfigError(f"invalid score network config: {'; '.join(problems)}")

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> ScoreNetConfig:
        """From a (JSON) dict; unknown keys raise :class:`ConfigError`."""
        return cls(**_checked_keys(cls, d, "score network config"))

    def as_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["channel_mults"] = list(self.channel_mults)
        return d


#: Network presets (parameters):
#:
#: * ``cpu`` (0.31 M): one forward of a 32-frame stream chunk (x and y ``[1, 2, 256, 32]``)
#:   takes about 9.5 ms on one core (AMD EPYC with AVX-512, torch 2.13, one thread; best of
#:   500 runs; the median was 13-14 ms on a busy two-core machine).
#: * ``gpu`` (5.8 M): two residual blocks per level and self-attention at the lowest
#:   resolution.
#: * ``tiny`` (19 k): for tests.
SCORE_NET_PRESETS: dict[str, ScoreNetConfig] = {
    "cpu": ScoreNetConfig(base_channels=12, channel_mults=(1, 2, 4, 4), num_res_blocks=1, emb_dim=64),
    "cpu-wide": ScoreNetConfig(base_channels=24, channel_mults=(1, 2, 4, 4), num_res_blocks=1, emb_dim=64),
    "gpu": ScoreNetConfig(
        base_channels=64, channel_mults=(1, 2, 2, 2), num_res_blocks=2, emb_dim=256, attention=True
    ),
    "tiny": ScoreNetConfig(base_channels=8, channel_mults=(1, 2), num_res_blocks=1, emb_dim=16),
}


def _groups(channels: int) -> int:
    """GroupNorm groups: up to 32 groups of at least 4 channels, dividing ``channels``."""
    g = max(1, min(32, channels // 4))
    while channels % g:
        g -= 1
    return g


class GaussianFourierEmbedding(nn.Module):
    """``t`` ``[B]`` -> ``[sin(2 pi t w), cos(2 pi t w)]`` ``[B, dim]``, fixed ``w ~ N(0, scale^2)``."""

    def __init__(self, dim: int, scale: float) -> None:
        super().__init__()
        gen = torch.Generator().manual_seed(0)
        self.register_buffer("freqs", torch.randn(dim // 2, generator=gen) * scale)

    def forward(self, t: Tensor) -> Tensor:
        arg = 2 * math.pi * t[:, None] * self.freqs[None, :]
        return torch.cat((arg.sin(), arg.cos()), dim=-1)


class ResBlock(nn.Module):
    """GroupNorm-SiLU-conv twice, the time embedding added in between, rescaled skip."""

    def __init__(self, c_in: int, c_out: int, emb_dim: int, dropout: float) -> None:
        super().__init__()
        self.norm1 = nn.GroupNorm(_groups(c_in), c_in)
        self.conv1 = nn.Conv2d(c_in, c_out, 3, padding=1)
        self.emb = nn.Linear(emb_dim, c_out)
        self.norm2 = nn.GroupNorm(_groups(c_out), c_out)
        self.drop = nn.Dropout(dropout)
        self.conv2 = nn.Conv2d(c_out, c_out, 3, padding=1)
        self.skip = nn.Conv2d(c_in, c_out, 1) if c_in != c_out else nn.Identity()

    def forward(self, x: Tensor, emb: Tensor) -> Tensor:
        h = self.conv1(F.silu(self.norm1(x)))
        h = h + self.emb(emb)[:, :, None, None]
        h = self.conv2(self.drop(F.silu(self.norm2(h))))
        return (self.skip(x) + h) * (1 / math.sqrt(2))


class AttentionBlock(nn.Module):
    """Multi-head self-attention over all (F, T) positions, residual (zero-initialised out)."""

    def __init__(self, channels: int, heads: int = 4) -> None:
        super().__init__()
        while channels % heads:
            heads -= 1
        self.heads = heads
        self.norm = nn.GroupNorm(_groups(channels), channels)
        self.qkv = nn.Conv2d(channels, 3 * channels, 1)
        self.proj = nn.Conv2d(channels, channels, 1)
        nn.init.zeros_(self.proj.weight)
        nn.init.zeros_(self.proj.bias)

    def forward(self, x: Tensor) -> Tensor:
        b, c, f, t = x.shape
        q, k, v = self.qkv(self.norm(x)).reshape(b, 3, self.heads, c // self.heads, f * t).unbind(1)
        out = F.scaled_dot_product_attention(q.transpose(-1, -2), k.transpose(-1, -2), v.transpose(-1, -2))
        out = out.transpose(-1, -2).reshape(b, c, f, t)
        return (x + self.proj(out)) * (1 / math.sqrt(2))


class ScoreNet(nn.Module):
    """A small NCSN++-style U-Net: input channels = x (2) + y (2) concatenated, a time
    embedding (Gaussian Fourier features of ``t``, then an MLP) added in every residual
    block, GroupNorm + SiLU residual blocks, output 2 channels: the scaled score
    ``std(t) * score`` (see the module docstring).

    Layout: an input convolution; per level ``num_res_blocks`` residual blocks, then a
    stride-2 convolution; at the lowest resolution a residual block (with ``attention``:
    followed by self-attention and a second block); on the way up, per level, the skip
    connection from the same level is added (``(h + skip) / sqrt 2``, cheaper on CPU than
    concatenation), ``num_res_blocks`` residual blocks, then a convolution at the low
    resolution followed by 2x nearest up-sampling; GroupNorm, SiLU and the output convolution.

    Accepts any F, T: pads (zeros, at the end) to a multiple of ``2 ** (levels - 1)``
    internally and crops back. The output convolution ``out`` starts at zero, so an
    untrained network predicts a zero score.
    """

    def __init__(self, cfg: ScoreNetConfig) -> None:
        super().__init__()
        self.cfg = cfg
        chans = [cfg.base_channels * m for m in cfg.channel_mults]
        e = cfg.emb_dim
        self.time_embed = GaussianFourierEmbedding(e, cfg.fourier_scale)
        self.time_mlp = nn.Sequential(nn.Linear(e, e), nn.SiLU(), nn.Linear(e, e), nn.SiLU())
        self.inp = nn.Conv2d(4, chans[0], 3, padding=1)

        self.down = nn.ModuleList()
        self.downsample = nn.ModuleList()
        c = chans[0]
        for i, ch in enumerate(chans):
            blocks = nn.ModuleList()
            for _ in range(cfg.num_res_blocks):
                blocks.append(ResBlock(c, ch, e, cfg.dropout))
                c = ch
            self.down.append(blocks)
            if i < len(chans) - 1:
                self.downsample.append(nn.Conv2d(c, c, 3, stride=2, padding=1))

        self.mid1 = ResBlock(c, c, e, cfg.dropout)
        self.mid_attn = AttentionBlock(c) if cfg.attention else None
        self.mid2 = ResBlock(c, c, e, cfg.dropout) if cfg.attention else None

        self.up = nn.ModuleList()
        self.upsample = nn.ModuleList()
        for i in reversed(range(len(chans))):
            ch = chans[i]
            self.up.append(nn.ModuleList(ResBlock(ch, ch, e, cfg.dropout) for _ in range(cfg.num_res_blocks)))
            if i > 0:
                self.upsample.append(nn.Conv2d(ch, chans[i - 1], 3, padding=1))
        c = chans[0]

        self.out_norm = nn.GroupNorm(_groups(c), c)
        self.out = nn.Conv2d(c, 2, 3, padding=1)
        nn.init.zeros_(self.out.weight)
        nn.init.zeros_(self.out.bias)

    @property
    def multiple(self) -> int:
        """F and T are padded internally to a multiple of this."""
        return 2 ** (len(self.cfg.channel_mults) - 1)

    def forward(self, x: Tensor, y: Tensor, t: Tensor) -> Tensor:
        """``x``, ``y`` ``[B, 2, F, T]``, ``t`` ``[B]`` -> scaled score ``[B, 2, F, T]``."""
        n_f, n_t = x.shape[-2:]
        m = self.multiple
        pad_f, pad_t = -n_f % m, -n_t % m
        h = torch.cat((x, y), dim=1)
        if pad_f or pad_t:
            h = F.pad(h, (0, pad_t, 0, pad_f))
        emb = self.time_mlp(self.time_embed(t.to(h.dtype)))

        h = self.inp(h)
        skips = []
        for i, blocks in enumerate(self.down):
            for block in blocks:
                h = block(h, emb)
            skips.append(h)
            if i < len(self.downsample):
                h = self.downsample[i](h)

        h = self.mid1(h, emb)
        if self.mid_attn is not None and self.mid2 is not None:
            h = self.mid2(self.mid_attn(h), emb)

        for j, blocks in enumerate(self.up):
            h = (h + skips.pop()) * (1 / math.sqrt(2))
            for block in blocks:
                h = block(h, emb)
            if j < len(self.upsample):
                h = F.interpolate(self.upsample[j](h), scale_factor=2.0, mode="nearest")

        h = self.out(F.silu(self.out_norm(h)))
        return h[..., :n_f, :n_t]
