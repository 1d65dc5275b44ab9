"""Tests of the timestamp repairs (counter wraps, repeats, out-of-order samples, resets)."""

from __future__ import annotations

import numpy as np

from channel_traces._timeline import repair_times, unwrap_counter


def test_unwrap_counter_adds_the_modulus_at_each_wrap() -> None:
    """Big steps back are wraps, re-logged pre-wrap records fold back, small steps stay."""
    raw = np.array([2**32 - 100, 2**32 - 50, 10, 60, 30])
    unwrapped, wraps = unwrap_counter(raw, 2**32)
    assert wraps == 1
    np.testing.assert_array_equal(unwrapped, [2**32 - 100, 2**32 - 50, 2**32 + 10,
                                              2**32 + 60, 2**32 + 30])
    relogged = np.array([2**32 - 100, 2**32 - 50, 10, 2**32 - 50, 60])
    folded, wraps = unwrap_counter(relogged, 2**32)
    assert wraps == 1
    np.testing.assert_array_equal(folded, [2**32 - 100, 2**32 - 50, 2**32 + 10, 2**32 - 50,
                                           2**32 + 60])
    kept, _ = unwrap_counter(relogged, 2**32, fold_forward=False)
    assert kept[3] == 2 * 2**32 - 50


def test_repair_merges_drops_and_splices() -> None:
    """Same time: merged; seen time: dropped; one sample back: dropped; staying back: reset."""
    raw = np.array([0, 1, 1, 2, 3, 1, 2, 4, 2.5, 5, 0.5, 1.5])
    repair = repair_times(raw)
    np.testing.assert_allclose(repair.times, [0, 1, 2, 3, 4, 5, 6, 7])
    assert (repair.merged, repair.repeated, repair.out_of_order, repair.resets) == (1, 2, 1, 1)
    np.testing.assert_array_equal(repair.group, [0, 1, 1, 2, 3, -1, -1, 4, -1, 5, 6, 7])
    values = np.arange(12.0)
    np.testing.assert_allclose(repair.reduce(values), [0, 1.5, 3, 4, 7, 9, 10, 11])
    np.testing.assert_array_equal(repair.first(values), [0, 1, 3, 4, 7, 9, 10, 11])
    note = repair.note()
    assert "1 repeated timestamps merged" in note and "2 records logged twice dropped" in note
    assert "1 out-of-order samples dropped" in note and "1 clock resets spliced" in note


def test_ids_tell_a_record_logged_twice_from_two_records_at_one_time() -> None:
    """With ids, an equal time and id is a duplicate (dropped); a new id is merged."""
    repair = repair_times(np.array([10, 20, 20, 20]), ids=np.array([1, 2, 2, 3]))
    np.testing.assert_array_equal(repair.group, [0, 1, -1, 1])
    assert (repair.merged, repair.repeated) == (1, 1)
    assert repair_times(np.array([1.0, 2.0])).note() == ""
