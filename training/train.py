"""``ndpca train``: seeded, resumable training of one codec architecture, DDP-ready.

Run alone (``ndpca train --config training/configs/ndpca-e4d1.toml``) or under torchrun
(``torchrun --nproc-per-node 2 -m ndpca train ...``; gloo on CPU, nccl on GPU). Rank 0 writes
``RUN_DIR/state.pt`` (resumable state), ``RUN_DIR/log.jsonl`` (one line per logged step) and,
at the end, fits the NDPCA bases on the training set and writes the codec checkpoint.
"""

from __future__ import annotations

import json
import os
import shutil
import time
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
from torch import nn
from tqdm import tqdm

from shared.codec import Codec
from shared.errors import ConfigError
from shared.models.architectures import DistributedAutoencoder, ModelConfig
from shared.ndpca import (
    batch_pca_bottleneck,
    batch_truncation_bottleneck,
    fit_basis,
    random_bottleneck_size,
)
from shared.stft import get_preset, reflect_pad, stft_frames, to_channels
from training.config import DataSection, TrainConfig, load_resume_state, warmup_cosine_lr
from training.losses import task_agnostic_losses, weighted_total

REPO = Path(__file__).resolve().parents[1]


class BottleneckedAutoencoder(nn.Module):
    """Training wrapper: encode, apply the batch bottleneck of size ``k``, decode.

    One module so that DistributedDataParallel sees the whole forward pass.
    """

    def __init__(self, model: DistributedAutoencoder, bottleneck: str, quant_step: float = 0.0,
                 quant_profile: str = "uniform") -> None:
        super().__init__()
        self.model = model
        self.bottleneck = bottleneck
        self.quant_step = quant_step  # > 0: the quantiser's error is added to kept coefficients
        self.quant_profile = quant_profile  # uniform noise at quant_step, or the water steps
        self.weights = model.cfg.weights  # the sources' task weights in the allocation

    def forward(self, x: torch.Tensor, k: int) -> dict[str, Any]:
        """Spectra ``[B, M, 2, F, T]`` and a bottleneck of ``k`` components per vector ->
        ``recon`` (same shape) and ``latents`` (per source ``[B n, d_s]``, every vector)."""
        seq = self.model.encode(x)  # per source [B, n, d_s]
        b, n = seq[0].shape[:2]
        latents = [z.reshape(b * n, -1) for z in seq]
        total = sum(z.shape[1] for z in latents)
        k = min(k, total)
        if self.bottleneck == "pca":
            kept, ks = batch_pca_bottleneck(latents, k, self.weights, self.quant_step, with_k=True,
                                            profile=self.quant_profile)
        elif self.bottleneck in ("none", "truncate"):
            kept, ks = batch_truncation_bottleneck(latents, total if self.bottleneck == "none" else k,
                                                   self.quant_step, with_k=True)
        else:
            raise ValueError(f"unknown bottleneck {self.bottleneck!r}")
        recon = self.model.decode([z.reshape(b, n, -1) for z in kept], ks)
        return {"recon": recon, "latents": latents}


def _mic_scale(cfg: TrainConfig, device: torch.device | str) -> torch.Tensor | None:
    """``[1, M, 1, 1, 1]`` factors ``sqrt(w_m / mean w)`` of ``train.loss_mic_weights`` (None:
    every microphone alike)."""
    w = cfg.train.loss_mic_weights  # checked against the model when the config is read
    if w is None:
        return None
    t = torch.tensor(w, dtype=torch.float32, device=device)
    return (t / t.mean()).sqrt().view(1, len(w), 1, 1, 1)


def resolve_bottleneck(cfg: TrainConfig) -> str:
    if cfg.train.bottleneck != "auto":
        return cfg.train.bottleneck
    return "pca" if cfg.model.spec().projection == "pca" else "truncate"


@dataclass
class SpectralBank:
    """Training audio kept reflect-padded, cut into random segments of spectra on demand.

    A segment is ``frames`` STFT frames (``seq_vectors`` latent vectors of G frames), so
    losses on the waveform see several consecutive vectors decoded independently.
    """

    padded: torch.Tensor  # [E, M (+1 with the clean reference), N + n_fft]
    n_frames: int  # frames of the full signal
    cfg: ModelConfig
    with_clean: bool = False  # the last row of every example is its clean reference
    seq_vectors: int = 8

    @property
    def frames(self) -> int:
        return self.cfg.frames * self.seq_vectors

    @classmethod
    def from_examples(cls, examples: list[torch.Tensor], cfg: ModelConfig,
                      clean: list[torch.Tensor] | None = None, seq_vectors: int = 8) -> SpectralBank:
        """``examples``: microphone signals ``[M, N]``; ``clean``: their references ``[N]``
        (task-aware training), cut and sampled together with the microphones."""
        preset = get_preset(cfg.stft)
        n = min(e.shape[-1] for e in examples)
        if clean is not None:
            examples = [torch.cat([e[:, :n], c[None, :n]]) for e, c in zip(examples, clean, strict=True)]
        stacked = torch.stack([e[:, :n] for e in examples])
        if preset.frames_for(n) < cfg.frames * seq_vectors:
            raise ValueError(f"examples of {n} samples are shorter than one training segment")
        return cls(reflect_pad(stacked, preset), preset.frames_for(n), cfg, clean is not None, seq_vectors)

    def sample(self, batch: int, gen: torch.Generator) -> torch.Tensor:
        """Random segments ``[B, M, 2, F, frames]`` at any frame offset (``[B, M + 1, ...]``
        with the clean reference last when the bank holds it)."""
        preset = get_preset(self.cfg.stft)
        idx = torch.randint(0, self.padded.shape[0], (batch,), generator=gen)
        off = torch.randint(0, self.n_frames - self.frames + 1, (batch,), generator=gen)
        span = (self.frames - 1) * preset.hop + preset.n_fft
        segs = torch.stack(
            [self.padded[i, :, o * preset.hop : o * preset.hop + span] for i, o in zip(idx.tolist(), off.tolist())]
        )
        return to_channels(stft_frames(segs, preset), self.cfg.representation)

    def all_chunks(self, stride: int | None = None) -> torch.Tensor:
        """Every segment at offsets ``0, stride, ...`` of every example: ``[C, M, 2, F, frames]``."""
        return torch.cat(list(self.batches(stride)))

    def batches(self, stride: int | None = None, batch: int = 256):
        """:meth:`all_chunks` in batches of at most ``batch`` segments (bounded memory)."""
        preset = get_preset(self.cfg.stft)
        stride = stride or self.frames
        span = (self.frames - 1) * preset.hop + preset.n_fft
        mics = self.padded[:, : self.padded.shape[1] - int(self.with_clean)]
        offsets = range(0, self.n_frames - self.frames + 1, stride)
        per = max(1, batch // mics.shape[0])
        for i in range(0, len(offsets), per):
            segs = [mics[:, :, o * preset.hop : o * preset.hop + span] for o in offsets[i : i + per]]
            yield to_channels(stft_frames(torch.cat(segs), preset), self.cfg.representation)

    def stride_for(self, segments: int) -> int:
        """A frame stride that gives about ``segments`` segments over the whole bank."""
        per_example = max(1, segments // self.padded.shape[0])
        return max(1, (self.n_frames - self.frames) // per_example)


def data_manifests(data: DataSection, num_mics: int) -> list[Path]:
    """The manifests of ``[data]``: its main set and every ``extra_dirs`` set (which must be
    built already; the error names the command).

    The main set in the default folder (``data.dir`` unset) is always the one ``data.build``
    describes: built when missing, rebuilt when the folder holds another configuration (a
    smaller set built by hand, an older builder), and otherwise reused as it is (the builder
    checks the configuration's hash), so that a training command always sees the same rooms.
    A folder given as ``data.dir`` is used as it is unless ``data.build`` says how to build it.
    """
    from training.data.build import DataConfig, build_dataset
    from training.data.dataset import default_data_dir

    data_dir = Path(data.dir) if data.dir else default_data_dir()
    manifest = data_dir / "manifest.json"
    if not manifest.is_file() or data.build or not data.dir:
        build = dict(data.build)
        build.setdefault("num_mics", num_mics)
        manifest = build_dataset(DataConfig(**build), data_dir)
    manifests = [manifest]
    for extra in data.extra_dirs:
        path = _repo_path(extra.dir) / "manifest.json"
        if not path.is_file():
            raise ConfigError(f"data set {path.parent} (data.extra_dirs) is not built; build it with "
                              f"`{extra.build_command}`" if extra.build_command else
                              f"data set {path.parent} (data.extra_dirs) is not built")
        manifests.append(path)
    return manifests


def data_hashes(data: DataSection, num_mics: int) -> dict[str, str]:
    """Each training data set's folder (relative to the repository where it lies in it) and the
    hash of the configuration it was built from (its manifest's ``config_hash``): a checkpoint
    records exactly which rooms trained it."""
    out = {}
    for path in data_manifests(data, num_mics):
        folder = path.parent.resolve()
        name = str(folder.relative_to(REPO)) if folder.is_relative_to(REPO) else str(folder)
        out[name] = str(json.loads(path.read_text()).get("config_hash", ""))
    return out


def load_training_audio(cfg: TrainConfig, split: str = "train", with_clean: bool = False):
    """Microphone signals ``[M, N]`` of a split, building the data set first if it is missing;
    with ``with_clean`` also the clean references ``[N]`` (a pair of lists)."""
    from training.data.dataset import RoomDataset

    out, clean = [], []
    for path in data_manifests(cfg.data, cfg.model.num_mics):
        ds = RoomDataset(path, split)
        n = len(ds) if cfg.data.max_train_examples is None else min(len(ds), cfg.data.max_train_examples)
        for i in range(n):
            item = ds[i]
            mics = item["mics"]
            if mics.shape[0] != cfg.model.num_mics:
                raise ValueError(f"{path.parent} has {mics.shape[0]} microphones, model expects "
                                 f"{cfg.model.num_mics}")
            out.append(mics)
            clean.append(item["clean"])
    if cfg.train.speed_perturb:
        out = speed_perturbed(out, cfg.train.speed_perturb)
        clean = speed_perturbed(clean, cfg.train.speed_perturb) if with_clean else clean
    return (out, clean) if with_clean else out


def speed_perturbed(signals: list[torch.Tensor], factors: list[float]) -> list[torch.Tensor]:
    """``signals`` (each ``[..., N]``) followed by each of them resampled by every factor:
    played ``f`` times faster (``f`` < 1: slower and lower), so ``N / f`` samples long. Pitch,
    formants and tempo move together, as in Kaldi's speed perturbation: new talkers from the same
    speech."""
    from fractions import Fraction

    from scipy.signal import resample_poly

    out = list(signals)
    for f in factors:
        r = Fraction(f).limit_denominator(100)  # 0.9 -> 9/10: up 10, down 9
        for x in signals:
            y = resample_poly(x.numpy(), r.denominator, r.numerator, axis=-1)
            out.append(torch.from_numpy(y.astype(np.float32)))
    return out


def _repo_path(path: str) -> Path:
    """A data path relative to the repository root (absolute paths unchanged)."""
    p = Path(path).expanduser()
    return p if p.is_absolute() else REPO / p


def _dist_info() -> tuple[int, int]:
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world > 1 and not dist.is_initialized():
        backend = "nccl" if torch.cuda.is_available() else "gloo"
        dist.init_process_group(backend)
    return (dist.get_rank(), world) if world > 1 else (0, 1)


def _lr_at(step: int, cfg: TrainConfig) -> float:
    return warmup_cosine_lr(step, cfg.train.steps, cfg.train.lr, cfg.train.lr_min)


def train(
    cfg: TrainConfig,
    run_dir: Path,
    out: Path | None = None,
    resume: bool = False,
    progress: bool = True,
    device: str = "cpu",
    provenance: dict[str, Any] | None = None,
) -> Path | None:
    """Train, fit the bases, write the checkpoint. Returns its path on rank 0, else None."""
    rank, world = _dist_info()
    if cfg.train.threads:
        torch.set_num_threads(cfg.train.threads)
    dev = torch.device("cuda", int(os.environ.get("LOCAL_RANK", 0))) if device == "cuda" else torch.device(device)
    torch.manual_seed(cfg.train.seed)
    run_dir = Path(run_dir)
    if rank == 0:
        run_dir.mkdir(parents=True, exist_ok=True)
        (run_dir / "config.json").write_text(cfg.model_dump_json(indent=1))

    objective = None
    if cfg.task.active:
        from training.task_aware import TaskAwareObjective

        if world > 1 and cfg.task.lambda_perc > 0:
            raise ConfigError("perceptual training (task.lambda_perc > 0) runs in one process: its "
                              "discriminator is not synchronised across ranks; run without torchrun")
        mics, clean = load_training_audio(cfg, with_clean=True)
        bank = SpectralBank.from_examples(mics, cfg.model, clean, cfg.train.seq_vectors)
        objective = TaskAwareObjective(cfg, dev)
    else:
        bank = SpectralBank.from_examples(load_training_audio(cfg), cfg.model,
                                          seq_vectors=cfg.train.seq_vectors)
    model = DistributedAutoencoder(cfg.model)  # same init on every rank (same seed)
    if cfg.train.init_from:
        init_from_checkpoint(model, cfg)
    else:  # start from the linear transform coder (PCA of the training spectra)
        model.init_linear(bank.all_chunks(stride=bank.stride_for(1500)))
    model = model.to(dev)
    quant_step = cfg.rate.to_rate(1.0).quant_step if cfg.train.quant_noise else 0.0
    module: nn.Module = BottleneckedAutoencoder(model, resolve_bottleneck(cfg), quant_step,
                                                cfg.train.quant_profile)
    if world > 1:
        module = nn.parallel.DistributedDataParallel(module)
    opt = torch.optim.AdamW(param_groups(model, cfg.train.linear_lr_scale), lr=cfg.train.lr,
                            weight_decay=cfg.train.weight_decay, fused=dev.type in ("cpu", "cuda"))
    gen = torch.Generator().manual_seed(cfg.train.seed * 1000 + rank)
    kgen = torch.Generator().manual_seed(cfg.train.seed * 1000 + 999)  # same k on every rank
    start, spent = 0, 0.0  # spent: training seconds of earlier sittings (resumed runs)
    state_path = run_dir / "state.pt"
    state = load_resume_state(state_path) if resume else None
    if state is not None:
        model.load_state_dict(state["model"])
        opt.load_state_dict(state["opt"])
        gen.set_state(state["gen"][rank] if rank < len(state["gen"]) else state["gen"][0])
        kgen.set_state(state["kgen"])
        start = state["step"]
        spent = float(state.get("train_seconds", 0.0))
        if objective is not None:
            objective.load_state_dict(state.get("objective", {}))
    weights = cfg.loss.model_dump()
    total_dim = cfg.model.latent_total  # the bottleneck k counts components per vector
    bar = tqdm(range(start, cfg.train.steps), initial=start, total=cfg.train.steps,
               disable=not progress or rank != 0, desc=f"train {cfg.model.arch}")
    mic_scale = _mic_scale(cfg, dev)
    log = open(run_dir / "log.jsonl", "a") if rank == 0 else nullcontext()
    t0 = time.time()
    with log as logf:
        for step in bar:
            for g in opt.param_groups:
                g["lr"] = _lr_at(step, cfg) * g["lr_scale"]
            x = bank.sample(cfg.train.batch_size, gen).to(dev)
            clean = None
            if bank.with_clean:
                x, clean = x[:, :-1], x[:, -1]
            full = torch.rand(1, generator=kgen).item() < cfg.train.full_latent_prob
            k = total_dim if full else random_bottleneck_size(total_dim, kgen)
            outd = module(x, k)
            recon, target = outd["recon"], x
            if mic_scale is not None:
                recon, target = recon * mic_scale, target * mic_scale
            terms = task_agnostic_losses(recon, target, outd["latents"], cfg.model.representation,
                                         get_preset(cfg.model.stft))
            loss = weighted_total(terms, weights)
            if objective is not None:
                extra = objective.terms(outd["recon"], x, clean, gen)
                loss = loss + objective.weighted(extra)
                terms.update(extra)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            if cfg.train.grad_clip:
                nn.utils.clip_grad_norm_(model.parameters(), cfg.train.grad_clip)
            opt.step()
            if objective is not None:
                terms.update({f"disc_{n}": torch.tensor(v) for n, v in
                              objective.discriminator_step(outd["recon"], x).items()})
            if rank == 0 and (step % cfg.train.log_every == 0 or step == cfg.train.steps - 1):
                rec = {"step": step, "k": k, "loss": loss.item(), "lr": _lr_at(step, cfg),
                       "elapsed_s": round(time.time() - t0, 1), "train_s": round(spent + time.time() - t0, 1)}
                rec.update({n: round(v.item(), 5) for n, v in terms.items()})
                logf.write(json.dumps(rec) + "\n")
                logf.flush()
                bar.set_postfix(loss=f"{rec['loss']:.4f}", psnr=f"{-rec['psnr']:.1f}", k=k)
            if rank == 0 and ((step + 1) % cfg.train.checkpoint_every == 0):
                _save_state(state_path, model, opt, gen, kgen, step + 1, world, objective,
                            spent + time.time() - t0)
    if world > 1:
        dist.barrier()
    if rank != 0:
        return None
    total_s = spent + time.time() - t0
    _save_state(state_path, model, opt, gen, kgen, cfg.train.steps, world, objective, total_s)
    provenance = dict(provenance or {}, steps=cfg.train.steps, train_hours=round(total_s / 3600, 4),
                      train_seconds=round(total_s, 1), processes=world, data=data_hashes(cfg.data, cfg.model.num_mics))
    path = finalize(cfg, model, bank, run_dir, provenance)
    if out is not None:
        out.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(path, out)
        path = out
    return path


def param_groups(model: DistributedAutoencoder, linear_scale: float) -> list[dict[str, Any]]:
    """Two optimiser groups: the PCA-initialised linear maps (the frame transform and each
    source's vector transform) at ``linear_scale`` times the learning rate, so that training
    refines the linear coder slowly, and everything else (the residual networks) at 1."""
    linear = [model.frame.weight] + [enc.linear for enc in model.encoders]
    ids = {id(p) for p in linear}
    rest = [p for p in model.parameters() if id(p) not in ids]
    return [{"params": linear, "lr_scale": linear_scale}, {"params": rest, "lr_scale": 1.0}]


def _save_state(path: Path, model, opt, gen, kgen, step: int, world: int, objective=None,
                train_seconds: float = 0.0) -> None:
    tmp = path.with_suffix(".tmp")
    torch.save({"model": model.state_dict(), "opt": opt.state_dict(), "gen": [gen.get_state()] * world,
                "kgen": kgen.get_state(), "step": step, "train_seconds": train_seconds,
                "objective": objective.state_dict() if objective is not None else {}}, tmp)
    tmp.replace(path)


def init_from_checkpoint(model: DistributedAutoencoder, cfg: TrainConfig) -> str:
    """Load the weights of ``train.init_from`` (a codec checkpoint path, or a codec shipped in
    checkpoints/ as ``[subfolder/]architecture``) into ``model``; architecture and sizes must match."""
    from training.evaluate import DEFAULT_CKPT_DIR, find_codec

    name = cfg.train.init_from
    assert name
    path = Path(name) if (name.endswith(".ckpt") or Path(name).is_file()) else find_codec(DEFAULT_CKPT_DIR, name)
    src = Codec.load(path, expect_arch=cfg.model.arch)
    if src.cfg.model_dump() != cfg.model.model_dump():
        diff = {k: (v, cfg.model.model_dump().get(k)) for k, v in src.cfg.model_dump().items()
                if cfg.model.model_dump().get(k) != v}
        raise ConfigError(f"train.init_from {path}: its model config differs from this run's "
                          f"(checkpoint vs config: {diff}); use the same [model] section")
    model.load_state_dict(src.model.state_dict())
    return str(path)


@torch.no_grad()
def fit_bases(model: DistributedAutoencoder, chunks, batch: int = 256) -> list:
    """Encode training segments (a tensor ``[C, M, 2, F, T]`` or an iterable of such
    batches) and fit each source's basis on every latent vector."""
    model.eval()
    lat: list[list[torch.Tensor]] = [[] for _ in model.groups]
    dev = next(model.parameters()).device
    if isinstance(chunks, torch.Tensor):
        chunks = [chunks[i : i + batch] for i in range(0, chunks.shape[0], batch)]
    for x in chunks:
        for s, z in enumerate(model.encode(x.to(dev))):
            lat[s].append(z.reshape(-1, z.shape[-1]).cpu())
    projection = model.cfg.spec().projection
    return [fit_basis(torch.cat(z), projection) for z in lat]


def finalize(cfg: TrainConfig, model: DistributedAutoencoder, bank: SpectralBank, run_dir: Path,
             provenance: dict[str, Any] | None = None) -> Path:
    """Round weights to the storage dtype, fit NDPCA bases, write ``RUN_DIR/<arch>.ckpt``."""
    model = model.cpu().eval()
    dtype = getattr(torch, cfg.train.weights_dtype)
    with torch.no_grad():
        for p in model.state_dict().values():
            if p.is_floating_point():
                p.copy_(p.to(dtype).float())
    bases = fit_bases(model, bank.batches())
    preset = get_preset(cfg.model.stft)
    rate = cfg.rate.to_rate(cfg.model.frames_per_step * preset.hop / preset.sample_rate)
    codec = Codec(model, bases, rate)
    path = run_dir / f"{cfg.model.arch}.ckpt"
    codec.save(path, {"train_config": json.loads(cfg.model_dump_json()), "provenance": provenance or {}},
               weights_dtype=dtype, bases_dtype=getattr(torch, cfg.train.bases_dtype))
    return path
