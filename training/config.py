"""Training configuration: a base TOML file plus overrides, validated by pydantic.

A config has the sections ``[model]`` (:class:`shared.models.architectures.ModelConfig`),
``[data]`` (where the room data set lives and how to build it if missing), ``[train]`` and
``[loss]`` (named weights matching the keys of :func:`training.losses.task_agnostic_losses`).
An optional top-level ``base = "other.toml"`` (relative to the file) is loaded first and
overridden section by section. Unknown keys are errors that name the key and the file.
"""

from __future__ import annotations

import logging
import math
import tomllib
from pathlib import Path
from typing import Annotated, Any, Literal

import torch
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from shared.errors import ConfigError, describe_validation_error
from shared.models.architectures import ModelConfig
from shared.rate import RateConfig

log = logging.getLogger(__name__)

CONFIG_DIR = Path(__file__).resolve().parent / "configs"


class ExtraData(BaseModel):
    """Another built data set whose training split joins the main one."""

    model_config = ConfigDict(extra="forbid")

    dir: str  # relative to the repository root, or absolute
    build_command: str | None = None  # how to build it (printed when it is missing)


class DataSection(BaseModel):
    model_config = ConfigDict(extra="forbid")

    dir: str | None = None  # default: training.data.dataset.default_data_dir()
    build: dict[str, Any] = Field(default_factory=dict)  # DataConfig overrides if it is built
    max_train_examples: int | None = None  # per data set
    extra_dirs: list[ExtraData] = Field(default_factory=list)


class TrainSection(BaseModel):
    model_config = ConfigDict(extra="forbid")

    seed: int = 0
    steps: int = Field(3000, ge=0)  # 0: no training (the linear baselines: PCA only)
    seq_vectors: int = Field(8, ge=1)  # latent vectors per training segment
    batch_size: int = Field(128, ge=2)
    lr: float = Field(1e-3, gt=0)
    lr_min: float = Field(1e-5, ge=0)
    weight_decay: float = 0.0
    grad_clip: float = 1.0
    bottleneck: str = "auto"  # auto (from the architecture) | pca | truncate | none
    full_latent_prob: float = Field(0.0, ge=0, le=1)
    # add the quantiser's error (uniform, step sqrt(12 D) times each coefficient's batch
    # standard deviation) to the coefficients that pass the bottleneck, as the wire will
    quant_noise: bool = False
    # which steps that error follows: "uniform" (sqrt(12 D) on every coefficient, uniform noise)
    # or "water" (the receiver's default profile, shared/steps.py: each kept component is
    # rounded to its water step, as the wire rounds it, with a straight-through gradient)
    quant_profile: Literal["uniform", "water"] = "uniform"
    # weight of each microphone in the reconstruction terms (None: all alike); the spectra of
    # microphone m are scaled by sqrt(w_m / mean w) before the terms compare them
    loss_mic_weights: list[float] | None = None
    # speed perturbation: every training example is also kept resampled by each factor (0.9:
    # 10 % slower and lower, as Kaldi's speed perturbation), new talkers from the same speech
    speed_perturb: list[Annotated[float, Field(gt=0.5, lt=2.0)]] = Field(default_factory=list)
    linear_lr_scale: float = Field(1.0, ge=0)  # learning rate of the PCA-initialised linear maps, relative
    checkpoint_every: int = Field(500, ge=1)
    log_every: int = Field(50, ge=1)
    weights_dtype: str = "float16"
    bases_dtype: Literal["float32", "float16"] = "float32"  # the NDPCA basis matrices in the checkpoint (float16 halves them)
    threads: int | None = None
    init_from: str | None = None  # start from a codec checkpoint (a path, or "[subfolder/]arch" in checkpoints/)


class RateSection(BaseModel):
    model_config = ConfigDict(extra="forbid")

    sigma2: float = 1.0
    distortion: float = 0.01
    eta: float = 1.1

    def to_rate(self, chunk_seconds: float) -> RateConfig:
        return RateConfig(self.sigma2, self.distortion, self.eta, chunk_seconds)


class LossWeights(BaseModel):
    model_config = ConfigDict(extra="forbid")

    mse: float = 1.0  # Eq. 10, compressed magnitude
    mse_complex: float = 0.1  # compressed complex spectrum (phase included)
    cosine: float = 0.01  # Eq. 11
    spectral_snr: float = 0.0  # Eq. 12
    psnr: float = 0.01  # Eq. 13
    nuclear: float = 0.1  # NDPCA
    mrstft: float = 0.0  # multi-resolution STFT loss of the decoded waveform
    loudness: float = 0.0  # asymmetric one-third-octave loudness error, added energy weighed 2x (training.losses)


class TaskSection(BaseModel):
    """Task- and perception-aware terms (paper sections 4.2-4.3):
    ``L = task-agnostic + lambda_task * L_enh + lambda_perc * (L_adv + feat_weight * L_feat)``."""

    model_config = ConfigDict(extra="forbid")

    lambda_task: float = Field(0.0, ge=0)
    lambda_perc: float = Field(0.0, ge=0)
    enhancer: str | None = None  # enhancer checkpoint (default: the shipped one in checkpoints/)
    t_task: float = Field(0.35, gt=0, le=1)  # diffusion time of the one-step enhancement in the loss
    ref_mic: int = Field(0, ge=0)  # the microphone the enhancer restores (the clean reference's)
    perc_mics: str = "all"  # "all" microphones or only "ref" go through the discriminator
    feat_weight: float = Field(1.0, ge=0)
    disc_lr: float = Field(3e-4, gt=0)
    task_batch: int | None = Field(None, ge=1)  # the extra terms use the batch's first N chunks (cost)
    disc_n_ffts: list[int] = Field(default_factory=lambda: [1024, 2048, 512, 256, 128])  # MS-STFT scales

    @property
    def active(self) -> bool:
        return self.lambda_task > 0 or self.lambda_perc > 0


class TrainConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    model: ModelConfig = Field(default_factory=ModelConfig)
    data: DataSection = Field(default_factory=DataSection)
    train: TrainSection = Field(default_factory=TrainSection)
    rate: RateSection = Field(default_factory=RateSection)
    loss: LossWeights = Field(default_factory=LossWeights)
    task: TaskSection = Field(default_factory=TaskSection)

    @model_validator(mode="after")
    def _mic_weights_fit_the_model(self) -> TrainConfig:
        w, m = self.train.loss_mic_weights, self.model.num_mics
        if w is not None and (len(w) != m or min(w) < 0 or sum(w) <= 0):
            raise ValueError(f"train.loss_mic_weights must be {m} non-negative numbers with a positive sum, got {w}")
        return self


def _merge(base: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for k, v in over.items():
        out[k] = _merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


def _read_toml(path: Path) -> dict[str, Any]:
    if not path.is_file():
        named = CONFIG_DIR / path.name
        if not named.is_file() and path.suffix != ".toml":  # a name without .toml
            named = CONFIG_DIR / f"{path.name}.toml"
        if named.is_file():
            path = named
        else:
            raise ConfigError(
                f"config file {path} not found; pass a TOML file or one of "
                f"{sorted(p.name for p in CONFIG_DIR.glob('*.toml'))}"
            )
    try:
        raw = tomllib.loads(path.read_text(encoding="utf-8"))
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: not valid TOML ({exc})") from None
    except UnicodeDecodeError:
        raise ConfigError(f"{path} is not a text file; pass a TOML training config") from None
    base = raw.pop("base", None)
    if base is not None:
        raw = _merge(_read_toml(path.parent / base), raw)
    return raw


def load_config(path: str | Path, overrides: dict[str, Any] | None = None) -> TrainConfig:
    """Read, merge and validate a config; raise ConfigError naming any bad key or value."""
    path = Path(path)
    raw = _merge(_read_toml(path), overrides or {})
    try:
        cfg = TrainConfig(**raw)
        cfg.model.validate_all()
    except ValidationError as exc:
        raise ConfigError(f"{path}: {describe_validation_error(exc)} (see training/configs/*.toml)") from None
    except ValueError as exc:
        raise ConfigError(f"{path}: {exc}") from None
    return cfg


def parse_overrides(items: list[str]) -> dict[str, Any]:
    """Several ``section.key=value`` overrides merged into one nested dict."""
    out: dict[str, Any] = {}
    for item in items:
        out = _merge(out, parse_override(item))
    return out


def warmup_cosine_lr(step: int, steps: int, lr: float, lr_min: float) -> float:
    """Linear warm-up over ``min(100, steps // 10 + 1)`` steps, then cosine from ``lr`` to ``lr_min``."""
    warm = min(100, steps // 10 + 1)
    if step < warm:
        return lr * (step + 1) / warm
    p = (step - warm) / max(1, steps - warm)
    return lr_min + 0.5 * (lr - lr_min) * (1 + math.cos(math.pi * p))


def parse_override(text: str) -> dict[str, Any]:
    """``section.key=value`` (value parsed as TOML, else a string) -> nested dict."""
    if "=" not in text:
        raise ConfigError(f"override {text!r} must look like section.key=value")
    key, value = text.split("=", 1)
    try:
        parsed = tomllib.loads(f"v = {value}")["v"]
    except tomllib.TOMLDecodeError:
        parsed = value
    out: dict[str, Any] = {}
    cur = out
    parts = key.strip().split(".")
    for p in parts[:-1]:
        cur = cur.setdefault(p, {})
    cur[parts[-1]] = parsed
    return out


def load_resume_state(path: Path, device: str | torch.device = "cpu") -> dict[str, Any] | None:
    """The saved training state for ``--resume`` (None, with a warning, when there is none yet:
    training starts from step 0).

    Raises:
        ConfigError: the file cannot be loaded (truncated, corrupt, another format).
    """
    if not path.is_file():
        log.warning("--resume: no %s yet; training starts from step 0", path)
        return None
    try:
        state = torch.load(path, map_location=device, weights_only=False)
    except Exception as exc:
        raise ConfigError(f"{path} cannot be loaded ({type(exc).__name__}: {exc}); delete it to start that run "
                          "afresh, or drop --resume") from None
    if not isinstance(state, dict) or "step" not in state:
        raise ConfigError(f"{path} is not a training state (no 'step'); delete it, or drop --resume")
    return state
