"""Reverse-diffusion samplers of the enhancer: settings, named presets and the sampling loop.

Two modes (:class:`SamplerConfig`): ``pc``, the predictor-corrector sampler of SGMSE+ over the
whole reverse process from the prior at ``t = 1``, and ``fast``, the real-time mode that starts
part-way at ``t_start < 1`` from the degraded input (as in StoRM) with a few steps. Named
presets (:data:`SAMPLER_PRESETS`): ``quality``, ``fast``, ``realtime``, ``predictive``.

Time grid: ``N`` predictor steps of size ``dt = (t_start - t_eps) / N`` at times
``t_i = t_start - i dt``, ``i = 0 .. N-1``; the state after the last step is at ``t_eps``.
Each step costs ``1 + corrector_steps`` network evaluations. With ``denoise_final`` the last
step returns the posterior mean (Tweedie's formula) computed from the score it has already
evaluated at ``t_{N-1}``, instead of taking the predictor step, so no evaluation is added.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any

import torch
from torch import Tensor

from shared.enhancer._util import _bcast, _checked_keys
from shared.enhancer.sde import OUVESDE
from shared.errors import ConfigError

#: ``score(x, y, t)``: ``x``, ``y`` ``[B, 2, F, T]``, ``t`` ``[B]`` -> the score ``[B, 2, F, T]``.
ScoreFn = Callable[[Tensor, Tensor, Tensor], Tensor]


@dataclass(frozen=True)
class SamplerConfig:
    """Settings of the reverse-diffusion sampler (stored in every enhancer checkpoint).

    Attributes:
        mode: ``pc``: predictor-corrector over the whole reverse process, from the prior at
            ``t_start = 1``; ``fast``: start part-way, at ``t_start < 1``, from
            ``y + std(t_start) z`` (the degraded input as the predictive estimate, as in
            StoRM), with few steps; ``predictive``: the enhancer's predictive network alone
            (one evaluation, no diffusion; only for checkpoints that have one).
        steps: reverse-diffusion predictor steps N.
        corrector_steps: annealed Langevin steps per predictor step (0 = none).
        snr: the corrector's target signal-to-noise ratio.
        t_start: start time of the reverse process.
        denoise_final: the last step returns the posterior mean (Tweedie) instead of a noisy
            sample.
        seed: seed of the sampling noise (deterministic output when not None).
        predictor: ``reverse_diffusion`` (the reverse SDE, noise injected every step) or
            ``probability_flow`` (the deterministic ODE ``dx = [f - g^2 s / 2] dt``: with few
            steps it avoids the large noise of long steps).
        start_noise: multiplier of ``std(t_start) z`` at the start (0: start exactly at y).
    """

    mode: str = "pc"
    steps: int = 30
    corrector_steps: int = 1
    snr: float = 0.5
    t_start: float = 1.0
    denoise_final: bool = True
    seed: int | None = 0
    predictor: str = "reverse_diffusion"
    start_noise: float = 1.0

    def __post_init__(self) -> None:
        problems = []
        if self.mode not in SAMPLER_MODES:
            problems.append(f"mode {self.mode!r} is not one of {SAMPLER_MODES}")
        elif self.mode == "pc" and self.t_start != 1.0:
            problems.append(
                f"mode 'pc' runs the whole reverse process from t_start = 1, got {self.t_start}; "
                "use mode 'fast' to start part-way"
            )
        if not (isinstance(self.steps, int) and self.steps >= 1):
            problems.append(f"steps must be an integer >= 1, got {self.steps!r}")
        if not (isinstance(self.corrector_steps, int) and self.corrector_steps >= 0):
            problems.append(f"corrector_steps must be an integer >= 0, got {self.corrector_steps!r}")
        if not self.snr > 0:
            problems.append(f"snr must be > 0, got {self.snr}")
        if not 0 < self.t_start <= 1:
            problems.append(f"t_start must be in (0, 1], got {self.t_start}")
        if self.predictor not in PREDICTORS:
            problems.append(f"predictor {self.predictor!r} is not one of {PREDICTORS}")
        if not self.start_noise >= 0:
            problems.append(f"start_noise must be >= 0, got {self.start_noise}")
        if self.seed is not None and not isinstance(self.seed, int):
            problems.append(f"seed must be an integer or null, got {self.seed!r}")
        if problems:
            raise ConfigError("invalid sampler settings: " + "; ".join(problems))

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)

    @property
    def evaluations(self) -> int:
        """Network evaluations per enhancement."""
        if self.mode == "predictive":
            return 1
        return self.steps * (1 + self.corrector_steps)


SAMPLER_MODES = ("pc", "fast", "predictive")
PREDICTORS = ("reverse_diffusion", "probability_flow")

#: ``quality``: the paper's reference (N 30, one corrector step, snr 0.5): 60 evaluations.
#: ``fast``: 4 probability-flow steps from y at t = 0.5: 4 evaluations. ``realtime``: 2 steps
#: from y at t = 0.35: 2 evaluations. With a handful of steps the deterministic ODE started at
#: the degraded input beat the noisy reverse SDE clearly on validation rooms (PSNR 16.7 and
#: 16.4 dB against 15.8 for 2-4 reverse-diffusion steps and 16.0 for ``quality``; input 14.0).
SAMPLER_PRESETS: dict[str, SamplerConfig] = {
    "quality": SamplerConfig(),
    "fast": SamplerConfig(mode="fast", steps=4, corrector_steps=0, t_start=0.5,
                          predictor="probability_flow", start_noise=0.0),
    "realtime": SamplerConfig(mode="fast", steps=2, corrector_steps=0, t_start=0.35,
                              predictor="probability_flow", start_noise=0.0),
    "predictive": SamplerConfig(mode="predictive", steps=1, corrector_steps=0, t_start=1.0),
}


def sampler_from_name(name_or_cfg: str | dict[str, Any] | SamplerConfig) -> SamplerConfig:
    """A sampler config from a preset name (``quality``, ``fast``, ``realtime``), a dict of
    :class:`SamplerConfig` fields (optionally with ``preset``: a preset whose fields it
    overrides), or a :class:`SamplerConfig` (returned as is).

    Raises:
        ConfigError: unknown preset name, unknown key, or invalid value.
    """
    if isinstance(name_or_cfg, SamplerConfig):
        return name_or_cfg
    if isinstance(name_or_cfg, str):
        try:
            return SAMPLER_PRESETS[name_or_cfg]
        except KeyError:
            raise ConfigError(
                f"unknown sampler preset {name_or_cfg!r}; choose one of {sorted(SAMPLER_PRESETS)} "
                "or give the settings as a table"
            ) from None
    if isinstance(name_or_cfg, dict):
        d = dict(name_or_cfg)
        base = SamplerConfig()
        if "preset" in d:
            base = sampler_from_name(str(d.pop("preset")))
        d = _checked_keys(SamplerConfig, d, "sampler settings")
        try:
            return SamplerConfig(**{**asdict(base), **d})
        except TypeError as exc:
            raise ConfigError(f"sampler settings: {exc}") from None
    raise ConfigError(
        f"sampler must be a preset name or a table of settings, got {type(name_or_cfg).__name__}"
    )



def reverse_sample(
    score: ScoreFn,
    sde: OUVESDE,
    y: Tensor,
    cfg: SamplerConfig,
    generator: torch.Generator | None = None,
) -> Tensor:
    """Run the reverse process from ``y`` (the sampler of :meth:`ScoreEnhancer.enhance`).

    Args:
        score: the score function (no gradient is taken; call under ``torch.no_grad``).
        sde: the SDE the score belongs to.
        y: degraded spectra ``[B, 2, F, T]``, on the score's device and dtype.
        cfg: sampler settings.
        generator: noise generator; default: seeded with ``cfg.seed`` (or the global
            generator when the seed is None).
    Returns:
        ``[B, 2, F, T]``, the estimate of the clean spectra.

    Per step ``i`` (time ``t``, ``dt = (t_start - t_eps) / N``): ``corrector_steps``
    annealed Langevin steps ``x += eps s + sqrt(2 eps) z``, ``eps = 2 (snr std(t))^2``,
    then the predictor: reverse diffusion ``x_mean = x - (theta (y - x) - g^2 s) dt``,
    ``x = x_mean + g sqrt(dt) z`` (the last step returns ``x_mean``), or the probability-flow
    ODE ``x = x - (theta (y - x) - g^2 s / 2) dt``; with ``denoise_final`` the last step
    returns the posterior mean at ``t`` instead.

    Raises:
        ConfigError: ``cfg.t_start`` does not exceed the SDE's ``t_eps``.
    """
    eps_t = sde.t_eps
    if cfg.t_start <= eps_t:
        raise ConfigError(f"sampler t_start {cfg.t_start} must exceed the SDE's t_eps {eps_t}")
    if generator is None and cfg.seed is not None:
        generator = torch.Generator(device=y.device).manual_seed(cfg.seed)

    def noise() -> Tensor:
        return torch.randn(y.shape, generator=generator, device=y.device, dtype=y.dtype)

    b = y.shape[0]
    n = cfg.steps
    dt = (cfg.t_start - eps_t) / n
    x = y + cfg.start_noise * (sde.prior_sample(y, generator, cfg.t_start) - y)
    ode = cfg.predictor == "probability_flow"
    for i in range(n):
        t = torch.full((b,), cfg.t_start - i * dt, device=y.device, dtype=y.dtype)
        std = _bcast(sde.std(t), y)
        for _ in range(cfg.corrector_steps):
            s = score(x, y, t)
            step = 2 * (cfg.snr * std) ** 2
            x = x + step * s + torch.sqrt(2 * step) * noise()
        s = score(x, y, t)
        if i == n - 1 and cfg.denoise_final:
            a = _bcast(sde.decay(t), y)
            x = (x + std**2 * s - (1 - a) * y) / a
            break
        g = _bcast(sde.g(t), y)
        if ode:
            x = x - (sde.theta * (y - x) - 0.5 * g**2 * s) * dt
            continue
        x_mean = x - (sde.theta * (y - x) - g**2 * s) * dt
        x = x_mean if i == n - 1 else x_mean + g * math.sqrt(dt) * noise()
    return x
