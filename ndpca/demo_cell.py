"""``ndpca demo --rooms N``: N held-out rooms streaming through one cell of the trace.

One receiver holds N sessions on the cell ``demo`` (created from a sessions file), each step
the cell's capacity is split among the rooms by ``--cell-rule`` (:mod:`server.cell`), and each
room has one ``ndpca edge`` process per source. Writes ``room-<i>/`` (decoded.wav, stats.json,
allocation.png) and ``cell.json`` (``GET /cells/demo/stats``) in ``--out``.
"""

from __future__ import annotations

import argparse
import json
import logging
import subprocess
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import httpx

from ndpca.demo import (
    Prepared,
    build_room,
    endpoints,
    enhancer_args,
    plot_allocation,
    prepare,
    print_quality,
    quality_report,
    save_room,
    start_edge,
    start_receiver,
    stop,
    wait_ready,
)
from shared.errors import UserError

CELL = "demo"


def room_id(i: int) -> str:
    return f"room-{i}"


def prepare_rooms(args: argparse.Namespace) -> list[Prepared]:
    """Room ``i`` is the held-out room of seed ``seed + i``, in ``out/room-<i>``; one model."""
    from shared.codec import Codec

    first = prepare(args, room_dir=args.out / room_id(0))
    codec = Codec.load(first.checkpoint)
    preps = [first]
    for i in range(1, args.rooms):
        room_dir = args.out / room_id(i)
        mics, clean = build_room(args.seconds, args.seed + i, room_dir / "data")
        room, clean_path = save_room(mics, clean, room_dir, codec)
        preps.append(replace(first, room=room, clean=clean_path))
    return preps


def sessions_file(args: argparse.Namespace, preps: list[Prepared]) -> Path:
    """The receiver's sessions: one per room, all on the cell ``demo`` (token file mode 600)."""
    token = preps[0].token_file.read_text().strip()
    sessions = [{"id": room_id(i), "token": token, "trace": str(p.trace),
                 "mode": "lockstep" if args.fast else "realtime", "reference": str(p.clean),
                 "mics_reference": str(p.room), "cell": CELL, "cell_rule": args.cell_rule}
                for i, p in enumerate(preps)]
    path = args.out / "sessions.json"
    path.touch(mode=0o600)
    path.chmod(0o600)
    path.write_text(json.dumps({"sessions": sessions}, indent=1))
    return path


def cell_line(st: dict[str, Any], period: float) -> str:
    """One cell step: capacity, budget, each room's components and received kbit/s."""
    rooms = "  ".join(f"{name} k {sum(r['allocation']):3d} {r['bits_received'] / period / 1e3:5.2f}"
                      for name, r in st["rooms"].items())
    return (f"step {st['step']:4d}  t {st['t']:6.2f} s  C {st['capacity_bps']:7.0f} bit/s  "
            f"budget {st['budget_bits']:5d} bit  L {st['budget_coefficients']:3d}  {rooms} kbit/s"
            + ("" if st["fits"] else "  OVER C_t T"))


def follow_cell(base: str, edges: list[subprocess.Popen], n_rooms: int, period: float,
                args: argparse.Namespace, headers: dict[str, str]) -> None:
    """Print each cell step once every room in it has decoded its step, until all finish."""
    decoded = {room_id(i): 0 for i in range(n_rooms)}
    finished: set[str] = set()
    seen, t0 = 0, time.time()
    limit = 60 + args.seconds * n_rooms * (1 if args.fast else 1.5)
    while True:
        for name in decoded:
            if name in finished:
                continue
            r = httpx.get(f"{base}/sessions/{name}/stats", params={"since": decoded[name]}, headers=headers,
                          timeout=10)
            r.raise_for_status()
            st = r.json()
            if st["summary"]["state"] == "finished":
                finished.add(name)
            for step in st["steps"]:
                if step["decode_ms"] is None:
                    break
                decoded[name] += 1
        cell = httpx.get(f"{base}/cells/{CELL}/stats", params={"since": seen}, headers=headers, timeout=10).json()
        for st in cell["steps"]:
            settled = all(name in finished or (cell["offsets"].get(name) is not None
                                               and decoded[name] > st["step"] - cell["offsets"][name])
                          for name in st["rooms"])
            if not settled:
                break
            print(cell_line(st, period), flush=True)
            seen = st["step"] + 1
        if len(finished) == n_rooms:
            return
        failed = [i for i, p in enumerate(edges) if p.poll() not in (None, 0)]
        if failed:
            raise UserError(f"edge process(es) {failed} failed; see {args.out / 'logs'}")
        if time.time() - t0 > limit:
            raise UserError(f"the rooms did not finish within {limit:.0f} s; see {args.out / 'logs'}")
        time.sleep(0.25)


def run_demo_cell(args: argparse.Namespace) -> int:
    t_start = time.time()
    logging.getLogger("httpx").setLevel(logging.WARNING)
    if args.rooms < 1:
        raise UserError(f"--rooms {args.rooms}: give at least one room")
    if args.hold or args.screenshot:
        raise UserError("--hold and --screenshot show one room: leave them out with --rooms N > 1")
    out: Path = args.out
    out.mkdir(parents=True, exist_ok=True)
    preps = prepare_rooms(args)
    first = preps[0]
    print(f"model      {first.checkpoint}{'  (UNTRAINED: no trained checkpoint found)' if first.random_model else ''}")
    for i, p in enumerate(preps):
        print(f"room {i}     {p.room}  ({args.seconds:g} s, {p.n_sources} sources, seed {args.seed + i})")
    print(f"trace      {first.trace}  (one cell {CELL!r}, rule {args.cell_rule})")
    if args.prepare_only:
        return 0
    port, base, url, logs = endpoints(args, out)
    rx_log = logs / "receiver.log"
    enh = enhancer_args(args)
    rx = start_receiver(port, first.checkpoint, rx_log, [
        "--sessions-file", str(sessions_file(args, preps)), "--record-dir", str(out / "record"), *enh])
    edges: list[subprocess.Popen] = []
    try:
        wait_ready(base, rx, rx_log)
        print(f"receiver   {base}  (live view {base}/ui, cell {base}/cells/{CELL}/stats)", flush=True)
        for i, p in enumerate(preps):
            for s in range(p.n_sources):
                edges.append(start_edge(url, s, p, logs / f"{room_id(i)}-edge-{s}.log", args.fast,
                                        out / room_id(i) / "edges" / f"edge-{s}.json", session=room_id(i)))
        head = first.headers  # every room has the same token
        first_stats = httpx.get(f"{base}/sessions/{room_id(0)}/stats", headers=head, timeout=10).json()
        follow_cell(base, edges, len(preps), first_stats["rate"]["chunk_seconds"], args, head)
        stats = {}
        for i in range(len(preps)):
            name = room_id(i)
            stats[name] = httpx.get(f"{base}/sessions/{name}/stats", headers=head, timeout=10).json()
            audio = httpx.get(f"{base}/sessions/{name}/audio", headers=head, timeout=30)
            audio.raise_for_status()
            (out / name / "decoded.wav").write_bytes(audio.content)
        cell = httpx.get(f"{base}/cells/{CELL}/stats", headers=head, timeout=10).json()
    finally:
        for p in edges:
            stop(p)
        stop(rx)
    (out / "cell.json").write_text(json.dumps(cell, indent=1))
    print()
    for i, p in enumerate(preps):
        name = room_id(i)
        room_dir = out / name
        st = stats[name]
        st["demo"] = {"random_model": p.random_model, "checkpoint": str(p.checkpoint),
                      "enhancer": enh[1], "room": str(p.room),
                      "seed": args.seed + i, "seconds": args.seconds, "cell": CELL,
                      "cell_rule": args.cell_rule, "mode": "lockstep" if args.fast else "realtime"}
        plot_allocation(st, room_dir / "allocation.png")
        st["demo"]["quality"] = report = quality_report(p, room_dir / "decoded.wav", st, enh[1] != "identity",
                                                           room_dir / "edges")
        (room_dir / "stats.json").write_text(json.dumps(st, indent=1))
        s = st["summary"]
        print(f"{name}: {s['steps']} steps, {s['late_chunks']} late and {s['missing_chunks']} missing "
              f"chunks, {s['steps_within_budget']}/{s['steps']} steps within budget")
        print_quality(report)
    steps = cell["steps"]
    fit = sum(1 for st in steps if st["fits"])
    print(f"\ncell       {CELL} ({cell['rule']}): {fit}/{len(steps)} steps fit C_t T across the cell"
          f" (all_fit {str(cell['all_fit']).lower()})")
    print(f"outputs    {out}/room-<i>/ (decoded.wav, stats.json, allocation.png), {out / 'cell.json'}")
    print(f"done in {time.time() - t_start:.0f} s")
    return 0 if cell["all_fit"] else 1
