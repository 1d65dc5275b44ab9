"""Versioned checkpoint files: a magic, a format version, a JSON header, a hashed payload.

Layout::

    b"NDPCACKPT\\n" | uint16 format version | uint32 header length | header JSON | payload

The payload is ``torch.save`` of a dict of tensors; the header holds everything needed to
rebuild the model (architecture, model config, STFT preset, sample rate, rate defaults,
training config, how the file was made) and the SHA-256 of the payload, checked on load.
If the file name ends in ``-<8 hex digits>.ckpt`` those digits must start the hash.
"""

from __future__ import annotations

import hashlib
import io
import json
import re
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from shared.errors import CheckpointError

MAGIC = b"NDPCACKPT\n"
FORMAT_VERSION = 1
SUPPORTED_VERSIONS = (1,)
_NAME_HASH = re.compile(r"-([0-9a-f]{8})\.ckpt$")


@dataclass
class Checkpoint:
    header: dict[str, Any]
    tensors: dict[str, torch.Tensor]

    @property
    def sha256(self) -> str:
        return str(self.header["sha256"])


def _payload_bytes(tensors: dict[str, torch.Tensor]) -> bytes:
    buf = io.BytesIO()
    torch.save({k: v.detach().cpu().contiguous() for k, v in tensors.items()}, buf)
    return buf.getvalue()


def save_checkpoint(path: Path | str, header: dict[str, Any], tensors: dict[str, torch.Tensor]) -> str:
    """Write a checkpoint; returns the payload's SHA-256 (hex)."""
    payload = _payload_bytes(tensors)
    digest = hashlib.sha256(payload).hexdigest()
    head = dict(header, sha256=digest, format_version=FORMAT_VERSION)
    head_bytes = json.dumps(head, sort_keys=True, indent=1).encode()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    with open(tmp, "wb") as fh:
        fh.write(MAGIC + struct.pack("<HI", FORMAT_VERSION, len(head_bytes)) + head_bytes + payload)
    tmp.replace(path)
    return digest


def read_header(path: Path | str) -> dict[str, Any]:
    """Read and validate only the header (cheap)."""
    return _read(Path(path), verify=False)[0]


def load_checkpoint(path: Path | str, expect_kind: str | None = None) -> Checkpoint:
    """Load and verify a checkpoint.

    Raises:
        CheckpointError: missing, not a checkpoint, unsupported version, hash mismatch
            (corrupt or edited), or of another kind than ``expect_kind``.
    """
    path = Path(path)
    header, payload = _read(path, verify=True)
    if expect_kind is not None and header.get("kind") != expect_kind:
        raise CheckpointError(
            f"{path} holds a checkpoint of kind {header.get('kind')!r}, expected {expect_kind!r}; "
            "pass a checkpoint made by the matching training command"
        )
    try:
        tensors = torch.load(io.BytesIO(payload), map_location="cpu", weights_only=True)
    except Exception as exc:
        raise CheckpointError(f"{path}: payload cannot be read ({exc}); re-create the file") from None
    return Checkpoint(header, tensors)


def _read(path: Path, verify: bool) -> tuple[dict[str, Any], bytes]:
    if not path.is_file():
        raise CheckpointError(
            f"checkpoint {path} not found; train one with `ndpca train --config FILE` "
            "or pass the path of an existing .ckpt file"
        )
    data = path.read_bytes()
    if not data.startswith(MAGIC) or len(data) < len(MAGIC) + 6:
        raise CheckpointError(
            f"{path} is not an ndpca checkpoint (bad magic); pass a .ckpt file written by "
            "`ndpca train`"
        )
    version, hlen = struct.unpack_from("<HI", data, len(MAGIC))
    if version not in SUPPORTED_VERSIONS:
        raise CheckpointError(
            f"{path} has checkpoint format version {version}; this release reads "
            f"{SUPPORTED_VERSIONS}. Upgrade ndpca or re-train"
        )
    start = len(MAGIC) + 6
    try:
        header = json.loads(data[start : start + hlen].decode())
    except (UnicodeDecodeError, json.JSONDecodeError):
        raise CheckpointError(f"{path}: header is corrupt; re-download or re-train") from None
    payload = data[start + hlen :]
    if verify:
        digest = hashlib.sha256(payload).hexdigest()
        if digest != header.get("sha256"):
            raise CheckpointError(
                f"{path} is corrupt: content hash {digest[:12]} does not match the recorded "
                f"{str(header.get('sha256'))[:12]}; re-download or re-train it"
            )
        m = _NAME_HASH.search(path.name)
        if m and not digest.startswith(m.group(1)):
            raise CheckpointError(
                f"{path}: the hash in the file name ({m.group(1)}) does not match its content "
                f"({digest[:8]}); the file was modified or renamed"
            )
    return header, payload
