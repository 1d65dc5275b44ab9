"""Codec architectures: joint E1D1 (JAE), E2D1 and E4D1, with NDPCA or naive truncation.

A *source* is one encoder, i.e. one edge device, which sees a group of microphones:

* ``jae``         one encoder over all S microphones (the joint upper bound), PCA top-L.
* ``ndpca-e2d1``  two encoders (S/2 microphones each), NDPCA allocation.
* ``ndpca-e4d1``  four encoders (one microphone each), NDPCA allocation.
* ``naive-e2d1``, ``naive-e4d1``: the same encoders trained and used without NDPCA: under a
  budget L each source sends its first floor(L / S) latent dimensions.

Every architecture has one decoder that maps the concatenated latent of all sources back to
the spectra of all S microphones (task-agnostic reconstruction).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from pydantic import BaseModel, ConfigDict, Field
from torch import nn

from shared.models.spectral import SpectralDecoder, SpectralEncoder
from shared.stft import REPRESENTATIONS, get_preset


@dataclass(frozen=True)
class ArchSpec:
    """What distinguishes an architecture: number of encoders and how bandwidth is used.

    Attributes:
        name: registry name.
        n_encoders: number of sources (encoders).
        projection: ``pca`` (learnt per-source bases, NDPCA/PCA allocation) or ``identity``
            (raw latent dimensions, first-k truncation).
        allocation: default allocation rule, ``ndpca`` or ``uniform``.
    """

    name: str
    n_encoders: int
    projection: str
    allocation: str


ARCHITECTURES: dict[str, ArchSpec] = {
    "jae": ArchSpec("jae", 1, "pca", "ndpca"),
    "ndpca-e2d1": ArchSpec("ndpca-e2d1", 2, "pca", "ndpca"),
    "ndpca-e4d1": ArchSpec("ndpca-e4d1", 4, "pca", "ndpca"),
    "naive-e2d1": ArchSpec("naive-e2d1", 2, "identity", "uniform"),
    "naive-e4d1": ArchSpec("naive-e4d1", 4, "identity", "uniform"),
}


class ModelConfig(BaseModel):
    """Hyper-parameters of a codec model (stored in every checkpoint)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    arch: str = "ndpca-e4d1"
    num_mics: int = Field(4, ge=1)
    stft: str = "stream"
    representation: str = "complex"
    frames: int = Field(32, ge=4)
    latent_total: int = Field(256, ge=2)
    channels: int = Field(128, ge=8)
    n_res: int = Field(2, ge=0)
    n_down: int = Field(2, ge=0)
    bottleneck_channels: int = Field(32, ge=1)
    magnitude_feature: bool = True  # encoders also see |X|_c computed from (real, imag)

    def spec(self) -> ArchSpec:
        try:
            return ARCHITECTURES[self.arch]
        except KeyError:
            raise ValueError(
                f"unknown architecture {self.arch!r}; choose one of {sorted(ARCHITECTURES)}"
            ) from None

    def validate_all(self) -> None:
        spec = self.spec()
        get_preset(self.stft)
        if self.representation not in REPRESENTATIONS:
            raise ValueError(f"representation must be one of {REPRESENTATIONS}")
        if self.num_mics % spec.n_encoders:
            raise ValueError(
                f"{self.arch} needs num_mics divisible by {spec.n_encoders}, got {self.num_mics}"
            )
        if self.latent_total % spec.n_encoders:
            raise ValueError(f"latent_total must be divisible by {spec.n_encoders}")

    @property
    def mic_groups(self) -> list[list[int]]:
        n = self.spec().n_encoders
        per = self.num_mics // n
        return [list(range(i * per, (i + 1) * per)) for i in range(n)]

    @property
    def latent_sizes(self) -> list[int]:
        n = self.spec().n_encoders
        return [self.latent_total // n] * n


class DistributedAutoencoder(nn.Module):
    """S_enc spectral encoders and one joint decoder.

    Input and output spectra are ``[B, M, 2, F, T]`` (M microphones, 2 real channels).
    """

    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        cfg.validate_all()
        self.cfg = cfg
        preset = get_preset(cfg.stft)
        common = dict(
            channels=cfg.channels,
            n_res=cfg.n_res,
            n_down=cfg.n_down,
            bottleneck_channels=cfg.bottleneck_channels,
        )
        self.groups = cfg.mic_groups
        per_mic = 3 if self._with_magnitude else 2
        self.encoders = nn.ModuleList(
            SpectralEncoder(per_mic * len(g), preset.n_bins, cfg.frames, d, **common)
            for g, d in zip(self.groups, cfg.latent_sizes)
        )
        self.decoder = SpectralDecoder(
            cfg.latent_total, 2 * cfg.num_mics, preset.n_bins, cfg.frames, **common
        )

    @property
    def _with_magnitude(self) -> bool:
        return self.cfg.magnitude_feature and self.cfg.representation == "complex"

    @property
    def n_sources(self) -> int:
        return len(self.encoders)

    def encode_source(self, s: int, x: torch.Tensor) -> torch.Tensor:
        """Encode source ``s`` from its own microphones ``[B, M_s, 2, F, T]`` -> ``[B, d_s]``.

        With ``magnitude_feature`` the compressed magnitude ``sqrt(re^2 + im^2)`` is appended
        as a third channel per microphone: a fixed feature of the same input that a linear
        first layer cannot compute from the real and imaginary parts.
        """
        if self._with_magnitude:
            mag = torch.sqrt(x.pow(2).sum(2, keepdim=True) + 1e-8)
            x = torch.cat((x, mag), dim=2)
        return self.encoders[s](x.flatten(1, 2))

    def encode(self, x: torch.Tensor) -> list[torch.Tensor]:
        """All microphones ``[B, M, 2, F, T]`` -> list of latents ``[B, d_s]``."""
        return [self.encode_source(s, x[:, g]) for s, g in enumerate(self.groups)]

    def decode(self, latents: list[torch.Tensor] | torch.Tensor) -> torch.Tensor:
        """Latents (list of ``[B, d_s]`` or joint ``[B, D]``) -> spectra ``[B, M, 2, F, T]``."""
        z = torch.cat(list(latents), dim=1) if isinstance(latents, list | tuple) else latents
        y = self.decoder(z)
        b, _, f, t = y.shape
        return y.reshape(b, self.cfg.num_mics, 2, f, t)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.decode(self.encode(x))


def build_model(cfg: ModelConfig) -> DistributedAutoencoder:
    return DistributedAutoencoder(cfg)
