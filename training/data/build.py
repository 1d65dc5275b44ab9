"""Build the embedded, seeded multi-microphone data set: simulated rooms -> FLAC + manifest.

Layout of ``out_dir``::

    manifest.json              config, its hash, splits, one record per example
    train/<id>_mics.flac       S channels, 16-bit PCM FLAC
    train/<id>_clean.flac      1 channel, the clean reference of rooms.py
    val/...  test/...

Audio format: FLAC with 16-bit PCM. Signals are normalised to a 0.9 peak, so 16-bit
quantisation noise sits about 98 dB below full scale, far under the lowest SNR in the set
(0 dB) and under the codec distortions we measure; FLAC is lossless, about half the size of
WAV, and writes the same bytes for the same samples, which keeps builds byte-reproducible.

Splits are disjoint by room (every example draws its room from its own seed
``[seed, split index, example index]``) and by speaker: speaker identity groups (the eSpeak
variant, or the speaker folder for real speech) are shuffled with the seed and divided by
``split_fractions``; real noise files are cut from disjoint parts of each recording
(train 0-70 %, val 70-80 %, test 80-100 %).

Cost, measured on the 2-core development machine (while other jobs shared it): 1.4 s of
CPU per 4-second example on average (median 0.8 s, up to 5 s for a small room with a long
RT60; pyroomacoustics' image-source RIRs take over 90 %), about 0.75 GB of memory per worker.
The defaults (240/24/48 = 312 examples, 134 MB on disk) took 7 min 10 s with ``workers=2``
at a load average of about 5; on an idle 2-core machine that is about 312 x 1.4 s / 2, i.e.
4 minutes.
"""

from __future__ import annotations

import hashlib
import json
import logging
import multiprocessing
from concurrent.futures import ProcessPoolExecutor
from dataclasses import replace
from pathlib import Path

import numpy as np
import soundfile as sf
from pydantic import BaseModel, ConfigDict, Field, model_validator
from tqdm import tqdm

from shared.errors import ConfigError

from .noise import NOISE_KINDS, synthetic_noise
from .rooms import place_utterances, sample_layout, simulate_room
from .sources import EspeakSpeechSource, FolderSpeechSource, NoiseFolder, SpeechSource

log = logging.getLogger(__name__)

FORMAT_VERSION = 1
SPLITS: tuple[str, ...] = ("train", "val", "test")
NOISE_REGIONS: dict[str, tuple[float, float]] = {
    "train": (0.0, 0.7), "val": (0.7, 0.8), "test": (0.8, 1.0),
}
DIFFUSE_SOURCES = 4


class DataConfig(BaseModel):
    """Everything that determines the data set; the same config gives the same bytes."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    seed: int = 0
    sample_rate: int = Field(16000, ge=8000, le=48000)
    num_mics: int = Field(4, ge=1, le=8)
    duration_s: float = Field(4.0, gt=0.25, le=60.0)
    n_train: int = Field(240, ge=0)
    n_val: int = Field(24, ge=0)
    n_test: int = Field(48, ge=0)
    rt60_range: tuple[float, float] = (0.15, 0.6)
    snr_range: tuple[float, float] = (0.0, 20.0)
    talkers_range: tuple[int, int] = (1, 3)
    overlap_prob: float = Field(0.25, ge=0.0, le=1.0)
    split_fractions: tuple[float, float, float] = (0.7, 0.1, 0.2)
    speech_dir: Path | None = None
    noise_dir: Path | None = None
    real_noise_fraction: float = Field(0.5, ge=0.0, le=1.0)
    diffuse_noise_fraction: float = Field(0.5, ge=0.0, le=1.0)

    @model_validator(mode="after")
    def _check_ranges(self) -> DataConfig:
        for name in ("rt60_range", "snr_range", "talkers_range"):
            lo, hi = getattr(self, name)
            if lo > hi:
                raise ValueError(f"{name} must be (low, high) with low <= high, got {(lo, hi)}")
        if not (0.1 <= self.rt60_range[0] and self.rt60_range[1] <= 2.0):
            raise ValueError(f"rt60_range {self.rt60_range} must lie within 0.1-2.0 s")
        if self.talkers_range[0] < 1:
            raise ValueError("talkers_range must start at 1 or more")
        if min(self.split_fractions) <= 0 or abs(sum(self.split_fractions) - 1.0) > 1e-6:
            raise ValueError("split_fractions must be three positive numbers adding up to 1")
        return self

    @property
    def num_samples(self) -> int:
        """N, samples per example."""
        return int(round(self.duration_s * self.sample_rate))

    def count(self, split: str) -> int:
        """Number of examples in ``split``."""
        return int(getattr(self, f"n_{split}"))


def make_sources(cfg: DataConfig) -> tuple[SpeechSource, NoiseFolder | None]:
    """The speech source (eSpeak or ``speech_dir``) and the noise folder (or None)."""
    speech: SpeechSource
    if cfg.speech_dir is not None:
        speech = FolderSpeechSource(cfg.speech_dir, cfg.sample_rate)
    else:
        speech = EspeakSpeechSource(cfg.sample_rate)
    noise = NoiseFolder(cfg.noise_dir, cfg.sample_rate) if cfg.noise_dir is not None else None
    return speech, noise


def config_hash(cfg: DataConfig, speech: SpeechSource, noise: NoiseFolder | None) -> str:
    """SHA-256 (16 hex digits) of the config, the format version and the source contents.

    Folder paths are replaced by fingerprints of their contents (relative names and sizes),
    so moving a folder keeps the hash and changing its files changes it.
    """
    payload = {
        "format": FORMAT_VERSION,
        "config": cfg.model_dump(mode="json", exclude={"speech_dir", "noise_dir"}),
        "speech": speech.fingerprint(),
        "noise": noise.fingerprint() if noise is not None else None,
    }
    blob = json.dumps(payload, sort_keys=True, separators=(",", ":")).encode()
    return hashlib.sha256(blob).hexdigest()[:16]


def split_groups(groups: list[str], fractions: tuple[float, float, float], seed: int
                 ) -> dict[str, list[str]]:
    """Shuffle identity groups with ``seed`` and divide them into train/val/test.

    Val and test get at least one group each, train the rest.

    Raises:
        ConfigError: fewer than three groups.
    """
    unique = sorted(set(groups))
    if len(unique) < 3:
        raise ConfigError(
            f"only {len(unique)} speaker(s) available, need at least 3 for disjoint "
            "train/val/test speakers: add speaker folders to --speech-dir"
        )
    order = [unique[i] for i in np.random.default_rng([seed, 7]).permutation(len(unique))]
    n_val = max(1, int(round(fractions[1] * len(unique))))
    n_test = max(1, int(round(fractions[2] * len(unique))))
    n_val = min(n_val, len(unique) - 2)
    n_test = min(n_test, len(unique) - n_val - 1)
    return {"test": sorted(order[:n_test]), "val": sorted(order[n_test:n_test + n_val]),
            "train": sorted(order[n_test + n_val:])}


_WORKER_SOURCES: dict[str, tuple[SpeechSource, NoiseFolder | None]] = {}


def _sources_for(cfg: DataConfig) -> tuple[SpeechSource, NoiseFolder | None]:
    """Sources of this process, built once per config (folders are scanned once)."""
    key = cfg.model_dump_json()
    if key not in _WORKER_SOURCES:
        _WORKER_SOURCES[key] = make_sources(cfg)
    return _WORKER_SOURCES[key]


def build_example(cfg: DataConfig, split: str, index: int, speakers: list[str],
                  out_dir: Path) -> dict[str, object]:
    """Simulate one room, write its two FLAC files, return its manifest record.

    Args:
        cfg: the data config.
        split: "train", "val" or "test".
        index: example number within the split.
        speakers: the speaker ids this split may use.
        out_dir: data set root; files go to ``out_dir/<split>/``.
    """
    speech, noise_folder = _sources_for(cfg)
    room_seed = [cfg.seed, SPLITS.index(split), index]
    rng = np.random.default_rng(room_seed)
    n = cfg.num_samples
    num_talkers = min(int(rng.integers(cfg.talkers_range[0], cfg.talkers_range[1] + 1)), len(speakers))
    chosen = [speakers[i] for i in rng.choice(len(speakers), num_talkers, replace=False)]
    diffuse = bool(rng.random() < cfg.diffuse_noise_fraction)
    num_noise = DIFFUSE_SOURCES if diffuse else 1
    layout = sample_layout(rng, cfg.num_mics, num_talkers, num_noise, cfg.rt60_range)

    spoken: list[str] = []

    def next_utterance(talker: int) -> np.ndarray:
        audio, what = speech.utterance(chosen[talker], rng)
        spoken.append(what)
        return audio

    max_turn = int(1.1 * n / num_talkers) if num_talkers > 1 else None
    tracks, segments = place_utterances(rng, num_talkers, next_utterance, n, cfg.sample_rate,
                                        overlap_prob=cfg.overlap_prob, max_turn_samples=max_turn)
    # a talker whose turn did not fit in the example is not in the room
    spoke = sorted({sg.talker for sg in segments})
    if len(spoke) < num_talkers:
        renumber = {old: new for new, old in enumerate(spoke)}
        tracks = tracks[spoke]
        chosen = [chosen[k] for k in spoke]
        layout = replace(layout, talkers=layout.talkers[spoke])
        segments = [replace(sg, talker=renumber[sg.talker]) for sg in segments]
    noise_files: list[str] = []
    if noise_folder is not None and rng.random() < cfg.real_noise_fraction:
        path = noise_folder.files[int(rng.integers(len(noise_folder.files)))]
        rows = []
        for _ in range(num_noise):
            excerpt, name = noise_folder.excerpt(n, rng, NOISE_REGIONS[split], path=path)
            rows.append(excerpt)
            noise_files.append(name)
        noise = np.stack(rows)
        noise_kind = "file"
    else:
        noise_kind = str(NOISE_KINDS[int(rng.integers(len(NOISE_KINDS)))])
        noise = np.stack([synthetic_noise(noise_kind, n, rng, cfg.sample_rate) for _ in range(num_noise)])
    snr_db = float(rng.uniform(*cfg.snr_range))
    mix = simulate_room(layout, tracks, noise, snr_db, cfg.sample_rate)

    example_id = f"{split}-{index:05d}"
    split_dir = out_dir / split
    split_dir.mkdir(parents=True, exist_ok=True)
    mics_rel, clean_rel = f"{split}/{example_id}_mics.flac", f"{split}/{example_id}_clean.flac"
    sf.write(out_dir / mics_rel, mix.mics.T, cfg.sample_rate, subtype="PCM_16", format="FLAC")
    sf.write(out_dir / clean_rel, mix.clean, cfg.sample_rate, subtype="PCM_16", format="FLAC")
    sr = cfg.sample_rate
    return {
        "split": split,
        "id": example_id,
        "mics": mics_rel,
        "clean": clean_rel,
        "num_mics": int(mix.mics.shape[0]),
        "num_samples": n,
        "duration_s": n / sr,
        "room_seed": room_seed,
        "speakers": chosen,
        "speaker_groups": [speech.group(s) for s in chosen],
        "utterances": [
            {"talker": sg.talker, "speaker": chosen[sg.talker], "start_s": round(sg.start / sr, 4),
             "end_s": round(sg.end / sr, 4), "source": what}
            for sg, what in zip(segments, spoken, strict=True)
        ],
        "room": layout.to_dict(),
        "rt60": round(layout.rt60, 4),
        "rt60_measured": None if mix.rt60_measured is None else round(mix.rt60_measured, 4),
        "snr_db": round(snr_db, 3),
        "noise_kind": noise_kind,
        "noise_spatial": "diffuse" if diffuse else "point",
        "noise_files": noise_files,
        "direct_path_index": mix.direct_index,
        "gain": round(mix.gain, 6),
    }


def _build_task(task: tuple[dict[str, object], str, int, list[str], str]) -> dict[str, object]:
    """Process-pool entry point: unpack a task and call :func:`build_example`."""
    cfg_dict, split, index, speakers, out_dir = task
    return build_example(DataConfig.model_validate(cfg_dict), split, index, speakers, Path(out_dir))


def _cached(manifest_path: Path, digest: str) -> bool:
    """True when ``manifest_path`` exists, has hash ``digest`` and all its files exist."""
    try:
        manifest = json.loads(manifest_path.read_text())
    except (OSError, ValueError):
        return False
    if manifest.get("config_hash") != digest:
        return False
    root = manifest_path.parent
    return all((root / ex["mics"]).is_file() and (root / ex["clean"]).is_file()
               for ex in manifest.get("examples", []))


def build_dataset(cfg: DataConfig, out_dir: Path, progress: bool = True, workers: int = 1) -> Path:
    """Build (or reuse) the data set described by ``cfg`` in ``out_dir``.

    Args:
        cfg: the data config.
        out_dir: destination folder (created).
        progress: show a tqdm progress bar.
        workers: processes simulating rooms in parallel (results do not depend on it).

    Returns:
        Path of ``out_dir/manifest.json``. When it already exists with the same config hash
        and all its files are present, it is returned without rebuilding.
    """
    out_dir = Path(out_dir)
    speech, noise = make_sources(cfg)
    digest = config_hash(cfg, speech, noise)
    manifest_path = out_dir / "manifest.json"
    if _cached(manifest_path, digest):
        log.info("data set in %s is up to date (config hash %s)", out_dir, digest)
        return manifest_path
    out_dir.mkdir(parents=True, exist_ok=True)
    manifest_path.unlink(missing_ok=True)  # an interrupted rebuild must not look complete
    for split in SPLITS:  # remove our own files of an older build, nothing else
        for old in (out_dir / split).glob(f"{split}-*_*.flac"):
            old.unlink()

    groups = split_groups([speech.group(s) for s in speech.speakers], cfg.split_fractions, cfg.seed)
    pools = {split: [s for s in speech.speakers if speech.group(s) in set(groups[split])]
             for split in SPLITS}
    cfg_dict = cfg.model_dump(mode="json")
    tasks = [(cfg_dict, split, i, pools[split], str(out_dir))
             for split in SPLITS for i in range(cfg.count(split))]
    bar = tqdm(total=len(tasks), desc="building rooms", unit="room", disable=not progress)
    examples: list[dict[str, object]] = []
    if workers > 1 and len(tasks) > 1:
        ctx = multiprocessing.get_context("spawn")
        with ProcessPoolExecutor(max_workers=workers, mp_context=ctx) as pool:
            for record in pool.map(_build_task, tasks, chunksize=1):
                examples.append(record)
                bar.update(1)
    else:
        for task in tasks:
            examples.append(_build_task(task))
            bar.update(1)
    bar.close()

    manifest = {
        "format_version": FORMAT_VERSION,
        "config": cfg_dict,
        "config_hash": digest,
        "sample_rate": cfg.sample_rate,
        "speech_source": speech.kind,
        "clean_reference": "direct path + first 50 ms of reflections at mic 0, no noise",
        "splits": {
            split: {
                "count": cfg.count(split),
                "speaker_groups": groups[split],
                "speakers_used": sorted({str(s) for ex in examples if ex["split"] == split
                                         for s in ex["speakers"]}),  # type: ignore[attr-defined]
            }
            for split in SPLITS
        },
        "examples": examples,
    }
    tmp = manifest_path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(manifest, indent=1))
    tmp.replace(manifest_path)
    log.info("wrote %d examples to %s (config hash %s)", len(examples), out_dir, digest)
    return manifest_path
