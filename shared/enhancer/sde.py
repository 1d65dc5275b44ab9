"""The Ornstein-Uhlenbeck variance-exploding SDE (OU-VE) of SGMSE+.

``dx = theta (y - x) dt + g(t) dw``: the forward process drifts from the clean spectrogram
``x0`` towards the degraded one ``y`` while adding noise. Its marginal at time ``t`` given
``x0`` is Gaussian with mean ``e^{-theta t} x0 + (1 - e^{-theta t}) y`` and a closed-form
std (:meth:`OUVESDE.std`). Spectra are ``[B, 2, F, T]`` (channels of
:func:`shared.stft.to_channels`); times are ``[B]``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor

from shared.enhancer._util import _bcast
from shared.errors import ConfigError


@dataclass(frozen=True)
class SDEConfig:
    """Parameters of the OU-VE SDE (SGMSE+ defaults).

    Attributes:
        theta: stiffness pulling ``x`` towards ``y``.
        sigma_min, sigma_max: noise scale at ``t = 0`` and ``t = 1``.
        t_eps: smallest diffusion time used in training and sampling.
    """

    theta: float = 1.5
    sigma_min: float = 0.05
    sigma_max: float = 0.5
    t_eps: float = 0.03

    def __post_init__(self) -> None:
        if not (self.theta > 0 and 0 < self.sigma_min < self.sigma_max and 0 < self.t_eps < 1):
            raise ConfigError(
                f"invalid SDE config {self}: need theta > 0, 0 < sigma_min < sigma_max and "
                "0 < t_eps < 1"
            )


class OUVESDE:
    """``dx = theta (y - x) dt + g(t) dw`` with
    ``g(t) = sigma_min (sigma_max / sigma_min)^t sqrt(2 log(sigma_max / sigma_min))``
    (paper Eq. 15).

    All methods take times ``t`` of shape ``[B]`` and broadcast them over ``[B, 2, F, T]``.
    """

    def __init__(self, cfg: SDEConfig = SDEConfig()) -> None:
        self.cfg = cfg
        self.theta = cfg.theta
        self.sigma_min = cfg.sigma_min
        self.sigma_max = cfg.sigma_max
        self.t_eps = cfg.t_eps
        self.logsig = math.log(cfg.sigma_max / cfg.sigma_min)

    def g(self, t: Tensor) -> Tensor:
        """Diffusion coefficient ``g(t)``, shape of ``t``."""
        return self.sigma_min * (self.sigma_max / self.sigma_min) ** t * math.sqrt(2 * self.logsig)

    def decay(self, t: Tensor) -> Tensor:
        """``e^{-theta t}``: the weight of ``x0`` in the marginal mean."""
        return torch.exp(-self.theta * t)

    def mean(self, x0: Tensor, y: Tensor, t: Tensor) -> Tensor:
        """Marginal mean ``e^{-theta t} x0 + (1 - e^{-theta t}) y``."""
        a = _bcast(self.decay(t), x0)
        return a * x0 + (1 - a) * y

    def std(self, t: Tensor) -> Tensor:
        """Marginal std ``sqrt(sigma_min^2 (e^{2 t L} - e^{-2 theta t}) L / (theta + L))``,
        ``L = log(sigma_max / sigma_min)``; the solution of
        ``dVar/dt = -2 theta Var + g(t)^2`` with ``Var(0) = 0``. Shape of ``t``."""
        lam = self.logsig
        var = (
            self.sigma_min**2
            * (torch.exp(2 * t * lam) - torch.exp(-2 * self.theta * t))
            * lam
            / (self.theta + lam)
        )
        return torch.sqrt(var)

    def perturb(self, x0: Tensor, y: Tensor, t: Tensor, noise: Tensor) -> Tensor:
        """A sample of the marginal at ``t``: ``mean(x0, y, t) + std(t) noise``."""
        return self.mean(x0, y, t) + _bcast(self.std(t), x0) * noise

    def prior_sample(
        self, y: Tensor, generator: torch.Generator | None = None, t: float = 1.0
    ) -> Tensor:
        """The sampler's start ``y + std(t) z``, ``z ~ N(0, I)``."""
        z = torch.randn(y.shape, generator=generator, device=y.device, dtype=y.dtype)
        std = self.std(torch.full((y.shape[0],), float(t), device=y.device, dtype=y.dtype))
        return y + _bcast(std, y) * z

