"""Reading a source's microphones from a file."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import soundfile as sf
import torch

from shared.errors import AudioError


def read_source_audio(path: str | Path, channels: list[int], sample_rate: int) -> torch.Tensor:
    """Channels ``channels`` of a multi-channel file (or a mono file) -> ``[M_s, N]`` float32.

    A mono file serves a source with one microphone whatever its index.
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
    return torch.from_numpy(np.ascontiguousarray(picked.T))
