"""``ndpca evaluate``: quality against the room's bit rate, every codec and Opus.

For every test example and method, the four-microphone signal is coded step by step exactly as
the streaming system does it (allocation, projection, quantisation, entropy coding within each
source's share of the step's bits) at every *bandwidth* of the sweep: ``per_vector``
components per latent vector shared by the sources (the paper's L for one vector; the full
width ``sum(latent_sizes)`` is always included). The rate is the one measured: all bits the
sources produced, per second (``room_kbps``).

Metrics per (example, method, bandwidth), each decoded microphone against its own captured
signal (codec fidelity, not enhancement):

* reference microphone (mic 0): PESQ-WB, STOI, SI-SDR of the waveform, and Eq. 13 PSNR on
  its compressed magnitude spectra (columns ``pesq, stoi, si_sdr_db, psnr_db``);
* all microphones: the mean over microphones of PESQ-WB, STOI and SI-SDR, and Eq. 13 PSNR over
  all microphones' spectra (columns ``all_*``; the paper's Fig. 3b).

Opus (libopus through PyAV, rate measured from packet sizes) at equal *room* rate, for each
target room rate in ``opus_kbps``:

* ``opus-ref``: the reference microphone alone coded at the whole room rate; only the
  reference-microphone columns are filled (the other microphones are not sent);
* ``opus-all``: every microphone at an equal share (target / M each); "not reachable" below
  M times Opus's floor (no number is invented).

Opus rows have ``bandwidth = -1`` (no latent components) and the room target in
``target_kbps`` (empty for codec rows). For Opus the spectra compared are the STFT of its
decoded audio; for the codecs the decoder's output spectra before the inverse STFT.

Outputs in ``DIR`` (and ``DIR/real`` for held-out real speech): ``results.csv`` (means over
examples per method, bandwidth and target), ``results_per_example.csv``, ``quality_vs_rate.png``,
``fig3b_psnr.png``, ``headline.json``, ``summary.md`` (see :mod:`training.evaluate_report`) and
``command.txt``.
"""

from __future__ import annotations

import csv
import json
import logging
import shlex
import sys
import time
from collections import defaultdict
from concurrent.futures import Executor, ProcessPoolExecutor
from contextlib import nullcontext
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm import tqdm

from shared.codec import Codec
from shared.errors import CheckpointError, UserError
from training.evaluate_report import (
    PAPER,
    STYLES,
    fmt_cell,
    headline,
    per_bandwidth_lines,
    write_report,
)
from training.losses import psnr_db
from training.metrics import pesq_wb, si_sdr_db, stoi
from training.opus import opus_at_bitrate, opus_min_bitrate

log = logging.getLogger(__name__)

__all__ = ["BANDWIDTHS", "CODEC_CONFIGS", "DEFAULT_CKPT_DIR", "FIELDS", "METHODS", "OPUS_KBPS",
           "OPUS_METHODS", "PAPER", "REPO", "STYLES", "aggregate", "codec_arch", "evaluate_examples",
           "find_checkpoint", "find_codec", "fmt_cell", "headline", "per_bandwidth_lines",
           "perceptual_scores", "run_evaluation", "sweep_bandwidths", "write_outputs"]

REPO = Path(__file__).resolve().parents[1]
DEFAULT_CKPT_DIR = REPO / "checkpoints"
# components per latent vector; values above the full width are dropped, the full width added
BANDWIDTHS = (2, 4, 8, 16, 32, 64, 128, 256, 512, 1024)
OPUS_KBPS = (6, 8, 12, 16, 24, 32, 48, 64, 96)  # Opus's room-rate targets (kbit/s)
# method -> (codec, allocation rule); a codec is "[subfolder/]architecture" inside the
# checkpoint folder. Two naive baselines: "naive-*" trained with a random first-k truncation
# (ordered latents, a strong baseline) and "naive-full-*" trained on the full latent with
# nothing of NDPCA (the paper's "same encoders without NDPCA" taken literally). "dpca-*": no
# network, per-source PCA of the stacked compressed complex STFT with NDPCA's allocation.
# "ndpca-*" allocate with the codec's task weights (reference microphone first);
# "ndpca-equal-*" pool the singular values unweighted, the allocation of Li et al.
METHODS: dict[str, tuple[str, str]] = {
    "jae": ("jae", "ndpca"),
    "ndpca-e2d1": ("ndpca-e2d1", "ndpca"),
    "ndpca-e4d1": ("ndpca-e4d1", "ndpca"),
    "ndpca-equal-e2d1": ("ndpca-e2d1", "ndpca-equal"),
    "ndpca-equal-e4d1": ("ndpca-e4d1", "ndpca-equal"),
    "uniform-e2d1": ("ndpca-e2d1", "uniform"),
    "uniform-e4d1": ("ndpca-e4d1", "uniform"),
    "naive-e2d1": ("naive-e2d1", "uniform"),
    "naive-e4d1": ("naive-e4d1", "uniform"),
    "naive-full-e2d1": ("full_latent/naive-e2d1", "uniform"),
    "naive-full-e4d1": ("full_latent/naive-e4d1", "uniform"),
    "dpca-e2d1": ("dpca-e2d1", "ndpca"),
    "dpca-e4d1": ("dpca-e4d1", "ndpca"),
}
OPUS_METHODS = ("opus-ref", "opus-all")
# training config (training/configs/<name>.toml) of codecs whose config is not named after them
CODEC_CONFIGS = {"full_latent/naive-e2d1": "naive-e2d1-full", "full_latent/naive-e4d1": "naive-e4d1-full"}
METRICS = ("psnr_db", "si_sdr_db", "pesq", "stoi")
ALL_METRICS = tuple(f"all_{k}" for k in METRICS)
# the reference microphone's output against the room's clean speech (what a listener wants)
CLEAN_METRICS = ("clean_si_sdr_db", "clean_pesq", "clean_stoi")
FIELDS = (["method", "bandwidth", "room_kbps", *METRICS, *ALL_METRICS, *CLEAN_METRICS, "target_kbps",
           "opus_floor_kbps", "coefficients_per_step", "allocation", "n_examples", "note"])
EXAMPLE_FIELDS = ["example"] + [k for k in FIELDS if k != "n_examples"]
NAN = float("nan")


def find_checkpoint(ckpt_dir: Path, arch: str, config: str | None = None) -> Path:
    """``<dir>/<arch>-<hash8>.ckpt`` (shipped) or ``<dir>/<arch>.ckpt`` (fresh training)."""
    hits = sorted(ckpt_dir.glob(f"{arch}-*.ckpt")) + sorted(ckpt_dir.glob(f"{arch}.ckpt"))
    hits = [h for h in hits if h.stem == arch or h.stem[len(arch) + 1 :].isalnum()]
    if not hits:
        raise CheckpointError(
            f"no checkpoint for {arch!r} in {ckpt_dir}; train it with "
            f"`ndpca train --config training/configs/{config or arch}.toml --out {ckpt_dir}/{arch}.ckpt` "
            "or pass --checkpoints DIR"
        )
    return hits[0]


def codec_arch(codec: str) -> str:
    """The architecture of a codec reference ``[subfolder/]architecture``."""
    return codec.rpartition("/")[2]


def find_codec(ckpt_dir: Path, codec: str, config_prefix: str = "") -> Path:
    """The checkpoint of codec ``[subfolder/]architecture`` under ``ckpt_dir``; the hint for a
    missing one names its training config (``config_prefix`` + the codec's config name)."""
    sub, _, arch = codec.rpartition("/")
    return find_checkpoint(ckpt_dir / sub if sub else ckpt_dir, arch,
                           config_prefix + CODEC_CONFIGS.get(codec, arch))


def finite_mean(values: list[float]) -> float:
    """Mean of the finite values; NaN when there are none."""
    v = np.asarray(values, dtype=np.float64)
    v = v[np.isfinite(v)]
    return float(v.mean()) if v.size else NAN


def sweep_bandwidths(requested: tuple[int, ...], full: int) -> tuple[int, ...]:
    """The requested components per vector up to ``full``, with ``full`` always included."""
    return tuple(sorted({int(b) for b in requested if 0 <= b <= full} | {full}))


# ---------------------------------------------------------------------------- perceptual


def _perceptual(job: tuple[np.ndarray, np.ndarray, int]) -> tuple[float, float]:
    ref, est, sr = job
    return pesq_wb(ref, est, sr), stoi(ref, est, sr)


def perceptual_scores(jobs: list[tuple[np.ndarray, np.ndarray, int]], workers: int = 2,
                      progress: bool = True, pool: Executor | None = None) -> list[tuple[float, float]]:
    """(PESQ-WB, STOI) of every (reference, estimate, rate) job, in a process pool (``pool``
    when given, else a new one of ``workers`` processes; in this process for ``workers <= 1``)."""
    if not jobs:
        return []
    if pool is None and workers > 1:
        with ProcessPoolExecutor(workers) as own:
            return perceptual_scores(jobs, workers, progress, own)
    it = pool.map(_perceptual, jobs, chunksize=4) if pool is not None else map(_perceptual, jobs)
    return list(tqdm(it, total=len(jobs), disable=not progress, desc="pesq/stoi"))


def score_rows(rows: list[dict[str, Any]], mics: np.ndarray, sr: int, mode: str,
               workers: int, pool: Executor | None, clean: np.ndarray | None = None) -> None:
    """Fill ``pesq, stoi`` (mic 0) and ``all_pesq, all_stoi`` (mean over microphones) of one
    example's rows from their decoded audio (key ``_decoded``, removed), and with ``clean``
    ``clean_pesq, clean_stoi`` (mic 0 against the clean speech). ``mode``: "all", "ref"
    (reference microphone only) or "none"."""
    jobs, owners, clean_jobs = [], [], []
    for i, row in enumerate(rows):
        dec = row.pop("_decoded")
        row.update(pesq=NAN, stoi=NAN, all_pesq=NAN, all_stoi=NAN, clean_pesq=NAN, clean_stoi=NAN)
        if dec is None or mode == "none":
            continue
        n = dec.shape[0] if mode == "all" else 1
        jobs += [(mics[m], dec[m], sr) for m in range(n)]
        owners += [i] * n
        if clean is not None:
            clean_jobs.append((i, (clean, dec[0], sr)))
    scores_all = perceptual_scores(jobs + [j for _, j in clean_jobs], workers, False, pool)
    for (i, _), sc in zip(clean_jobs, scores_all[len(jobs):]):
        rows[i]["clean_pesq"], rows[i]["clean_stoi"] = sc
    per_row: dict[int, list[tuple[float, float]]] = defaultdict(list)
    for i, s in zip(owners, scores_all[: len(jobs)]):
        per_row[i].append(s)
    for i, scores in per_row.items():
        rows[i]["pesq"], rows[i]["stoi"] = scores[0]
        if len(scores) == len(mics):
            rows[i]["all_pesq"] = finite_mean([p for p, _ in scores])
            rows[i]["all_stoi"] = finite_mean([t for _, t in scores])


# ---------------------------------------------------------------------------- coding


def load_examples(data_dir: Path, split: str, limit: int | None) -> list[dict[str, Any]]:
    """The first ``limit`` examples (None: all) of ``split`` in the data set ``data_dir``; a
    warning says so when the split holds fewer than asked for."""
    from training.data.dataset import RoomDataset

    ds = RoomDataset(data_dir / "manifest.json", split)
    if limit is not None and len(ds) < limit:
        log.warning("%s holds %d %s examples, fewer than the %d asked for; scoring those %d",
                    data_dir, len(ds), split, limit, len(ds))
    n = len(ds) if limit is None else min(limit, len(ds))
    return [ds[i] for i in range(n)]


def _psnr(spec_out: torch.Tensor, spec_in: torch.Tensor, rep: str) -> float:
    return float(psnr_db(spec_out[None], spec_in[None], rep)[0])


def quality(mics: torch.Tensor, decoded: torch.Tensor, spec_in: torch.Tensor,
            spec_out: torch.Tensor, rep: str, clean: torch.Tensor | None = None) -> dict[str, Any]:
    """Waveform and spectral metrics of ``decoded`` ``[K, N]`` (K = M microphones, or 1: the
    reference microphone alone) against ``mics`` ``[M, N]`` (and mic 0 against ``clean``
    ``[N]``); PESQ/STOI come later."""
    k = decoded.shape[0]
    sdr = [si_sdr_db(mics[m].numpy(), decoded[m].numpy()) for m in range(k)]
    out = {"psnr_db": _psnr(spec_out[:1], spec_in[:1], rep), "si_sdr_db": sdr[0],
           "all_psnr_db": NAN, "all_si_sdr_db": NAN, "_decoded": decoded.numpy(),
           "clean_si_sdr_db": NAN if clean is None else si_sdr_db(clean.numpy(), decoded[0].numpy())}
    if k == mics.shape[0]:
        out.update(all_psnr_db=_psnr(spec_out, spec_in, rep), all_si_sdr_db=float(np.mean(sdr)))
    return out


def codec_rows(ex_id: str, mics: torch.Tensor, codecs: dict[str, Codec], methods: tuple[str, ...],
               bandwidths: tuple[int, ...], clean: torch.Tensor | None = None) -> list[dict[str, Any]]:
    """One row per method and bandwidth (up to and including each codec's full width)."""
    rows = []
    for ref in dict.fromkeys(METHODS[m][0] for m in methods):
        codec = codecs[ref]
        cache = codec.signal_coefficients(mics)
        spec_in = codec.spectra(mics).cpu()
        for method in (m for m in methods if METHODS[m][0] == ref):
            for bw in sweep_bandwidths(bandwidths, sum(codec.latent_sizes)):
                dec, stats = codec.code_signal(mics, bw, METHODS[method][1], coefficients=cache)
                rows.append({
                    "method": method, "bandwidth": bw, "target_kbps": None, "example": ex_id,
                    "room_kbps": stats["bitrate_bps"] / 1000, "opus_floor_kbps": NAN,
                    "coefficients_per_step": stats["coefficients_per_chunk"],
                    "allocation": "/".join(map(str, stats["allocation"])), "note": "",
                    **quality(mics, dec.cpu(), spec_in, stats["spectra"].cpu(), codec.cfg.representation,
                              clean),
                })
    return rows


def _opus_row(method: str, ex_id: str, target_kbps: float, floor_kbps: float) -> dict[str, Any]:
    return {"method": method, "bandwidth": -1, "target_kbps": target_kbps, "example": ex_id,
            "room_kbps": NAN, "opus_floor_kbps": floor_kbps, "coefficients_per_step": NAN,
            "allocation": "", "note": "", "_decoded": None,
            **dict.fromkeys(("psnr_db", "si_sdr_db", "all_psnr_db", "all_si_sdr_db", "clean_si_sdr_db"), NAN)}


def opus_rows(ex_id: str, mics: torch.Tensor, codec: Codec, targets_kbps: tuple[float, ...],
              clean: torch.Tensor | None = None) -> list[dict[str, Any]]:
    """``opus-ref`` and ``opus-all`` rows at every room-rate target.

    ``opus_floor_kbps`` is the lowest room rate each kind reaches on this example: the rate
    Opus's lowest setting measures on microphone 0 (opus-ref), M times the largest such rate
    over the microphones (opus-all: equal shares). Targets below it keep NaN metrics and say
    "not reachable" in ``note``.
    """
    sr, m_count = codec.sample_rate, mics.shape[0]
    audio = [m.numpy() for m in mics]
    floors = [opus_min_bitrate(a, sr).bitrate_bps / 1000 for a in audio]
    spec_in = codec.spectra(mics).cpu()

    def coded(dec: np.ndarray) -> dict[str, Any]:
        d = torch.from_numpy(dec)
        return quality(mics, d, spec_in, codec.spectra(d).cpu(), codec.cfg.representation, clean)

    rows = []
    for t in targets_kbps:
        ref = _opus_row("opus-ref", ex_id, t, floors[0])
        res = opus_at_bitrate(audio[0], sr, t * 1000) if floors[0] <= t else None
        if res is None or res.audio is None:
            ref["note"] = f"not reachable: {t:g} kbit/s is below Opus's floor on the reference microphone"
        else:
            ref.update(room_kbps=res.bitrate_bps / 1000, **coded(res.audio[None]))
        every = _opus_row("opus-all", ex_id, t, m_count * max(floors))
        share = t / m_count
        res_all = [opus_at_bitrate(a, sr, share * 1000) for a in audio] if max(floors) <= share else []
        if not res_all or any(r.audio is None for r in res_all):
            every["note"] = (f"not reachable: {t:g} kbit/s / {m_count} microphones = {share:.2f} kbit/s "
                             "each, below Opus's floor")
        else:
            every.update(room_kbps=sum(r.bitrate_bps for r in res_all) / 1000,
                         **coded(np.stack([r.audio for r in res_all])))
        rows += [ref, every]
    return rows


def evaluate_examples(
    examples: list[dict[str, Any]],
    codecs: dict[str, Codec],
    bandwidths: tuple[int, ...] = BANDWIDTHS,
    methods: tuple[str, ...] = tuple(METHODS),
    opus_kbps: tuple[float, ...] = OPUS_KBPS,
    perceptual: str = "all",
    workers: int = 2,
    progress: bool = True,
) -> list[dict[str, Any]]:
    """Per-example rows of every method at every bandwidth, then Opus at every target.

    ``perceptual``: "all" (PESQ/STOI of every microphone), "ref" (the reference microphone
    only) or "none"; scored per example in one shared process pool.
    """
    rows: list[dict[str, Any]] = []
    any_codec = next(iter(codecs.values()))
    use_pool = perceptual != "none" and workers > 1
    with ProcessPoolExecutor(workers) if use_pool else nullcontext() as pool:
        for ex in tqdm(examples, disable=not progress, desc="evaluate"):
            mics = ex["mics"].float()
            clean = ex["clean"].float() if "clean" in ex else None
            ex_rows = codec_rows(ex["id"], mics, codecs, methods, bandwidths, clean)
            ex_rows += opus_rows(ex["id"], mics, any_codec, opus_kbps, clean) if opus_kbps else []
            score_rows(ex_rows, mics.numpy(), any_codec.sample_rate, perceptual, workers, pool,
                       None if clean is None else clean.numpy())
            rows += ex_rows
    return rows


# ---------------------------------------------------------------------------- results


def _agg_note(rs: list[dict[str, Any]]) -> str:
    notes = [r.get("note", "") for r in rs]
    parts = []
    for n in dict.fromkeys(x for x in notes if x):
        k = notes.count(n)
        parts.append(n if k == len(rs) else f"{n} ({k} of {len(rs)} examples)")
    return "; ".join(parts)


def aggregate(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Mean over examples per (method, bandwidth, target), NaNs ignored; in method order."""
    groups: dict[tuple[str, int, Any], list[dict[str, Any]]] = defaultdict(list)
    for r in rows:
        groups[(r["method"], r["bandwidth"], r.get("target_kbps"))].append(r)
    order = {m: i for i, m in enumerate([*METHODS, *OPUS_METHODS])}
    out = []
    for (method, bw, target), rs in groups.items():
        agg: dict[str, Any] = {"method": method, "bandwidth": bw, "target_kbps": target,
                               "allocation": rs[0].get("allocation", ""), "n_examples": len(rs),
                               "note": _agg_note(rs)}
        for key in ("room_kbps", *METRICS, *ALL_METRICS, *CLEAN_METRICS, "opus_floor_kbps",
                    "coefficients_per_step"):
            agg[key] = finite_mean([r.get(key, NAN) for r in rs])
        out.append(agg)
    return sorted(out, key=lambda r: (order.get(r["method"], len(order)), r["method"], r["bandwidth"],
                                      r["target_kbps"] or 0))


def _write_csv(path: Path, fields: list[str], rows: list[dict[str, Any]]) -> None:
    with open(path, "w", newline="") as fh:
        w = csv.DictWriter(fh, fields, extrasaction="ignore")
        w.writeheader()
        w.writerows(rows)


def write_outputs(out_dir: Path, rows: list[dict[str, Any]], meta: dict[str, Any], title: str) -> list[dict[str, Any]]:
    """CSV files, plots, ``headline.json`` and ``summary.md``; returns the aggregated rows."""
    out_dir.mkdir(parents=True, exist_ok=True)
    agg = aggregate(rows)
    _write_csv(out_dir / "results.csv", FIELDS, agg)
    _write_csv(out_dir / "results_per_example.csv", EXAMPLE_FIELDS, rows)
    write_report(out_dir, agg, meta, title)
    return agg


# ---------------------------------------------------------------------------- the experiment


def command_line() -> str:
    """The command as typed (``ndpca ...`` for the console script and ``python -m ndpca``)."""
    argv = sys.argv
    if Path(argv[0]).name == "ndpca" or Path(argv[0]).parent.name == "ndpca":
        return shlex.join(["ndpca", *argv[1:]])
    return shlex.join(argv)


def synthetic_rooms(data_dir: Path | None, num_mics: int) -> Path:
    """The synthetic rooms to evaluate on: ``data_dir`` as given (it must hold a data set), or
    the embedded default data set, built on first use."""
    from training.data.dataset import default_data_dir

    if data_dir is not None:
        if not (data_dir / "manifest.json").is_file():
            raise UserError(f"--data-dir {data_dir} holds no data set (no manifest.json); build one with "
                            f"`ndpca data build --out {data_dir}`, or leave --data-dir out for the default rooms")
        return data_dir
    data_dir = default_data_dir()
    if not (data_dir / "manifest.json").is_file():
        from training.data.build import DataConfig, build_dataset

        log.info("building the default rooms in %s (once)", data_dir)
        build_dataset(DataConfig(num_mics=num_mics), data_dir)
    return data_dir


def real_rooms(data_dir: Path, num_mics: int, limit: int | None) -> Path | None:
    """Held-out LibriSpeech test-other speech and recorded noise in simulated rooms
    (``<data_dir>/../rooms_real``, built when ``../shared/data`` exists)."""
    root = REPO.parent / "shared" / "data"
    if not (root / "speech" / "librispeech").is_dir():
        return None
    from training.data.build import DataConfig, build_dataset

    out = data_dir.parent / "rooms_real"
    # room i depends on its own seed only, so a larger set holds the smaller one: never shrink
    # the folder (other tools read its first 8 rooms) to a smaller --limit
    n_test = max(limit or 24, _built_test_rooms(out / "manifest.json"))
    manifest = build_dataset(
        DataConfig(num_mics=num_mics, speech_dir=str(root / "speech" / "librispeech"),
                   noise_dir=str(root / "noise"), n_train=0, n_val=0, n_test=n_test, seed=7), out)
    return manifest.parent


def _built_test_rooms(manifest: Path) -> int:
    """Test rooms of an existing data set (0: none or unreadable)."""
    try:
        return int(json.loads(manifest.read_text())["config"]["n_test"])
    except (OSError, ValueError, KeyError, TypeError):
        return 0


def run_evaluation(
    out_dir: Path,
    ckpt_dir: Path = DEFAULT_CKPT_DIR,
    data_dir: Path | None = None,
    limit: int | None = None,
    bandwidths: tuple[int, ...] = BANDWIDTHS,
    methods: tuple[str, ...] = tuple(METHODS),
    opus_kbps: tuple[float, ...] = OPUS_KBPS,
    perceptual: str = "all",
    workers: int = 2,
    real: bool = True,
    device: str = "cpu",
    progress: bool = True,
    step_profile: str = "water",
) -> dict[str, Any]:
    """The whole experiment (synthetic test rooms, then real speech when available); returns
    the aggregated rows per data set and the seconds taken. ``opus_kbps=()`` skips Opus;
    ``perceptual`` is "all", "ref" or "none"."""

    t0 = time.time()
    refs = list(dict.fromkeys(METHODS[m][0] for m in methods))  # in method order
    paths = {r: find_codec(ckpt_dir, r) for r in refs}
    codecs = {r: Codec.load(paths[r], device=device, expect_arch=codec_arch(r), step_profile=step_profile)
              for r in refs}
    any_codec = next(iter(codecs.values()))
    data_dir = synthetic_rooms(data_dir, any_codec.cfg.num_mics)
    meta = {"command": command_line(), "rate": {**any_codec.rate.__dict__, "step_profile": step_profile},
            "full_latent": sum(any_codec.latent_sizes), "vectors_per_step": any_codec.cfg.vectors_per_step,
            "vector_ms": 1000 * any_codec.chunk_seconds / any_codec.cfg.vectors_per_step,
            "perceptual": perceptual,
            "checkpoints": {r: f"{paths[r].relative_to(ckpt_dir)} (sha256 {c.sha256[:12]})"
                            for r, c in codecs.items()}}
    sets = [("synthetic", data_dir, out_dir, f"synthetic rooms, test split, {data_dir}",
             "Quality against room rate, synthetic test rooms")]
    real_dir = real_rooms(data_dir, any_codec.cfg.num_mics, limit) if real else None
    if real_dir is not None:
        sets.append(("real", real_dir, out_dir / "real", "LibriSpeech test-other speech and real recorded "
                     "noise (../shared/data) in simulated rooms", "Quality against room rate, real speech"))
    result: dict[str, Any] = {}
    for name, ddir, odir, desc, title in sets:
        examples = load_examples(ddir, "test", limit)
        if not examples:
            raise UserError(f"no test examples in {ddir}; rebuild it with `ndpca data build`")
        rows = evaluate_examples(examples, codecs, bandwidths, methods, opus_kbps, perceptual, workers, progress)
        result[name] = write_outputs(odir, rows, dict(meta, n_examples=len(examples), data=desc), title)
    (out_dir / "command.txt").write_text(meta["command"] + "\n")
    result["seconds"] = time.time() - t0
    return result
