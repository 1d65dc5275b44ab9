"""The quantiser step profiles: water steps, per-component coding, plans priced by cost."""

import math

import numpy as np
import pytest
import torch
from conftest import tiny_codec

from shared import entropy, steps
from shared.coding import CoefficientCoder, ComponentCoder, component_major


def _std(d=64, decay=0.05):
    return (4.0 * np.exp(-decay * np.arange(d))).astype(np.float32)


def test_water_grid_follows_the_last_component_kept():
    """The last kept component gets b(k) = 1.2; larger components proportionally finer steps,
    clipped to [1/32, b(k)]; over the last sixteenth b(k) falls to sqrt(12 D)."""
    std = _std()
    d0 = math.sqrt(12 * 0.01)
    g = steps.water_grid(std, 20, d0)
    assert g[-1] == round(1.2 * 256) and g.min() >= steps.MIN_GRID
    ratio = std[19] / std[:20].astype(np.float64)
    np.testing.assert_array_equal(g, np.clip(np.rint(307 * ratio), 8, 307).astype(int))
    assert np.all(np.diff(g) >= 0)  # larger components, finer steps
    assert steps.level_grid(60, 64, d0) == 307 and steps.level_grid(64, 64, d0) == round(d0 * 256)
    assert steps.level_grid(61, 64, d0) < 307
    levels = [steps.level_grid(k, 64, d0) for k in range(60, 65)]
    assert all(a >= b for a, b in zip(levels, levels[1:]))
    assert steps.water_grid(std, 0, d0).size == 0


@pytest.mark.parametrize("n_v", [1, 3])
def test_component_coder_round_trip_and_error_bound(n_v):
    """Each component's error is at most half its step; payloads decode exactly; a corrupt
    payload or a wrong CRC is refused; fewer components than the grid keep their steps."""
    rng = np.random.default_rng(0)
    grid = steps.water_grid(_std(), 40, 0.3464)
    coder = ComponentCoder(grid)
    x = rng.standard_normal((n_v, 40))
    q = coder.quantise(x)
    err = np.abs(coder.dequantise(q) - x)
    assert np.all(err <= coder.steps / 2 + 1e-6)
    payload = coder.encode(x)
    crc = coder.checksum(x)
    np.testing.assert_array_equal(coder.decode_indices(payload, 40, n_v, crc), q)
    with pytest.raises(ValueError, match="CRC-32"):
        coder.decode_indices(payload, 40, n_v, crc ^ 1)
    with pytest.raises(ValueError):
        coder.decode_indices(payload[:-1], 40, n_v)
    with pytest.raises(ValueError, match="allocation"):
        coder.decode_indices(payload, 41, n_v)
    small, j = coder.encode_within(x, 8 * len(payload) // 2)
    assert 0 < j < 40 and 8 * len(small) <= 8 * len(payload) // 2
    np.testing.assert_array_equal(coder.decode_indices(small, j, n_v), q[:, :j])


def test_one_grid_step_codes_as_one_code_of_the_laplace_table():
    """A component coder whose steps are all one grid step rounds as the single-step coder and
    writes that step's code of the Laplace table (the uniform coder's Gaussian one differs)."""
    x = np.random.default_rng(1).standard_normal((2, 30))
    a = ComponentCoder(np.full(30, 64))
    b = CoefficientCoder(0.25)
    q = a.quantise(x)
    np.testing.assert_array_equal(q, b.quantise(x))
    code = entropy.code_for_step(0.25, "laplace")
    assert a.encode(x) == code.encode(component_major(q) + entropy.radius(0.25))[0]
    assert a.encode(x) != b.encode(x)
    np.testing.assert_array_equal(a.decode_indices(a.encode(x), 30, 2), q)


def test_laplace_table_is_the_unit_variance_laplace_and_costs_less_on_heavy_tails():
    """Table L is round(2^31 (1 - exp(-sqrt(2) x))) at x = j / 32; on Laplace-distributed
    coefficients its code is shorter than the Gaussian one, on Gaussian ones longer."""
    table = entropy.HALF_CDF_LAPLACE_Q31
    assert len(table) == len(entropy.HALF_CDF_Q31) == 257 and table[0] == 0
    for j in (1, 32, 100, 256):
        assert table[j] == round(2**31 * -math.expm1(-math.sqrt(2) * j / 32))
    rng = np.random.default_rng(0)
    step = 0.5
    lap, gau = entropy.code_for_step(step, "laplace"), entropy.code_for_step(step, "gauss")
    r = entropy.radius(step)
    for x, laplace_wins in ((rng.laplace(scale=2**-0.5, size=20000), True), (rng.standard_normal(20000), False)):
        sym = np.clip(np.rint(x / step), -r, r).astype(np.int64) + r
        assert (lap.bits(sym).sum() < gau.bits(sym).sum()) == laplace_wins
    with pytest.raises(ValueError, match="unknown probability table"):
        entropy.frequencies(step, "cauchy")


def test_expected_bits_fall_with_the_step_and_match_the_code():
    """Coarser steps cost less; the expected code length is within a bit of the entropy."""
    from shared.entropy import model_entropy_bits

    bits = [steps.expected_bits(g) for g in (8, 32, 89, 307)]
    assert all(a > b for a, b in zip(bits, bits[1:]))
    for g in (8, 89, 307):
        h = model_entropy_bits(g / 256, steps.SHAPE["water"])
        assert h <= steps.expected_bits(g) < h + 1


def test_water_plan_fits_expected_bits_and_buys_more_components():
    """The plan's expected payload bits fit floor(C T); more capacity never allocates less;
    at equal capacity the water profile buys more components than the uniform one."""
    c = tiny_codec()
    n_v = c.cfg.vectors_per_step
    prev = -1
    for cap in (0.0, 300.0, 1000.0, 3000.0, 10000.0, 1e6):
        plan = c.plan(cap)
        expected = sum(float(steps.payload_bits(c.component_costs(s)[k], n_v))
                       for s, k in enumerate(plan.allocation))
        assert expected <= plan.budget_bits and sum(plan.bits_per_source) <= plan.budget_bits
        assert all(b >= steps.payload_bits(c.component_costs(s)[k], n_v) - 1
                   for s, (k, b) in enumerate(zip(plan.allocation, plan.bits_per_source)))
        assert plan.budget_coefficients == n_v * sum(plan.allocation)
        assert sum(plan.allocation) >= prev
        prev = sum(plan.allocation)
    assert c.plan(1e7).allocation == c.latent_sizes
    water = sum(c.plan(3000.0).allocation)
    c.set_step_profile("uniform")
    assert water > sum(c.plan(3000.0).allocation)


def test_water_plan_for_active_and_for_components():
    """Inactive sources get nothing and the others share their bits; a sweep's plan holds
    exactly the components asked for."""
    c = tiny_codec()
    full = c.plan(2000.0)
    part = c.plan(2000.0, active=[0, 2, 3])
    assert part.allocation[1] == 0 and sum(part.allocation) >= sum(full.allocation) - full.allocation[1]
    for per_vector in (0, 1, 7, 30):
        assert sum(c.plan_for_components(per_vector).allocation) == per_vector


def test_code_signal_water_fits_budget():
    """Offline coding with the water profile fits every step's bits and says its profile."""
    c = tiny_codec("ndpca-e4d1", seed=3)
    audio = torch.randn(4, 8000) * 0.1
    _, stats = c.code_signal(audio, 20)
    assert stats["bits_per_chunk"] <= stats["budget_bits_per_chunk"]
    assert stats["step_profile"] == "water"


def test_unknown_profile_is_refused():
    with pytest.raises(ValueError, match="step profile"):
        steps.check_profile("flat")
    with pytest.raises(ValueError, match="grid"):
        ComponentCoder(np.array([2]))


def test_allocation_blocks_keep_tiny_payloads_off_the_other_sources():
    """With blocks, a source other than the exempt reference gets nothing or at least
    min_block(width) components; columns never fall as the row grows; the reference's column
    and the rows without blocks are NDPCA's pooled order unchanged."""
    rng = np.random.default_rng(0)
    width = 384
    values = [np.sort(rng.uniform(1, 10, width))[::-1] * 4] + \
             [np.sort(rng.uniform(0, 10, width))[::-1] for _ in range(3)]
    plain = steps.allocation_table(values)
    blocked = steps.allocation_table(values, blocks=True, exempt=[0])
    block = steps.min_block(width)
    assert block == steps.MIN_BLOCK == 8 and steps.min_block(8) == 0 and steps.min_block(64) == 2
    np.testing.assert_array_equal(blocked[:, 0], plain[:, 0])
    for s in (1, 2, 3):
        col = blocked[:, s]
        assert np.all((col == 0) | (col >= block)) and np.all(np.diff(col) >= 0)
        np.testing.assert_array_equal(col[plain[:, s] >= block], plain[plain[:, s] >= block, s])
        assert np.any((plain[:, s] > 0) & (plain[:, s] < block))  # the case the blocks remove
    assert np.all(blocked.sum(1) <= np.arange(len(blocked)))
    costs = [np.arange(width + 1) * 3.0 for _ in range(4)]
    bits = steps.table_bits(blocked, costs, 1)
    assert np.all(np.diff(bits) >= 0), "a larger budget must never buy less"
