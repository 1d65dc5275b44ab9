"""``ndpca enhancer train``: the receiver's score-based enhancer (SGMSE, DESIGN.md section 3).

Pairs of (degraded, clean) compressed complex spectrograms come from the room data set:

* ``mic``: microphone 0 as recorded (reverberant, noisy) -> the clean reference;
* ``decoded``: microphone 0 after a codec checkpoint coded the whole room at a random total
  bandwidth of the sweep (allocation, quantisation and entropy coding as in streaming) ->
  the clean reference. This is what the enhancer sees inside the receiver.

Training minimises denoising score matching (Eq. 17) on random crops of ``frames`` frames.
The checkpoint stores the network, the SDE and the default sampler settings; the run folder
holds ``state.pt`` (resumable), ``log.jsonl`` and the cached decoded pool.
"""

from __future__ import annotations

import json
import random
import time
from pathlib import Path
from typing import Any, Literal

import torch
from pydantic import BaseModel, ConfigDict, Field, ValidationError
from tqdm import tqdm

from shared.enhancer import (
    SAMPLER_PRESETS,
    SCORE_NET_PRESETS,
    ScoreEnhancer,
    SDEConfig,
    sampler_from_name,
)
from shared.errors import ConfigError, describe_validation_error
from shared.stft import get_preset, stft, to_channels
from training.config import (
    DataSection,
    _merge,
    _read_toml,
    load_resume_state,
    warmup_cosine_lr,
)

REPO = Path(__file__).resolve().parents[1]


class EnhancerSection(BaseModel):
    model_config = ConfigDict(extra="forbid")

    net: str = "cpu"  # a preset of shared.enhancer.SCORE_NET_PRESETS
    sampler: str = "fast"  # default sampler stored in the checkpoint
    stft: str = "stream"
    theta: float = 1.5
    sigma_min: float = 0.05
    sigma_max: float = 0.5
    t_eps: float = 0.03


class InputsSection(BaseModel):
    model_config = ConfigDict(extra="forbid")

    codec: str | None = None  # codec checkpoint for decoded inputs (a path or an architecture name in checkpoints/)
    decoded_prob: float = Field(0.5, ge=0, le=1)  # share of decoded inputs in a batch
    bandwidths: list[int] = Field(default_factory=lambda: [8, 16, 32, 64, 128, 256])
    decoded_per_example: int = Field(1, ge=1)
    # what the network enhances: microphone 0 itself ("mic"), or the output of the receiver's
    # streaming classical stage over every microphone ("classical": MVDR and Wiener post-filter,
    # step by step as the receiver runs it), so that the score model starts from the beamformer
    front_end: Literal["mic", "classical"] = "mic"
    # classical front end on decoded inputs: the beamformer's rule (server.enhance.beamforming_mask;
    # None: the receiver's default share)
    beamform_min_share: float | None = Field(None, ge=0, le=1)


class EnhancerTrainSection(BaseModel):
    model_config = ConfigDict(extra="forbid")

    seed: int = 0
    steps: int = Field(1500, ge=1)
    batch_size: int = Field(16, ge=1)
    frames: int = Field(64, ge=4)
    lr: float = Field(1e-3, gt=0)
    lr_min: float = 1e-5
    grad_clip: float = 1.0
    ema: float = Field(0.999, ge=0, lt=1)
    checkpoint_every: int = 250
    log_every: int = 25
    threads: int | None = None
    # "score": denoising score matching of the score network (the paper's SGMSE);
    # "predictive": the predictive network alone, by regression (sampler "predictive")
    objective: Literal["score", "predictive"] = "score"
    # predictive: count only the last frames of each crop in the loss (the receiver runs the
    # network over its context plus the newest step and plays the step's frames); None: all
    loss_frames: int | None = Field(None, ge=1)
    # predictive, streaming: each crop holds this many consecutive steps, and the network runs over
    # them as the receiver does (a view of `frames` frames sliding by `loss_frames`), so that
    # terms over longer spans than one step (the STOI term) see the output the receiver plays
    sequence_steps: int = Field(1, ge=1)
    # weight of the STOI term (training.losses.stoi_envelope_loss, band envelopes over 384 ms)
    # beside the regression loss; it needs sequence_steps * loss_frames >= 48 frames
    stoi_weight: float = Field(0.0, ge=0)
    # start from an enhancer checkpoint's weights (fine-tuning) instead of at random: a path, or
    # "[subfolder/]enhancer" for the newest enhancer-*.ckpt in checkpoints/[subfolder]
    init_from: str | None = None

    @property
    def crop_frames(self) -> int:
        """Frames of a training crop: the view plus the steps it slides over."""
        return self.frames + (self.sequence_steps - 1) * (self.loss_frames or 0)


class EnhancerConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    enhancer: EnhancerSection = Field(default_factory=EnhancerSection)
    inputs: InputsSection = Field(default_factory=InputsSection)
    data: DataSection = Field(default_factory=DataSection)
    train: EnhancerTrainSection = Field(default_factory=EnhancerTrainSection)


def load_enhancer_config(path: str | Path, overrides: dict[str, Any] | None = None) -> EnhancerConfig:
    path = Path(path)
    raw = _merge(_read_toml(path), overrides or {})
    try:
        cfg = EnhancerConfig(**raw)
    except ValidationError as exc:
        raise ConfigError(f"{path}: {describe_validation_error(exc)} (see training/configs/enhancer.toml)") from None
    if cfg.enhancer.net not in SCORE_NET_PRESETS:
        raise ConfigError(f"{path}: enhancer.net {cfg.enhancer.net!r} is not one of {sorted(SCORE_NET_PRESETS)}")
    t = cfg.train
    if (t.sequence_steps > 1 or t.stoi_weight > 0) and (t.objective != "predictive" or not t.loss_frames):
        raise ConfigError(f"{path}: train.sequence_steps and train.stoi_weight need the predictive objective "
                          "with train.loss_frames (the streaming recipe)")
    if t.stoi_weight > 0 and t.sequence_steps * (t.loss_frames or 0) < 48:
        raise ConfigError(f"{path}: the STOI term needs train.sequence_steps * train.loss_frames >= 48 frames "
                          f"(384 ms), got {t.sequence_steps} * {t.loss_frames}")
    sampler = sampler_from_name(cfg.enhancer.sampler)
    if (sampler.mode == "predictive") != (cfg.train.objective == "predictive"):
        raise ConfigError(f"{path}: enhancer.sampler {cfg.enhancer.sampler!r} and train.objective "
                          f"{cfg.train.objective!r} do not go together: the predictive sampler needs the "
                          "predictive objective and the score objective a diffusion sampler")
    return cfg


def resolve_codec_path(name: str) -> Path:
    """A codec checkpoint path, or an architecture whose shipped checkpoint is in checkpoints/."""
    p = Path(name)
    if p.suffix == ".ckpt" or p.exists():
        return p
    from training.evaluate import DEFAULT_CKPT_DIR, find_checkpoint

    return find_checkpoint(DEFAULT_CKPT_DIR, name)


class PairBank:
    """Full-length (degraded, clean) spectrogram pairs ``[2, F, T]``; random crops on demand."""

    def __init__(self, mic_pairs: list[tuple[torch.Tensor, torch.Tensor]],
                 decoded_pairs: list[tuple[torch.Tensor, torch.Tensor]], frames: int) -> None:
        self.mic, self.decoded, self.frames = mic_pairs, decoded_pairs, frames
        short = [y.shape[-1] for y, _ in mic_pairs + decoded_pairs if y.shape[-1] < frames]
        if short:
            raise ConfigError(f"examples of {min(short)} frames are shorter than train.frames={frames}")

    def sample(self, batch: int, decoded_prob: float, gen: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        ys, xs = [], []
        for _ in range(batch):
            use_dec = bool(self.decoded) and torch.rand(1, generator=gen).item() < decoded_prob
            pool = self.decoded if use_dec else self.mic
            y, x = pool[int(torch.randint(len(pool), (1,), generator=gen))]
            o = int(torch.randint(y.shape[-1] - self.frames + 1, (1,), generator=gen))
            ys.append(y[..., o : o + self.frames])
            xs.append(x[..., o : o + self.frames])
        return torch.stack(ys), torch.stack(xs)


def _spectra(wave: torch.Tensor, preset_name: str) -> torch.Tensor:
    return to_channels(stft(wave, get_preset(preset_name)), "complex")


def front_end_channels(channels: torch.Tensor, front_end: str, step_frames: int = 4,
                       active: torch.Tensor | None = None) -> torch.Tensor:
    """What the enhancer sees of the microphones' compressed complex spectra ``[M, 2, F, T]``:
    microphone 0 (``mic``) or the streaming classical stage's output over all of them
    (``classical``, one call per ``step_frames`` frames, ``active`` microphones) -> ``[2, F, T]``."""
    if front_end == "mic":
        return channels[0]
    from shared.classical import stream_classical
    from shared.stft import from_channels

    spec = from_channels(channels.double(), "complex").numpy()
    mask = None if active is None else active.numpy()
    out = stream_classical(spec, step_frames, mask)
    return to_channels(torch.from_numpy(out).to(torch.complex64), "complex")


def build_pairs(cfg: EnhancerConfig, split: str, run_dir: Path | None = None,
                progress: bool = True) -> PairBank:
    """Read the split and make its pairs (decoded ones cached in ``run_dir``)."""
    from training.data.dataset import RoomDataset
    from training.train import data_manifests

    examples = []
    for manifest in data_manifests(cfg.data, num_mics=4):
        ds = RoomDataset(manifest, split)
        n = len(ds) if cfg.data.max_train_examples is None else min(len(ds), cfg.data.max_train_examples)
        examples += [ds[i] for i in range(n)]
    n = len(examples)
    front = cfg.inputs.front_end
    step_frames = 4  # the receiver's 32 ms step (the codec's frames_per_step for decoded inputs)
    mic_pairs = [(front_end_channels(_spectra(ex["mics"], cfg.enhancer.stft), front, step_frames)
                  if front != "mic" else _spectra(ex["mics"][0], cfg.enhancer.stft),
                  _spectra(ex["clean"], cfg.enhancer.stft))
                 for ex in tqdm(examples, disable=not progress or front == "mic", desc=f"front end {split}")]
    decoded_pairs: list[tuple[torch.Tensor, torch.Tensor]] = []
    if cfg.inputs.codec and cfg.inputs.decoded_prob > 0:
        from shared.codec import Codec

        path = resolve_codec_path(cfg.inputs.codec)
        codec = Codec.load(path)
        if codec.cfg.representation != "complex" or codec.cfg.stft != cfg.enhancer.stft:
            raise ConfigError(f"codec {path} uses {codec.cfg.representation}/{codec.cfg.stft}; the enhancer "
                              f"needs a complex-representation codec on the {cfg.enhancer.stft!r} preset")
        from server.enhance import BEAMFORM_MIN_SHARE, beamforming_mask

        share = BEAMFORM_MIN_SHARE if cfg.inputs.beamform_min_share is None else cfg.inputs.beamform_min_share
        tag = "" if front == "mic" else f"-{front}" + ("" if share == 0 else f"-share{share:g}")
        cache = (run_dir / f"decoded-{split}-{codec.sha256[:12]}-{n}{tag}.pt") if run_dir else None
        if cache is not None and cache.is_file():
            decoded_pairs = torch.load(cache, weights_only=True)
        else:
            rng = random.Random(cfg.train.seed)
            for ex, (_, x) in tqdm(list(zip(examples, mic_pairs)), disable=not progress, desc=f"decode {split}"):
                for _ in range(cfg.inputs.decoded_per_example):
                    total = rng.choice(cfg.inputs.bandwidths)
                    _, stats = codec.code_signal(ex["mics"], total)
                    spectra = stats["spectra"].cpu()
                    active = beamforming_mask(codec, stats["allocation"], share)
                    decoded_pairs.append((front_end_channels(spectra, front, codec.frames_per_step, active).clone(), x))
            if cache is not None:
                torch.save(decoded_pairs, cache)
    return PairBank(mic_pairs, decoded_pairs, cfg.train.crop_frames)


def resolve_enhancer_path(name: str) -> Path:
    """An enhancer checkpoint path, or ``[subfolder/]enhancer``: the newest
    ``checkpoints/[subfolder/]enhancer-*.ckpt``."""
    from shared.streaming import find_checkpoint
    from training.evaluate import DEFAULT_CKPT_DIR

    p = Path(name)
    if p.suffix == ".ckpt" or p.is_file():
        return p
    folder = Path(DEFAULT_CKPT_DIR) / p.parent
    found = find_checkpoint(p.name, folder)
    if found is None:
        raise ConfigError(f"no {p.name}-*.ckpt in {folder}/ for train.init_from = {name!r}; give a checkpoint path")
    return found


def make_enhancer(cfg: EnhancerConfig) -> ScoreEnhancer:
    e = cfg.enhancer
    return ScoreEnhancer(SCORE_NET_PRESETS[e.net], SDEConfig(e.theta, e.sigma_min, e.sigma_max, e.t_eps),
                         sampler_from_name(e.sampler), stft=e.stft, representation="complex",
                         predictive=cfg.train.objective == "predictive")


def streaming_loss(enh: ScoreEnhancer, x0: torch.Tensor, y: torch.Tensor, t: EnhancerTrainSection,
                   terms: dict[str, float]) -> torch.Tensor:
    """The predictive network over ``t.sequence_steps`` consecutive steps of each crop, as the
    receiver runs it (:meth:`ScoreEnhancer.predict_streaming`): the regression loss on every
    frame it plays, plus ``t.stoi_weight`` times the STOI term over them. Fills ``terms``."""
    from training.losses import stoi_envelope_loss

    assert t.loss_frames is not None
    est = enh.predict_streaming(y, t.frames, t.loss_frames)
    target = x0[..., t.frames - t.loss_frames :]
    loss = enh.regression_loss(est, target)
    terms["regression"] = round(loss.item(), 5)
    if t.stoi_weight > 0:
        stoi_term = stoi_envelope_loss(est, target, get_preset(enh.stft))
        terms["stoi_term"] = round(stoi_term.item(), 5)
        loss = loss + t.stoi_weight * stoi_term
    return loss


def train_enhancer(cfg: EnhancerConfig, run_dir: Path, out: Path | None = None, resume: bool = False,
                   progress: bool = True, device: str = "cpu",
                   provenance: dict[str, Any] | None = None) -> Path:
    """Train, keep an EMA of the weights, write ``RUN_DIR/enhancer.ckpt`` (EMA weights)."""
    t = cfg.train
    if t.threads:
        torch.set_num_threads(t.threads)
    torch.manual_seed(t.seed)
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / "config.json").write_text(cfg.model_dump_json(indent=1))
    bank = build_pairs(cfg, "train", run_dir, progress)
    enh = make_enhancer(cfg).to(device)
    if t.init_from:
        start_from = ScoreEnhancer.load(resolve_enhancer_path(t.init_from))
        if start_from.stft != cfg.enhancer.stft:
            raise ConfigError(f"train.init_from {t.init_from} works on the {start_from.stft!r} STFT, "
                              f"the config on {cfg.enhancer.stft!r}")
        try:
            enh.load_state_dict(start_from.state_dict())
        except RuntimeError:
            raise ConfigError(f"train.init_from {t.init_from} is not a {cfg.enhancer.net!r} network with this "
                              "config's objective; start from a checkpoint of the same recipe") from None
    ema = make_enhancer(cfg).to(device)
    ema.load_state_dict(enh.state_dict())
    ema.requires_grad_(False)
    opt = torch.optim.Adam(enh.parameters(), lr=t.lr)
    gen = torch.Generator().manual_seed(t.seed)
    noise_gen = torch.Generator(device=device).manual_seed(t.seed + 1)
    start = 0
    state_path = run_dir / "state.pt"
    st = load_resume_state(state_path, device) if resume else None
    if st is not None:
        enh.load_state_dict(st["model"])
        ema.load_state_dict(st["ema"])
        opt.load_state_dict(st["opt"])
        gen.set_state(st["gen"])
        noise_gen.set_state(st["noise_gen"])
        start = st["step"]
    bar = tqdm(range(start, t.steps), initial=start, total=t.steps, disable=not progress, desc="train enhancer")
    t0 = time.time()
    with open(run_dir / "log.jsonl", "a") as logf:
        for step in bar:
            for g in opt.param_groups:
                g["lr"] = warmup_cosine_lr(step, t.steps, t.lr, t.lr_min)
            y, x = bank.sample(t.batch_size, cfg.inputs.decoded_prob, gen)
            enh.train()
            terms: dict[str, float] = {}
            if t.objective == "predictive" and t.sequence_steps > 1:
                loss = streaming_loss(enh, x.to(device), y.to(device), t, terms)
            elif t.objective == "predictive":
                loss = enh.predictive_loss(x.to(device), y.to(device), t.loss_frames)
            else:
                loss = enh.dsm_loss(x.to(device), y.to(device), generator=noise_gen)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            if t.grad_clip:
                torch.nn.utils.clip_grad_norm_(enh.parameters(), t.grad_clip)
            opt.step()
            with torch.no_grad():
                decay = min(t.ema, (1 + step) / (10 + step))
                for pe, p in zip(ema.parameters(), enh.parameters()):
                    pe.lerp_(p, 1 - decay)
            if step % t.log_every == 0 or step == t.steps - 1:
                rec = {"step": step, "loss": round(loss.item(), 5), "lr": opt.param_groups[0]["lr"],
                       "elapsed_s": round(time.time() - t0, 1), **terms}
                logf.write(json.dumps(rec) + "\n")
                logf.flush()
                bar.set_postfix(loss=f"{rec['loss']:.4f}")
            if (step + 1) % t.checkpoint_every == 0 or step == t.steps - 1:
                tmp = state_path.with_suffix(".tmp")
                torch.save({"model": enh.state_dict(), "ema": ema.state_dict(), "opt": opt.state_dict(),
                            "gen": gen.get_state(), "noise_gen": noise_gen.get_state(), "step": step + 1}, tmp)
                tmp.replace(state_path)
    from training.train import data_hashes

    ema = ema.cpu().eval()
    val = validate(ema, cfg, progress=False)
    path = run_dir / "enhancer.ckpt"
    ema.save(path, {"front_end": cfg.inputs.front_end,
                    "train_config": json.loads(cfg.model_dump_json()),
                    "provenance": dict(provenance or {}, data=data_hashes(cfg.data, num_mics=4)),
                    "validation": val})
    if out is not None:
        out.parent.mkdir(parents=True, exist_ok=True)
        import shutil

        shutil.copyfile(path, out)
        path = out
    return path


@torch.no_grad()
def validate(enh: ScoreEnhancer, cfg: EnhancerConfig, n: int = 16, progress: bool = False) -> dict[str, float]:
    """DSM loss and PSNR (Eq. 13, against the clean reference) of the default sampler on
    validation crops of microphone 0, next to the unprocessed input's PSNR."""
    from training.losses import psnr_db

    try:
        bank = build_pairs(cfg.model_copy(update={"inputs": cfg.inputs.model_copy(update={"decoded_prob": 0.0})}),
                           "val", None, progress)
    except ConfigError:
        return {}
    gen = torch.Generator().manual_seed(1234)
    y, x = bank.sample(n, 0.0, gen)
    loss = float(enh.dsm_loss(x, y, generator=torch.Generator().manual_seed(5)))
    est = enh.enhance(y)
    return {"dsm_loss": round(loss, 5),
            "psnr_input_db": round(float(psnr_db(y[:, None], x[:, None]).mean()), 3),
            "psnr_enhanced_db": round(float(psnr_db(est[:, None], x[:, None]).mean()), 3),
            "sampler": enh.sampler.as_dict(),
            "n": n}


__all__ = ["EnhancerConfig", "load_enhancer_config", "train_enhancer", "make_enhancer", "build_pairs",
           "PairBank", "validate", "SAMPLER_PRESETS"]
