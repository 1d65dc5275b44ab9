"""Device choice and codec loading for the receiver."""

from __future__ import annotations

import logging
from pathlib import Path

from shared.codec import Codec
from shared.device import resolve_device
from shared.errors import UserError
from shared.streaming import find_checkpoint

log = logging.getLogger(__name__)


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
