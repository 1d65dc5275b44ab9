"""Task- and perception-aware terms of codec training (paper sections 4.2-4.3), differentiable.

``L = L_task-agnostic + lambda_task * L_enh + lambda_perc * (L_adv + feat_weight * L_feat)``

* ``L_enh``: the decoder output of the reference microphone goes through the frozen score-based
  enhancer in one differentiable step (noise the decoded spectrogram to diffusion time
  ``t_task``, then take the enhancer's posterior mean, :meth:`ScoreEnhancer.one_step`) and is
  compared with the clean reference using the task-agnostic distortion terms (compressed
  magnitude MSE, complex MSE and the Eq. 13 PSNR, with the same weights as for
  reconstruction). The enhancer's weights are frozen; the gradient flows through it into the
  decoder and every encoder.
* ``L_adv``, ``L_feat``: the MS-STFT discriminator (hinge) and L1 feature matching on the
  decoder output's waveforms (inverse STFT of the decoded spectra) against the input
  microphones' waveforms. The discriminator has its own optimiser and is updated once per
  codec step on detached outputs.

Nothing here calls ``.item()`` or leaves torch on the way to the loss: a test proves that
each term reaches every encoder's parameters.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from shared.enhancer import ScoreEnhancer
from shared.errors import ConfigError
from shared.stft import convert_channels, from_channels, get_preset, istft
from training.config import TaskSection, TrainConfig
from training.losses import complex_mse_loss, mse_loss, psnr_db

REPO = Path(__file__).resolve().parents[1]


def find_enhancer(name: str | None, ckpt_dir: Path = REPO / "checkpoints") -> Path:
    """An enhancer checkpoint: ``name`` as a path, else the shipped ``enhancer-<hash8>.ckpt``."""
    if name:
        p = Path(name)
        if not p.is_file():
            raise ConfigError(f"enhancer checkpoint {p} does not exist; train one with "
                              "`ndpca train-enhancer --config training/configs/enhancer.toml`")
        return p
    from shared.streaming import find_checkpoint

    found = find_checkpoint("enhancer", ckpt_dir)
    if found is None:
        raise ConfigError(f"no enhancer checkpoint in {ckpt_dir}; train one with "
                          f"`ndpca train-enhancer --config training/configs/enhancer.toml --ship {ckpt_dir}` "
                          "or set task.enhancer")
    return found


def waveforms(channels: torch.Tensor, representation: str, preset_name: str) -> torch.Tensor:
    """Channels ``[..., 2, F, T]`` -> waveforms ``[prod(...), (T - 1) * hop]`` (differentiable)."""
    preset = get_preset(preset_name)
    n = (channels.shape[-1] - 1) * preset.hop
    audio = istft(from_channels(channels, representation), preset, n)
    return audio.reshape(-1, n)


def enhancement_terms(enhanced: torch.Tensor, clean: torch.Tensor, weights: dict[str, float]) -> torch.Tensor:
    """The distortion terms of reconstruction, on enhanced vs clean ``[B, 2, F, T]`` (complex)."""
    e, c = enhanced[:, None], clean[:, None]
    total = weights.get("mse", 0.0) * mse_loss(e, c)
    total = total + weights.get("mse_complex", 0.0) * complex_mse_loss(e, c)
    total = total - weights.get("psnr", 0.0) * psnr_db(e, c).mean()
    return total


class TaskAwareObjective:
    """Holds the frozen enhancer and the discriminator; computes the extra loss terms."""

    def __init__(self, cfg: TrainConfig, device: torch.device | str = "cpu",
                 enhancer: ScoreEnhancer | None = None) -> None:
        self.task: TaskSection = cfg.task
        self.model_cfg = cfg.model
        self.weights = cfg.loss.model_dump()
        self.device = torch.device(device)
        if self.task.ref_mic >= cfg.model.num_mics:
            raise ConfigError(f"task.ref_mic {self.task.ref_mic} is not one of the {cfg.model.num_mics} microphones")
        if self.task.perc_mics not in ("all", "ref"):
            raise ConfigError(f"task.perc_mics must be 'all' or 'ref', got {self.task.perc_mics!r}")
        self.enhancer = None
        if self.task.lambda_task > 0:
            self.enhancer = enhancer or ScoreEnhancer.load(find_enhancer(self.task.enhancer))
            if self.enhancer.header.get("front_end", "mic") != "mic":
                raise ConfigError(
                    f"the enhancer {self.task.enhancer or 'checkpoints/enhancer-*.ckpt'} enhances the classical "
                    "stage's output, which is not differentiable; task-aware training needs an enhancer of "
                    "microphone 0 itself: set task.enhancer = \"checkpoints/score/enhancer-3d1cc699.ckpt\" "
                    "or train one with training/configs/enhancer.toml")
            if self.enhancer.stft != cfg.model.stft:
                raise ConfigError(f"the enhancer works on the {self.enhancer.stft!r} STFT, the codec on "
                                  f"{cfg.model.stft!r}; train them on the same preset")
            self.enhancer = self.enhancer.to(self.device).eval()
            self.enhancer.requires_grad_(False)
        self.perceptual = None
        if self.task.lambda_perc > 0:
            from training.perceptual import DiscriminatorConfig, PerceptualLoss

            frames = cfg.model.frames * cfg.train.seq_vectors
            span = (frames - 1) * get_preset(cfg.model.stft).hop
            too_long = [n for n in self.task.disc_n_ffts if n // 2 >= span]
            if too_long:
                raise ConfigError(f"task.disc_n_ffts {too_long} need segments longer than {span} samples "
                                  f"(model.frames x train.seq_vectors = {frames}); use smaller scales")
            self.perceptual = PerceptualLoss(DiscriminatorConfig(n_ffts=tuple(self.task.disc_n_ffts)),
                                             lr=self.task.disc_lr, device=self.device)

    def _perc_channels(self, spectra: torch.Tensor) -> torch.Tensor:
        return spectra if self.task.perc_mics == "all" else spectra[:, self.task.ref_mic : self.task.ref_mic + 1]

    def terms(self, recon: torch.Tensor, inputs: torch.Tensor, clean: torch.Tensor | None,
              generator: torch.Generator | None = None) -> dict[str, torch.Tensor]:
        """``recon``, ``inputs``: ``[B, M, 2, F, T]`` decoded and input spectra; ``clean``:
        ``[B, 2, F, T]`` clean reference channels. Returns ``{"task": ..., "perc": ...}``
        (only the active ones), each a scalar with gradient."""
        rep = self.model_cfg.representation
        out: dict[str, torch.Tensor] = {}
        if self.task.task_batch:
            n = self.task.task_batch
            recon, inputs = recon[:n], inputs[:n]
            clean = None if clean is None else clean[:n]
        if self.enhancer is not None:
            if clean is None:
                raise ValueError("the enhancement term needs the clean reference")
            y = convert_channels(recon[:, self.task.ref_mic], rep)
            noise = torch.randn(y.shape, generator=generator, device="cpu").to(y.device) if generator is not None \
                else torch.randn_like(y)
            enhanced = self.enhancer.one_step(y, self.task.t_task, noise)
            out["task"] = enhancement_terms(enhanced, convert_channels(clean, rep), self.weights)
        if self.perceptual is not None:
            fake = waveforms(self._perc_channels(recon), rep, self.model_cfg.stft)
            real = waveforms(self._perc_channels(inputs), rep, self.model_cfg.stft)
            g = self.perceptual.generator_terms(real, fake)
            out["perc"] = g["adv"] + self.task.feat_weight * g["feat"]
            out["perc_adv"], out["perc_feat"] = g["adv"].detach(), g["feat"].detach()
        return out

    def discriminator_step(self, recon: torch.Tensor, inputs: torch.Tensor) -> dict[str, float]:
        """One discriminator update on the detached decoder output (no-op without lambda_perc)."""
        if self.perceptual is None:
            return {}
        rep = self.model_cfg.representation
        if self.task.task_batch:
            recon, inputs = recon[: self.task.task_batch], inputs[: self.task.task_batch]
        with torch.no_grad():
            fake = waveforms(self._perc_channels(recon.detach()), rep, self.model_cfg.stft)
            real = waveforms(self._perc_channels(inputs), rep, self.model_cfg.stft)
        return self.perceptual.discriminator_step(real, fake)

    def weighted(self, terms: dict[str, torch.Tensor]) -> torch.Tensor | float:
        total: Any = 0.0
        if "task" in terms:
            total = total + self.task.lambda_task * terms["task"]
        if "perc" in terms:
            total = total + self.task.lambda_perc * terms["perc"]
        return total

    def state_dict(self) -> dict[str, Any]:
        return {"perceptual": self.perceptual.state_dict()} if self.perceptual is not None else {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if self.perceptual is not None and "perceptual" in state:
            self.perceptual.load_state_dict(state["perceptual"])
