"""Codec architectures: joint E1D1 (JAE), E2D1 and E4D1, with NDPCA, naive truncation or
plain PCA (DPCA).

A *source* is one encoder, i.e. one edge device, which sees a group of microphones:

* ``jae``         one encoder over all S microphones (the joint upper bound), PCA top-L.
* ``ndpca-e2d1``  two encoders (S/2 microphones each), NDPCA allocation.
* ``ndpca-e4d1``  four encoders (one microphone each), NDPCA allocation.
* ``naive-e2d1``, ``naive-e4d1``: the same encoders trained and used without NDPCA: under a
  budget L each source sends its first floor(L / S) latent dimensions.
* ``dpca-e2d1``, ``dpca-e4d1``: no network at all: per-source PCA of the stacked compressed
  complex STFT with NDPCA's allocation (the linear baseline of Li et al.). They are the same
  model with its residual networks switched off and nothing trained.

Every architecture has one decoder that maps the latents of all sources back to the
compressed complex spectra of all S microphones (task-agnostic reconstruction).

Latent layout (``ModelConfig``): one vector of ``d_s`` floats per ``frames`` (G) STFT frames;
a streaming step carries ``vectors_per_step`` vectors. The paper's layout (one vector per
256 ms chunk) is ``frames = 32, vectors_per_step = 1``; the default is ``frames = 4`` (32 ms),
``vectors_per_step = 1`` (32 ms steps).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from pydantic import BaseModel, ConfigDict, Field
from torch import nn

from shared.models.frame import FrameTransform, JointDecoder, VectorEncoder, band_weights
from shared.stft import get_preset

#: Version of the latent layout stored in checkpoints; 1 was the chunk-latent convolutional
#: codec (one vector per 256 ms, magnitude-only quality), refused on load.
CODEC_LAYOUT = 2


@dataclass(frozen=True)
class ArchSpec:
    """What distinguishes an architecture: number of encoders and how bandwidth is used.

    Attributes:
        name: registry name.
        n_encoders: number of sources (encoders).
        projection: ``pca`` (learnt per-source bases, NDPCA/PCA allocation) or ``identity``
            (raw latent dimensions, first-k truncation).
        allocation: default allocation rule, ``ndpca`` or ``uniform``.
        learnt: False for the linear baselines (no residual networks, no training).
    """

    name: str
    n_encoders: int
    projection: str
    allocation: str
    learnt: bool = True


ARCHITECTURES: dict[str, ArchSpec] = {
    "jae": ArchSpec("jae", 1, "pca", "ndpca"),
    "ndpca-e2d1": ArchSpec("ndpca-e2d1", 2, "pca", "ndpca"),
    "ndpca-e4d1": ArchSpec("ndpca-e4d1", 4, "pca", "ndpca"),
    "naive-e2d1": ArchSpec("naive-e2d1", 2, "identity", "uniform"),
    "naive-e4d1": ArchSpec("naive-e4d1", 4, "identity", "uniform"),
    "dpca-e2d1": ArchSpec("dpca-e2d1", 2, "pca", "ndpca", learnt=False),
    "dpca-e4d1": ArchSpec("dpca-e4d1", 4, "pca", "ndpca", learnt=False),
}


class ModelConfig(BaseModel):
    """Hyper-parameters of a codec model (stored in every checkpoint).

    Attributes:
        frames: G, STFT frames per latent vector.
        vectors_per_step: latent vectors per streaming step (the allocation holds for all).
        latent_total: sum of the sources' latent sizes d_s.
        frame_dim: p, coefficients of the shared per-frame transform.
        hidden_enc, hidden_dec: widths of the residual networks (0: linear only).
        source_weights: the task weight of each source in NDPCA's pooled allocation (its
            singular values are multiplied by it before pooling); None: all equal, the
            allocation of Li et al. The default codecs weight the source holding the reference
            microphone (microphone 0, what the receiver plays and enhances) above the others,
            so that a tight budget goes to the reference first (docs/codec.md).
        decoder_rate_input: the joint decoder also sees each source's share of components
            received (``k_s / d_s``), so one network serves every allocation knowingly.
        band_split_hz, high_band_weight: the per-frame transform weighs the bins above
            ``band_split_hz`` by ``high_band_weight`` (1: no weighting), so that components
            and accuracy go to the band that carries intelligibility (docs/codec.md).
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    arch: str = "ndpca-e4d1"
    num_mics: int = Field(4, ge=1)
    stft: str = "stream"
    representation: str = "complex"
    frames: int = Field(4, ge=1)
    vectors_per_step: int = Field(1, ge=1)
    latent_total: int = Field(1536, ge=2)
    frame_dim: int = Field(192, ge=2)
    hidden_enc: int = Field(256, ge=0)
    hidden_dec: int = Field(512, ge=0)
    source_weights: tuple[float, ...] | None = None
    band_split_hz: float = Field(4000.0, gt=0)
    high_band_weight: float = Field(1.0, gt=0, le=1)
    decoder_rate_input: bool = False

    def spec(self) -> ArchSpec:
        try:
            return ARCHITECTURES[self.arch]
        except KeyError:
            raise ValueError(
                f"unknown architecture {self.arch!r}; choose one of {sorted(ARCHITECTURES)}"
            ) from None

    def validate_all(self) -> None:
        spec = self.spec()
        preset = get_preset(self.stft)
        if self.representation != "complex":
            raise ValueError("representation must be 'complex' (the compressed complex STFT)")
        if self.num_mics % spec.n_encoders:
            raise ValueError(
                f"{self.arch} needs num_mics divisible by {spec.n_encoders}, got {self.num_mics}"
            )
        if self.source_weights is not None and (
            len(self.source_weights) != spec.n_encoders
            or not all(math.isfinite(w) and w > 0 for w in self.source_weights)
        ):
            raise ValueError(
                f"source_weights must hold {spec.n_encoders} positive numbers (one per source), "
                f"got {list(self.source_weights)}"
            )
        if self.latent_total % spec.n_encoders:
            raise ValueError(f"latent_total must be divisible by {spec.n_encoders}")
        if self.frame_dim > 2 * preset.n_bins:
            raise ValueError(f"frame_dim must be at most 2 * bins = {2 * preset.n_bins}")
        per_source = self.num_mics // spec.n_encoders * self.frames * self.frame_dim
        if self.latent_total // spec.n_encoders > per_source:
            raise ValueError(
                f"latent size per source ({self.latent_total // spec.n_encoders}) exceeds its "
                f"input ({per_source} = mics x frames x frame_dim)"
            )

    @property
    def frames_per_step(self) -> int:
        return self.frames * self.vectors_per_step

    @property
    def mic_groups(self) -> list[list[int]]:
        n = self.spec().n_encoders
        per = self.num_mics // n
        return [list(range(i * per, (i + 1) * per)) for i in range(n)]

    @property
    def latent_sizes(self) -> list[int]:
        n = self.spec().n_encoders
        return [self.latent_total // n] * n

    @property
    def weights(self) -> list[float]:
        """Task weight of each source in the allocation (all 1 when not set)."""
        return list(self.source_weights or [1.0] * self.spec().n_encoders)

    @property
    def learnt(self) -> bool:
        return self.spec().learnt and (self.hidden_enc > 0 or self.hidden_dec > 0)


class DistributedAutoencoder(nn.Module):
    """S encoders and one joint decoder over frame-rate latent vectors.

    Spectra are ``[B, M, 2, F, T]`` (M microphones, real and imaginary channels of the
    compressed complex STFT, T a multiple of G); latents ``[B, n, d_s]`` with ``n = T / G``.
    """

    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        cfg.validate_all()
        self.cfg = cfg
        preset = get_preset(cfg.stft)
        self.bins = preset.n_bins
        self.groups = cfg.mic_groups
        learnt = cfg.spec().learnt
        self.frame = FrameTransform(preset.n_bins, cfg.frame_dim, band_weights(
            preset.n_bins, preset.sample_rate, cfg.band_split_hz, cfg.high_band_weight))
        self.encoders = nn.ModuleList(
            VectorEncoder(len(g) * cfg.frames * cfg.frame_dim, d, cfg.hidden_enc if learnt else 0)
            for g, d in zip(self.groups, cfg.latent_sizes)
        )
        self.decoder = JointDecoder(cfg.latent_sizes, cfg.hidden_dec if learnt else 0, cfg.decoder_rate_input)

    @property
    def n_sources(self) -> int:
        return len(self.encoders)

    # ------------------------------------------------------------------ layout
    def _frame_coeffs(self, x: torch.Tensor) -> torch.Tensor:
        """``[B, M_s, 2, F, T]`` -> per vector frame coefficients ``[B, n, M_s G p]``."""
        b, m, _, f, t = x.shape
        g = self.cfg.frames
        if t % g:
            raise ValueError(f"{t} frames is not a multiple of {g} frames per vector")
        frames = x.permute(0, 1, 4, 2, 3).reshape(b, m, t, 2 * f)
        c = self.frame(frames).reshape(b, m, t // g, g, -1)
        return c.permute(0, 2, 1, 3, 4).reshape(b, t // g, -1)

    def _spectra(self, u: torch.Tensor, mics: int) -> torch.Tensor:
        """Inverse of :meth:`_frame_coeffs`: ``[B, n, M_s G p]`` -> ``[B, M_s, 2, F, n G]``."""
        b, n, _ = u.shape
        g = self.cfg.frames
        frames = self.frame.inverse(u.reshape(b, n, mics, g, -1))  # [B, n, M_s, G, 2F]
        spec = frames.reshape(b, n, mics, g, 2, self.bins)
        return spec.permute(0, 2, 4, 5, 1, 3).reshape(b, mics, 2, self.bins, n * g)

    # ------------------------------------------------------------------ codec
    def encode_source(self, s: int, x: torch.Tensor) -> torch.Tensor:
        """Source ``s``'s microphones ``[B, M_s, 2, F, T]`` -> latents ``[B, T / G, d_s]``."""
        return self.encoders[s](self._frame_coeffs(x))

    def encode(self, x: torch.Tensor) -> list[torch.Tensor]:
        """All microphones ``[B, M, 2, F, T]`` -> list of latents ``[B, n, d_s]``."""
        return [self.encode_source(s, x[:, g]) for s, g in enumerate(self.groups)]

    def decode(self, latents: list[torch.Tensor], kept: list[int] | torch.Tensor | None = None) -> torch.Tensor:
        """Latents (list of ``[B, n, d_s]``) -> spectra ``[B, M, 2, F, n G]``; ``kept``: the
        components each source's latent was rebuilt from (``[S]`` or per row ``[B, S]``;
        None: all)."""
        ys = self.decoder(list(latents), kept)
        parts = [self._spectra(enc.back(y), len(g)) for enc, y, g in zip(self.encoders, ys, self.groups)]
        return torch.cat(parts, dim=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.decode(self.encode(x))

    # ------------------------------------------------------------------ initialisation
    @torch.no_grad()
    def init_linear(self, x: torch.Tensor, max_rows: int = 200_000) -> None:
        """Start the linear transforms at PCA of training spectra ``[N, M, 2, F, T]``: the
        per-frame transform over all microphones' frames, then each source's vector transform
        over its frame coefficients. Residual networks stay at zero (an untrained model is
        the linear transform coder)."""
        b, m, _, f, t = x.shape
        frames = x.permute(0, 1, 4, 2, 3).reshape(-1, 2 * f)
        gen = torch.Generator().manual_seed(0)
        if frames.shape[0] > max_rows:
            frames = frames[torch.randperm(frames.shape[0], generator=gen)[:max_rows]]
        self.frame.init_pca(frames)
        for s, g in enumerate(self.groups):
            u = self._frame_coeffs(x[:, g]).reshape(-1, len(g) * self.cfg.frames * self.cfg.frame_dim)
            if u.shape[0] > max_rows:
                u = u[torch.randperm(u.shape[0], generator=gen)[:max_rows]]
            self.encoders[s].init_pca(u)


def build_model(cfg: ModelConfig) -> DistributedAutoencoder:
    return DistributedAutoencoder(cfg)
