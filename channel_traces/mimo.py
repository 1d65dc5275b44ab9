"""Shannon capacity of multi-antenna CSI snapshots, shared by the Wi-Fi CSI readers.

Every CSI reader (Intel 5300, Nexmon, PicoScenes) ends with gains ``g[n, rx, tx, k]`` already
scaled so that ``|g|^2`` is the SNR of subcarrier ``k`` on the link from transmit stream
``tx`` to receive antenna ``rx`` in snapshot ``n``. The capacity of a link is
``sum_k df log2(1 + |g_k|^2)``; :func:`combined_capacity` then combines the links:

* transmit streams are **summed** (an upper bound: it ignores inter-stream interference);
* receive antennas are **averaged** (``"mean"``: one single-antenna link, conservative) or
  combined by **maximal-ratio combining** (``"mrc"``: ``|g|^2`` added over antennas first).
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from channel_traces._parse import check_share, trace_error
from shared.rate import capacity_from_csi

RX_COMBINING = ("mean", "mrc")


def check_csi_log(path: Path, share: float, rx_combine: str) -> float:
    """The checks every per-subcarrier CSI log reader starts with: ``share`` in (0, 1], a
    known receive-chain combining, an existing file. Returns the share as a float."""
    share = check_share(share)
    if rx_combine not in RX_COMBINING:
        raise trace_error(path, "option 'rx_combine'", f"{rx_combine!r}", "use 'mean' or 'mrc'")
    if not path.is_file():
        raise trace_error(path, "file", "no such file", "check the path")
    return share
#: Thermal noise density at 290 K, dBm/Hz.
THERMAL_DBM_PER_HZ = -174.0
#: Receiver noise figure assumed when a log reports no noise floor (a typical Wi-Fi NIC), dB.
DEFAULT_NOISE_FIGURE_DB = 7.0


def unit_mean_gain(h: np.ndarray) -> np.ndarray:
    """Scale each snapshot so that ``mean_k |H_k|^2 = 1`` over the last axis (zero rows stay 0)."""
    power = np.mean(np.abs(h) ** 2, axis=-1, keepdims=True)
    return h / np.sqrt(np.where(power > 0, power, 1.0))


def thermal_noise_dbm(
    bandwidth_hz: float, noise_figure_db: float = DEFAULT_NOISE_FIGURE_DB
) -> float:
    """Noise power over ``bandwidth_hz``: ``-174 dBm/Hz + 10 log10(B) + NF`` (dBm)."""
    return THERMAL_DBM_PER_HZ + 10.0 * math.log10(bandwidth_hz) + noise_figure_db


def combined_capacity(
    gains: np.ndarray, spacing_hz: float, rx_combine: str = "mean",
    valid: np.ndarray | None = None,
) -> np.ndarray:
    """Capacity in bit/s per snapshot of SNR-scaled gains ``[N, rx, tx, K]``.

    Args:
        gains: complex gains with ``|g|^2`` the per-subcarrier SNR (linear).
        spacing_hz: ``df``, the bandwidth one entry on the last axis stands for.
        rx_combine: ``"mean"`` over valid receive antennas, or ``"mrc"``.
        valid: which (rx, tx) links exist, shape ``[N, rx, tx]`` (default: all).

    Returns:
        capacity per snapshot, shape ``[N]``; 0 for a snapshot without a valid link.
    """
    if rx_combine not in RX_COMBINING:
        raise ValueError(f"rx_combine must be one of {RX_COMBINING}, got {rx_combine!r}")
    gains = np.asarray(gains)
    ok = np.ones(gains.shape[:3], dtype=bool) if valid is None else np.asarray(valid, bool)
    tx_used = ok.any(axis=1)  # [N, tx]
    if rx_combine == "mrc":
        power = np.sum(np.abs(gains) ** 2 * ok[..., None], axis=1)  # [N, tx, K]
        per_tx = np.asarray(capacity_from_csi(np.sqrt(power), 0.0, spacing_hz))
    else:
        per_link = np.asarray(capacity_from_csi(gains, 0.0, spacing_hz))  # [N, rx, tx]
        n_rx = np.maximum(ok.sum(axis=1), 1)
        per_tx = np.sum(per_link * ok, axis=1) / n_rx
    return np.sum(per_tx * tx_used, axis=1)
