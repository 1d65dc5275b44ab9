"""Frame-rate spectral transforms and the codec architectures."""

from shared.models.architectures import (
    ARCHITECTURES,
    CODEC_LAYOUT,
    ArchSpec,
    DistributedAutoencoder,
    ModelConfig,
    build_model,
)
from shared.models.frame import FrameTransform, JointDecoder, VectorEncoder

__all__ = [
    "ARCHITECTURES",
    "CODEC_LAYOUT",
    "ArchSpec",
    "DistributedAutoencoder",
    "FrameTransform",
    "JointDecoder",
    "ModelConfig",
    "VectorEncoder",
    "build_model",
]
