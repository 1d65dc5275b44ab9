"""Unit tests of a cell's split rules (server/cell.py)."""

import math

import numpy as np
import pytest

from server.cell import Cell, split_equal, split_pooled
from shared.rate import RateConfig, allocate_ndpca

RATE = RateConfig(chunk_seconds=0.032)
N_V = 2


def _sv(seed, sizes=(6, 6, 6, 6)):
    rng = np.random.default_rng(seed)
    return [np.sort(rng.random(n) * (seed + 1))[::-1] for n in sizes]


def _costs(sizes=(6, 6, 6, 6)):
    """Water-profile-like costs: one vector with k components costs more per component as k grows."""
    return [np.concatenate([[0.0], np.cumsum(1.5 + 0.3 * np.arange(n))]) for n in sizes]


def _rooms(n=3, active=None, priced=False):
    return {f"r{i}": (_sv(i), frozenset(active[i] if active else range(4)), _costs() if priced else None)
            for i in range(n)}


@pytest.mark.parametrize("priced", [False, True])
@pytest.mark.parametrize("cap", [0.0, 150.0, 900.0, 2500.0, 12000.0, 1e6])
@pytest.mark.parametrize("split", [split_equal, split_pooled])
def test_bits_and_components_fit_capacity(split, cap, priced):
    """Bits given out at a step never exceed floor(C T); each room's bits fit its own allocation;
    priced (water profile): each source's bits cover its expected payload."""
    from shared.steps import payload_bits

    plans = split(cap, RATE, N_V, _rooms(3, [[0, 1, 2, 3], [0, 2], [1]], priced))
    assert sum(p.budget_bits for p in plans.values()) <= math.floor(cap * RATE.chunk_seconds)
    for p in plans.values():
        assert sum(p.bits_per_source) <= p.budget_bits
        assert N_V * sum(p.allocation) <= p.budget_coefficients or p.budget_coefficients == 0
        if priced:
            for s, (k, b) in enumerate(zip(p.allocation, p.bits_per_source)):
                assert b >= payload_bits(_costs()[s][k], N_V) - 1
    if priced and cap >= 12000.0:
        assert sum(sum(p.allocation) for p in plans.values()) > 0


def test_equal_share_is_floor_of_capacity_over_rooms():
    """Equal: every room with active sources gets floor(C T / R) bits."""
    plans = split_equal(2000.0, RATE, N_V, _rooms(3))
    assert {p.budget_bits for p in plans.values()} == {math.floor(2000.0 * RATE.chunk_seconds) // 3}


def test_pooled_equals_ndpca_over_the_union():
    """Pooled: the per-source counts are NDPCA's allocation over all sources of all rooms."""
    active = [[0, 1, 2, 3], [0, 2], [1, 3]]
    rooms = _rooms(3, active)
    cap = 1500.0
    plans = split_pooled(cap, RATE, N_V, rooms)
    values = [rooms[r][0][s] for r in rooms for s in sorted(rooms[r][1])]
    from shared.rate import budget_coefficients
    total = budget_coefficients(cap, RATE, N_V * sum(len(v) for v in values))
    expected = allocate_ndpca(values, total // N_V)
    got = [plans[r].allocation[s] for r in rooms for s in sorted(rooms[r][1])]
    assert got == expected and sum(got) == total // N_V
    for r in rooms:  # inactive sources get nothing
        assert all(plans[r].allocation[s] == 0 for s in range(4) if s not in rooms[r][1])


def test_pooled_gives_more_components_than_equal_when_a_room_saturates():
    """Pooled uses the share a small room cannot use; equal shares leave it idle."""
    rooms = _rooms(3, [[0, 1, 2, 3], [0, 1, 2, 3], [0]])
    eq = split_equal(4000.0, RATE, N_V, rooms)
    po = split_pooled(4000.0, RATE, N_V, rooms)
    assert sum(sum(p.allocation) for p in po.values()) > sum(sum(p.allocation) for p in eq.values())


def test_join_and_leave_take_effect_from_the_next_step():
    """A room joining or leaving changes the others' allocations only from the next unsplit step."""
    cell = Cell("c", "equal", lambda j: (j * 0.032, 3000.0), RATE, N_V)
    all4 = lambda: frozenset(range(4))  # noqa: E731
    cell.join("a", _sv(0), all4)
    a0 = cell.plan("a", 0)
    cell.join("b", _sv(1), all4)
    b0 = cell.plan("b", 0)  # b's first step is cell step 1: step 0 was split without it
    assert cell.cell_step("b", 0) == 1
    a1 = cell.plan("a", 1)
    assert a1.budget_bits < a0.budget_bits and b0.budget_bits == a1.budget_bits
    cell.plan("a", 2)
    cell.leave("b")  # step 2 is split already: b keeps its share there, loses it from 3
    assert cell.plan("b", 1).budget_bits == a1.budget_bits
    assert cell.plan("a", 3).budget_bits == a0.budget_bits
    stats = cell.stats()
    assert stats["all_fit"] and [s["step"] for s in stats["steps"]] == [0, 1, 2, 3]
    assert set(stats["steps"][3]["rooms"]) == {"a"}


def test_received_bits_are_recorded_and_checked():
    """Bits received per room are added to the cell step and the fit flag follows them."""
    cell = Cell("c", "pooled", lambda j: (0.0, 1000.0), RATE, N_V)
    cell.join("a", _sv(0), lambda: frozenset(range(4)))
    p = cell.plan("a", 0)
    cell.received("a", 0, p.budget_bits)
    assert cell.stats()["steps"][0]["fits"]
    cell.received("a", 0, 10**6)
    assert not cell.stats()["all_fit"]


def test_unknown_rule_is_refused():
    """A rule other than equal or pooled is a clear error."""
    with pytest.raises(ValueError, match="equal, pooled"):
        Cell("c", "greedy", lambda j: (0.0, 1.0), RATE, N_V)
