"""training.stage_eval: the receiver's stages run step by step, at fixed and varying budgets."""

import numpy as np
import torch
from conftest import tiny_codec

from server.enhance import build_enhancer
from training.stage_eval import evaluate_stages, run_stage, varying_schedule


def test_varying_schedule_is_a_seeded_walk_over_the_levels():
    a, b = varying_schedule(500, 3, seed=4), varying_schedule(500, 3, seed=4)
    assert np.array_equal(a, b) and not np.array_equal(a, varying_schedule(500, 3, seed=5))
    assert set(a.tolist()) == {0, 1, 2}
    assert np.abs(np.diff(a)).max() == 1
    assert 0.55 < np.mean(np.diff(a) == 0) < 0.85  # keeps its level with probability 0.7


def test_varying_input_is_each_step_of_the_fixed_budgets():
    """Step i of the varying input is step i of the decoded spectra at its step's budget, and the
    classical stage is told, step by step, which microphones carry signal."""
    codec = tiny_codec()
    torch.manual_seed(0)
    n = 8000
    ex = {"mics": torch.randn(codec.cfg.num_mics, n) * 0.1, "clean": torch.randn(n) * 0.1}
    stages = {"identity": build_enhancer("identity", codec)}
    rows = evaluate_stages([ex], codec, [8, 64], stages, noisy=False, varying=True)
    names = [r["input"] for r in rows]
    assert names == ["decoded L=8", "decoded L=64", "decoded, L varying over 8,64"]
    fixed = [r["room_kbps"] for r in rows[:2]]
    assert min(fixed) <= rows[2]["room_kbps"] <= max(fixed)
    classical = build_enhancer("classical", codec)
    g = codec.frames_per_step
    spec = torch.randn(codec.cfg.num_mics, 2, codec.preset.n_bins, 4 * g) * 0.1
    steps = torch.ones(4, codec.cfg.num_mics, dtype=torch.bool)
    steps[1:3, 1:] = False
    per_step = run_stage(classical, codec, spec, steps, "a")
    assert per_step.shape == (1, 2, codec.preset.n_bins, 4 * g)
    # the first step saw every microphone, as a run with all of them active did
    everyone = run_stage(classical, codec, spec, torch.ones(codec.cfg.num_mics, dtype=torch.bool), "b")
    torch.testing.assert_close(per_step[..., :g], everyone[..., :g])
    assert not torch.allclose(per_step[..., g : 3 * g], everyone[..., g : 3 * g])
