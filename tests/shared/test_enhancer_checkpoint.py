"""The score-based enhancer checkpoint (checkpoints/score/) still loads and computes its pinned reference outputs."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pytest
import torch

from shared.enhancer import ScoreEnhancer

REPO = Path(__file__).resolve().parents[2]
CHECKPOINT = REPO / "checkpoints" / "score" / "enhancer-3d1cc699.ckpt"
REFERENCE = REPO / "tests" / "data" / "enhancer_reference.npz"


def _maker():
    spec = importlib.util.spec_from_file_location("make_enhancer_reference",
                                                  REFERENCE.with_name("make_enhancer_reference.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def reference() -> dict[str, np.ndarray]:
    with np.load(REFERENCE, allow_pickle=False) as f:
        return {k: f[k] for k in f.files}


def test_shipped_enhancer_reproduces_reference_outputs(reference):
    """Every sampler path and the one-step estimate of the shipped checkpoint match the stored outputs."""
    enhancer = ScoreEnhancer.load(CHECKPOINT)
    assert enhancer.sha256 == str(reference["sha256"])
    maker = _maker()
    y = maker.reference_input()
    np.testing.assert_array_equal(y.numpy(), reference["y"])
    got = maker.outputs(enhancer, y)
    assert sorted(got) == sorted(k for k in reference if k not in ("y", "sha256"))
    for name, out in got.items():
        assert out.shape == (1, 2, 256, 4) and out.dtype == np.float32
        assert not np.allclose(out, reference["y"]), f"{name} returned its input unchanged"
        np.testing.assert_allclose(out, reference[name], rtol=0, atol=1e-5, err_msg=name)


def test_shipped_enhancer_is_deterministic(reference):
    """Two loads of the checkpoint give bit-identical seeded outputs."""
    y = torch.from_numpy(reference["y"])
    a, b = ScoreEnhancer.load(CHECKPOINT), ScoreEnhancer.load(CHECKPOINT)
    np.testing.assert_array_equal(a.enhance(y).numpy(), b.enhance(y).numpy())
    np.testing.assert_array_equal(a.enhance(y, _maker().PC).numpy(), b.enhance(y, _maker().PC).numpy())
