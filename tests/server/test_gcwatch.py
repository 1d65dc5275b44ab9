"""Garbage-collection pauses: timed, frozen start-up objects, step records the collector drops."""

import gc

from server import gcwatch
from server.report import step_entry
from shared.codec import Plan


def test_collections_are_timed_and_start_up_objects_frozen():
    seen = []
    watch = gcwatch.install(lambda seconds, generation: seen.append((seconds, generation)))
    try:
        assert gc.get_freeze_count() > 0  # what existed at install is out of the collector's way
        gc.collect()
        assert seen and seen[-1][1] == 2 and seen[-1][0] >= 0
        assert watch.longest_ms >= 0
    finally:
        gcwatch.uninstall(watch)
    assert watch not in gc.callbacks and gc.get_freeze_count() == 0


def test_step_records_are_one_tracked_object_each():
    """A closed step's record holds only numbers, strings, tuples and dicts of numbers: after
    a collection nothing inside it is tracked, so a full collection visits one object per
    step (a dict holding dicts stays tracked itself)."""
    plan = Plan(1000.0, 12, 32, [3, 3, 3, 3], [8, 8, 8, 8])
    entry = step_entry(5, 0.16, plan, [0, 1, 2, 3], {}, [2], "deadline", 4, 4, ["clean"])
    entry["late"] = (*entry["late"], 2)
    entry["decode_ms"] = 3.5
    gc.collect()
    assert not [k for k, v in entry.items() if gc.is_tracked(v)]
