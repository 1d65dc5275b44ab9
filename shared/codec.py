"""The codec interface used by edge clients, the receiver, training and evaluation.

One checkpoint file holds a whole codec: the model, the frozen NDPCA bases and means, the STFT
preset, the sample rate and the rate defaults. The two halves:

* edge side (:meth:`Codec.source_coefficients`, :meth:`Codec.encode_payload`): an audio
  chunk of the source's microphones -> all normalised coefficients -> the first ``k`` of them,
  quantised and entropy-coded to bytes that fit a bit budget;
* receiver side (:meth:`Codec.plan`, :meth:`Codec.decode_payloads`): capacity -> budget
  (Eq. 3) -> allocation per source; payloads (or ``None`` for a missing source) -> spectra of
  every microphone -> audio.

Frames: a signal is framed once with ``torch.stft(center=True)`` and cut into steps
("chunks" on the wire) of ``frames_per_step = G n_v`` frames; step ``t`` holds frames
``[t G n_v, (t + 1) G n_v)``, that is ``n_v`` latent vectors of ``G`` frames per source. An
allocation ``k_s`` holds for every vector of the step, so a payload carries ``n_v k_s``
coefficients.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch

from shared.checkpoint import load_checkpoint, save_checkpoint
from shared.coding import CoefficientCoder
from shared.errors import CheckpointError
from shared.models.architectures import CODEC_LAYOUT, DistributedAutoencoder, ModelConfig
from shared.ndpca import SourceBasis, allocate
from shared.rate import RateConfig, budget_bits, budget_coefficients, split_bits
from shared.stft import from_channels, get_preset, istft, stft, to_channels

CHECKPOINT_KIND = "codec"


@dataclass
class Plan:
    """One step's budget and allocation (receiver side)."""

    capacity_bps: float
    budget_coefficients: int
    budget_bits: int
    allocation: list[int]
    bits_per_source: list[int]

    def as_dict(self) -> dict[str, Any]:
        return {
            "capacity_bps": self.capacity_bps,
            "budget_coefficients": self.budget_coefficients,
            "budget_bits": self.budget_bits,
            "allocation": list(self.allocation),
            "bits_per_source": list(self.bits_per_source),
        }


@dataclass
class EncodedChunk:
    """What an edge sends for one chunk: ``k`` components of each vector in ``payload``, and
    ``crc``, the CRC-32 of the indices it codes (:func:`shared.coding.indices_crc`)."""

    payload: bytes
    k: int
    k_allocated: int
    crc: int
    bits: int = field(init=False)

    def __post_init__(self) -> None:
        self.bits = 8 * len(self.payload)


class Codec:
    """A loaded codec. Build with :meth:`load` (or :meth:`from_parts` in training)."""

    def __init__(
        self,
        model: DistributedAutoencoder,
        bases: Sequence[SourceBasis],
        rate: RateConfig | None = None,
        allocation_rule: str | None = None,
        header: dict[str, Any] | None = None,
        device: str | torch.device = "cpu",
    ) -> None:
        self.device = torch.device(device)
        self.model = model.to(self.device).eval()
        self.cfg: ModelConfig = model.cfg
        self.spec = self.cfg.spec()
        self.bases = [b.to(self.device) for b in bases]
        self.rate = rate or RateConfig(chunk_seconds=self.chunk_seconds)
        self.allocation_rule = allocation_rule or self.spec.allocation
        self.coder = CoefficientCoder(self.rate.quant_step)
        self.header = header or {}

    # ------------------------------------------------------------------ properties
    @property
    def source_weights(self) -> list[float]:
        """Each source's task weight in the NDPCA allocation (from the model config)."""
        return self.cfg.weights

    @property
    def preset(self):
        return get_preset(self.cfg.stft)

    @property
    def sample_rate(self) -> int:
        return self.preset.sample_rate

    @property
    def n_sources(self) -> int:
        return len(self.bases)

    @property
    def mic_groups(self) -> list[list[int]]:
        return self.cfg.mic_groups

    @property
    def latent_sizes(self) -> list[int]:
        return [b.dim for b in self.bases]

    @property
    def frames_per_step(self) -> int:
        return self.cfg.frames_per_step

    @property
    def chunk_samples(self) -> int:
        """Samples per streaming step (``frames_per_step * hop``)."""
        return self.cfg.frames_per_step * self.preset.hop

    @property
    def chunk_seconds(self) -> float:
        return self.chunk_samples / self.preset.sample_rate

    @property
    def sha256(self) -> str:
        return str(self.header.get("sha256", ""))

    # ------------------------------------------------------------------ persistence
    @classmethod
    def load(
        cls,
        path: str | Path,
        device: str | torch.device = "cpu",
        expect_arch: str | None = None,
        rate: RateConfig | None = None,
        allocation_rule: str | None = None,
    ) -> Codec:
        """Load a codec checkpoint; ``expect_arch`` guards against the wrong architecture."""
        ckpt = load_checkpoint(path, expect_kind=CHECKPOINT_KIND)
        head = ckpt.header
        check_layout(path, head)
        try:
            cfg = ModelConfig(**head["model_config"])
        except Exception as exc:
            raise CheckpointError(f"{path}: model config invalid ({exc}); re-train") from None
        if expect_arch is not None and cfg.arch != expect_arch:
            raise CheckpointError(
                f"{path} holds architecture {cfg.arch!r}, expected {expect_arch!r}; pass the "
                f"checkpoint trained for {expect_arch!r}"
            )
        model = DistributedAutoencoder(cfg)
        state = {k[len("model.") :]: v.float() for k, v in ckpt.tensors.items() if k.startswith("model.")}
        try:
            model.load_state_dict(state)
        except RuntimeError as exc:
            raise CheckpointError(f"{path}: weights do not fit {cfg.arch} ({exc})") from None
        bases = []
        for s in range(cfg.spec().n_encoders):
            try:
                bases.append(
                    SourceBasis(*(ckpt.tensors[f"ndpca.{s}.{n}"].float() for n in _BASIS_FIELDS))
                )
            except KeyError:
                raise CheckpointError(
                    f"{path} has no NDPCA basis for source {s}; it was saved before the bases "
                    "were fitted. Run `ndpca train` to completion"
                ) from None
        if rate is None and "rate" in head:
            rate = RateConfig(**head["rate"])
        return cls(model, bases, rate, allocation_rule, head, device)

    def save(self, path: str | Path, extra_header: dict[str, Any] | None = None,
             weights_dtype: torch.dtype = torch.float32, bases_dtype: torch.dtype = torch.float32) -> str:
        """Write this codec to ``path``; returns the content hash.

        ``weights_dtype`` stores the model's tensors, ``bases_dtype`` the NDPCA basis matrices
        (means, singular values and standard deviations stay float32); the in-memory bases are
        rounded to ``bases_dtype`` too (:meth:`round_bases`), so that this codec and the one
        loaded from the file code alike."""
        if bases_dtype != torch.float32:
            self.round_bases(bases_dtype)
        header = {
            "kind": CHECKPOINT_KIND,
            "codec_layout": CODEC_LAYOUT,
            "arch": self.cfg.arch,
            "model_config": self.cfg.model_dump(),
            "stft": self.cfg.stft,
            "sample_rate": self.sample_rate,
            "rate": self.rate.__dict__,
            "weights_dtype": str(weights_dtype).replace("torch.", ""),
            "bases_dtype": str(bases_dtype).replace("torch.", ""),
        }
        header.update(extra_header or {})
        tensors = {f"model.{k}": v.to(weights_dtype) for k, v in self.model.state_dict().items()}
        for s, b in enumerate(self.bases):
            for n, t in zip(_BASIS_FIELDS, b.tensors()):
                tensors[f"ndpca.{s}.{n}"] = t.to(bases_dtype) if n == "basis" else t
        digest = save_checkpoint(path, header, tensors)
        self.header = dict(header, sha256=digest)
        return digest

    def round_bases(self, dtype: torch.dtype) -> None:
        """Round every basis matrix to ``dtype`` and back (what :meth:`save` stores)."""
        self.bases = [replace(b, basis=b.basis.to(dtype).float()) for b in self.bases]

    # ------------------------------------------------------------------ spectra
    def spectra(self, audio: torch.Tensor) -> torch.Tensor:
        """Microphone audio ``[M, N]`` (or ``[B, M, N]``) -> channels ``[..., M, 2, F, T]``."""
        return to_channels(stft(audio.to(self.device), self.preset), self.cfg.representation)

    def to_audio(self, channels: torch.Tensor, length: int) -> torch.Tensor:
        """Channels ``[..., M, 2, F, T]`` -> audio ``[..., M, length]``."""
        return istft(from_channels(channels, self.cfg.representation), self.preset, length)

    def chunk(self, channels: torch.Tensor) -> torch.Tensor:
        """``[M, 2, F, T]`` -> steps ``[n_steps, M, 2, F, frames_per_step]``, zero-padding the
        last step."""
        t = channels.shape[-1]
        per = self.frames_per_step
        n = -(-t // per)
        x = torch.nn.functional.pad(channels, (0, n * per - t))
        return x.reshape(*x.shape[:-1], n, per).movedim(-2, 0)

    @staticmethod
    def unchunk(chunks: torch.Tensor, n_frames: int) -> torch.Tensor:
        """Inverse of :meth:`chunk`: ``[n, M, 2, F, frames_per_step]`` -> ``[M, 2, F, n_frames]``."""
        x = chunks.movedim(0, -2)
        return x.reshape(*x.shape[:-2], -1)[..., :n_frames]

    # ------------------------------------------------------------------ edge side
    @torch.no_grad()
    def source_coefficients(self, s: int, chunk: torch.Tensor) -> torch.Tensor:
        """Source ``s``'s microphones ``[B, M_s, 2, F, frames_per_step]`` -> normalised
        coefficients ``[B, vectors_per_step, d_s]``."""
        z = self.model.encode_source(s, chunk.to(self.device))
        return self.bases[s].project(z, self.bases[s].dim)

    def encode_payload(self, coeffs: np.ndarray | torch.Tensor, k: int, budget_bits: int | None) -> EncodedChunk:
        """Keep the first ``k`` components of every vector of one step (``[n_v, d_s]``) and code
        them within ``budget_bits``; if they do not fit, fewer components (the same number
        for every vector) are sent."""
        c = np.asarray(coeffs.detach().cpu() if isinstance(coeffs, torch.Tensor) else coeffs)
        c = np.atleast_2d(c)[:, :k]
        if budget_bits is None:
            return EncodedChunk(self.coder.encode(c), c.shape[1], k, self.coder.checksum(c))
        payload, sent = self.coder.encode_within(c, budget_bits)
        return EncodedChunk(payload, sent, k, self.coder.checksum(c[:, :sent]))

    # ------------------------------------------------------------------ receiver side
    def plan(self, capacity_bps: float, rule: str | None = None) -> Plan:
        """Capacity -> budget (Eq. 3, coefficients per step) -> allocation -> bits per source.

        A step holds ``n_v`` vectors per source and an allocation ``k_s`` applies to each of
        them, so the allocation shares ``floor(L / n_v)`` components: ``sum_s k_s n_v <= L``.
        """
        n_v = self.cfg.vectors_per_step
        total = budget_coefficients(capacity_bps, self.rate, n_v * sum(self.latent_sizes))
        bits = budget_bits(capacity_bps, self.rate)
        alloc = allocate(self.bases, total // n_v, rule or self.allocation_rule, self.source_weights)
        return Plan(float(capacity_bps), total, bits, alloc, split_bits(bits, alloc))

    def plan_for_components(self, per_vector: int, rule: str | None = None) -> Plan:
        """The plan whose allocation shares exactly ``per_vector`` components per vector
        (bandwidth sweeps: ``per_vector`` is the paper's L for one latent vector)."""
        total = per_vector * self.cfg.vectors_per_step
        capacity = total * self.rate.bits_per_coefficient / self.rate.chunk_seconds
        # guard against float rounding just under the integer
        capacity *= 1 + 1e-9
        return self.plan(capacity, rule)

    def decode_payload(self, payload: bytes, k: int, crc: int | None = None) -> np.ndarray:
        """One source's payload of one step -> dequantised coefficients ``[n_v, k]``.

        Raises ValueError if the payload does not code exactly ``k n_v`` indices or (``crc``
        given) their CRC-32 differs."""
        return self.coder.decode(payload, k, self.cfg.vectors_per_step, crc)

    def decode_payloads(self, payloads: Sequence[tuple[bytes, int] | None]) -> torch.Tensor:
        """Per source ``(payload, k)`` or ``None`` (missing: mean) -> ``[M, 2, F, frames_per_step]``."""
        if len(payloads) != self.n_sources:
            raise ValueError(f"expected {self.n_sources} sources, got {len(payloads)}")
        n_v = self.cfg.vectors_per_step
        coeffs = []
        for item in payloads:
            if item is None or item[1] == 0:
                coeffs.append(torch.zeros(1, n_v, 0, device=self.device))
            else:
                payload, k = item
                coeffs.append(torch.from_numpy(self.decode_payload(payload, k)).to(self.device)[None])
        return self.decode_coefficients(coeffs)[0]

    @torch.no_grad()
    def decode_coefficients(self, coeffs: Sequence[torch.Tensor],
                            kept: torch.Tensor | None = None) -> torch.Tensor:
        """Per source normalised coefficients ``[B, n, k_s]`` -> spectra ``[B, M, 2, F, n G]``.

        ``kept``: ``[B, S]`` components each row really received per source, where rows of
        a batch were zero-padded to a common ``k_s`` (default: ``k_s`` for every row). A
        decoder that sees the allocation (``decoder_rate_input``) is told these."""
        batch = max(c.shape[0] for c in coeffs)
        latents = []
        for b, c in zip(self.bases, coeffs):
            c = c.to(self.device).float()
            if c.shape[0] != batch:
                c = c.expand(batch, -1, -1)
            latents.append(b.reconstruct(c, c.shape[-1]))
        return self.model.decode(latents, [int(c.shape[-1]) for c in coeffs] if kept is None else kept)

    # ------------------------------------------------------------------ offline
    @torch.no_grad()
    def signal_coefficients(self, mics: torch.Tensor) -> tuple[list[torch.Tensor], int]:
        """All coefficients of a whole signal ``[M, N]``: per source ``[n_steps, n_v, d_s]``,
        and the number of STFT frames (to undo the step padding)."""
        spec = self.spectra(mics)
        chunks = self.chunk(spec)
        coeffs = [self.source_coefficients(s, chunks[:, g]) for s, g in enumerate(self.mic_groups)]
        return coeffs, spec.shape[-1]

    @torch.no_grad()
    def code_signal(
        self,
        mics: torch.Tensor,
        per_vector: int,
        rule: str | None = None,
        quantise: bool = True,
        coefficients: tuple[list[torch.Tensor], int] | None = None,
    ) -> tuple[torch.Tensor, dict[str, Any]]:
        """Code a whole multi-microphone signal with ``per_vector`` components per latent vector
        shared by the sources, step by step, exactly as edges and receiver do (allocation,
        quantisation, coding within each source's share of the step's bits).

        Args:
            mics: ``[M, N]`` audio.
            coefficients: the output of :meth:`signal_coefficients` for ``mics`` (reused
                across budgets by sweeps).
        Returns:
            decoded audio ``[M, N]`` and stats (bits per step, coefficients sent, the measured
            bit rate, and the decoded spectra ``[M, 2, F, T]`` before the inverse STFT).
        """
        n = mics.shape[-1]
        full_coeffs, n_frames = coefficients or self.signal_coefficients(mics)
        plan = self.plan_for_components(per_vector, rule)
        n_steps = full_coeffs[0].shape[0]
        coeffs, bits, sent = [], 0, 0
        kept = torch.zeros(n_steps, len(full_coeffs), dtype=torch.long)  # components sent per step
        for s, full in enumerate(full_coeffs):
            k = plan.allocation[s]
            if not quantise:
                kept[:, s] = k
                coeffs.append(full[..., :k])
                bits += 32 * full[..., :k].numel()
                sent += full[..., :k].numel()
                continue
            rows = torch.zeros(n_steps, full.shape[1], k, device=self.device)
            for i, step in enumerate(full[..., :k].cpu().numpy()):
                enc = self.encode_payload(step, k, plan.bits_per_source[s])
                bits += enc.bits
                sent += enc.k * step.shape[0]
                kept[i, s] = enc.k
                q = self.coder.dequantise(self.coder.quantise(step[:, : enc.k]))
                rows[i, :, : enc.k] = torch.from_numpy(q)
            coeffs.append(rows)
        out = torch.cat([self.decode_coefficients([c[i : i + 64] for c in coeffs], kept[i : i + 64])
                         for i in range(0, n_steps, 64)])
        decoded_spectra = self.unchunk(out, n_frames)
        audio = self.to_audio(decoded_spectra, n)
        stats = {
            "budget_coefficients": plan.budget_coefficients,
            "allocation": plan.allocation,
            "bits_per_chunk": bits / n_steps,
            "coefficients_per_chunk": sent / n_steps,
            "bitrate_bps": bits / n_steps / self.chunk_seconds,
            "budget_bits_per_chunk": plan.budget_bits,
            "spectra": decoded_spectra,
        }
        return audio, stats


_BASIS_FIELDS = ("mean", "basis", "singular_values", "std")


def check_layout(path: str | Path, header: dict[str, Any]) -> None:
    """Refuse a codec checkpoint of another latent layout (the old chunk-latent codec), naming
    the command that makes a new one. Raises CheckpointError."""
    if header.get("codec_layout") != CODEC_LAYOUT:
        arch = header.get("arch", "ndpca-e4d1")
        raise CheckpointError(
            f"{path} holds a codec of the old chunk-latent layout (one vector per 256 ms "
            f"chunk, layout {header.get('codec_layout', 1)}; this version reads layout "
            f"{CODEC_LAYOUT}, frame-rate latents). Make a new one with `ndpca train "
            f"--config training/configs/{arch}.toml --ship checkpoints` or use the shipped "
            "checkpoints/ of this version"
        )
