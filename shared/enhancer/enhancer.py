"""The enhancer model: SDE + score network + sampler settings, and its checkpoint files.

:class:`ScoreEnhancer` is what the receiver and the training code use: the score
(:meth:`~ScoreEnhancer.score`), denoising score matching (:meth:`~ScoreEnhancer.dsm_loss`,
paper Eq. 17), the sampler (:meth:`~ScoreEnhancer.enhance`), a differentiable one-step
estimate for codec training (:meth:`~ScoreEnhancer.one_step`) and checkpoint files of kind
``enhancer`` (:meth:`~ScoreEnhancer.save`, :meth:`~ScoreEnhancer.load`), which store the
network config, the SDE, the recommended sampler settings and the STFT preset.
"""

from __future__ import annotations

from dataclasses import asdict
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from shared.checkpoint import load_checkpoint, save_checkpoint
from shared.enhancer._util import _bcast, _checked_keys, _time
from shared.enhancer.samplers import (
    SAMPLER_PRESETS,
    SamplerConfig,
    reverse_sample,
    sampler_from_name,
)
from shared.enhancer.score_net import ScoreNet, ScoreNetConfig
from shared.enhancer.sde import OUVESDE, SDEConfig
from shared.errors import CheckpointError, ConfigError
from shared.stft import REPRESENTATIONS, get_preset

CHECKPOINT_KIND = "enhancer"


class ScoreEnhancer(nn.Module):
    """SDE + score network + default sampler settings + STFT preset/representation names.

    Attributes:
        net: the :class:`ScoreNet`.
        sde: the :class:`OUVESDE`.
        sampler: default :class:`SamplerConfig` of :meth:`enhance`.
        stft, representation: the spectral domain (names of :mod:`shared.stft`).
        header: the checkpoint header after :meth:`save` / :meth:`load`.
    """

    def __init__(
        self,
        net_cfg: ScoreNetConfig,
        sde_cfg: SDEConfig = SDEConfig(),
        sampler: SamplerConfig = SAMPLER_PRESETS["quality"],
        stft: str = "stream",
        representation: str = "complex",
        predictive: bool = False,
    ) -> None:
        super().__init__()
        get_preset(stft)
        if representation not in REPRESENTATIONS:
            raise ValueError(f"unknown representation {representation!r}; choose {REPRESENTATIONS}")
        self.net = ScoreNet(net_cfg)
        # the predictive network (same architecture, x = y, t = 1): a direct estimate of the clean
        # spectra, y plus a correction that starts at zero
        self.predictor = ScoreNet(net_cfg) if predictive else None
        self.sde = OUVESDE(sde_cfg)
        self.sampler = sampler
        self.stft = stft
        self.representation = representation
        self.header: dict[str, Any] = {}

    @property
    def net_cfg(self) -> ScoreNetConfig:
        return self.net.cfg

    @property
    def sde_cfg(self) -> SDEConfig:
        return self.sde.cfg

    @property
    def preset(self):
        return get_preset(self.stft)

    @property
    def sha256(self) -> str:
        return str(self.header.get("sha256", ""))

    # ------------------------------------------------------------------ score and training
    def score(self, x: Tensor, y: Tensor, t: Tensor | float) -> Tensor:
        """Score ``grad_x log p_t(x | y)`` ``[B, 2, F, T]``: the network output / ``std(t)``."""
        t = _time(t, x.shape[0], x)
        return self.net(x, y, t) / _bcast(self.sde.std(t), x)

    def dsm_loss(self, x0: Tensor, y: Tensor, generator: torch.Generator | None = None) -> Tensor:
        """Denoising score matching (paper Eq. 17), a scalar with gradient.

        ``t ~ U[t_eps, 1]``, ``z ~ N(0, I)``, ``x_t = mean(x0, y, t) + std(t) z``;
        loss = mean over elements of ``|std(t) score(x_t, y, t) + z|^2`` (the network output
        is ``std(t) score``, so this is ``|net(x_t, y, t) + z|^2``).
        """
        b = x0.shape[0]
        t = self.sde.t_eps + (1 - self.sde.t_eps) * torch.rand(
            b, generator=generator, device=x0.device, dtype=x0.dtype
        )
        z = torch.randn(x0.shape, generator=generator, device=x0.device, dtype=x0.dtype)
        x_t = self.sde.perturb(x0, y, t, z)
        scaled_score = self.net(x_t, y, t)
        return (scaled_score + z).square().mean()

    def predict(self, y: Tensor) -> Tensor:
        """The predictive network's estimate of the clean spectra ``[B, 2, F, T]``:
        ``y + P(y, y, 1)`` (differentiable).

        Raises:
            ConfigError: this enhancer has no predictive network.
        """
        if self.predictor is None:
            raise ConfigError("this enhancer has no predictive network (train one with train.objective = "
                              "'predictive'); use the samplers quality, fast or realtime")
        return y + self.predictor(y, y, _time(1.0, y.shape[0], y))

    def predictive_loss(self, x0: Tensor, y: Tensor, last_frames: int | None = None) -> Tensor:
        """Regression loss of :meth:`predict`: the mean squared error of the compressed complex
        spectra plus that of their magnitudes (a scalar with gradient). ``last_frames``: count
        only the last frames of each crop, the ones a streaming receiver outputs when it runs
        the network over its context and the newest step."""
        est = self.predict(y)
        if last_frames:
            est, x0 = est[..., -last_frames:], x0[..., -last_frames:]
        return self.regression_loss(est, x0)

    @staticmethod
    def regression_loss(est: Tensor, x0: Tensor) -> Tensor:
        """The mean squared error of compressed complex spectra ``[..., 2, F, T]`` plus that of
        their magnitudes."""
        mag = lambda v: torch.sqrt(v.square().sum(dim=-3) + 1e-8)  # noqa: E731
        return (est - x0).square().mean() + (mag(est) - mag(x0)).square().mean()

    def predict_streaming(self, y: Tensor, window: int, hop: int) -> Tensor:
        """The predictive network as the receiver runs it over a sequence ``[B, 2, F, T]``: on
        every ``window``-frame view ending at ``window, window + hop, ...`` frames, keeping the
        view's last ``hop`` frames (its step; the frames before it are context). Returns
        ``[B, 2, F, T - window + hop]``, the output from frame ``window - hop`` on."""
        views = y.unfold(-1, window, hop)  # [B, 2, F, S, window]
        b, c, f, s, w = views.shape
        est = self.predict(views.permute(0, 3, 1, 2, 4).reshape(b * s, c, f, w))[..., -hop:]
        return est.reshape(b, s, c, f, hop).permute(0, 2, 3, 1, 4).reshape(b, c, f, s * hop)

    def posterior_mean(self, x_t: Tensor, y: Tensor, t: Tensor | float) -> Tensor:
        """Tweedie's estimate of the clean ``x0`` from ``x_t`` at time ``t``:
        ``mean_hat = x_t + std^2 score``, ``x0_hat = (mean_hat - (1 - e^{-theta t}) y) /
        e^{-theta t}``. Differentiable w.r.t. ``x_t``, ``y`` and the network parameters.
        """
        t = _time(t, x_t.shape[0], x_t)
        std = _bcast(self.sde.std(t), x_t)
        a = _bcast(self.sde.decay(t), x_t)
        mean_hat = x_t + std**2 * self.score(x_t, y, t)
        return (mean_hat - (1 - a) * y) / a

    def one_step(self, y: Tensor, t: float = 0.5, noise: Tensor | None = None) -> Tensor:
        """Differentiable one-step enhancement ``[B, 2, F, T]`` -> ``[B, 2, F, T]``:
        ``x_t = y + std(t) noise`` (noise zeros if None), returns
        ``posterior_mean(x_t, y, t)``. Gradients reach ``y`` also when the network's
        parameters are frozen."""
        tt = _time(t, y.shape[0], y)
        x_t = y if noise is None else y + _bcast(self.sde.std(tt), y) * noise
        return self.posterior_mean(x_t, y, tt)

    # ------------------------------------------------------------------ sampling
    def evaluations(self, sampler: SamplerConfig | None = None) -> int:
        """Network evaluations per :meth:`enhance` call (per batch)."""
        return (sampler or self.sampler).evaluations

    @torch.no_grad()
    def enhance(
        self,
        y: Tensor,
        sampler: SamplerConfig | None = None,
        generator: torch.Generator | None = None,
    ) -> Tensor:
        """Enhance degraded spectra by reverse diffusion.

        Args:
            y: ``[..., 2, F, T]`` (any leading dims, flattened to a batch).
            sampler: overrides the default :attr:`sampler`.
            generator: noise generator; default: seeded with ``sampler.seed`` (or the global
                generator when the seed is None).
        Returns:
            ``[..., 2, F, T]``, the estimate of the clean spectra.

        The steps are those of :func:`shared.enhancer.samplers.reverse_sample`; the network
        is in eval mode while sampling and its mode is restored afterwards.

        Raises:
            ValueError: ``y`` is not ``[..., 2, F, T]``.
            ConfigError: the sampler's ``t_start`` does not exceed the SDE's ``t_eps``.
        """
        cfg = sampler or self.sampler
        if y.dim() < 3 or y.shape[-3] != 2:
            raise ValueError(f"expected spectra [..., 2, F, T], got shape {tuple(y.shape)}")
        lead = y.shape[:-3]
        param = next(self.net.parameters())
        yb = y.reshape(-1, *y.shape[-3:]).to(device=param.device, dtype=param.dtype)
        was_training = self.training
        self.eval()
        try:
            if cfg.mode == "predictive":
                x = self.predict(yb)
            else:
                x = reverse_sample(self.score, self.sde, yb, cfg, generator)
        finally:
            self.train(was_training)
        return x.reshape(*lead, *x.shape[-3:]).to(y.dtype)

    # ------------------------------------------------------------------ persistence
    def save(self, path: str | Path, extra_header: dict[str, Any] | None = None) -> str:
        """Write this enhancer to ``path`` (tensors ``net.<name>``); returns the content hash."""
        header = {
            "kind": CHECKPOINT_KIND,
            "net_config": self.net_cfg.as_dict(),
            "sde": asdict(self.sde_cfg),
            "sampler": self.sampler.as_dict(),
            "stft": self.stft,
            "representation": self.representation,
            "sample_rate": self.preset.sample_rate,
            "predictive": self.predictor is not None,
        }
        header.update(extra_header or {})
        tensors = {f"net.{k}": v for k, v in self.net.state_dict().items()}
        if self.predictor is not None:
            tensors.update({f"pred.{k}": v for k, v in self.predictor.state_dict().items()})
        digest = save_checkpoint(path, header, tensors)
        self.header = dict(header, sha256=digest)
        return digest

    @classmethod
    def load(
        cls,
        path: str | Path,
        device: str | torch.device = "cpu",
        sampler: SamplerConfig | None = None,
    ) -> ScoreEnhancer:
        """Load an enhancer checkpoint; sampler settings come from the file unless
        ``sampler`` overrides them. The model is returned in eval mode.

        Raises:
            CheckpointError: missing, corrupt, not an enhancer, malformed header, or weights
                that do not fit the stored network config.
        """
        ckpt = load_checkpoint(path, expect_kind=CHECKPOINT_KIND)
        head = ckpt.header
        fix = "re-train the enhancer or pass an enhancer checkpoint written by this release"
        try:
            net_cfg = ScoreNetConfig.from_dict(head["net_config"])
            sde_cfg = SDEConfig(**_checked_keys(SDEConfig, head["sde"], "SDE config"))
            stored_sampler = sampler_from_name(dict(head["sampler"]))
            stft = str(head["stft"])
            representation = str(head["representation"])
            enhancer = cls(net_cfg, sde_cfg, sampler or stored_sampler, stft, representation,
                           predictive=bool(head.get("predictive", False)))
        except (KeyError, TypeError, ValueError, ConfigError) as exc:
            what = f"missing header field {exc}" if isinstance(exc, KeyError) else str(exc)
            raise CheckpointError(f"{path}: enhancer header is malformed ({what}); {fix}") from None
        state = {k[len("net.") :]: v.float() for k, v in ckpt.tensors.items() if k.startswith("net.")}
        pred = {k[len("pred.") :]: v.float() for k, v in ckpt.tensors.items() if k.startswith("pred.")}
        try:
            enhancer.net.load_state_dict(state)
            if enhancer.predictor is not None:
                enhancer.predictor.load_state_dict(pred)
        except RuntimeError as exc:
            raise CheckpointError(
                f"{path}: weights do not fit the stored score network config ({exc}); {fix}"
            ) from None
        enhancer.header = dict(head)
        return enhancer.to(device).eval()
