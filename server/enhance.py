"""Pluggable enhancement stage between the decoder and the inverse STFT.

A stage maps decoded spectra ``[B, M, 2, F, T]`` (the codec's channel representation) to
enhanced spectra of the same shape. ``identity`` is the default until the score-based
enhancer lands; new stages register a factory ``(codec) -> stage`` under a name.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol

import torch

from shared.codec import Codec


class Enhancer(Protocol):
    name: str

    def __call__(self, spectra: torch.Tensor) -> torch.Tensor:
        """``[B, M, 2, F, T]`` -> ``[B, M, 2, F, T]``."""


class IdentityEnhancer:
    """Passes the decoded spectra through unchanged."""

    name = "identity"

    def __call__(self, spectra: torch.Tensor) -> torch.Tensor:
        return spectra


ENHANCERS: dict[str, Callable[[Codec], Enhancer]] = {"identity": lambda codec: IdentityEnhancer()}


def register_enhancer(name: str, factory: Callable[[Codec], Enhancer]) -> None:
    if name in ENHANCERS:
        raise ValueError(f"enhancer {name!r} is already registered")
    ENHANCERS[name] = factory


def build_enhancer(name: str, codec: Codec) -> Enhancer:
    try:
        return ENHANCERS[name](codec)
    except KeyError:
        from shared.errors import ConfigError

        raise ConfigError(f"unknown enhancer {name!r}; choose one of {sorted(ENHANCERS)}") from None
