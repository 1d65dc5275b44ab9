"""A cell: rooms (sessions) sharing one uplink, its trace replay, and the per-step split rule.

Pure logic, no I/O. Each cell step ``j`` has one capacity ``C_j`` from the cell's schedule and
is split once, with the members present when the step is first asked for:

* ``equal``: each of the R rooms with active sources gets ``floor(C_j T / R)`` bits and its
  own Eq. 3 budget for ``C_j / R``, allocated by NDPCA over its active sources;
* ``pooled``: the cell's Eq. 3 budget for ``C_j`` (capped at every active component of every
  room) is given to the top ``L_j / n_v`` (singular value, room, source) pairs of all rooms
  (reverse water-filling across independent components); each room gets its count and bits
  ``floor(C_j T k_room / k_cell)``.

With the ``water`` step profile (:mod:`shared.steps`) rooms join with each source's expected
cost per allocation, and both rules buy components at that cost instead of Eq. 3's flat one:
the largest allocation in the rule's order whose expected bits fit the share, bits split in
proportion to expected costs.

A room joins at the cell's next step not yet split and leaves from the next step not yet
split, so a split never changes once made and the bits given out at a step never exceed
``floor(C_j T)``. Rooms keep their own step numbers; a room's step ``t`` is cell step
``t + offset`` (the offset is fixed when the room's first step asks).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from shared import steps
from shared.codec import Plan
from shared.rate import RateConfig, allocate_ndpca, budget_bits, budget_coefficients, split_bits

RULES = ("equal", "pooled")
#: the rule of a cell whose first session names none
DEFAULT_RULE = "equal"
#: cell steps whose splits and statistics are kept
HISTORY = 4096


@dataclass
class Room:
    """A member: per source its singular values (descending), and its active sources now."""

    singular_values: Sequence[np.ndarray]
    active: Callable[[], frozenset[int]]
    offset: int | None = None
    left_at: int | None = None
    #: per source, expected bits of one vector for k = 0 .. d_s (the water profile), else None
    costs: Sequence[np.ndarray] | None = None


#: what a split sees of a room: singular values, active sources, costs (or None)
Member = tuple[Sequence[np.ndarray], frozenset[int], "Sequence[np.ndarray] | None"]


def _fit(values: list[np.ndarray], costs: list[np.ndarray], bits: int, n_v: int,
         ref: Sequence[int] = (0,)) -> list[int]:
    """The largest NDPCA allocation over ``values`` whose expected payload bits fit ``bits``
    (the sources at positions ``ref``, the rooms' reference microphones, exempt from
    :data:`shared.steps.MIN_BLOCK`)."""
    table = steps.allocation_table(values, "ndpca", blocks=True, exempt=ref)
    row = steps.fit_allocation(steps.table_bits(table, costs, n_v), bits)
    return table[row].tolist()


def empty_plan(n_sources: int) -> Plan:
    return Plan(0.0, 0, 0, [0] * n_sources, [0] * n_sources)


def split_equal(capacity_bps: float, rate: RateConfig, n_v: int,
                rooms: dict[str, Member]) -> dict[str, Plan]:
    """Equal shares: ``floor(C T / R)`` bits and an Eq. 3 budget for ``C / R`` per room (with
    costs: the allocation whose expected bits fit the share)."""
    live = {r: v for r, v in rooms.items() if v[1]}
    out = {r: empty_plan(len(v[0])) for r, v in rooms.items()}
    if not live:
        return out
    share_cap = capacity_bps / len(live)
    share_bits = budget_bits(capacity_bps, rate) // len(live)
    for r, (sv, act, costs) in live.items():
        sizes = [len(s) for s in sv]
        act_sorted = sorted(act)
        alloc = [0] * len(sv)
        if costs is None:
            total = budget_coefficients(share_cap, rate, n_v * sum(sizes[s] for s in act))
            picked = allocate_ndpca([sv[s] for s in act_sorted], total // n_v)
        else:
            picked = _fit([sv[s] for s in act_sorted], [costs[s] for s in act_sorted], share_bits, n_v,
                          [i for i, s in enumerate(act_sorted) if s == 0])
            total = n_v * sum(picked)
        for s, k in zip(act_sorted, picked):
            alloc[s] = int(k)
        per_source = (split_bits(share_bits, alloc) if costs is None
                      else steps.split_by_cost(share_bits, steps.allocation_bits(costs, alloc, n_v)))
        out[r] = Plan(share_cap, total, share_bits, alloc, per_source)
    return out


def split_pooled(capacity_bps: float, rate: RateConfig, n_v: int,
                 rooms: dict[str, Member]) -> dict[str, Plan]:
    """Pooled NDPCA: the cell's budget to the top (task-weighted) singular values of every room's sources."""
    out = {r: empty_plan(len(v[0])) for r, v in rooms.items()}
    keys = [(r, s) for r, (sv, act, _) in rooms.items() for s in sorted(act)]
    if not keys:
        return out
    values = [rooms[r][0][s] for r, s in keys]
    bits = budget_bits(capacity_bps, rate)
    priced = all(rooms[r][2] is not None for r, _ in keys)
    if priced:
        picked = _fit(values, [rooms[r][2][s] for r, s in keys], bits, n_v,
                      [i for i, (_, s) in enumerate(keys) if s == 0])
    else:
        total = budget_coefficients(capacity_bps, rate, n_v * sum(len(v) for v in values))
        picked = allocate_ndpca(values, total // n_v)
    per_room = {r: 0 for r in rooms}
    for (r, s), k in zip(keys, picked):
        out[r].allocation[s] = int(k)
        per_room[r] += int(k)
    names = list(rooms)
    if priced:
        weights = [sum(steps.allocation_bits(rooms[r][2], out[r].allocation, n_v)) if rooms[r][1] else 0.0
                   for r in names]
        room_bits = steps.split_by_cost(bits, weights)
    else:
        room_bits = split_bits(bits, [per_room[r] for r in names])
    for r, b in zip(names, room_bits):
        p = out[r]
        p.budget_bits = b
        p.budget_coefficients = n_v * per_room[r]
        p.capacity_bps = capacity_bps * b / bits if bits else 0.0
        p.bits_per_source = (steps.split_by_cost(b, steps.allocation_bits(rooms[r][2], p.allocation, n_v))
                             if priced else split_bits(b, p.allocation))
    return out


SPLITS = {"equal": split_equal, "pooled": split_pooled}


class Cell:
    """Rooms sharing one capacity schedule ``step -> (t, C)``."""

    def __init__(self, name: str, rule: str, schedule: Callable[[int], tuple[float, float]],
                 rate: RateConfig, n_v: int, info: dict[str, Any] | None = None) -> None:
        if rule not in RULES:
            raise ValueError(f"cell rule {rule!r} unknown: use one of {', '.join(RULES)}")
        self.name = name
        self.rule = rule
        self.schedule = schedule
        self.rate = rate
        self.n_v = n_v
        self.info = info or {}
        self.rooms: dict[str, Room] = {}
        self.splits: dict[int, dict[str, Plan]] = {}
        self.records: dict[int, dict[str, Any]] = {}
        self.next_step = 0  # the first cell step not split yet

    # ------------------------------------------------------------------ members
    def join(self, room: str, singular_values: Sequence[np.ndarray],
             active: Callable[[], frozenset[int]],
             costs: Sequence[np.ndarray] | None = None) -> None:
        """Add a room; it takes part from the first step it asks for that is not split yet.
        ``costs``: per source, expected bits of one vector for ``k = 0 .. d_s`` (the water
        profile's :meth:`shared.codec.Codec.component_costs`); None: Eq. 3's flat cost."""
        if room in self.rooms and self.rooms[room].left_at is None:
            raise ValueError(f"room {room!r} is already in cell {self.name!r}")
        self.rooms[room] = Room([np.asarray(s, dtype=np.float64) for s in singular_values], active,
                                costs=costs)

    def leave(self, room: str) -> None:
        """The room takes no part from the next step not split yet."""
        r = self.rooms.get(room)
        if r is not None and r.left_at is None:
            r.left_at = self.next_step

    def members(self) -> list[str]:
        return [name for name, r in self.rooms.items() if r.left_at is None]

    def cell_step(self, room: str, step: int) -> int:
        r = self.rooms[room]
        if r.offset is None:
            r.offset = max(self.next_step, 0) - step
        return step + r.offset

    # ------------------------------------------------------------------ per step
    def _split(self, j: int) -> dict[str, Plan]:
        t, cap = self.schedule(j)
        present = {name: (r.singular_values, frozenset(r.active()), r.costs)
                   for name, r in self.rooms.items()
                   if r.left_at is None and r.offset is not None}
        plans = SPLITS[self.rule](cap, self.rate, self.n_v, present)
        self.splits[j] = plans
        self.records[j] = {
            "step": j, "t": t, "capacity_bps": cap,
            "budget_bits": budget_bits(cap, self.rate),
            "budget_coefficients": sum(p.budget_coefficients for p in plans.values()),
            "rooms": {name: {"allocation": list(p.allocation), "bits_allocated": p.budget_bits,
                             "bits_received": 0} for name, p in plans.items()},
        }
        self.next_step = max(self.next_step, j + 1)
        for old in [k for k in self.splits if k < j - HISTORY]:
            del self.splits[old]
            self.records.pop(old, None)
        return plans

    def plan(self, room: str, step: int) -> Plan:
        """The room's plan for its step ``step`` (splitting the cell step on first ask)."""
        j = self.cell_step(room, step)
        plans = self.splits.get(j)
        if plans is None:
            if j < self.next_step:  # forgotten: give nothing rather than risk overflowing
                return empty_plan(len(self.rooms[room].singular_values))
            for k in range(self.next_step, j):  # steps nobody asked for: split for the record
                self._split(k)
            plans = self._split(j)
        plan = plans.get(room)
        if plan is None:
            return empty_plan(len(self.rooms[room].singular_values))
        return Plan(plan.capacity_bps, plan.budget_coefficients, plan.budget_bits,
                    list(plan.allocation), list(plan.bits_per_source))

    def received(self, room: str, step: int, bits: int) -> None:
        """Record the bits the room received at its step ``step``."""
        r = self.rooms.get(room)
        if r is None or r.offset is None:
            return
        rec = self.records.get(step + r.offset)
        if rec is not None and room in rec["rooms"]:
            rec["rooms"][room]["bits_received"] += int(bits)

    # ------------------------------------------------------------------ reporting
    def capacity_now(self) -> float:
        j = max(self.next_step - 1, 0)
        return float(self.schedule(j)[1])

    def summary(self) -> dict[str, Any]:
        return {"name": self.name, "rule": self.rule, "members": self.members(),
                "capacity_bps": self.capacity_now(), "steps": self.next_step,
                "channel": self.info.get("notes", "")}

    def stats(self, since: int = 0) -> dict[str, Any]:
        steps = []
        for j in sorted(k for k in self.records if k >= since):
            rec = dict(self.records[j])
            received = sum(v["bits_received"] for v in rec["rooms"].values())
            allocated = sum(v["bits_allocated"] for v in rec["rooms"].values())
            rec["bits_received"] = received
            rec["bits_allocated"] = allocated
            rec["fits"] = received <= rec["budget_bits"] and allocated <= rec["budget_bits"]
            steps.append(rec)
        offsets = {name: r.offset for name, r in self.rooms.items()}  # room step t = cell step t + offset
        return {**self.summary(), "all_fit": all(s["fits"] for s in steps), "offsets": offsets,
                "steps": steps}


def check_fit(capacity_bps: float, rate: RateConfig, plans: dict[str, Plan]) -> bool:
    """Bits given out at a step fit ``floor(C T)``."""
    return sum(p.budget_bits for p in plans.values()) <= math.floor(capacity_bps * rate.chunk_seconds)
