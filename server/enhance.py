"""Pluggable enhancement stage between the decoder and the inverse STFT.

A stage maps a batch of decoded spectra ``[B, M, 2, F, T]`` (the codec's channel
representation) to output spectra ``[B, C, 2, F, T]`` in the same representation, where
``C = stage.out_channels(M)``:

* ``identity``: the decoded microphones unchanged (``C = M``);
* ``sgmse``: the score-based enhancer (:class:`shared.enhancer.ScoreEnhancer`) restores the
  reference microphone (``C = 1``, the enhanced speech), or every microphone with
  ``enhance_mics = "all"`` (``C = M``, M times the cost). Its sampler (a preset: ``realtime``,
  ``fast``, ``quality``) and number of steps are configurable; the default ``realtime`` keeps
  one 4-source session in real time on 2 CPU cores (docs/benchmark.md).

New stages register a factory ``(codec, options) -> stage`` under a name.
"""

from __future__ import annotations

import dataclasses
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any, Protocol

import torch

from shared.codec import Codec
from shared.errors import ConfigError


class Enhancer(Protocol):
    name: str

    def __call__(self, spectra: torch.Tensor) -> torch.Tensor:
        """``[B, M, 2, F, T]`` -> ``[B, out_channels(M), 2, F, T]``."""

    def out_channels(self, n_mics: int) -> int:
        """Output channels for ``n_mics`` decoded microphones."""


class IdentityEnhancer:
    """Passes the decoded spectra through unchanged."""

    name = "identity"

    def __call__(self, spectra: torch.Tensor) -> torch.Tensor:
        return spectra

    def out_channels(self, n_mics: int) -> int:
        return n_mics

    def describe(self) -> dict[str, Any]:
        return {"name": self.name}


class ScoreBasedEnhancer:
    """The receiver's SGMSE stage: decoded reference microphone -> enhanced speech.

    Each step is enhanced on its own (``frames_per_step`` frames, 32 ms by default); sampling noise
    is seeded per call, so the output is deterministic for a given input.
    """

    name = "sgmse"

    def __init__(self, codec: Codec, checkpoint: str | Path, sampler: str = "realtime",
                 steps: int | None = None, mics: str = "ref", ref_mic: int = 0) -> None:
        from shared.enhancer import ScoreEnhancer, sampler_from_name

        if mics not in ("ref", "all"):
            raise ConfigError(f"enhance_mics must be 'ref' or 'all', got {mics!r}")
        if not 0 <= ref_mic < codec.cfg.num_mics:
            raise ConfigError(f"enhance reference microphone {ref_mic} is not one of the codec's "
                              f"{codec.cfg.num_mics} microphones")
        self.enhancer = ScoreEnhancer.load(checkpoint, device=codec.device).eval()
        if self.enhancer.stft != codec.cfg.stft:
            raise ConfigError(f"enhancer {checkpoint} works on the {self.enhancer.stft!r} STFT but the codec on "
                              f"{codec.cfg.stft!r}; use an enhancer trained for this codec's preset")
        cfg = sampler_from_name(sampler)
        if steps is not None:
            if steps < 1:
                raise ConfigError(f"enhance_steps must be at least 1, got {steps}")
            cfg = dataclasses.replace(cfg, steps=steps)
        self.sampler = cfg
        self.representation = codec.cfg.representation
        self.mics, self.ref_mic = mics, ref_mic
        self.checkpoint = str(checkpoint)
        self._lock = threading.Lock()

    def out_channels(self, n_mics: int) -> int:
        return 1 if self.mics == "ref" else n_mics

    def describe(self) -> dict[str, Any]:
        return {"name": self.name, "checkpoint": Path(self.checkpoint).name, "sha256": self.enhancer.sha256[:12],
                "sampler": self.sampler.as_dict(), "evaluations": self.enhancer.evaluations(self.sampler),
                "mics": self.mics}

    @torch.no_grad()
    def __call__(self, spectra: torch.Tensor) -> torch.Tensor:
        from shared.stft import convert_channels

        x = spectra[:, self.ref_mic : self.ref_mic + 1] if self.mics == "ref" else spectra
        with self._lock:
            out = self.enhancer.enhance(convert_channels(x, self.representation), self.sampler)
        return convert_channels(out, "complex", self.representation)


def _identity(codec: Codec, options: dict[str, Any]) -> Enhancer:
    return IdentityEnhancer()


def _sgmse(codec: Codec, options: dict[str, Any]) -> Enhancer:
    path = options.get("checkpoint")
    if not path:
        from shared.streaming import find_checkpoint

        directory = options.get("checkpoint_dir") or "checkpoints"
        path = find_checkpoint("enhancer", directory)
        if path is None:
            raise ConfigError(f"no enhancer checkpoint in {directory}/; train one with `ndpca train-enhancer "
                              "--ship checkpoints` or pass --enhancer-checkpoint FILE")
    return ScoreBasedEnhancer(codec, path, options.get("sampler") or "realtime", options.get("steps"),
                              options.get("mics") or "ref", int(options.get("ref_mic") or 0))


ENHANCERS: dict[str, Callable[[Codec, dict[str, Any]], Enhancer]] = {"identity": _identity, "sgmse": _sgmse}


def register_enhancer(name: str, factory: Callable[[Codec, dict[str, Any]], Enhancer]) -> None:
    if name in ENHANCERS:
        raise ValueError(f"enhancer {name!r} is already registered")
    ENHANCERS[name] = factory


def build_enhancer(name: str, codec: Codec, options: dict[str, Any] | None = None) -> Enhancer:
    try:
        factory = ENHANCERS[name]
    except KeyError:
        raise ConfigError(f"unknown enhancer {name!r}; choose one of {sorted(ENHANCERS)}") from None
    return factory(codec, options or {})
