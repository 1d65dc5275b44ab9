"""Tests of the seeded generators and the committed synthetic traces."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from channel_traces.generate import (
    COMMITTED,
    DEFAULT_BANDWIDTH_HZ,
    GENERATORS,
    OUTAGE_SNR_DB,
    TRACES_DIR,
    fading_gain,
    generate,
    regenerate,
)
from channel_traces.registry import load_trace
from channel_traces.summary import step_budgets
from shared.rate import RateConfig


def test_regenerate_reproduces_committed_files_byte_for_byte(tmp_path: Path) -> None:
    """regenerate() rewrites exactly the committed trace files."""
    written = regenerate(tmp_path)
    assert sorted(p.name for p in written) == sorted(f"{stem}.csv" for stem in COMMITTED)
    for path in written:
        committed = TRACES_DIR / path.name
        assert committed.is_file(), f"{committed} is not committed: run regenerate()"
        assert path.read_bytes() == committed.read_bytes(), f"{path.name} differs"


@pytest.mark.parametrize("name", sorted(GENERATORS))
def test_generators_are_deterministic_and_seeded(name: str) -> None:
    """The same seed gives the same trace; another seed a different one (except static)."""
    a, b = GENERATORS[name](), GENERATORS[name]()
    np.testing.assert_array_equal(a.snr_db, b.snr_db)
    if name != "static":
        c = GENERATORS[name](seed=99)
        assert not np.allclose(a.snr_db, c.snr_db)


@pytest.mark.parametrize("stem", sorted(COMMITTED))
def test_committed_traces_load_as_60_s_snr_traces(stem: str) -> None:
    """Each committed file is a 60 s SNR trace at 256 ms or finer, W = 1 kHz."""
    tr = load_trace(TRACES_DIR / f"{stem}.csv")
    assert tr.kind == "snr"
    assert tr.duration_s == pytest.approx(60.0)
    assert float(np.max(np.diff(tr.times_s))) <= 0.256
    assert f"W = {DEFAULT_BANDWIDTH_HZ:g} Hz" in tr.notes
    fresh = generate(COMMITTED[stem])
    np.testing.assert_allclose(tr.capacity_bps, fresh.capacity_bps, rtol=2e-3, atol=0.05)


def test_default_trace_binds_the_default_codecs_budget() -> None:
    """default.csv: the budget is below full width (1536 per 32 ms step) in most steps, never
    zero (it has no outage), and visits every octave from tens of coefficients to the cap."""
    tr = load_trace(TRACES_DIR / "default.csv")
    cfg = RateConfig()
    assert cfg.chunk_seconds == 0.032
    budgets = step_budgets(tr, cfg, max_total=1536)
    assert np.mean(budgets < 1536) >= 0.5
    assert budgets.min() > 0
    occupied = {int(np.log2(b)) for b in budgets if b > 0}
    assert budgets.min() < 64 and {5, 6, 7, 8, 9, 10} <= occupied
    # the demo's 20 s: below full width in most steps, down to about a hundred coefficients
    first = budgets[: int(20 / cfg.chunk_seconds)]
    assert np.mean(first < 1536) >= 0.5
    assert first.max() == 1536 and first.min() < 128
    caps = tr.steps(cfg.chunk_seconds)
    # 50 kHz of uplink: kbit/s from a few to about 280 (the codec spans about 1..175)
    assert caps.min() < 5_000 and caps.max() > 175_000


def test_fading_gain_has_unit_mean_and_rayleigh_spread() -> None:
    """The sum-of-sinusoids fading has E|h|^2 = 1 and an exponential-like power spread."""
    rng = np.random.default_rng(7)
    t = np.arange(200_000) * 0.01
    gain = fading_gain(rng, t, doppler_hz=5.0)
    assert gain.mean() == pytest.approx(1.0, abs=0.05)
    assert np.mean(gain < 0.1) == pytest.approx(1 - np.exp(-0.1), abs=0.03)
    rician = fading_gain(np.random.default_rng(7), t, 5.0, k_factor=5.0)
    assert rician.mean() == pytest.approx(1.0, abs=0.05)
    assert np.mean(rician < 0.1) < np.mean(gain < 0.1) / 3


def test_outages_and_handoffs_are_present() -> None:
    """fast_fading_outages and vehicular contain outage samples at the outage SNR."""
    fast = GENERATORS["fast_fading_outages"]()
    frac = np.mean(fast.snr_db == OUTAGE_SNR_DB)
    assert 0.03 < frac < 0.3
    veh = GENERATORS["vehicular"]()
    assert "3 handoffs" in veh.description
    dips = np.flatnonzero(np.diff((veh.snr_db == OUTAGE_SNR_DB).astype(int)) == 1)
    assert dips.size == 3
    assert np.all(GENERATORS["static"]().snr_db == 5.0)
