"""PyTorch views of a built data set (see :mod:`training.data.build`).

- :func:`load_manifest` reads and checks ``manifest.json``.
- :class:`RoomDataset`: whole examples, ``mics [S, N]`` and ``clean [N]``.
- :class:`SegmentDataset`: fixed-length crops ``[S, L]`` / ``[L]`` for training, at positions
  that depend only on (seed, epoch, index), so runs are reproducible and every epoch sees
  other crops after :meth:`SegmentDataset.set_epoch`.
- :func:`default_data_dir`: ``<repo>/data/rooms``, or ``$NDPCA_DATA_DIR``.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import numpy as np
import soundfile as sf
import torch
from torch.utils.data import Dataset

from shared.errors import AudioError, ConfigError

BUILD_HINT = "run `ndpca data build` to create it"


def default_data_dir() -> Path:
    """Where ``ndpca data build`` writes by default: ``$NDPCA_DATA_DIR`` or ``<repo>/data/rooms``."""
    env = os.environ.get("NDPCA_DATA_DIR")
    if env:
        return Path(env).expanduser()
    return Path(__file__).resolve().parents[2] / "data" / "rooms"


def load_manifest(path: Path) -> dict[str, Any]:
    """Read a data-set manifest; a folder means ``<folder>/manifest.json``.

    Raises:
        ConfigError: the manifest is missing, not JSON, or lacks the expected keys.
    """
    path = Path(path)
    if path.is_dir():
        path = path / "manifest.json"
    if not path.is_file():
        raise ConfigError(f"data-set manifest {path} does not exist; {BUILD_HINT}")
    try:
        manifest = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, ValueError) as err:
        raise ConfigError(f"data-set manifest {path} is corrupt ({err}); delete it and {BUILD_HINT}") from err
    if not isinstance(manifest, dict) or not isinstance(manifest.get("examples"), list):
        raise ConfigError(f"data-set manifest {path} has no 'examples' list; delete it and {BUILD_HINT}")
    for key in ("split", "id", "mics", "clean"):
        bad = [i for i, ex in enumerate(manifest["examples"]) if key not in ex]
        if bad:
            raise ConfigError(f"data-set manifest {path}: example {bad[0]} lacks {key!r}; "
                              f"delete it and {BUILD_HINT}")
    manifest["_root"] = str(path.parent)
    return manifest


def _read(path: Path, sample_rate: int) -> np.ndarray:
    """Read a data-set FLAC as float32 ``[C, N]``; AudioError naming the file if broken."""
    if not path.is_file():
        raise AudioError(f"data-set file {path} is missing; {BUILD_HINT} again")
    try:
        data, sr = sf.read(str(path), dtype="float32", always_2d=True)
    except (RuntimeError, sf.LibsndfileError) as err:
        raise AudioError(f"data-set file {path} is unreadable ({err}); {BUILD_HINT} again") from err
    if sr != sample_rate:
        raise AudioError(f"data-set file {path} is at {sr} Hz, the manifest says {sample_rate} Hz; "
                         f"{BUILD_HINT} again")
    return np.ascontiguousarray(data.T)


class RoomDataset(Dataset):
    """Whole examples of one split.

    Args:
        manifest_path: ``manifest.json`` or the folder holding it.
        split: "train", "val" or "test".

    Items: ``dict(mics=float32 [S, N], clean=float32 [N], id=str)``.
    """

    def __init__(self, manifest_path: Path, split: str) -> None:
        self.manifest = load_manifest(manifest_path)
        self.root = Path(self.manifest["_root"])
        self.sample_rate = int(self.manifest.get("sample_rate", 16000))
        self.examples = [ex for ex in self.manifest["examples"] if ex["split"] == split]
        self.split = split
        if not self.examples:
            splits = sorted({ex["split"] for ex in self.manifest["examples"]})
            raise ConfigError(f"split {split!r} is empty in {self.root / 'manifest.json'} "
                              f"(it has: {', '.join(splits) or 'nothing'}); {BUILD_HINT} with more examples")

    def __len__(self) -> int:
        return len(self.examples)

    def __getitem__(self, index: int) -> dict[str, Any]:
        ex = self.examples[index]
        mics = _read(self.root / ex["mics"], self.sample_rate)
        clean = _read(self.root / ex["clean"], self.sample_rate)[0]
        if mics.shape[1] != clean.shape[0]:
            raise AudioError(f"{self.root / ex['mics']} and its clean reference differ in length; "
                             f"{BUILD_HINT} again")
        return {"mics": torch.from_numpy(mics), "clean": torch.from_numpy(clean), "id": ex["id"]}

    def num_samples(self, index: int) -> int:
        """N of example ``index`` (from the manifest, no audio read)."""
        ex = self.examples[index]
        return int(ex.get("num_samples", round(float(ex["duration_s"]) * self.sample_rate)))


class SegmentDataset(Dataset):
    """Fixed-length crops of a :class:`RoomDataset`.

    Args:
        rooms: the examples to crop.
        segment_samples: L, crop length; shorter examples are zero-padded at the end.
        seed: seed of the crop positions.
        crops_per_example: crops drawn from each example per epoch.

    Item ``i`` is crop ``i % crops_per_example`` of example ``i // crops_per_example``,
    starting at a position drawn from ``default_rng([seed, epoch, i])``:
    ``dict(mics=float32 [S, L], clean=float32 [L], id=str, start=int)``.
    """

    def __init__(self, rooms: RoomDataset, segment_samples: int, seed: int = 0,
                 crops_per_example: int = 1) -> None:
        if segment_samples <= 0:
            raise ConfigError(f"segment_samples must be positive, got {segment_samples}")
        self.rooms = rooms
        self.segment_samples = int(segment_samples)
        self.seed = int(seed)
        self.crops_per_example = int(crops_per_example)
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        """Use the crop positions of ``epoch`` (call once per epoch for variety)."""
        self.epoch = int(epoch)

    def __len__(self) -> int:
        return len(self.rooms) * self.crops_per_example

    def start(self, index: int) -> int:
        """First sample of crop ``index`` in the current epoch."""
        n = self.rooms.num_samples(index // self.crops_per_example)
        room = max(0, n - self.segment_samples)
        return int(np.random.default_rng([self.seed, self.epoch, index]).integers(0, room + 1))

    def __getitem__(self, index: int) -> dict[str, Any]:
        item = self.rooms[index // self.crops_per_example]
        start = self.start(index)
        length = self.segment_samples
        mics = item["mics"][:, start:start + length]
        clean = item["clean"][start:start + length]
        if mics.shape[1] < length:
            pad = length - mics.shape[1]
            mics = torch.nn.functional.pad(mics, (0, pad))
            clean = torch.nn.functional.pad(clean, (0, pad))
        return {"mics": mics.contiguous(), "clean": clean.contiguous(), "id": item["id"], "start": start}
