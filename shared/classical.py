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


def _beamformer_problems(diagonal_loading: float, dd_alpha: float, gain_floor: float) -> list[str]:
    """What is wrong with the MVDR and Wiener settings both configurations share."""
    problems = []
    if not diagonal_loading >= 0:
        problems.append(f"diagonal_loading must be >= 0, got {diagonal_loading}")
    if not 0 <= dd_alpha < 1:
        problems.append(f"dd_alpha must be in [0, 1), got {dd_alpha}")
    if not 0 <= gain_floor <= 1:
        problems.append(f"gain_floor must be in [0, 1], got {gain_floor}")
    return problems


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
        problems += _beamformer_problems(self.diagonal_loading, self.dd_alpha, self.gain_floor)
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


# ---------------------------------------------------------------------------- streaming


@dataclass(frozen=True)
class StreamingConfig:
    """Parameters of :class:`StreamingClassical`, the frame-by-frame form of the chain above
    without WPE (its statistics need seconds of signal; docs/enhancer.md).

    Attributes:
        noise_quantile: the noise floor of each bin tracks this quantile of the smoothed
            reference-microphone power (the offline chain's quietest-frames mean, online).
        quantile_rate: multiplicative step of the quantile tracker per frame (log domain).
        power_smoothing: recursive smoothing of the power that the tracker and mask see.
        covariance_seconds: time constant of the recursive speech and noise covariances.
        diagonal_loading, dd_alpha: as in :class:`ClassicalConfig`.
        gain_floor: smallest post-filter gain. Higher than the offline chain's 0.2: without
            WPE and with a noise floor tracked online, a deeper gain lowered STOI (chosen on
            six validation rooms of the embedded set, docs/enhancer.md).
        frame_seconds: the STFT hop, to turn time constants into per-frame factors.
    """

    noise_quantile: float = 0.2
    quantile_rate: float = 0.05
    power_smoothing: float = 0.7
    covariance_seconds: float = 1.5
    diagonal_loading: float = 1e-3
    dd_alpha: float = 0.98
    gain_floor: float = 0.45
    frame_seconds: float = 0.008

    def __post_init__(self) -> None:
        problems = []
        if not 0 < self.noise_quantile < 1:
            problems.append(f"noise_quantile must be in (0, 1), got {self.noise_quantile}")
        if not self.quantile_rate > 0:
            problems.append(f"quantile_rate must be > 0, got {self.quantile_rate}")
        if not 0 <= self.power_smoothing < 1:
            problems.append(f"power_smoothing must be in [0, 1), got {self.power_smoothing}")
        if not self.covariance_seconds > 0 or not self.frame_seconds > 0:
            problems.append("covariance_seconds and frame_seconds must be > 0")
        problems += _beamformer_problems(self.diagonal_loading, self.dd_alpha, self.gain_floor)
        if problems:
            raise ConfigError("invalid streaming enhancement settings: " + "; ".join(problems))


class StreamingClassical:
    """MVDR beamformer and Wiener post-filter, one STFT frame at a time, for one stream.

    Works on complex (linear, not compressed) spectra ``[M, F, T]`` of any number of frames
    per call and keeps its state between calls, so a receiver enhances each 32 ms step as it
    is decoded; the output depends only on the frames seen so far (no look-ahead). Per frame:

    1. the reference microphone's power ``P`` is smoothed and a per-bin noise floor ``lambda``
       tracks its ``noise_quantile``-th quantile (a multiplicative step up when ``P`` is above
       it, down when below, in the ratio ``q : 1 - q``, so it settles where a fraction ``q`` of
       the frames lies below);
    2. speech weight ``max(0, 1 - lambda / P)``, noise weight one minus it;
    3. weighted recursive speech and noise covariances (time constant ``covariance_seconds``);
    4. the Souden MVDR toward the reference over the microphones that carry signal in this
       call (``active``; a source the allocation left out decodes to its mean, not to sound),
       recomputed once per call; one active microphone: no beamformer;
    5. the decision-directed Wiener gain with the beamformer's output noise ``w^H Phi_NN w``.
    """

    def __init__(self, n_mics: int, n_bins: int, ref_mic: int = 0, cfg: StreamingConfig | None = None) -> None:
        if not 0 <= ref_mic < n_mics:
            raise ValueError(f"reference microphone {ref_mic} is not one of the {n_mics} microphones")
        self.cfg = cfg or StreamingConfig()
        self.m, self.f, self.ref = n_mics, n_bins, ref_mic
        self.frames = 0
        self.power = np.zeros(n_bins)
        self.noise = np.zeros(n_bins)
        self.phi_s = np.zeros((n_bins, n_mics, n_mics), complex)
        self.phi_n = np.zeros((n_bins, n_mics, n_mics), complex)
        self.w_s = np.zeros(n_bins)
        self.w_n = np.zeros(n_bins)
        self.prev_clean = np.zeros(n_bins)  # |S^|^2 of the previous frame (decision-directed)
        self.cov_decay = float(np.exp(-self.cfg.frame_seconds / self.cfg.covariance_seconds))

    def __call__(self, spec: np.ndarray, active: np.ndarray | None = None) -> np.ndarray:
        """``[M, F, T]`` complex -> the enhanced reference microphone ``[F, T]`` complex.

        ``active``: bool ``[M]``, the microphones that carry decoded signal in these frames
        (default all); the reference is always used."""
        cfg = self.cfg
        spec = np.asarray(spec)
        if spec.ndim != 3 or spec.shape[:2] != (self.m, self.f):
            raise ValueError(f"expected spectra [{self.m}, {self.f}, T], got {spec.shape}")
        act = np.ones(self.m, bool) if active is None else np.asarray(active, bool).copy()
        act[self.ref] = True
        idx = np.flatnonzero(act)
        ref_pos = int(np.flatnonzero(idx == self.ref)[0])
        out = np.empty(spec.shape[1:], complex)
        q, rate, a = cfg.noise_quantile, cfg.quantile_rate, self.cov_decay
        # statistics first, frame by frame; the beamformer is fitted once per call from them
        for t in range(spec.shape[2]):
            y = spec[:, :, t]  # [M, F]
            p = np.abs(y[self.ref]) ** 2
            if self.frames == 0:
                self.power, self.noise = p.copy(), p + 1e-20
            else:
                self.power = cfg.power_smoothing * self.power + (1 - cfg.power_smoothing) * p
                above = self.power > self.noise
                self.noise = self.noise * np.exp(np.where(above, rate * q, -rate * (1 - q)))
            self.frames += 1
            speech = np.clip(1 - self.noise / np.maximum(self.power, 1e-30), 0, 1)
            outer = np.einsum("af,bf->fab", y, y.conj())
            self.phi_s = a * self.phi_s + (1 - a) * speech[:, None, None] * outer
            self.phi_n = a * self.phi_n + (1 - a) * (1 - speech)[:, None, None] * outer
            self.w_s = a * self.w_s + (1 - a) * speech
            self.w_n = a * self.w_n + (1 - a) * (1 - speech)
        ys = spec[idx]  # [K, F, T]
        if len(idx) > 1:
            sub = np.ix_(np.arange(self.f), idx, idx)
            phi_s = self.phi_s[sub] / np.maximum(self.w_s, 1e-9)[:, None, None]
            phi_n = self.phi_n[sub] / np.maximum(self.w_n, 1e-9)[:, None, None]
            diag = np.real(np.trace(phi_n, axis1=1, axis2=2)) / len(idx)
            phi_n = phi_n + (cfg.diagonal_loading * diag + 1e-20)[:, None, None] * np.eye(len(idx))
            sol = np.linalg.solve(phi_n, phi_s)
            w = sol[:, :, ref_pos] / (np.trace(sol, axis1=1, axis2=2)[:, None] + 1e-20)  # [F, K]
            beam = np.einsum("fa,aft->ft", w.conj(), ys)
            noise_out = np.maximum(np.real(np.einsum("fa,fab,fb->f", w.conj(), phi_n, w)), 1e-30)
        else:
            beam = ys[0]
            noise_out = np.maximum(self.noise * (1 - cfg.noise_quantile), 1e-30)
        for t in range(beam.shape[1]):
            post = np.abs(beam[:, t]) ** 2 / noise_out
            xi = cfg.dd_alpha * self.prev_clean / noise_out + (1 - cfg.dd_alpha) * np.maximum(post - 1, 0)
            g = np.maximum(xi / (1 + xi), cfg.gain_floor)
            out[:, t] = g * beam[:, t]
            self.prev_clean = np.abs(out[:, t]) ** 2
        return out


def stream_classical(spec: np.ndarray, step_frames: int, active: np.ndarray | None = None,
                     ref_mic: int = 0, cfg: StreamingConfig | None = None) -> np.ndarray:
    """A whole signal through :class:`StreamingClassical` the way the receiver runs it: one call
    per streaming step of ``step_frames`` frames (the beamformer is refitted once per call).

    Args:
        spec: complex linear spectra ``[M, F, T]``.
        active: bool ``[M]``, the microphones whose source sent coefficients (default all).
    Returns:
        the enhanced reference microphone ``[F, T]`` complex.
    """
    if step_frames < 1:
        raise ValueError(f"step_frames must be at least 1, got {step_frames}")
    spec = np.asarray(spec)
    state = StreamingClassical(spec.shape[0], spec.shape[1], ref_mic, cfg)
    return np.concatenate([state(spec[:, :, i : i + step_frames], active)
                           for i in range(0, spec.shape[2], step_frames)], axis=1)
