"""``ndpca data ...``: build and inspect the simulated multi-microphone data set.

``ndpca data build [--out DIR] [--config FILE.toml] [--seed N] [--n-train N] [--n-val N]
[--n-test N] [--speech-dir DIR] [--noise-dir DIR] [--workers N]`` and
``ndpca data info [--out DIR]``. Precedence: defaults < TOML file < flags. The TOML file
holds keys of :class:`training.data.build.DataConfig` at top level (or under ``[data]``).
"""

from __future__ import annotations

import argparse
import logging
import os
import tomllib
from collections import Counter
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pydantic import ValidationError

from shared.errors import ConfigError

from .dataset import default_data_dir, load_manifest

if TYPE_CHECKING:
    from .build import DataConfig

SPLITS = ("train", "val", "test")  # as training.data.build.SPLITS (imported lazily: scipy)

log = logging.getLogger(__name__)


def read_config_file(path: Path) -> dict[str, Any]:
    """Read DataConfig keys from a TOML file (top level or a ``[data]`` table).

    Raises:
        ConfigError: missing or unparsable file, or a key DataConfig does not know.
    """
    path = Path(path)
    try:
        raw = tomllib.loads(path.read_text())
    except OSError as err:
        raise ConfigError(f"cannot read config file {path} ({err})") from err
    except tomllib.TOMLDecodeError as err:
        raise ConfigError(f"config file {path} is not valid TOML ({err})") from err
    table = raw.get("data", raw) if isinstance(raw.get("data"), dict) else raw
    from .build import DataConfig

    known = set(DataConfig.model_fields)
    for key in table:
        if key not in known:
            raise ConfigError(f"config file {path}: unknown key {key!r}; "
                              f"known keys: {', '.join(sorted(known))}")
    return dict(table)


def make_config(args: argparse.Namespace) -> DataConfig:
    """DataConfig from defaults, then ``--config``, then the flags that were given.

    Raises:
        ConfigError: invalid values (the message names them).
    """
    from .build import DataConfig

    values: dict[str, Any] = read_config_file(args.config) if args.config else {}
    for flag in ("seed", "n_train", "n_val", "n_test", "speech_dir", "noise_dir"):
        value = getattr(args, flag, None)
        if value is not None:
            values[flag] = value
    try:
        return DataConfig(**values)
    except ValidationError as err:
        problems = "; ".join(f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in err.errors())
        raise ConfigError(f"invalid data config: {problems}") from err


def cmd_build(args: argparse.Namespace) -> int:
    """``ndpca data build``: build (or reuse) the data set, print where it is."""
    from .build import build_dataset

    cfg = make_config(args)
    workers = args.workers if args.workers is not None else max(1, min(4, os.cpu_count() or 1))
    manifest = build_dataset(cfg, Path(args.out), progress=not args.quiet, workers=workers)
    print(f"data set ready: {manifest}")
    return 0


def summarise(manifest: dict[str, Any]) -> str:
    """Counts, hours, speakers, SNR/RT60 ranges and noise kinds per split, as text."""
    lines = [f"data set {manifest.get('_root', '?')}  (config hash {manifest.get('config_hash', '?')}, "
             f"{manifest.get('sample_rate', '?')} Hz, speech: {manifest.get('speech_source', '?')})"]
    examples = manifest["examples"]
    for split in SPLITS:
        items = [ex for ex in examples if ex["split"] == split]
        if not items:
            lines.append(f"  {split + ':':6s} 0 examples")
            continue
        seconds = sum(float(ex.get("duration_s", 0.0)) for ex in items)
        speakers = {s for ex in items for s in ex.get("speakers", [])}
        snrs = [float(ex["snr_db"]) for ex in items if "snr_db" in ex]
        rt60s = [float(ex["rt60"]) for ex in items if "rt60" in ex]
        noise = Counter(str(ex.get("noise_kind", "?")) for ex in items)
        mics = sorted({int(ex.get("num_mics", 0)) for ex in items})
        line = (f"  {split + ':':6s} {len(items)} examples, {seconds / 60:.1f} min, {len(speakers)} speakers, "
                f"mics {mics}")
        if snrs and rt60s:
            line += (f", SNR {min(snrs):.1f}..{max(snrs):.1f} dB, "
                     f"RT60 {min(rt60s):.2f}..{max(rt60s):.2f} s")
        lines.append(line)
        lines.append("         noise: " + ", ".join(f"{k} {v}" for k, v in sorted(noise.items())))
    return "\n".join(lines)


def cmd_info(args: argparse.Namespace) -> int:
    """``ndpca data info``: print a summary of a built data set."""
    print(summarise(load_manifest(Path(args.out))))
    return 0


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the ``data`` command (``build``, ``info``) to the top-level ``ndpca`` parser."""
    data = subparsers.add_parser("data", help="build or inspect the simulated multi-mic data set")
    sub = data.add_subparsers(dest="data_command", required=True)

    build = sub.add_parser("build", help="simulate rooms and write FLAC files + manifest.json")
    build.add_argument("--out", type=Path, default=default_data_dir(),
                       help="output folder (default: %(default)s, or $NDPCA_DATA_DIR)")
    build.add_argument("--config", type=Path, default=None, help="TOML file with DataConfig keys")
    build.add_argument("--seed", type=int, default=None, help="random seed (default 0)")
    build.add_argument("--n-train", dest="n_train", type=int, default=None, help="training rooms")
    build.add_argument("--n-val", dest="n_val", type=int, default=None, help="validation rooms")
    build.add_argument("--n-test", dest="n_test", type=int, default=None, help="test rooms")
    build.add_argument("--speech-dir", dest="speech_dir", type=Path, default=None,
                       help="clean speech in LibriSpeech layout instead of eSpeak NG talkers")
    build.add_argument("--noise-dir", dest="noise_dir", type=Path, default=None,
                       help="folder of noise recordings mixed in with the synthetic noise")
    build.add_argument("--workers", type=int, default=None,
                       help="parallel processes (default: CPU count, at most 4)")
    build.add_argument("--quiet", action="store_true", help="no progress bar")
    build.set_defaults(func=cmd_build)

    info = sub.add_parser("info", help="print counts, durations and speakers per split")
    info.add_argument("--out", type=Path, default=default_data_dir(),
                      help="data set folder (default: %(default)s)")
    info.set_defaults(func=cmd_info)
