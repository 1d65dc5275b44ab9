"""Small helpers shared by the enhancer's modules: time broadcasting and config key checks."""

from __future__ import annotations

from dataclasses import fields
from typing import Any

import torch
from torch import Tensor

from shared.errors import ConfigError


def _bcast(v: Tensor, like: Tensor) -> Tensor:
    """``[B]`` -> ``[B, 1, 1, ...]`` broadcastable against ``like``."""
    return v.reshape(v.shape[0], *([1] * (like.dim() - 1)))


def _time(t: Tensor | float, batch: int, like: Tensor) -> Tensor:
    """A diffusion time (float, 0-d or ``[B]`` tensor) -> ``[B]`` on ``like``'s device/dtype."""
    t = torch.as_tensor(t, dtype=like.dtype, device=like.device)
    if t.dim() == 0:
        t = t.expand(batch)
    if t.shape != (batch,):
        raise ValueError(f"time must be a float or a [{batch}] tensor, got shape {tuple(t.shape)}")
    return t


def _checked_keys(cls: type, d: Any, what: str) -> dict[str, Any]:
    """``d`` as a dict whose keys are all fields of the dataclass ``cls``, else :class:`ConfigError`."""
    if not isinstance(d, dict):
        raise ConfigError(f"{what} must be a table/dict, got {type(d).__name__}")
    names = {f.name for f in fields(cls)}
    unknown = sorted(set(d) - names)
    if unknown:
        raise ConfigError(f"{what}: unknown keys {unknown}; allowed keys are {sorted(names)}")
    return dict(d)

