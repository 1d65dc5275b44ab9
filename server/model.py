"""Device choice and codec loading for the receiver."""

from __future__ import annotations

import logging
from pathlib import Path

import torch

from shared.codec import Codec
from shared.errors import UserError
from shared.streaming import find_checkpoint

log = logging.getLogger(__name__)


def resolve_device(name: str) -> str:
    """``auto`` -> ``cuda`` when available, else ``cpu``; ``cuda`` without a GPU is an error."""
    if name == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if name == "cuda" and not torch.cuda.is_available():
        raise UserError("--device cuda asked for, but no CUDA device is available; use --device cpu")
    if name not in ("cpu", "cuda"):
        raise UserError(f"unknown device {name!r}; choose auto, cpu or cuda")
    return name


def checkpoint_path(checkpoint: str | None, arch: str, directory: str) -> Path:
    """The explicit checkpoint, else the newest ``<directory>/<arch>-<hash8>.ckpt``."""
    if checkpoint:
        return Path(checkpoint)
    found = find_checkpoint(arch, directory)
    if found is None:
        raise UserError(
            f"no checkpoint for {arch} in {directory}/; train one with "
            f"`ndpca train --config {arch}` or pass --checkpoint FILE"
        )
    return found


def load_codec(checkpoint: str | None, arch: str, directory: str, device: str) -> Codec:
    path = checkpoint_path(checkpoint, arch, directory)
    codec = Codec.load(path, device=resolve_device(device), expect_arch=None if checkpoint else arch)
    log.info("loaded %s (%s, sha256 %s) on %s", path, codec.cfg.arch, codec.sha256[:12], codec.device)
    return codec
