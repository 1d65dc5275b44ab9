"""Reading a source's microphones from a file."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import soundfile as sf
import torch

from shared.errors import AudioError

log = logging.getLogger(__name__)


def read_source_audio(path: str | Path, channels: list[int], sample_rate: int, min_samples: int = 1,
                      room_mics: int | None = None) -> torch.Tensor:
    """Channels ``channels`` of a multi-channel file (or a mono file) -> ``[M_s, N]`` float32.

    A mono file serves a source with one microphone whatever its index. The whole file is
    checked before anything streams: at least ``min_samples`` samples (the codec's frame), and
    no NaN or infinite sample (the encoder would stop on it mid-stream). A file whose channel
    count is neither 1, this source's microphones nor ``room_mics`` (the codec's microphones) is
    used with a warning.
    """
    try:
        data, sr = sf.read(str(path), dtype="float32", always_2d=True)
    except Exception as exc:
        raise AudioError(f"cannot read audio {path} ({exc}); pass a WAV or FLAC file") from None
    if sr != sample_rate:
        raise AudioError(f"{path} is at {sr} Hz; the codec needs {sample_rate} Hz. Resample it first")
    n_ch = data.shape[1]
    if n_ch == 1 and len(channels) == 1:
        picked = data[:, :1]
    else:
        bad = [c for c in channels if not 0 <= c < n_ch]
        if bad:
            raise AudioError(
                f"{path} has {n_ch} channel(s); channel(s) {bad} requested. Pass --channel "
                "with valid indices or a file with every microphone"
            )
        picked = data[:, channels]
    if picked.shape[0] == 0:
        raise AudioError(f"{path} is empty")
    if picked.shape[0] < min_samples:
        raise AudioError(f"{path} holds {picked.shape[0]} samples; the codec needs at least {min_samples} "
                         f"({min_samples / sample_rate * 1000:g} ms)")
    bad = ~np.isfinite(picked)
    if bad.any():
        sample, col = (int(i) for i in np.argwhere(bad)[0])
        raise AudioError(f"{path}: channel {channels[col] if n_ch > 1 else 0} sample {sample} "
                         f"({sample / sample_rate:.3f} s) is {picked[sample, col]}; {int(bad.sum())} "
                         "samples are not finite. Clean the file (e.g. replace them by 0)")
    if room_mics is not None and n_ch not in (1, len(channels), room_mics):
        log.warning("%s has %d channels and the codec %d microphones; using channel(s) %s", path, n_ch,
                    room_mics, channels)
    return torch.from_numpy(np.ascontiguousarray(picked.T))
