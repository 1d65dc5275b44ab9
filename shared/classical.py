"""Classical multichannel enhancement: WPE dereverberation, an MVDR beamformer and a Wiener
post-filter, the baseline the learned enhancer (:mod:`shared.enhancer`) must earn its cost
against (docs/enhancer.md, "Classical baseline").

:func:`classical_enhance` maps microphone signals ``[M, N]`` (16 kHz) to the enhanced signal
of one microphone ``[N]``:

1. STFT (Hann window, ``n_fft`` 1024, hop 256: 64 ms frames, 16 ms hop);
2. WPE (weighted prediction error, Nakatani et al. 2010, the ``nara_wpe`` implementation):
   per frequency, a multichannel linear prediction filter of ``taps`` frames, ``delay``
   frames behind, removes the late reverberation of every microphone;
3. a speech-presence mask from the dereverberated spectra themselves: per frequency the noise
   floor ``lambda_f`` is the mean power (over microphones) of the quietest ``noise_quantile``
   of the frames, and each bin's speech weight is ``max(0, 1 - lambda_f / P_ft)`` (the
   power-domain Wiener gain), its noise weight one minus that;
4. MVDR toward the reference microphone in the form of Souden et al. (2010), which needs no
   steering vector: ``w_f = (Phi_NN^-1 Phi_SS) u_ref / trace(Phi_NN^-1 Phi_SS)``, with the
   speech and noise spatial covariances ``Phi_SS``, ``Phi_NN`` averaged over the frames with
   the mask weights, ``Phi_NN`` loaded by ``diagonal_loading`` times its mean diagonal;
5. a single-channel Wiener post-filter on the beamformer output: the noise PSD is the
   beamformer's output noise ``w^H Phi_NN w`` (one microphone: ``lambda_f``), the a-priori SNR
   follows the decision-directed rule (Ephraim and Malah 1984, smoothing ``dd_alpha``), gain
   ``xi / (1 + xi)`` floored at ``gain_floor``;
6. inverse STFT, cropped to ``N`` samples.

With one microphone the beamformer is skipped (WPE and the post-filter work on one channel).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.signal import istft, stft

from shared.errors import ConfigError


@dataclass(frozen=True)
class ClassicalConfig:
    """Parameters of :func:`classical_enhance` (defaults: 16 kHz speech, chosen on six simulated
    rooms of LibriSpeech training speakers, never the evaluation rooms; docs/enhancer.md).

    Attributes:
        n_fft, hop: STFT frame and hop in samples (Hann window).
        taps, delay, iterations: WPE filter length and prediction delay in frames, and its
            number of iterations (``nara_wpe.wpe.wpe``). The default delay, 4 hops = 64 ms,
            keeps the early reflections (the clean reference of the data set holds the
            first 50 ms) and removes the late reverberation; WPE with shorter delays lowered
            SI-SDR against that reference.
        dereverb: run WPE.
        noise_quantile: fraction of the quietest frames that estimate the noise floor.
        diagonal_loading: added to ``Phi_NN``'s diagonal, relative to its mean diagonal.
        beamformer: use the MVDR beamformer (ignored with one microphone).
        postfilter: apply the Wiener post-filter.
        dd_alpha: decision-directed smoothing of the a-priori SNR.
        gain_floor: smallest post-filter gain (linear amplitude).
    """

    n_fft: int = 1024
    hop: int = 256
    taps: int = 5
    delay: int = 4
    iterations: int = 3
    dereverb: bool = True
    noise_quantile: float = 0.2
    diagonal_loading: float = 1e-3
    beamformer: bool = True
    postfilter: bool = True
    dd_alpha: float = 0.98
    gain_floor: float = 0.2

    def __post_init__(self) -> None:
        problems = []
        if not (self.n_fft >= 16 and 0 < self.hop <= self.n_fft // 2):
            problems.append(f"need n_fft >= 16 and 0 < hop <= n_fft / 2, got {self.n_fft}, {self.hop}")
        if self.taps < 1 or self.delay < 1 or self.iterations < 1:
            problems.append("taps, delay and iterations must be >= 1")
        if not 0 < self.noise_quantile < 1:
            problems.append(f"noise_quantile must be in (0, 1), got {self.noise_quantile}")
        if not self.diagonal_loading >= 0:
            problems.append(f"diagonal_loading must be >= 0, got {self.diagonal_loading}")
        if not 0 <= self.dd_alpha < 1:
            problems.append(f"dd_alpha must be in [0, 1), got {self.dd_alpha}")
        if not 0 <= self.gain_floor <= 1:
            problems.append(f"gain_floor must be in [0, 1], got {self.gain_floor}")
        if problems:
            raise ConfigError("invalid classical enhancement settings: " + "; ".join(problems))


def classical_enhance(
    mics: np.ndarray, sample_rate: int = 16000, ref_mic: int = 0, cfg: ClassicalConfig | None = None
) -> np.ndarray:
    """Enhance the reference microphone with WPE, MVDR and a Wiener post-filter.

    Args:
        mics: microphone signals ``[M, N]`` (any real dtype; float32 in the pipeline).
        sample_rate: their rate; the defaults are tuned for 16 kHz.
        ref_mic: the microphone whose enhanced signal is returned.
        cfg: parameters (default :class:`ClassicalConfig`).
    Returns:
        ``[N]`` float32, the enhanced signal of ``ref_mic``.

    Raises:
        ValueError: ``mics`` is not ``[M, N]``, holds non-finite samples, is shorter than one
            STFT frame, or ``ref_mic`` is not one of its microphones.
    """
    cfg = cfg or ClassicalConfig()
    x = np.asarray(mics)
    if x.ndim != 2:
        raise ValueError(f"expected microphone signals [M, N], got shape {x.shape}; "
                         "pass one microphone as x[None, :]")
    m, n = x.shape
    if m < 1 or n < cfg.n_fft:
        raise ValueError(f"need at least one microphone of at least {cfg.n_fft} samples "
                         f"(one STFT frame), got shape {x.shape}")
    if not 0 <= ref_mic < m:
        raise ValueError(f"reference microphone {ref_mic} is not one of the {m} microphones")
    if not np.issubdtype(x.dtype, np.floating) and not np.issubdtype(x.dtype, np.integer):
        raise ValueError(f"expected real samples, got dtype {x.dtype}")
    x = x.astype(np.float64)
    if not np.all(np.isfinite(x)):
        raise ValueError("microphone signals hold NaN or infinite samples; clean the input first")
    if not np.any(x):
        return np.zeros(n, np.float32)

    spec = _stft(x, sample_rate, cfg)  # [M, F, T]
    if cfg.dereverb:
        spec = _wpe(spec, cfg)
    power = np.mean(np.abs(spec) ** 2, axis=0)  # [F, T]
    noise_floor = _noise_floor(power, cfg.noise_quantile)  # [F]
    speech_w = np.clip(1 - noise_floor[:, None] / np.maximum(power, 1e-30), 0, 1)
    if m > 1 and cfg.beamformer:
        out, out_noise = _mvdr(spec, speech_w, ref_mic, cfg.diagonal_loading)
    else:
        out = spec[ref_mic]
        out_noise = _noise_floor(np.abs(out) ** 2, cfg.noise_quantile)
    if cfg.postfilter:
        out = out * _wiener_gain(out, out_noise, cfg.dd_alpha, cfg.gain_floor)
    _, y = istft(out, fs=sample_rate, window="hann", nperseg=cfg.n_fft, noverlap=cfg.n_fft - cfg.hop,
                 input_onesided=True, boundary=True)
    y = y[:n]
    if y.shape[0] < n:
        y = np.pad(y, (0, n - y.shape[0]))
    return y.astype(np.float32)


def _stft(x: np.ndarray, sample_rate: int, cfg: ClassicalConfig) -> np.ndarray:
    """``[M, N]`` -> ``[M, F, T]`` complex."""
    _, _, spec = stft(x, fs=sample_rate, window="hann", nperseg=cfg.n_fft,
                      noverlap=cfg.n_fft - cfg.hop, boundary="zeros", padded=True)
    return spec


def _wpe(spec: np.ndarray, cfg: ClassicalConfig) -> np.ndarray:
    """WPE of ``[M, F, T]`` spectra (``nara_wpe``'s batched form works on ``[F, M, T]``)."""
    from nara_wpe.wpe import wpe

    out = wpe(spec.transpose(1, 0, 2), taps=cfg.taps, delay=cfg.delay, iterations=cfg.iterations,
              statistics_mode="full")
    return out.transpose(1, 0, 2)


def _noise_floor(power: np.ndarray, quantile: float) -> np.ndarray:
    """``[F, T]`` -> ``[F]``: mean power of the quietest ``quantile`` of the frames."""
    k = max(1, int(round(quantile * power.shape[1])))
    return np.sort(power, axis=1)[:, :k].mean(axis=1) + 1e-30


def _mvdr(spec: np.ndarray, speech_w: np.ndarray, ref_mic: int, loading: float
          ) -> tuple[np.ndarray, np.ndarray]:
    """Souden MVDR of ``[M, F, T]`` spectra with speech weights ``[F, T]``: the output
    ``[F, T]`` and its noise PSD ``[F]``."""
    m = spec.shape[0]
    noise_w = 1 - speech_w
    y = spec.transpose(1, 0, 2)  # [F, M, T]
    phi_s = np.einsum("ft,fat,fbt->fab", speech_w, y, y.conj()) / np.maximum(speech_w.sum(1), 1e-9)[:, None, None]
    phi_n = np.einsum("ft,fat,fbt->fab", noise_w, y, y.conj()) / np.maximum(noise_w.sum(1), 1e-9)[:, None, None]
    diag = np.real(np.trace(phi_n, axis1=1, axis2=2)) / m
    phi_n = phi_n + (loading * diag + 1e-12)[:, None, None] * np.eye(m)
    a = np.linalg.solve(phi_n, phi_s)  # [F, M, M]
    w = a[:, :, ref_mic] / (np.trace(a, axis1=1, axis2=2)[:, None] + 1e-12)  # [F, M]
    out = np.einsum("fa,fat->ft", w.conj(), y)
    out_noise = np.real(np.einsum("fa,fab,fb->f", w.conj(), phi_n, w))
    return out, np.maximum(out_noise, 1e-30)


def _wiener_gain(spec: np.ndarray, noise: np.ndarray, alpha: float, floor: float) -> np.ndarray:
    """Decision-directed Wiener gain ``[F, T]`` of one channel's spectra ``[F, T]`` with
    noise PSD ``[F]``."""
    post = np.abs(spec) ** 2 / noise[:, None]  # a-posteriori SNR
    gain = np.empty_like(post)
    prev = np.zeros(post.shape[0])
    for t in range(post.shape[1]):
        xi = alpha * prev + (1 - alpha) * np.maximum(post[:, t] - 1, 0)
        g = np.maximum(xi / (1 + xi), floor)
        gain[:, t] = g
        prev = g**2 * post[:, t]
    return gain
