"""Spectral encoder/decoder building blocks and the codec architectures."""

from shared.models.architectures import ARCHITECTURES, ArchSpec, DistributedAutoencoder, build_model
from shared.models.spectral import SpectralDecoder, SpectralEncoder

__all__ = [
    "ARCHITECTURES",
    "ArchSpec",
    "DistributedAutoencoder",
    "SpectralDecoder",
    "SpectralEncoder",
    "build_model",
]
