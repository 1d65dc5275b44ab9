"""Seeded synthetic channel traces and the committed files in ``channel_traces/traces/``.

Every generator returns an SNR series (dB) on a uniform grid; capacity is
``C = W log2(1 + SNR)`` with ``W = DEFAULT_BANDWIDTH_HZ``. With the default
:class:`shared.rate.RateConfig` (3.65 bits per coefficient, T = 0.256 s) one coefficient
per step costs about 14.3 bit/s, so the budget range 8..256 coefficients is about
114 bit/s..3.65 kbit/s, i.e. SNR from about -11 dB to +11 dB at W = 1 kHz.

Models (all seeded with :func:`numpy.random.default_rng`):

* fading: Clarke/Jakes sum of sinusoids, ``h(t) = M^-1/2 sum_m exp(j(2 pi f_D t cos a_m
  + p_m))`` with stratified random angles of arrival ``a_m`` and phases ``p_m``
  (``E|h|^2 = 1``), optionally Rician with a line-of-sight component of factor K;
* outages: alternating exponential up/down periods (Gilbert-Elliott), SNR set to
  :data:`OUTAGE_SNR_DB` while down;
* vehicular: distance-based path loss to the nearest base station along a road, log-normal
  shadowing (AR(1) in dB), fast fading and a short outage at each handoff.

``ndpca traces generate --out DIR`` (or ``python -m channel_traces traces generate``) rewrites
the committed files byte for byte via :func:`regenerate`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from channel_traces.native import write_snr_csv
from channel_traces.trace import Trace
from shared.rate import capacity_from_snr

#: The room's share of the uplink, in Hz: 50 kHz is a quarter of one 180 kHz LTE/NR resource
#: block (1/400 of a 20 MHz carrier shared by a cell's rooms). With the SNRs below (about -9 to
#: +12 dB) it gives 8-200 kbit/s, the range the frame-rate codec spans (its full width,
#: 1536 coefficients per 32 ms step, needs about 175 kbit/s), so the budget binds most of the time.
DEFAULT_BANDWIDTH_HZ = 50_000.0
OUTAGE_SNR_DB = -40.0
TRACES_DIR = Path(__file__).resolve().parent / "traces"


@dataclass(frozen=True)
class SnrSeries:
    """An SNR trace on a uniform grid.

    Attributes:
        times_s: sample times ``[N]`` (multiples of the step, from 0).
        snr_db: SNR in dB ``[N]``.
        description: one line saying which model made it.
    """

    times_s: np.ndarray
    snr_db: np.ndarray
    description: str

    def to_trace(self, name: str, bandwidth_hz: float = DEFAULT_BANDWIDTH_HZ) -> Trace:
        """The capacity trace ``C = W log2(1 + SNR)`` of this series."""
        cap = np.asarray(capacity_from_snr(self.snr_db, bandwidth_hz), dtype=np.float64)
        step = float(self.times_s[1] - self.times_s[0]) if self.times_s.size > 1 else 1.0
        return Trace(self.times_s, cap.reshape(-1), "snr", f"generator:{name}",
                     f"C = W log2(1+SNR), W = {bandwidth_hz:g} Hz; {self.description}",
                     end_s=float(self.times_s[-1] + step), extras={"snr_db": self.snr_db})


def _grid(duration_s: float, dt_ms: int) -> np.ndarray:
    """Times ``0, dt, 2 dt, ...`` below ``duration_s``, computed from integer milliseconds."""
    if dt_ms <= 0 or duration_s <= 0:
        raise ValueError("duration_s and dt_ms must be positive")
    n = int(np.ceil(duration_s * 1000 / dt_ms - 1e-9))
    return np.arange(n, dtype=np.int64) * dt_ms / 1000.0


def fading_gain(
    rng: np.random.Generator, times_s: np.ndarray, doppler_hz: float,
    k_factor: float = 0.0, n_paths: int = 32,
) -> np.ndarray:
    """Power gain ``|h(t)|^2`` (mean 1) of a Rayleigh (K = 0) or Rician fading channel.

    Args:
        rng: the seeded generator.
        times_s: sample times ``[N]``.
        doppler_hz: maximum Doppler shift f_D.
        k_factor: Rician K (line-of-sight power over scattered power).
        n_paths: number of sinusoids M.

    Returns:
        ``[N]`` power gains.
    """
    angles = 2 * np.pi * (np.arange(n_paths) + rng.uniform(size=n_paths)) / n_paths
    phases = rng.uniform(0, 2 * np.pi, size=n_paths)
    arg = 2 * np.pi * doppler_hz * times_s[:, None] * np.cos(angles)[None, :] + phases
    h = np.exp(1j * arg).sum(axis=1) / np.sqrt(n_paths)
    if k_factor > 0:
        los_angle, los_phase = rng.uniform(0, 2 * np.pi, size=2)
        los = np.exp(1j * (2 * np.pi * doppler_hz * times_s * np.cos(los_angle) + los_phase))
        h = np.sqrt(k_factor / (k_factor + 1)) * los + np.sqrt(1 / (k_factor + 1)) * h
    return np.abs(h) ** 2


def _gain_db(gain: np.ndarray) -> np.ndarray:
    return 10 * np.log10(np.maximum(gain, 1e-12))


def outage_mask(
    rng: np.random.Generator, times_s: np.ndarray, mean_up_s: float, mean_down_s: float
) -> np.ndarray:
    """Boolean ``[N]``: True inside exponential down periods alternating with up periods."""
    mask = np.zeros(times_s.size, dtype=bool)
    t = rng.exponential(mean_up_s)
    end = times_s[-1] if times_s.size else 0.0
    while t <= end:
        down = rng.exponential(mean_down_s)
        mask |= (times_s >= t) & (times_s < t + down)
        t += down + rng.exponential(mean_up_s)
    return mask


def static(duration_s: float = 60.0, dt_ms: int = 250, snr_db: float = 5.0) -> SnrSeries:
    """A constant channel."""
    t = _grid(duration_s, dt_ms)
    return SnrSeries(t, np.full(t.size, snr_db), f"static, SNR {snr_db:g} dB")


def slow_fading(
    duration_s: float = 60.0, dt_ms: int = 32, mean_snr_db: float = 4.0,
    doppler_hz: float = 0.15, seed: int = 1,
) -> SnrSeries:
    """Rayleigh fading with a low Doppler (a slowly moving person) around a mean SNR."""
    rng = np.random.default_rng(seed)
    t = _grid(duration_s, dt_ms)
    snr = mean_snr_db + _gain_db(fading_gain(rng, t, doppler_hz))
    return SnrSeries(t, snr, f"Rayleigh/Jakes f_D {doppler_hz:g} Hz, mean SNR "
                             f"{mean_snr_db:g} dB, seed {seed}")


def fast_fading_outages(
    duration_s: float = 60.0, dt_ms: int = 32, mean_snr_db: float = 6.0,
    doppler_hz: float = 4.0, mean_up_s: float = 5.0, mean_down_s: float = 0.6, seed: int = 2,
) -> SnrSeries:
    """Rayleigh fading with a higher Doppler plus random outages."""
    rng = np.random.default_rng(seed)
    t = _grid(duration_s, dt_ms)
    snr = mean_snr_db + _gain_db(fading_gain(rng, t, doppler_hz))
    snr[outage_mask(rng, t, mean_up_s, mean_down_s)] = OUTAGE_SNR_DB
    return SnrSeries(t, snr, f"Rayleigh/Jakes f_D {doppler_hz:g} Hz, mean SNR "
                             f"{mean_snr_db:g} dB, outages up {mean_up_s:g} s / down "
                             f"{mean_down_s:g} s (exponential), seed {seed}")


def vehicular(
    duration_s: float = 60.0, dt_ms: int = 16, speed_mps: float = 25.0,
    cell_spacing_m: float = 500.0, snr_at_50m_db: float = 10.0, pathloss_exp: float = 2.0,
    shadow_db: float = 3.0, shadow_tau_s: float = 2.0, doppler_hz: float = 10.0,
    handoff_s: tuple[float, float] = (0.2, 0.5), seed: int = 3,
) -> SnrSeries:
    """A car along a road of base stations: path-loss drift, shadowing, fast fading, handoffs.

    The serving station is the nearest one (station height 30 m); crossing the midpoint
    between two stations is a handoff, during which the link is out for a uniform random
    time in ``handoff_s``.
    """
    rng = np.random.default_rng(seed)
    t = _grid(duration_s, dt_ms)
    x = rng.uniform(-cell_spacing_m / 2, 0.0) + speed_mps * t
    cell = np.round(x / cell_spacing_m)
    dist = np.hypot(x - cell * cell_spacing_m, 30.0)
    snr = snr_at_50m_db - 10 * pathloss_exp * np.log10(dist / 50.0)
    rho = np.exp(-(dt_ms / 1000.0) / shadow_tau_s)
    noise = rng.standard_normal(t.size) * shadow_db * np.sqrt(1 - rho**2)
    shadow = np.empty(t.size)
    shadow[0] = rng.standard_normal() * shadow_db
    for i in range(1, t.size):
        shadow[i] = rho * shadow[i - 1] + noise[i]
    snr = snr + shadow + _gain_db(fading_gain(rng, t, doppler_hz))
    handoffs = np.flatnonzero(np.diff(cell) != 0) + 1
    for i in handoffs:
        snr[(t >= t[i]) & (t < t[i] + rng.uniform(*handoff_s))] = OUTAGE_SNR_DB
    return SnrSeries(t, snr, f"vehicular {speed_mps:g} m/s, cells every {cell_spacing_m:g} m, "
                             f"path-loss exponent {pathloss_exp:g}, shadowing {shadow_db:g} dB, "
                             f"f_D {doppler_hz:g} Hz, {handoffs.size} handoffs, seed {seed}")


def sweep(
    duration_s: float = 60.0, dt_ms: int = 32, center_snr_db: float = 4.0,
    swing_db: float = 9.0, period_s: float = 20.0, doppler_hz: float = 0.5,
    k_factor: float = 5.0, seed: int = 4,
) -> SnrSeries:
    """The default trace: the mean SNR swings sinusoidally through the whole budget range
    every ``period_s`` with mild Rician fading on top."""
    rng = np.random.default_rng(seed)
    t = _grid(duration_s, dt_ms)
    mean = center_snr_db + swing_db * np.sin(2 * np.pi * t / period_s)
    snr = mean + _gain_db(fading_gain(rng, t, doppler_hz, k_factor=k_factor))
    return SnrSeries(t, snr, f"sweep {center_snr_db:g} +- {swing_db:g} dB every "
                             f"{period_s:g} s, Rician K {k_factor:g} f_D {doppler_hz:g} Hz, "
                             f"seed {seed}")


GENERATORS: dict[str, Callable[..., SnrSeries]] = {
    "static": static,
    "slow_fading": slow_fading,
    "fast_fading_outages": fast_fading_outages,
    "vehicular": vehicular,
    "sweep": sweep,
}

#: Committed file stem -> (generator, its defaults). ``default`` is the simulator's default.
COMMITTED: dict[str, str] = {
    "default": "sweep",
    "static": "static",
    "slow_fading": "slow_fading",
    "fast_fading_outages": "fast_fading_outages",
    "vehicular": "vehicular",
}


def generate(name: str, bandwidth_hz: float = DEFAULT_BANDWIDTH_HZ, **params: object) -> Trace:
    """Run generator ``name`` with ``params`` and return its capacity trace."""
    if name not in GENERATORS:
        raise KeyError(f"unknown generator {name!r}; choose from {sorted(GENERATORS)}")
    return GENERATORS[name](**params).to_trace(name, bandwidth_hz)


def regenerate(out_dir: Path | str = TRACES_DIR) -> list[Path]:
    """Write every committed trace (``<stem>.csv`` in the native SNR CSV format) to ``out_dir``.

    The output is a pure function of the code and the seeds: running it again reproduces the
    committed files byte for byte.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    written = []
    for stem, name in COMMITTED.items():
        series = GENERATORS[name]()
        path = out / f"{stem}.csv"
        write_snr_csv(path, series.times_s, series.snr_db, DEFAULT_BANDWIDTH_HZ, comments=(
            f"generator: {name} (channel_traces.generate, regenerate with "
            "'ndpca traces generate')", f"model: {series.description}",
        ))
        written.append(path)
    return written
