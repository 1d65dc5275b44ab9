"""``ndpca cells-bench``: rooms on one cell, equal shares against pooled NDPCA, same capacity.

Offline and in lockstep: each room is a held-out simulated room (its own data set seed); every
step the cell's capacity (the trace replayed once for the cell) is split by :mod:`server.cell`,
each room's active sources are coded with their allocation and bit budget exactly as edges do,
and the receiver's decode is compared with the captured spectra. Written: the cell's total
reconstruction error (sum over rooms of the mean squared error of the decoded spectra), each
room's spectral SNR (dB) and the spread across rooms, and whether every step's bits fit C_t T.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
from pathlib import Path
from typing import Any

import numpy as np
import torch

log = logging.getLogger(__name__)


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("cells-bench", help="rooms on one cell: equal shares vs pooled NDPCA")
    p.add_argument("--out", type=Path, required=True, help="output folder (cells.json)")
    p.add_argument("--rooms", type=int, default=3)
    p.add_argument("--sources", default="4,2,1;4,4,4",
                   help="active sources per room, one scenario per ';' (default '4,2,1;4,4,4')")
    p.add_argument("--checkpoint", help="codec checkpoint (default: newest checkpoints/<arch>-*.ckpt)")
    p.add_argument("--arch", default="ndpca-e4d1")
    p.add_argument("--checkpoint-dir", default="checkpoints")
    p.add_argument("--trace", help="channel trace (default: the committed default)")
    p.add_argument("--capacity-bps", type=float, help="constant cell capacity instead of a trace")
    p.add_argument("--seconds", type=float, default=4.0, help="length of each room")
    p.add_argument("--seed", type=int, default=0, help="room i uses data set seed seed + i")
    p.set_defaults(func=run)


def _schedule(args, period: float):
    if args.capacity_bps is not None:
        return lambda j: (j * period, float(args.capacity_bps))
    from channel_traces import TraceReplay, default_trace_path, load_trace

    trace = load_trace(Path(args.trace) if args.trace else default_trace_path())
    return TraceReplay(trace, period, loop=True).step


@torch.no_grad()
def simulate(codec, rooms_mics: list[np.ndarray], active: list[list[int]], rule: str, schedule) -> dict[str, Any]:
    """One rule: per step split, code, decode; per room MSE of the decoded spectra."""
    from server.cell import Cell

    cell = Cell("bench", rule, schedule, codec.rate, codec.cfg.vectors_per_step)
    sv = [b.singular_values.cpu().numpy() for b in codec.bases]
    data = []
    for i, mics in enumerate(rooms_mics):
        spec = codec.chunk(codec.spectra(torch.from_numpy(mics)))
        coeffs = [codec.source_coefficients(s, spec[:, g]) for s, g in enumerate(codec.mic_groups)]
        data.append((spec, coeffs))
        act = frozenset(active[i])
        costs = (None if codec.step_profile == "uniform"
                 else [codec.component_costs(s) for s in range(codec.n_sources)])
        cell.join(f"room{i}", sv, lambda act=act: act, costs)
    for i in range(len(data)):  # every room joins at cell step 0 (lockstep, same clock)
        cell.cell_step(f"room{i}", 0)
    n_steps = min(d[0].shape[0] for d in data)
    n_v = codec.cfg.vectors_per_step
    err = [0.0] * len(data)
    power = [0.0] * len(data)
    fits = True
    for t in range(n_steps):
        bits_step = 0
        for i, (spec, coeffs) in enumerate(data):
            plan = cell.plan(f"room{i}", t)
            per = []
            for s in range(codec.n_sources):
                k = plan.allocation[s]
                if k == 0:
                    per.append(torch.zeros(1, n_v, 0))
                    continue
                enc = codec.encode_payload(coeffs[s][t], k, plan.bits_per_source[s], source=s)
                bits_step += enc.bits
                cell.received(f"room{i}", t, enc.bits)
                per.append(torch.from_numpy(codec.decode_payload(enc.payload, enc.k, source=s,
                                                                 k_allocated=k))[None])
            out = codec.decode_coefficients(per)[0]
            ref = spec[t]
            err[i] += float(((out - ref) ** 2).mean())
            power[i] += float((ref ** 2).mean())
        _, cap = schedule(cell.cell_step("room0", t))
        fits &= bits_step <= math.floor(cap * codec.rate.chunk_seconds)
    mse = [e / n_steps for e in err]
    snr = [10 * math.log10(p / e) if e > 0 else float("inf") for p, e in zip(power, err)]
    stats = cell.stats()
    return {"rule": rule, "steps": n_steps, "total_mse": float(sum(mse)), "mse_per_room": mse,
            "snr_db_per_room": snr, "snr_spread_db": float(max(snr) - min(snr)),
            "snr_std_db": float(np.std(snr)), "bits_fit_every_step": bool(fits and stats["all_fit"]),
            "mean_bits_per_step": float(np.mean([s["bits_received"] for s in stats["steps"]]))}


def run(args: argparse.Namespace) -> int:
    from ndpca.demo import build_room
    from shared.codec import Codec
    from shared.errors import UserError
    from shared.streaming import find_checkpoint

    torch.set_num_threads(1)
    ckpt = Path(args.checkpoint) if args.checkpoint else find_checkpoint(args.arch, args.checkpoint_dir)
    if ckpt is None:
        raise UserError(f"no {args.arch} checkpoint in {args.checkpoint_dir}; pass --checkpoint")
    codec = Codec.load(ckpt)
    args.out.mkdir(parents=True, exist_ok=True)
    rooms = [build_room(args.seconds, args.seed + i, args.out / f"data{i}")[0] for i in range(args.rooms)]
    schedule = _schedule(args, codec.rate.chunk_seconds)
    result: dict[str, Any] = {"checkpoint": str(ckpt), "rooms": args.rooms, "seconds": args.seconds,
                              "capacity": args.capacity_bps or (args.trace or "default trace"),
                              "scenarios": []}
    for scenario in args.sources.split(";"):
        counts = [int(x) for x in scenario.split(",")]
        counts = (counts * args.rooms)[: args.rooms]
        active = [list(range(min(c, codec.n_sources))) for c in counts]
        rules = {rule: simulate(codec, rooms, active, rule, schedule) for rule in ("equal", "pooled")}
        result["scenarios"].append({"active_sources": counts, **rules})
        for rule, r in rules.items():
            print(f"sources {scenario:>8} {rule:>6}: total MSE {r['total_mse']:.5f}  SNR per room "
                  + " ".join(f"{v:5.2f}" for v in r["snr_db_per_room"])
                  + f" dB  spread {r['snr_spread_db']:.2f} dB  bits fit: {r['bits_fit_every_step']}")
    (args.out / "cells.json").write_text(json.dumps(result, indent=2))
    print(f"written {args.out / 'cells.json'}")
    return 0
