"""Frame-rate spectral transforms: a linear transform coder that networks refine.

The codec's latent is a *sequence*: one vector per ``G`` STFT frames (32 ms at the default
``G = 4``, hop 128, 16 kHz). Each stage is a learnt linear map started from PCA of training
spectra, plus a small residual network whose last layer starts at zero, so an untrained
model *is* the linear transform coder (DPCA) and training can only add what it misses:

* :class:`FrameTransform` (per microphone, per frame): the compressed complex STFT frame
  (real and imaginary parts of ``F`` bins, ``2F`` floats) -> ``p`` frame coefficients.
  Tied: the inverse is the transpose. Shared by every source.
* :class:`VectorEncoder` (per source): ``G`` frames of the source's ``M_s`` microphones
  (``M_s G p`` floats) -> latent ``d_s`` (linear map ``A_s`` plus a residual MLP).
* :class:`JointDecoder`: all sources' latents of one vector -> a residual correction (an MLP
  over the joint latent, so one source's components help rebuild another's microphones),
  then each source's ``A_s^T`` back to frame coefficients.

Context is bounded by construction: a latent vector depends on its own ``G`` frames only
(plus the STFT's look-ahead), so the edge streams with ``G`` frames of delay.
"""

from __future__ import annotations

import torch
from torch import nn


def _zero_last(mlp: nn.Sequential) -> nn.Sequential:
    last = mlp[-1]
    assert isinstance(last, nn.Linear)
    nn.init.zeros_(last.weight)
    nn.init.zeros_(last.bias)
    return mlp


def residual_mlp(dim: int, hidden: int, out: int | None = None) -> nn.Sequential:
    """``dim -> hidden -> hidden -> out`` with GELU; the last layer starts at zero."""
    return _zero_last(
        nn.Sequential(
            nn.Linear(dim, hidden), nn.GELU(), nn.Linear(hidden, hidden), nn.GELU(),
            nn.Linear(hidden, out or dim),
        )
    )


@torch.no_grad()
def pca(x: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean ``[D]`` and top-``k`` principal directions ``[k, D]`` of rows ``x [N, D]``."""
    x = x.double()
    mean = x.mean(0)
    xc = x - mean
    cov = xc.T @ xc / max(1, x.shape[0] - 1)
    _, vecs = torch.linalg.eigh(cov)
    dirs = vecs.flip(1)[:, :k].T
    if dirs.shape[0] < k:  # fewer dimensions than asked: pad with zeros
        dirs = torch.cat([dirs, dirs.new_zeros(k - dirs.shape[0], dirs.shape[1])])
    return mean.float(), dirs.float()


def band_weights(bins: int, sample_rate: int, split_hz: float, high: float,
                 width_hz: float = 1000.0) -> torch.Tensor:
    """Per-bin weight ``[bins]``: 1 below ``split_hz``, ``high`` above it, a raised cosine of
    ``width_hz`` between (centred on ``split_hz``)."""
    f = torch.linspace(0.0, sample_rate / 2, bins, dtype=torch.float64)
    t = ((f - (split_hz - width_hz / 2)) / width_hz).clamp(0.0, 1.0)
    ramp = 0.5 - 0.5 * torch.cos(torch.pi * t)
    return (1.0 + (high - 1.0) * ramp).float()


class FrameTransform(nn.Module):
    """Per-frame tied linear transform ``[..., 2F] <-> [..., p]`` around a mean frame.

    ``bin_weight`` (``[F]``, default all 1) weighs the bins before the transform and is undone
    after its inverse: the transform is orthonormal in the weighted domain, so PCA ranks the
    bins by weighted energy and the quantiser's (white) error comes back shaped by ``1 / w``
    (a band of weight 0.5 gets four times the error power and fewer components).
    """

    def __init__(self, bins: int, dim: int, bin_weight: torch.Tensor | None = None) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.randn(dim, 2 * bins) / (2 * bins) ** 0.5)
        self.register_buffer("mean", torch.zeros(2 * bins))
        w = torch.ones(bins) if bin_weight is None else bin_weight.float()
        if w.shape != (bins,) or not bool((w > 0).all()):
            raise ValueError(f"bin_weight must hold {bins} positive numbers")
        # derived from the model config, not stored in checkpoints (real and imaginary parts)
        self.register_buffer("bin_weight", torch.cat([w, w]), persistent=False)

    def forward(self, frames: torch.Tensor) -> torch.Tensor:
        """``[..., 2F]`` -> ``[..., p]``."""
        return ((frames - self.mean) * self.bin_weight) @ self.weight.T

    def inverse(self, coeffs: torch.Tensor) -> torch.Tensor:
        """``[..., p]`` -> ``[..., 2F]``."""
        return (coeffs @ self.weight) / self.bin_weight + self.mean

    @torch.no_grad()
    def init_pca(self, frames: torch.Tensor) -> None:
        """Start from PCA of frames ``[N, 2F]`` (in the weighted domain)."""
        mean, dirs = pca(frames * self.bin_weight, self.weight.shape[0])
        mean = mean / self.bin_weight
        self.mean.copy_(mean)
        self.weight.copy_(dirs)


class VectorEncoder(nn.Module):
    """One source: frame coefficients of one vector ``[..., M_s G p]`` -> latent ``[..., d]``.

    ``z = A u + R(A u)``: the linear part ``A`` starts at PCA of the training vectors, the
    residual MLP ``R`` (``hidden`` wide, 0 = none) at zero.
    """

    def __init__(self, in_dim: int, latent_dim: int, hidden: int) -> None:
        super().__init__()
        self.linear = nn.Parameter(torch.randn(latent_dim, in_dim) / in_dim**0.5)
        self.register_buffer("mean", torch.zeros(in_dim))
        self.residual = residual_mlp(latent_dim, hidden) if hidden else None

    def project(self, u: torch.Tensor) -> torch.Tensor:
        return (u - self.mean) @ self.linear.T

    def forward(self, u: torch.Tensor) -> torch.Tensor:
        y = self.project(u)
        return y + self.residual(y) if self.residual is not None else y

    def back(self, y: torch.Tensor) -> torch.Tensor:
        """Tied inverse of the linear part: ``[..., d]`` -> ``[..., M_s G p]``."""
        return y @ self.linear + self.mean

    @torch.no_grad()
    def init_pca(self, u: torch.Tensor) -> None:
        mean, dirs = pca(u, self.linear.shape[0])
        self.mean.copy_(mean)
        self.linear.copy_(dirs)


class JointDecoder(nn.Module):
    """All sources' latents of a vector -> each source's linear-domain coefficients.

    ``y_s = z_s + R(z_1 .. z_S)[s]``: the joint residual MLP sees every source, so what one
    device sent helps rebuild the others' microphones; it starts at zero. With
    ``rate_input`` it also sees each source's share of components received, ``k_s / d_s``
    (0: the source sent nothing and its latent is the mean), so it can tell a component that
    was dropped from one that is small and fill in what the allocation left out.
    """

    def __init__(self, latent_sizes: list[int], hidden: int, rate_input: bool = False) -> None:
        super().__init__()
        self.sizes = list(latent_sizes)
        self.rate_input = rate_input
        total = sum(self.sizes)
        extra = len(self.sizes) if rate_input else 0
        self.residual = residual_mlp(total + extra, hidden, total) if hidden else None

    def forward(self, latents: list[torch.Tensor], kept: list[int] | torch.Tensor | None = None
                ) -> list[torch.Tensor]:
        """``kept``: components received per source, the same for the whole batch (``[S]``)
        or per batch row (``[B, S]``); None: all of them."""
        if self.residual is None:
            return list(latents)
        z = torch.cat(latents, dim=-1)
        inp = z
        if self.rate_input:
            ks = torch.as_tensor(self.sizes if kept is None else kept, dtype=z.dtype, device=z.device)
            share = ks / torch.as_tensor(self.sizes, dtype=z.dtype, device=z.device)
            if share.dim() == 2:  # [B, S] -> [B, 1 .., S]
                share = share.reshape(share.shape[0], *([1] * (z.dim() - 2)), share.shape[1])
            inp = torch.cat([z, share.expand(*z.shape[:-1], -1)], dim=-1)
        y = z + self.residual(inp)
        return list(torch.split(y, self.sizes, dim=-1))
