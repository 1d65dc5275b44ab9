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

from shared import steps
from shared.checkpoint import load_checkpoint, save_checkpoint
from shared.coding import CoefficientCoder, ComponentCoder
from shared.errors import CheckpointError
from shared.models.architectures import CODEC_LAYOUT, DistributedAutoencoder, ModelConfig
from shared.ndpca import ALLOCATION_RULES, SourceBasis, allocate, weighted_singular_values
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
        step_profile: str = steps.DEFAULT_PROFILE,
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
        self.set_step_profile(step_profile)

    def set_step_profile(self, name: str) -> None:
        """Choose the quantiser step profile (:mod:`shared.steps`): ``uniform`` (one step,
        the paper's) or ``water`` (a step per component). Both ends of a session use the
        receiver's (``Welcome.step_profile``)."""
        self.step_profile = steps.check_profile(name)
        self._steps = [steps.SourceSteps(b.std.cpu().numpy(), self.rate.quant_step, name)
                       for b in self.bases]
        self._coders: dict[tuple[int, int], ComponentCoder] = {}
        self._tables: dict[tuple[str, tuple[int, ...]], tuple[np.ndarray, np.ndarray]] = {}

    def coder_for(self, source: int, k_allocated: int) -> CoefficientCoder | ComponentCoder:
        """The quantiser and coder of ``source``'s payload when ``k_allocated`` components
        were allocated to it (the steps of the ``water`` profile depend on that number)."""
        if self.step_profile == "uniform":
            return self.coder
        key = (source, k_allocated)
        coder = self._coders.get(key)
        if coder is None:
            if len(self._coders) > 4096:
                self._coders.clear()
            coder = self._coders[key] = ComponentCoder(self._steps[source].grid(k_allocated))
        return coder

    def component_costs(self, source: int) -> np.ndarray:
        """``[d_s + 1]`` expected bits of one vector of ``source`` with ``k`` components
        allocated, under this codec's step profile."""
        return self._steps[source].costs()

    def _all_costs(self) -> list[np.ndarray]:
        return [self.component_costs(s) for s in range(self.n_sources)]

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
        step_profile: str = steps.DEFAULT_PROFILE,
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
        return cls(model, bases, rate, allocation_rule, head, device, step_profile)

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

    def encode_payload(self, coeffs: np.ndarray | torch.Tensor, k: int, budget_bits: int | None,
                       source: int = 0) -> EncodedChunk:
        """Keep the first ``k`` components of every vector of one step (``[n_v, d_s]``) of
        ``source`` and code them within ``budget_bits``; if they do not fit, fewer components
        (the same number for every vector) are sent, with the steps of ``k``."""
        c = np.asarray(coeffs.detach().cpu() if isinstance(coeffs, torch.Tensor) else coeffs)
        c = np.atleast_2d(c)[:, :k]
        coder = self.coder_for(source, c.shape[1])
        if budget_bits is None:
            return EncodedChunk(coder.encode(c), c.shape[1], k, coder.checksum(c))
        payload, sent = coder.encode_within(c, budget_bits)
        return EncodedChunk(payload, sent, k, coder.checksum(c[:, :sent]))

    # ------------------------------------------------------------------ receiver side
    def plan(self, capacity_bps: float, rule: str | None = None,
             active: Sequence[int] | None = None) -> Plan:
        """Capacity -> budget -> allocation over the ``active`` sources (default all) -> bits
        per source. Inactive sources get no component.

        ``uniform`` profile: Eq. 3 gives ``L`` coefficients per step; a step holds ``n_v``
        vectors per source and an allocation ``k_s`` applies to each of them, so the
        allocation shares ``floor(L / n_v)`` components (``sum_s k_s n_v <= L``), and the
        bits are split in proportion to the components. ``water`` profile: every component
        costs its own expected code length, so the allocation is the largest one of the
        rule's order whose expected bits fit ``floor(C T)`` (:func:`shared.steps.fit_allocation`,
        Eq. 3 with each coefficient's own cost), ``budget_coefficients`` the coefficients it
        buys, and the bits are split in proportion to each source's expected cost.
        """
        rule = rule or self.allocation_rule
        act = sorted(set(range(self.n_sources) if active is None else active))
        n_v = self.cfg.vectors_per_step
        sizes = self.latent_sizes
        bits = budget_bits(capacity_bps, self.rate)
        alloc = [0] * self.n_sources
        if self.step_profile == "uniform":
            total = budget_coefficients(capacity_bps, self.rate, n_v * sum(sizes[s] for s in act))
            if act:
                picked = allocate([self.bases[s] for s in act], total // n_v, rule,
                                  [self.source_weights[s] for s in act])
                for s, k in zip(act, picked):
                    alloc[s] = int(k)
            return Plan(float(capacity_bps), total, bits, alloc, split_bits(bits, alloc))
        if not act:
            return Plan(float(capacity_bps), 0, bits, alloc, [0] * self.n_sources)
        table, row_bits = self._allocation_table(rule, tuple(act))
        row = table[steps.fit_allocation(row_bits, bits)]
        for s, k in zip(act, row.tolist()):
            alloc[s] = int(k)
        return Plan(float(capacity_bps), n_v * sum(alloc), bits, alloc,
                    steps.split_by_cost(bits, steps.allocation_bits(self._all_costs(), alloc, n_v)))

    def _allocation_table(self, rule: str, act: tuple[int, ...]) -> tuple[np.ndarray, np.ndarray]:
        """The allocation of every total over the ``act`` sources by ``rule``, and the
        expected bits of each row's payloads (cached)."""
        key = (rule, act)
        if key not in self._tables:
            if rule == "ndpca":
                values = weighted_singular_values([self.bases[s] for s in act],
                                                  [self.source_weights[s] for s in act])
            elif rule == "ndpca-equal":
                values = weighted_singular_values([self.bases[s] for s in act])
            elif rule == "uniform":
                values = [np.zeros(self.latent_sizes[s]) for s in act]
            else:
                raise ValueError(f"unknown allocation rule {rule!r}; choose one of {', '.join(ALLOCATION_RULES)}")
            ref = [i for i, s in enumerate(act) if s == 0]  # source 0 holds microphone 0, the reference
            table = steps.allocation_table(values, "uniform" if rule == "uniform" else "ndpca",
                                           blocks=True, exempt=ref)
            row_bits = steps.table_bits(table, [self.component_costs(s) for s in act],
                                        self.cfg.vectors_per_step)
            self._tables[key] = (table, row_bits)
        return self._tables[key]

    def plan_for_components(self, per_vector: int, rule: str | None = None) -> Plan:
        """The plan whose allocation shares exactly ``per_vector`` components per vector
        (bandwidth sweeps: ``per_vector`` is the paper's L for one latent vector)."""
        n_v = self.cfg.vectors_per_step
        if self.step_profile == "uniform":
            total = per_vector * n_v
            capacity = total * self.rate.bits_per_coefficient / self.rate.chunk_seconds
            # guard against float rounding just under the integer
            return self.plan(capacity * (1 + 1e-9), rule)
        # water: the row of exactly ``per_vector`` components, at its expected bits
        table, row_bits = self._allocation_table(rule or self.allocation_rule, tuple(range(self.n_sources)))
        row = min(max(per_vector, 0), len(row_bits) - 1)
        alloc = [int(k) for k in table[row]]
        bits = int(row_bits[row])
        return Plan(bits / self.rate.chunk_seconds, n_v * sum(alloc), bits, alloc,
                    steps.split_by_cost(bits, steps.allocation_bits(self._all_costs(), alloc, n_v)))

    def decode_payload(self, payload: bytes, k: int, crc: int | None = None, source: int = 0,
                       k_allocated: int | None = None) -> np.ndarray:
        """One source's payload of one step -> dequantised coefficients ``[n_v, k]``.

        ``k_allocated``: the allocation the edge coded for (the chunk's; default ``k``),
        which sets the steps of the ``water`` profile. Raises ValueError if the payload does
        not code exactly ``k n_v`` indices or (``crc`` given) their CRC-32 differs."""
        k_alloc = k if k_allocated is None else k_allocated
        if k > k_alloc:
            raise ValueError(f"payload claims {k} components but names an allocation of {k_alloc}")
        coder = self.coder_for(source, k_alloc)
        return coder.decode(payload, k, self.cfg.vectors_per_step, crc)

    def decode_payloads(self, payloads: Sequence[tuple | None]) -> torch.Tensor:
        """Per source ``(payload, k)``, ``(payload, k, k_allocated)`` or ``None`` (missing:
        mean) -> ``[M, 2, F, frames_per_step]``."""
        if len(payloads) != self.n_sources:
            raise ValueError(f"expected {self.n_sources} sources, got {len(payloads)}")
        n_v = self.cfg.vectors_per_step
        coeffs = []
        for s, item in enumerate(payloads):
            if item is None or item[1] == 0:
                coeffs.append(torch.zeros(1, n_v, 0, device=self.device))
            else:
                payload, k, *rest = item
                c = self.decode_payload(payload, k, source=s, k_allocated=rest[0] if rest else None)
                coeffs.append(torch.from_numpy(c).to(self.device)[None])
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
            coder = self.coder_for(s, k)
            for i, step in enumerate(full[..., :k].cpu().numpy()):
                enc = self.encode_payload(step, k, plan.bits_per_source[s], source=s)
                bits += enc.bits
                sent += enc.k * step.shape[0]
                kept[i, s] = enc.k
                q = coder.dequantise(coder.quantise(step[:, : enc.k]))
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
            "step_profile": self.step_profile,
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
