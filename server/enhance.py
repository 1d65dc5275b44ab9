"""Pluggable enhancement stage between the decoder and the inverse STFT.

A stage maps a batch of decoded spectra ``[B, M, 2, F, T]`` (the codec's channel
representation) to output spectra ``[B, C, 2, F, T]`` in the same representation, where
``C = stage.out_channels(M)``:

* ``auto`` (``ndpca serve``'s default): ``sgmse`` in its real-time mode when an enhancer
  checkpoint is found and works on the codec's STFT, else ``identity``;
* ``identity``: the decoded microphones unchanged (``C = M``);
* ``sgmse``: the score-based enhancer (:class:`shared.enhancer.ScoreEnhancer`) restores the
  reference microphone (``C = 1``, the enhanced speech), or every microphone with
  ``enhance_mics = "all"`` (``C = M``, M times the cost); an enhancer trained after the
  classical stage runs it first, and ``enhance_context`` frames of the past widen its view. Its
  sampler (a preset: ``predictive``, ``realtime``, ``fast``, ``quality``) and number of steps
  are configurable; the default is the checkpoint's own, its real-time mode (docs/enhancer.md);
* ``classical``: an MVDR beamformer over the decoded microphones and a Wiener post-filter
  (:class:`shared.classical.StreamingClassical`), frame by frame with one state per session
  (``C = 1``, the enhanced reference microphone).

A stage with ``stateful = True`` is called with the sessions' keys and the microphones that
carry decoded signal (``keys``, ``active``), in each session's step order, and told when a
session ends (``release(key)``).

New stages register a factory ``(codec, options) -> stage`` under a name.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import torch

from shared.codec import Codec
from shared.errors import ConfigError

log = logging.getLogger(__name__)


class Enhancer(Protocol):
    name: str

    def __call__(self, spectra: torch.Tensor) -> torch.Tensor:
        """``[B, M, 2, F, T]`` -> ``[B, out_channels(M), 2, F, T]``."""

    def out_channels(self, n_mics: int) -> int:
        """Output channels for ``n_mics`` decoded microphones."""


def _drop_idle(states: dict[Any, tuple[Any, float]], now: float, idle_seconds: float) -> None:
    """Forget the per-session states (``key -> (state, last use)``) unused for ``idle_seconds``
    (a session that failed is never released)."""
    for stale in [k for k, (_, t) in states.items() if now - t > idle_seconds]:
        del states[stale]


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

    Each step (``frames_per_step`` frames, 32 ms by default) is enhanced with the
    ``context_frames`` input frames before it (the stage keeps them per session; 0: the step on
    its own); sampling noise is seeded per call, so the output is deterministic for a given
    input. An enhancer trained after the classical stage (its checkpoint's ``front_end`` is
    ``classical``) gets the streaming MVDR and Wiener post-filter's output over every decoded
    microphone, computed here with one state per session. With context or a classical front end
    the stage is stateful (it needs the sessions' keys, and releases a session's state when it
    finishes or after ``idle_seconds`` without steps).
    """

    name = "sgmse"

    def __init__(self, codec: Codec, checkpoint: str | Path, sampler: str | None = None,
                 steps: int | None = None, mics: str = "ref", ref_mic: int = 0,
                 context_frames: int | None = None, idle_seconds: float = 120.0) -> None:
        from shared.enhancer import ScoreEnhancer, sampler_from_name

        if mics not in ("ref", "all"):
            raise ConfigError(f"enhance_mics must be 'ref' or 'all', got {mics!r}")
        if not 0 <= ref_mic < codec.cfg.num_mics:
            raise ConfigError(f"enhance reference microphone {ref_mic} is not one of the codec's "
                              f"{codec.cfg.num_mics} microphones")
        if context_frames is not None and context_frames < 0:
            raise ConfigError(f"enhance_context must be at least 0 frames, got {context_frames}")
        self.enhancer = ScoreEnhancer.load(checkpoint, device=codec.device).eval()
        if context_frames is None:  # the context the checkpoint was trained for (train.frames - train.loss_frames)
            train = self.enhancer.header.get("train_config", {}).get("train", {})
            context_frames = (int(train["frames"]) - int(train["loss_frames"])) if train.get("loss_frames") else 0
        if self.enhancer.stft != codec.cfg.stft:
            raise ConfigError(f"enhancer {checkpoint} works on the {self.enhancer.stft!r} STFT but the codec on "
                              f"{codec.cfg.stft!r}; use an enhancer trained for this codec's preset")
        self.front_end = str(self.enhancer.header.get("front_end", "mic"))
        if self.front_end not in ("mic", "classical"):
            raise ConfigError(f"enhancer {checkpoint} has an unknown front end {self.front_end!r}; "
                              "use an enhancer checkpoint written by this release")
        if self.front_end == "classical" and mics != "ref":
            raise ConfigError(f"enhancer {checkpoint} enhances the classical stage's output (one channel); "
                              "enhance_mics must be 'ref'")
        cfg = sampler_from_name(sampler) if sampler else self.enhancer.sampler  # default: the checkpoint's
        if steps is not None:
            if steps < 1:
                raise ConfigError(f"enhance_steps must be at least 1, got {steps}")
            cfg = dataclasses.replace(cfg, steps=steps)
        self.sampler = cfg
        self.representation = codec.cfg.representation
        self.mics, self.ref_mic = mics, ref_mic
        self.context_frames = int(context_frames)
        self.classical = (ClassicalStreamingEnhancer(codec, ref_mic, idle_seconds)
                          if self.front_end == "classical" else None)
        self.stateful = self.classical is not None or self.context_frames > 0
        self.idle_seconds = idle_seconds
        self._context: dict[Any, tuple[torch.Tensor, float]] = {}
        self.checkpoint = str(checkpoint)
        self._lock = threading.Lock()

    def out_channels(self, n_mics: int) -> int:
        return 1 if self.mics == "ref" else n_mics

    def describe(self) -> dict[str, Any]:
        return {"name": self.name, "checkpoint": Path(self.checkpoint).name, "sha256": self.enhancer.sha256[:12],
                "sampler": self.sampler.as_dict(), "evaluations": self.enhancer.evaluations(self.sampler),
                "mics": self.mics, "front_end": self.front_end, "context_frames": self.context_frames}

    def release(self, key: Any) -> None:
        with self._lock:
            self._context.pop(key, None)
        if self.classical is not None:
            self.classical.release(key)

    @torch.no_grad()
    def __call__(self, spectra: torch.Tensor, keys: list[Any] | None = None,
                 active: torch.Tensor | None = None) -> torch.Tensor:
        from shared.stft import convert_channels

        if self.stateful and keys is None:
            raise ConfigError("this enhancer keeps one state per session (context frames or the classical "
                              "front end) and needs the sessions' keys")
        if self.classical is not None:
            x = self.classical(spectra, keys, active)
        else:
            x = spectra[:, self.ref_mic : self.ref_mic + 1] if self.mics == "ref" else spectra
        x = convert_channels(x, self.representation)
        steps = x.shape[-1]
        if self.context_frames:
            x = self._with_context(x, keys)
        with self._lock:
            out = self.enhancer.enhance(x, self.sampler)
        return convert_channels(out[..., -steps:], "complex", self.representation)

    def _with_context(self, x: torch.Tensor, keys: list[Any]) -> torch.Tensor:
        """Prefix each session's step with its previous ``context_frames`` input frames (zeros
        before its first step) and remember the newest ones."""
        now, c = time.monotonic(), self.context_frames
        rows = []
        with self._lock:
            _drop_idle(self._context, now, self.idle_seconds)
            for b, key in enumerate(keys):
                prev = self._context.get(key, (None, 0.0))[0]
                if prev is None:
                    prev = x.new_zeros(*x.shape[1:-1], c)
                row = torch.cat([prev, x[b]], dim=-1)
                self._context[key] = (row[..., -c:].clone(), now)
                rows.append(row)
        return torch.stack(rows)


class ClassicalStreamingEnhancer:
    """The receiver's classical stage: MVDR over the decoded microphones and a Wiener
    post-filter, one :class:`shared.classical.StreamingClassical` state per session.

    States of sessions that send nothing for ``idle_seconds`` are dropped (a session that
    failed is never released); a dropped session that comes back starts afresh.
    """

    name = "classical"
    stateful = True

    def __init__(self, codec: Codec, ref_mic: int = 0, idle_seconds: float = 120.0) -> None:
        from shared.classical import StreamingConfig

        if not 0 <= ref_mic < codec.cfg.num_mics:
            raise ConfigError(f"enhance reference microphone {ref_mic} is not one of the codec's "
                              f"{codec.cfg.num_mics} microphones")
        self.representation = codec.cfg.representation
        self.n_mics, self.n_bins, self.ref_mic = codec.cfg.num_mics, codec.preset.n_bins, ref_mic
        self.cfg = StreamingConfig(frame_seconds=codec.preset.hop / codec.preset.sample_rate)
        self.idle_seconds = idle_seconds
        self._states: dict[Any, tuple[Any, float]] = {}
        self._lock = threading.Lock()

    def out_channels(self, n_mics: int) -> int:
        return 1

    def describe(self) -> dict[str, Any]:
        return {"name": self.name, "settings": dataclasses.asdict(self.cfg), "sessions": len(self._states)}

    def release(self, key: Any) -> None:
        with self._lock:
            self._states.pop(key, None)

    @torch.no_grad()
    def __call__(self, spectra: torch.Tensor, keys: list[Any] | None = None,
                 active: torch.Tensor | None = None) -> torch.Tensor:
        from shared.classical import StreamingClassical
        from shared.stft import from_channels, to_channels

        if keys is None:
            raise ConfigError("the classical enhancer keeps one state per session and needs the sessions' keys")
        now = time.monotonic()
        spec = from_channels(spectra.cpu().double(), self.representation).numpy()  # [B, M, F, T]
        out = np.empty((spec.shape[0], 1, *spec.shape[2:]), complex)
        with self._lock:
            _drop_idle(self._states, now, self.idle_seconds)
            for b, key in enumerate(keys):
                state = self._states.get(key, (None, 0.0))[0]
                if state is None:
                    state = StreamingClassical(self.n_mics, self.n_bins, self.ref_mic, self.cfg)
                self._states[key] = (state, now)
                mask = None if active is None else active[b].cpu().numpy()
                out[b, 0] = state(spec[b], mask)
        res = to_channels(torch.from_numpy(out).to(torch.complex64), self.representation)
        return res.to(spectra.device)


#: A source's microphones join the beamformer of the classical stage when the source sent at
#: least this share of its components in the step (the reference microphone counts with any).
#: 1: only a source sent at full width joins (below full width the beamformer is the reference
#: microphone's Wiener post-filter); 0: any component. On a live channel the allocation changes
#: from step to step, and a beamformer whose microphones come and go with it lowers STOI below
#: the decoder output's; with 1 the enhancer raises PESQ-WB, STOI and SI-SDR on validation rooms
#: at varying and fixed budgets (docs/enhancer.md, "Which microphones the beamformer uses").
BEAMFORM_MIN_SHARE = 1.0


def beamforming_mask(codec: Codec, sent: Sequence[int], min_share: float = BEAMFORM_MIN_SHARE,
                     ref_mic: int = 0) -> torch.Tensor:
    """Microphones ``[M]`` (bool) the classical stage may beamform with, given the components
    each source sent in a step (``sent[s]``; 0: nothing, its microphones decode to the mean)."""
    mask = torch.zeros(codec.cfg.num_mics, dtype=torch.bool)
    for s, (k, mics) in enumerate(zip(sent, codec.mic_groups)):
        need = max(1, math.ceil(min_share * codec.latent_sizes[s]))
        if k >= need or (k > 0 and ref_mic in mics):
            mask[mics] = True
    return mask


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
    return ScoreBasedEnhancer(codec, path, options.get("sampler") or None, options.get("steps"),
                              options.get("mics") or "ref", int(options.get("ref_mic") or 0),
                              options.get("context"))


def _classical(codec: Codec, options: dict[str, Any]) -> Enhancer:
    return ClassicalStreamingEnhancer(codec, int(options.get("ref_mic") or 0))


def _auto(codec: Codec, options: dict[str, Any]) -> Enhancer:
    """``sgmse`` in its checkpoint's real-time mode when an enhancer checkpoint is there (given,
    or the newest in the checkpoint folder) and works on the codec's STFT; otherwise ``identity``,
    with a log line that says why."""
    from shared.checkpoint import read_header
    from shared.streaming import find_checkpoint

    directory = options.get("checkpoint_dir") or "checkpoints"
    path = options.get("checkpoint") or find_checkpoint("enhancer", directory)
    if path is None:
        log.info("enhancer auto: no enhancer checkpoint in %s/, running the identity stage", directory)
        return IdentityEnhancer()
    stft = read_header(path).get("stft")  # the header only: _sgmse loads and verifies the whole file
    if stft != codec.cfg.stft:
        log.warning("enhancer auto: %s works on the %r STFT, the codec on %r; running the identity stage",
                    path, stft, codec.cfg.stft)
        return IdentityEnhancer()
    stage = _sgmse(codec, {**options, "checkpoint": str(path)})
    log.info("enhancer auto: sgmse with %s", path)
    return stage


ENHANCERS: dict[str, Callable[[Codec, dict[str, Any]], Enhancer]] = {
    "auto": _auto, "identity": _identity, "sgmse": _sgmse, "classical": _classical}


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
