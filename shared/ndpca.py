"""NDPCA: per-source PCA bases, bandwidth allocation, projection and reconstruction.

After training (Li et al., NeurIPS 2023): encode the training set, mean-centre each source's
latents, run a separate SVD per source and keep ``V_s`` and ``mu_s`` frozen at both ends.
A source allocated ``k_s`` components sends ``c_s = V_s[:, :k_s]^T (z_s - mu_s)``; the
receiver rebuilds ``z^_s = mu_s + V_s[:, :k_s] c_s``; a source given no component is
reconstructed as its mean. Coefficients travel normalised by their training-set standard
deviation (``s_j / sqrt(N - 1)``) so that every coefficient has unit variance (sigma^2 = 1 in
the rate-distortion budget).

The *identity* projection (naive baselines) uses the raw latent dimensions in their own
order, centred and normalised the same way.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

from shared import steps
from shared.rate import allocate_ndpca, allocate_uniform


@dataclass
class SourceBasis:
    """Frozen projection of one source.

    Attributes:
        mean: ``[d]`` training-set mean of the latent.
        basis: ``[d, d]`` orthonormal columns (principal directions, or the identity).
        singular_values: ``[d]`` descending for PCA (for identity: in dimension order).
        std: ``[d]`` standard deviation of each coefficient on the training set.
    """

    mean: torch.Tensor
    basis: torch.Tensor
    singular_values: torch.Tensor
    std: torch.Tensor

    @property
    def dim(self) -> int:
        return int(self.mean.numel())

    def to(self, device: torch.device | str) -> SourceBasis:
        return SourceBasis(*(t.to(device) for t in self.tensors()))

    def tensors(self) -> tuple[torch.Tensor, ...]:
        return (self.mean, self.basis, self.singular_values, self.std)

    def project(self, z: torch.Tensor, k: int) -> torch.Tensor:
        """Normalised coefficients of the first ``k`` components: ``[..., d] -> [..., k]``."""
        c = (z - self.mean) @ self.basis[:, :k]
        return c / self.std[:k]

    def reconstruct(self, coeffs: torch.Tensor, k: int | None = None) -> torch.Tensor:
        """Latent from normalised coefficients ``[..., k]`` -> ``[..., d]`` (k = 0: the mean)."""
        k = coeffs.shape[-1] if k is None else k
        if k == 0:
            return self.mean.expand(*coeffs.shape[:-1], -1).clone()
        return self.mean + (coeffs[..., :k] * self.std[:k]) @ self.basis[:, :k].T


def fit_basis(latents: torch.Tensor, projection: str = "pca", eps: float = 1e-6) -> SourceBasis:
    """Fit a source's basis from its training-set latents ``[N, d]`` (float64 internally)."""
    z = latents.detach().to(torch.float64)
    n, d = z.shape
    if n < 2:
        raise ValueError("need at least two latent vectors to fit a basis")
    mean = z.mean(0)
    zc = z - mean
    if projection == "pca":
        # eigen-decomposition of Z_c^T Z_c: the right singular vectors and squared singular
        # values of Z_c, at a cost independent of N
        evals, evecs = torch.linalg.eigh(zc.T @ zc)
        basis = evecs.flip(1)  # [d, d], descending
        sv = evals.flip(0).clamp_min(0).sqrt()
        # sign convention: largest entry of each direction positive (deterministic bases)
        signs = torch.sign(basis[basis.abs().argmax(0), torch.arange(d)])
        basis = basis * torch.where(signs == 0, torch.ones_like(signs), signs)
    elif projection == "identity":
        basis = torch.eye(d, dtype=torch.float64)
        sv = zc.norm(dim=0)
    else:
        raise ValueError(f"unknown projection {projection!r}; choose 'pca' or 'identity'")
    std = (sv / max(1.0, (n - 1) ** 0.5)).clamp_min(eps)
    return SourceBasis(mean.float(), basis.float(), sv.float(), std.float())


ALLOCATION_RULES = ("ndpca", "ndpca-equal", "uniform")


def weighted_singular_values(
    bases: Sequence[SourceBasis], weights: Sequence[float] | None = None
) -> list[np.ndarray]:
    """Each source's singular values times its task weight (the values NDPCA pools)."""
    weights = list(weights) if weights is not None else [1.0] * len(bases)
    if len(weights) != len(bases):
        raise ValueError(f"{len(weights)} source weights for {len(bases)} sources")
    return [b.singular_values.cpu().numpy().astype(np.float64) * float(w)
            for b, w in zip(bases, weights)]


def allocate(bases: Sequence[SourceBasis], total: int, rule: str = "ndpca",
             weights: Sequence[float] | None = None) -> list[int]:
    """Components per source for a budget of ``total`` coefficients.

    ``ndpca`` pools the sources' singular values, each source's multiplied by its task
    weight (``weights``, all 1 when None), and takes the top ``total``; ``ndpca-equal`` pools
    them unweighted (the allocation of Li et al. taken literally, whatever the codec's
    weights); ``uniform`` gives each source ``floor(total / S)``, its first components.
    """
    if rule == "ndpca":
        return allocate_ndpca(weighted_singular_values(bases, weights), total)
    if rule == "ndpca-equal":
        return allocate_ndpca(weighted_singular_values(bases), total)
    if rule == "uniform":
        return allocate_uniform([b.dim for b in bases], total)
    raise ValueError(f"unknown allocation rule {rule!r}; choose one of {', '.join(ALLOCATION_RULES)}")


# --------------------------------------------------------------------------- training


def quantisation_noise(coeffs: torch.Tensor, std: torch.Tensor, step: float) -> torch.Tensor:
    """``coeffs`` plus the error of the codec's quantiser, as additive uniform noise.

    On the wire a coefficient is divided by its standard deviation ``std`` and rounded to a
    multiple of ``step`` (Delta = sqrt(12 D)); the rounding error is close to uniform on
    ``[-Delta/2, Delta/2]`` times ``std``. Training with that noise (and a differentiable
    path) lets the decoder learn to live with quantised coefficients. ``step <= 0``: none.
    """
    if step <= 0:
        return coeffs
    noise = (torch.rand_like(coeffs) - 0.5) * step
    return coeffs + noise * std.to(coeffs.dtype)


def water_quantise(coeffs: torch.Tensor, std: np.ndarray, step: float) -> torch.Tensor:
    """``coeffs`` ``[N, k]`` rounded as the wire rounds them under the water profile.

    Each coefficient is divided by its standard deviation ``std`` (``[k]``), rounded to a
    multiple of its water step (:func:`shared.steps.water_grid` for an allocation of ``k``
    with ``sqrt(12 D) = step``) and scaled back. The gradient passes straight through the
    rounding, so the encoder still learns while the decoder sees the values it will receive.
    """
    k = coeffs.shape[1]
    if k == 0 or step <= 0:
        return coeffs
    delta = steps.water_grid(np.asarray(std, dtype=np.float64), k, step) / steps.GRID
    scale = torch.from_numpy(np.asarray(std[:k], dtype=np.float64) * delta).to(coeffs)
    q = torch.round(coeffs.detach() / scale) * scale
    return coeffs + (q - coeffs.detach())


def batch_pca_bottleneck(latents: Sequence[torch.Tensor], total: int,
                         weights: Sequence[float] | None = None,
                         quant_step: float = 0.0, with_k: bool = False, profile: str = "uniform"):
    """NDPCA's training bottleneck: per-batch, per-source PCA and a pooled top-``total`` pick.

    Each source's batch latents ``[B, d_s]`` are centred on the batch mean; an SVD per source
    (of detached latents, so the bases are constants of the step) gives directions and
    singular values; the top ``total`` singular values across sources, each source's
    multiplied by its task weight, decide ``k_s`` (as the receiver allocates); each latent
    is replaced by its projection on its first ``k_s`` directions, with the quantiser's
    error added to the kept coefficients when ``quant_step > 0``: uniform noise of that step
    (``profile="uniform"``) or the water profile's rounding (``profile="water"``,
    :func:`water_quantise`). Gradients flow to the encoders through the projection.
    ``with_k``: also return the ``k_s``.
    """
    if profile not in ("uniform", "water"):
        raise ValueError(f"unknown quantiser profile {profile!r}; choose uniform or water")
    svs, vs, means = [], [], []
    for z in latents:
        mu = z.mean(0, keepdim=True)
        zc = (z - mu).detach().double()
        # right singular vectors and singular values of the centred batch from its d x d
        # Gram matrix (cheaper than an SVD of the [B, d] batch when B >= d)
        evals, evecs = torch.linalg.eigh(zc.T @ zc)
        svs.append(evals.flip(0).clamp_min(0).sqrt().cpu().numpy())
        vs.append(evecs.flip(1).to(z.dtype))
        means.append(mu)
    weights = list(weights) if weights is not None else [1.0] * len(latents)
    ks = allocate_ndpca([sv * w for sv, w in zip(svs, weights)], total)
    out = []
    for z, mu, v, k, sv in zip(latents, means, vs, ks, svs):
        vk = v[:, :k]
        c = (z - mu) @ vk
        if quant_step > 0 and k:
            std = sv[:k] / max(1.0, (z.shape[0] - 1) ** 0.5)
            if profile == "water":
                c = water_quantise(c, np.maximum(std, 1e-12), quant_step)
            else:
                c = quantisation_noise(c, torch.from_numpy(std).to(z.device), quant_step)
        out.append(mu + c @ vk.T)
    return (out, list(ks)) if with_k else out


def batch_truncation_bottleneck(latents: Sequence[torch.Tensor], total: int,
                                quant_step: float = 0.0, with_k: bool = False):
    """The naive baselines' bottleneck: each source keeps its first ``floor(total / S)`` dims.

    Dropped dimensions are replaced by their (detached) batch mean, as the receiver replaces
    them by the training-set mean; kept ones get the quantiser's error when
    ``quant_step > 0`` (relative to each dimension's batch standard deviation). ``with_k``:
    also return the ``k_s``.
    """
    ks = allocate_uniform([z.shape[1] for z in latents], total)
    out = []
    for z, k in zip(latents, ks):
        mask = torch.zeros(z.shape[1], dtype=z.dtype, device=z.device)
        mask[:k] = 1
        kept = z
        if quant_step > 0:
            kept = quantisation_noise(z, z.detach().std(0).clamp_min(1e-6), quant_step)
        out.append(kept * mask + z.mean(0, keepdim=True).detach() * (1 - mask))
    return (out, list(ks)) if with_k else out


def random_bottleneck_size(total_dim: int, generator: torch.Generator | None = None) -> int:
    """k ~ U[8, D/2] (inclusive), NDPCA's training bottleneck size."""
    lo, hi = min(8, total_dim // 2), max(min(8, total_dim // 2), total_dim // 2)
    return int(torch.randint(lo, hi + 1, (1,), generator=generator).item())


def stack_singular_values(bases: Sequence[SourceBasis]) -> np.ndarray:
    """All (source, singular value) pairs, for plots and reports: ``[sum d_s, 2]``."""
    rows = [(s, float(v)) for s, b in enumerate(bases) for v in b.singular_values]
    return np.asarray(rows)
