"""Task-agnostic losses of the paper (section 4.1) and the NDPCA nuclear-norm regulariser.

All spectral losses act on the real channels ``[B, M, 2, F, T]`` of the codec's
representation. Every function returns a scalar tensor that carries gradient.
"""

from __future__ import annotations

import functools
import itertools
from collections.abc import Sequence

import numpy as np
import torch

from shared.stft import StftPreset, compressed_magnitude, from_channels, istft

EPS = 1e-8


def mse_loss(recon: torch.Tensor, target: torch.Tensor, representation: str = "complex") -> torch.Tensor:
    """Eq. 10: mean squared error between reconstructed and input (compressed magnitude)
    spectrograms."""
    return torch.mean((compressed_magnitude(recon, representation) - compressed_magnitude(target, representation)) ** 2)


def complex_mse_loss(recon: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Mean squared error on all real channels (for ``complex``: the complex spectrum, phase
    included)."""
    return torch.mean((recon - target) ** 2)


def cosine_loss(latents: Sequence[torch.Tensor]) -> torch.Tensor:
    """Eq. 11: mean absolute cosine similarity between different sources' latents.

    Minimising it discourages sources from sending the same information. Sources of
    different sizes are compared on their common leading dimensions. Zero for one source.
    """
    if len(latents) < 2:
        return latents[0].sum() * 0.0
    terms = []
    for a, b in itertools.combinations(latents, 2):
        d = min(a.shape[1], b.shape[1])
        terms.append(torch.nn.functional.cosine_similarity(a[:, :d], b[:, :d], dim=1).abs().mean())
    return torch.stack(terms).mean()


def spectral_snr_db(recon: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Eq. 12: per example 10 log10(||X||^2 / ||X - X^||^2) in dB, shape ``[B]``."""
    dims = tuple(range(1, target.dim()))
    sig = target.pow(2).sum(dims)
    err = (target - recon).pow(2).sum(dims)
    return 10 * torch.log10((sig + EPS) / (err + EPS))


def psnr_db(
    recon: torch.Tensor, target: torch.Tensor, representation: str = "complex"
) -> torch.Tensor:
    """Eq. 13: PSNR of the compressed magnitude spectrogram, per example ``[B]``.

    ``PSNR = 10 log10(max |X|_c^2 / mean (|X|_c - |X^|_c)^2)`` where ``|X|_c = beta |X|^alpha``
    is the compressed magnitude of the reference and the peak is the reference's maximum
    over all its microphones, bins and frames.
    """
    m_t = compressed_magnitude(target, representation)
    m_r = compressed_magnitude(recon, representation)
    dims = tuple(range(1, m_t.dim()))
    peak = m_t.amax(dims)
    mse = (m_t - m_r).pow(2).mean(dims)
    return 10 * torch.log10((peak.pow(2) + EPS) / (mse + EPS))


def nuclear_norm_loss(latents: Sequence[torch.Tensor]) -> torch.Tensor:
    """NDPCA regulariser: ``||Z_c||_* / ||Z_c||_F / B`` of the centred joint latent ``[B, D]``."""
    z = torch.cat(list(latents), dim=1)
    zc = z - z.mean(0, keepdim=True)
    # singular values from the eigenvalues of the smaller Gram matrix (same values as
    # svdvals, a fraction of the cost); the floor keeps the square root's gradient finite
    gram = zc @ zc.T if zc.shape[0] <= zc.shape[1] else zc.T @ zc
    nuc = torch.linalg.eigvalsh(gram).clamp_min(1e-10).sqrt().sum()
    return nuc / (zc.norm() + EPS) / z.shape[0]


MRSTFT_RESOLUTIONS = ((512, 128), (1024, 256), (256, 64), (128, 32))


def multi_resolution_stft_loss(
    recon: torch.Tensor, target: torch.Tensor, resolutions=MRSTFT_RESOLUTIONS
) -> torch.Tensor:
    """Multi-resolution STFT loss of waveforms ``[..., N]``: per resolution (n_fft, hop), the
    spectral convergence ``||S - S^||_F / ||S||_F`` plus the mean absolute log-magnitude
    difference, averaged over resolutions."""
    x = target.reshape(-1, target.shape[-1])
    y = recon.reshape(-1, recon.shape[-1])
    total = x.new_zeros(())
    for n_fft, hop in resolutions:
        win = torch.hann_window(n_fft, device=x.device)
        sx = torch.stft(x, n_fft, hop, window=win, return_complex=True).abs()
        sy = torch.stft(y, n_fft, hop, window=win, return_complex=True).abs()
        sc = (sx - sy).norm() / (sx.norm() + EPS)
        mag = (torch.log(sx + 1e-5) - torch.log(sy + 1e-5)).abs().mean()
        total = total + sc + mag
    return total / len(resolutions)


@functools.lru_cache(maxsize=8)
def _third_octave_matrix(sample_rate: int, n_fft: int, bands: int, min_freq: float) -> np.ndarray:
    """pystoi's one-third-octave band matrix ``[bands, n_fft // 2 + 1]`` (STOI's bands)."""
    from pystoi.utils import thirdoct

    return thirdoct(sample_rate, n_fft, bands, min_freq)[0]


def third_octave_power(channels: torch.Tensor, preset: StftPreset, bands: int, min_freq: float,
                       representation: str = "complex") -> torch.Tensor:
    """Band powers ``[..., bands, T]`` of spectra ``[..., 2, F, T]`` in one-third-octave bands
    from ``min_freq`` (the linear spectrum's power summed per band)."""
    obm = torch.as_tensor(_third_octave_matrix(preset.sample_rate, preset.n_fft, bands, min_freq),
                          dtype=channels.dtype, device=channels.device)
    return torch.einsum("jf,...ft->...jt", obm, from_channels(channels, representation).abs().square())


def loudness_loss(recon: torch.Tensor, target: torch.Tensor, preset: StftPreset,
                  representation: str = "complex", asymmetry: float = 2.0, bands: int = 21,
                  min_freq: float = 50.0) -> torch.Tensor:
    """An asymmetric loudness error, the way PESQ weighs distortion: band powers of
    one-third-octave bands from ``min_freq`` (pystoi's band matrix) compressed by Zwicker's
    exponent 0.23, the squared difference, with an excess (energy the decoder *added*) counting
    ``asymmetry`` times more than a deficit (4x in the square), normalised by the reference's mean squared
    loudness. Spectra ``[..., 2, F, T]``; a floor 30 dB under each example's mean band power
    keeps near-silent bands from dominating."""
    pt = third_octave_power(target, preset, bands, min_freq, representation)
    floor = 1e-3 * pt.mean(dim=(-2, -1), keepdim=True) + 1e-10
    lt = (pt + floor).pow(0.23)
    d = (third_octave_power(recon, preset, bands, min_freq, representation) + floor).pow(0.23) - lt
    err = (asymmetry * torch.relu(d)).square() + torch.relu(-d).square()
    return err.mean() / lt.square().mean()


def task_agnostic_losses(
    recon: torch.Tensor,
    target: torch.Tensor,
    latents: Sequence[torch.Tensor],
    representation: str = "complex",
    preset: StftPreset | None = None,
) -> dict[str, torch.Tensor]:
    """All terms, keyed like the loss weights of the training config.

    Args:
        recon, target: spectra ``[B, M, 2, F, T]``.
        latents: per source ``[N, d_s]``.
        preset: the STFT preset; with it the decoded and input segments are inverted and
            compared by :func:`multi_resolution_stft_loss` (``mrstft``).
    """
    terms = {
        "mse": mse_loss(recon, target, representation),
        "mse_complex": complex_mse_loss(recon, target),
        "cosine": cosine_loss(latents),
        "spectral_snr": -spectral_snr_db(recon, target).mean(),
        "psnr": -psnr_db(recon, target, representation).mean(),
        "nuclear": nuclear_norm_loss(latents),
    }
    if preset is not None:
        wav_r = istft(from_channels(recon, representation), preset)
        wav_t = istft(from_channels(target, representation), preset)
        terms["mrstft"] = multi_resolution_stft_loss(wav_r, wav_t)
        terms["loudness"] = loudness_loss(recon, target, preset, representation)
    return terms


def weighted_total(terms: dict[str, torch.Tensor], weights: dict[str, float]) -> torch.Tensor:
    """Sum of ``weights[name] * terms[name]`` over the terms with a non-zero weight."""
    total = None
    for name, w in weights.items():
        if w and name not in terms:
            raise ValueError(f"loss term {name!r} has weight {w} but was not computed")
        if w:
            total = terms[name] * w if total is None else total + terms[name] * w
    if total is None:
        raise ValueError("all loss weights are zero")
    return total


def stoi_envelope_loss(est: torch.Tensor, ref: torch.Tensor, preset: StftPreset, segment_frames: int = 48,
                       segment_hop: int = 4, min_freq: float = 150.0, bands: int = 15,
                       clip_db: float = -15.0) -> torch.Tensor:
    """One minus STOI's intermediate intelligibility measure, computed in this STFT: the
    correlation of one-third-octave band envelopes of ``est`` and ``ref`` (compressed complex
    channels ``[B, 2, F, T]``) over segments of ``segment_frames`` frames (48 frames of 8 ms:
    STOI's 384 ms), after STOI's normalisation and clipping of the estimate (Taal et al. 2011).
    Differentiable; no silent-frame removal (a training crop is short). The band matrix is
    pystoi's, the metric we report."""
    if est.shape[-1] < segment_frames:
        raise ValueError(f"the STOI term needs at least {segment_frames} frames, got {est.shape[-1]}")

    def envelopes(ch: torch.Tensor) -> torch.Tensor:  # -> [B, J, S, N]
        env = torch.sqrt(third_octave_power(ch, preset, bands, min_freq) + 1e-10)
        return env.unfold(-1, segment_frames, segment_hop)

    x, y = envelopes(ref), envelopes(est)
    scale = x.norm(dim=-1, keepdim=True) / (y.norm(dim=-1, keepdim=True) + 1e-8)
    y = torch.minimum(y * scale, x * (1 + 10 ** (-clip_db / 20)))
    x = x - x.mean(dim=-1, keepdim=True)
    y = y - y.mean(dim=-1, keepdim=True)
    xn = x.norm(dim=-1)
    corr = (x * y).sum(-1) / (xn * y.norm(dim=-1) + 1e-8)
    live = (xn > 1e-6 * xn.amax().clamp_min(1e-12)).to(corr.dtype)  # digital silence has no envelope
    return 1 - (corr * live).sum() / live.sum().clamp_min(1.0)
