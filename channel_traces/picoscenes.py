"""Reader for PicoScenes ``.csi`` logs of Intel AX200/AX210 (IWLMVM) NICs.

A PicoScenes log is a sequence of frames: a ``uint32`` frame length, the magic
``0x20150315``, frame version 1, a segment count, then named, versioned segments, then the
802.11 frame. Two segments matter here (layouts of PicoScenes' ``rxs_parsing_core``):

* ``RxSBasic`` (v1-v3): timestamp, channel bandwidth, number of receive chains, noise floor,
  RSSI and per-chain RSSI (dBm; v1 and v2 store them relative to the noise floor);
* ``CSI`` (v1-v4): device type, packet format, bandwidth, subcarrier spacing, tones,
  streams, chains, then for IWLMVM devices one little-endian int16 (real, imaginary) pair per
  entry, tones varying fastest, then streams, then chains.

The CSI is decoded here rather than with ``csiread.Picoscenes``: csiread 1.4.1 drops four
"pilot" tones per chain with an index it does not reset between chains (its source marks
that decoder "may be incorrect"). Per frame, ``C = sum_streams mean_chains sum_k df log2(1 +
|H_k|^2 SNR_chain)`` (:mod:`channel_traces.mimo`), ``|H_k|^2`` at unit mean per chain and
stream, ``SNR_chain = RSSI_chain - noise``. The AX200 reports no noise floor: the noise is
**assumed** thermal over the channel plus a 7 dB noise figure (``-174 dBm/Hz + 10
log10(CBW) + 7``: -94 dBm at 20 MHz), unless ``noise_dbm`` or a fixed ``snr_db`` is given.
"""

from __future__ import annotations

import struct
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from channel_traces._parse import SkippedRows, trace_error
from channel_traces._timeline import repair_times, unwrap_counter
from channel_traces.mimo import check_csi_log, combined_capacity, thermal_noise_dbm
from channel_traces.trace import Trace
from shared.errors import TraceError

MAGIC = 0x20150315
#: RxSBasic layouts per version, up to the per-chain RSSI (little endian).
RXS_BASIC = {1: "<HQhBHHBBBBbbbbb", 2: "<HQhBHHBBBBBBbbbbb", 3: "<HQhhHBHHBBBBBBbbbbb"}
#: CSI segment head per version, up to csiBufferLength (little endian).
CSI_HEADS = {1: "<HbHQQIHBBBBI", 2: "<HbHQQIHBBBBhI", 3: "<HbHQQIHBBBHBhI", 4: "<HBbHQQIHBBBHBhI"}
#: Intel MVM device types (PicoScenesDeviceType): AX200, AX210.
MVM_DEVICES = {0x2000: "Intel AX200 (IWLMVM)", 0x2100: "Intel AX210 (IWLMVM)"}


def is_picoscenes(head: bytes) -> bool:
    """Whether bytes start like a PicoScenes frame (length, magic, version 1)."""
    return len(head) >= 10 and struct.unpack("<IH", head[4:10]) == (MAGIC, 1)


@dataclass(frozen=True)
class _Frame:
    """What one frame gives: time, bandwidth, RSSI per chain (dBm), CSI [rx, tx, tones]."""

    number: int
    timestamp: int
    cbw_mhz: int
    rssi: tuple[float, ...]
    device: int
    spacing_hz: float
    csi: np.ndarray


def _rx_basic(body: bytes, version: int) -> tuple[int, int, tuple[float, ...]]:
    """(timestamp, CBW in MHz, RSSI per chain in dBm) from an RxSBasic segment."""
    fields = struct.unpack_from(RXS_BASIC[version], body)
    timestamp, cbw = fields[1], fields[4]
    noise, rssi, chains = fields[-5], fields[-4], fields[-3:]
    offset = noise if version < 3 else 0  # v1, v2: RSSI relative to the noise floor
    per_chain = tuple(float(c + offset) if c else float(rssi + offset) for c in chains)
    return timestamp, int(cbw), per_chain


def _csi(path: Path, where: str, body: bytes, version: int) -> tuple[int, float, np.ndarray]:
    """(device, subcarrier spacing, CSI [rx, tx, tones]) from an IWLMVM CSI segment."""
    head = CSI_HEADS[version]
    fields = struct.unpack_from(head, body)
    if version == 4:
        fields = fields[:1] + fields[2:]
    device, spacing, tones, ntx, nrx, length = (fields[0], fields[5], fields[6], fields[7],
                                                fields[8], fields[-1])
    if device not in MVM_DEVICES:
        raise trace_error(path, where, f"CSI of device type {device:#x}, not an Intel "
                          "AX200/AX210 (0x2000, 0x2100)", "read Intel 5300 logs with "
                          "--format intel5300; other PicoScenes devices are not supported")
    start = struct.calcsize(head)
    if length != tones * ntx * nrx * 4 or start + length > len(body) or not tones * ntx * nrx:
        raise trace_error(path, where, f"CSI buffer of {length} bytes for {tones} tones x "
                          f"{ntx} streams x {nrx} chains x 4 bytes",
                          "the frame is damaged: drop it")
    values = np.frombuffer(body, dtype="<i2", count=2 * tones * ntx * nrx, offset=start)
    csi = (values[0::2] + 1j * values[1::2]).reshape(nrx, ntx, tones)  # tones fastest
    return device, float(spacing) or 312_500.0, csi


def _parse_frame(path: Path, number: int, offset: int, data: bytes) -> _Frame | None:
    """Check and decode one frame; ``None`` when it carries no CSI segment."""
    where = f"frame {number} (byte {offset})"
    if len(data) < 11 or struct.unpack_from("<IH", data, 4) != (MAGIC, 1):
        raise trace_error(path, where, "no PicoScenes frame header (magic 0x20150315, version 1)",
                          "the log is damaged here: cut it at this frame")
    cur, basic, csi = 11, None, None  # after length, magic, version and segment count
    for _ in range(data[10]):
        if cur + 7 > len(data):
            raise trace_error(path, where, "segment header past the frame end", "cut the log here")
        length, name_len = struct.unpack_from("<IB", data, cur)
        name = data[cur + 5:cur + 5 + name_len].rstrip(b"\0").decode("ascii", "replace")
        (version,) = struct.unpack_from("<H", data, cur + 5 + name_len)
        if cur + 4 + length > len(data):
            raise trace_error(path, where, f"segment {name!r} runs past the frame end",
                              "cut the log here")
        body = data[cur + 7 + name_len:cur + 4 + length]
        try:
            if name == "RxSBasic" and version in RXS_BASIC:
                basic = _rx_basic(body, version)
            elif name == "CSI" and version in CSI_HEADS:
                csi = _csi(path, where, body, version)
        except struct.error:
            raise trace_error(path, where, f"segment {name!r} is too short",
                              "the frame is damaged: drop it") from None
        cur += 4 + length
    if csi is None:
        return None
    if basic is None:
        raise trace_error(path, where, "CSI without an RxSBasic segment (no time, no RSSI)",
                          "log with PicoScenes' default segments")
    return _Frame(number, basic[0], basic[1], basic[2], *csi)


def _scan(path: Path) -> tuple[list[_Frame], int, SkippedRows, int]:
    """Frames with CSI, frames without, skipped (damaged) frames, total frames."""
    data = path.read_bytes()
    skipped = SkippedRows(path, unit="frames")
    frames: list[_Frame] = []
    offset, number, without = 0, 0, 0
    while offset + 4 <= len(data):
        number += 1
        end = offset + 4 + struct.unpack_from("<I", data, offset)[0]
        if end > len(data):
            skipped.skip(number, trace_error(path, f"frame {number} (byte {offset})",
                         "frame runs past the end of the file", "the log was cut: drop the tail"))
            break
        try:
            frame = _parse_frame(path, number, offset, data[offset:end])
        except TraceError as err:
            skipped.skip(number, err)
        else:
            without += frame is None
            if frame is not None:
                frames.append(frame)
        offset = end
    return frames, without, skipped, number


def _capacities(frames: list[_Frame], noise_dbm: float | None, snr_db: float | None,
                rx_combine: str) -> np.ndarray:
    """Capacity per frame in bit/s, frames of one shape and spacing computed together."""
    groups: dict[tuple, list[int]] = defaultdict(list)
    for i, f in enumerate(frames):
        groups[(f.csi.shape, f.spacing_hz)].append(i)
    cap = np.zeros(len(frames))
    for (shape, spacing), rows in groups.items():
        h = np.stack([frames[i].csi for i in rows])  # [n, rx, tx, tones]
        rssi = np.asarray([frames[i].rssi[:shape[0]] for i in rows])
        noise = np.asarray([thermal_noise_dbm(frames[i].cbw_mhz * 1e6) if noise_dbm is None
                            else noise_dbm for i in rows])
        snr = rssi - noise[:, None] if snr_db is None else np.full(rssi.shape, float(snr_db))
        power = np.mean(np.abs(h) ** 2, axis=-1)
        scale = np.sqrt(10.0 ** (snr / 10.0))[:, :, None] / np.sqrt(np.where(power > 0, power, 1))
        cap[rows] = combined_capacity(h * scale[..., None], spacing, rx_combine, power > 0)
    return cap


def read_picoscenes(
    path: Path, noise_dbm: float | None = None, snr_db: float | None = None,
    rx_combine: str = "mean", share: float = 1.0,
) -> Trace:
    """Read a PicoScenes ``.csi`` log of an Intel AX200/AX210.

    Args:
        path: the log.
        noise_dbm: noise power over the channel; default thermal + 7 dB noise figure.
        snr_db: a fixed SNR per chain instead of RSSI - noise.
        rx_combine: receive chains: ``"mean"`` or ``"mrc"``.
        share: fraction of the link given to this room.
    """
    share = check_csi_log(path, share, rx_combine)
    frames, without, skipped, total = _scan(path)
    skip_note = skipped.finish(max(total, 1))
    if not frames:
        raise trace_error(path, "file", f"no frame with a CSI segment among {total} frames",
                          "log with PicoScenes' CSI output on, or pick another --format")
    cap = _capacities(frames, noise_dbm, snr_db, rx_combine) * share
    raw = np.asarray([f.timestamp for f in frames], dtype=np.int64)
    stamps, wraps = unwrap_counter(raw, 2**32) if raw.max() < 2**32 else (raw, 0)
    repair = repair_times(stamps.astype(float), unit="us")
    cbw = frames[0].cbw_mhz
    if snr_db is not None:
        noise_text = f"fixed SNR {snr_db:g} dB"
    elif noise_dbm is not None:
        noise_text = f"SNR = per-chain RSSI - noise, noise {noise_dbm:g} dBm"
    else:
        noise_text = ("SNR = per-chain RSSI - noise, noise assumed thermal + 7 dB noise figure "
                      f"({thermal_noise_dbm(cbw * 1e6):.1f} dBm at {cbw} MHz, the log reports "
                      "none)")
    shapes = sorted({f.csi.shape[-1] for f in frames})
    spacings = sorted({f.spacing_hz for f in frames})
    devices = sorted({MVM_DEVICES[f.device] for f in frames})
    notes = "; ".join(p for p in (
        f"C = sum over streams of {rx_combine} over chains of sum_k df log2(1+|H_k|^2 SNR), "
        f"|H_k|^2 at unit mean per chain and stream, df = {', '.join(f'{d:g}' for d in spacings)}"
        f" Hz, K = {', '.join(map(str, shapes))} tones, {noise_text}, share = {share:g}",
        f"{', '.join(devices)}, {len(frames)} frames with CSI"
        + (f", {without} without CSI left out" if without else ""),
        skip_note, f"{wraps} wraps of the 32-bit timestamp unwrapped" if wraps else "",
        repair.note()) if p)
    rssi = np.asarray([f.rssi[0] for f in frames])
    return Trace((repair.times - repair.times[0]) / 1e6, repair.reduce(cap), "csi", str(path),
                 notes, extras={"rssi_dbm": repair.reduce(rssi),
                                "nrx": repair.first(np.asarray([f.csi.shape[0] for f in frames]))})
