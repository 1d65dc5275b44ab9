"""``ndpca bench --out DIR``: what the streaming system costs on this machine.

1. **encoder RTF per edge**: framing + STFT + encoder + projection + quantisation + entropy
   coding of every chunk of the room, one torch thread, divided by the chunk length T;
2. **decode RTF per session**: batched decode + enhancement (identity) + streaming inverse
   STFT per step, for batches of 1..32 sessions, divided by T per session;
3. **loopback run**: ``ndpca serve`` and four ``ndpca edge`` processes in real time:
   end-to-end latency (capture of a chunk's first sample -> its audio decoded) p50/p95, and
   payload bits and whole websocket frames against the budget ``floor(C_t T)`` per step;
4. **sessions held**: one receiver process, N concurrent 4-source real-time sessions (the
   edges of all sessions run in this process from precomputed coefficients, so that the two
   cores measure the receiver), N = 1, 2, 4, 8, ... until a level no longer holds.

A level *holds in real time* when no more than 1 % of the chunks are late or missing and the
p95 end-to-end latency stays within the step deadline (T + look-ahead + grace). Writes
``bench.json`` and ``bench.md``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import platform
import threading
import time
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import torch

from ndpca.demo import (
    SESSION,
    free_port,
    prepare,
    start_edge,
    start_receiver,
    stop,
    wait_ready,
)

log = logging.getLogger("ndpca.bench")
ADMIN = "bench-admin"
LEVELS = (1, 2, 4, 8, 12, 16, 24, 32, 48, 64)


def machine() -> dict[str, Any]:
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    try:
        load = os.getloadavg()[0]
    except OSError:
        load = None
    return {"cpu": cpu, "cores": os.cpu_count(), "python": platform.python_version(),
            "torch": torch.__version__, "cuda": torch.cuda.is_available(),
            "load_average_1min_at_start": load}


def _pct(values: list[float]) -> dict[str, float]:
    a = np.asarray(values, dtype=np.float64)
    return {"mean": float(a.mean()), "p50": float(np.percentile(a, 50)), "p95": float(np.percentile(a, 95))}


class _OneThread:
    """Measure with one torch thread (as an edge runs), restoring the setting afterwards."""

    def __enter__(self) -> None:
        self.before = torch.get_num_threads()
        torch.set_num_threads(1)

    def __exit__(self, *exc: Any) -> None:
        torch.set_num_threads(self.before)


def encoder_rtf(codec, mics: torch.Tensor) -> dict[str, Any]:
    with _OneThread():
        return _encoder_rtf(codec, mics)


def _encoder_rtf(codec, mics: torch.Tensor) -> dict[str, Any]:
    from edge_client.encoder import LiveEncoder

    period = codec.rate.chunk_seconds
    out = {}
    for s, group in enumerate(codec.mic_groups):
        enc = LiveEncoder(codec, s, mics[group])
        times = []
        for i in range(enc.n_chunks):
            t0 = time.perf_counter()
            coeffs = enc.coefficients(i)
            codec.encode_payload(coeffs, coeffs.shape[-1], None, source=s)  # every component: worst case
            times.append(time.perf_counter() - t0)
        out[str(s)] = {k: v / period for k, v in _pct(times).items()}
    return out


def decode_rtf(codec, batches=(1, 4, 8, 16, 32), steps: int = 40) -> dict[str, Any]:
    with _OneThread():
        return _decode_rtf(codec, batches, steps)


def _decode_rtf(codec, batches, steps: int) -> dict[str, Any]:
    from server.decoder import BatchDecoder
    from server.enhance import IdentityEnhancer
    from server.metrics import ReceiverMetrics
    from shared.stft import from_channels
    from shared.streaming import StreamingISTFT

    period = codec.rate.chunk_seconds
    dec = BatchDecoder(codec, IdentityEnhancer(), ReceiverMetrics())
    rng = np.random.default_rng(0)
    n_v = codec.cfg.vectors_per_step
    out = {}
    for b in batches:
        inv = [StreamingISTFT(codec.preset, codec.cfg.num_mics) for _ in range(b)]
        times = []
        for _ in range(steps):
            rows = [[rng.standard_normal((n_v, d)).astype(np.float32) * 0.5 for d in codec.latent_sizes]
                    for _ in range(b)]
            t0 = time.perf_counter()
            spectra = dec.decode_batch(rows)
            for i in range(b):
                inv[i].push(from_channels(spectra[i], codec.cfg.representation))
            times.append((time.perf_counter() - t0) / b)
        out[str(b)] = {k: v / period for k, v in _pct(times).items()}
    return out


def loopback(args: argparse.Namespace, prep, out: Path) -> dict[str, Any]:
    port = free_port()
    base, url = f"http://127.0.0.1:{port}", f"ws://127.0.0.1:{port}/ws"
    logs = out / "logs"
    logs.mkdir(exist_ok=True)
    rx = start_receiver(port, prep.checkpoint, logs / "bench-receiver.log", [
        "--session", SESSION, "--token-file", str(prep.token_file), "--trace", str(prep.trace)])
    edges = []
    try:
        wait_ready(base, rx, logs / "bench-receiver.log")
        edges = [start_edge(url, s, prep, logs / f"bench-edge-{s}.log", False,
                            out / "edges" / f"bench-edge-{s}.json") for s in range(prep.n_sources)]
        deadline = time.time() + 90 + args.seconds * 2
        while time.time() < deadline:
            st = httpx.get(f"{base}/sessions/{SESSION}", headers=prep.headers, timeout=10).json()
            if st["state"] == "finished":
                break
            time.sleep(0.5)
        stats = httpx.get(f"{base}/sessions/{SESSION}/stats", headers=prep.headers, timeout=10).json()
    finally:
        for p in edges:
            stop(p)
        stop(rx)
    steps = stats["steps"]
    ratio = [s["bits_total"] / s["budget_bits"] for s in steps if s["budget_bits"]]
    frame_ratio = [s["frame_bits_total"] / s["budget_bits"] for s in steps if s["budget_bits"]]
    return {
        "steps": len(steps),
        "e2e_ms": stats["summary"]["e2e_ms"],
        "decode_ms": stats["summary"]["decode_ms"],
        "late_chunks": stats["summary"]["late_chunks"],
        "missing_chunks": stats["summary"]["missing_chunks"],
        "steps_payload_within_budget": sum(s["bits_total"] <= s["budget_bits"] for s in steps),
        "payload_over_budget": {"mean": float(np.mean(ratio)), "max": float(np.max(ratio))},
        "frames_over_budget": {"mean": float(np.mean(frame_ratio)), "max": float(np.max(frame_ratio))},
        "bits_per_step": [
            {"step": s["step"], "budget_bits": s["budget_bits"], "payload_bits": s["bits_total"],
             "frame_bits": s["frame_bits_total"]} for s in steps],
    }


def _batch_stats(metrics: str) -> tuple[float, float]:
    """Sum and count of the receiver's decode batch-size histogram."""
    values = {}
    for line in metrics.splitlines():
        for key in ("ndpca_decode_batch_size_sum", "ndpca_decode_batch_size_count"):
            if line.startswith(key + " "):
                values[key] = float(line.split()[1])
    return values.get("ndpca_decode_batch_size_sum", 0.0), values.get("ndpca_decode_batch_size_count", 0.0)


def _run_clients(clients, results: list) -> None:
    async def main():
        return await asyncio.gather(*(c.run() for c in clients), return_exceptions=True)

    results.extend(asyncio.run(main()))


def sessions_held(args: argparse.Namespace, prep, codec, mics: torch.Tensor, out: Path) -> dict[str, Any]:
    from edge_client.client import EdgeClient, EdgeConfig
    from edge_client.encoder import PrecomputedEncoder

    n = int(args.session_seconds * codec.sample_rate)
    encoders = [PrecomputedEncoder(codec, s, mics[g, :n]) for s, g in enumerate(codec.mic_groups)]
    token = prep.token_file.read_text().strip()
    period = codec.rate.chunk_seconds
    deadline_ms = (period + 0.1) * 1e3 + 1e3 * (codec.preset.n_fft - codec.preset.n_fft // 2
                                                - codec.preset.hop) / codec.sample_rate
    port = free_port()
    base, url = f"http://127.0.0.1:{port}", f"ws://127.0.0.1:{port}/ws"
    log_path = out / "logs" / "bench-sessions-receiver.log"
    # sessions come over REST: their trace must lie in a --trace-dir; every edge and live view of
    # the benchmark connects from 127.0.0.1
    per_ip = 4 * max(LEVELS) + getattr(args, "live_streams", 0) + 16
    rx = start_receiver(port, prep.checkpoint, log_path, [
        "--admin-token", ADMIN, "--trace-dir", str(prep.trace.parent),
        "--max-connections-per-ip", str(per_ip), "--max-connections", str(max(per_ip, 1024))])
    levels = []
    try:
        wait_ready(base, rx, log_path)
        for level in [x for x in LEVELS if x <= args.max_sessions]:
            ids = [f"n{level}-{i}" for i in range(level)]
            for sid in ids:
                r = httpx.post(f"{base}/sessions", json={"id": sid, "token": token, "trace": str(prep.trace),
                                                         "start_timeout_s": 3.0},
                               headers={"Authorization": f"Bearer {ADMIN}"}, timeout=10)
                r.raise_for_status()
            clients = [EdgeClient(EdgeConfig(url, sid, s, token, retry_for_s=10), codec, encoders[s])
                       for sid in ids for s in range(codec.n_sources)]
            viewers = _live_streams(base, token, ids, getattr(args, "live_streams", 0))
            results: list = []
            th = threading.Thread(target=_run_clients, args=(clients, results), daemon=True)
            t0 = time.time()
            th.start()
            th.join(args.session_seconds * 3 + 60)
            summaries = []
            for sid in ids:
                for _ in range(100):
                    s = httpx.get(f"{base}/sessions/{sid}", headers=prep.headers, timeout=10).json()
                    if s["state"] == "finished":
                        break
                    time.sleep(0.1)
                summaries.append(s)
            chunks = sum(s["steps"] for s in summaries) * codec.n_sources
            lost = sum(s["late_chunks"] + s["missing_chunks"] for s in summaries)
            e2e = [s["e2e_ms"]["p95"] for s in summaries if s["e2e_ms"]["p95"] is not None]
            dec = [s["decode_ms"]["p95"] for s in summaries if s["decode_ms"]["p95"] is not None]
            errors = [str(r) for r in results if not isinstance(r, dict)]
            batch_sum, batch_count = _batch_stats(httpx.get(f"{base}/metrics", timeout=10).text)
            live = viewers.stop() if viewers is not None else None
            row = {
                "sessions": level, "edges": len(clients), "wall_s": time.time() - t0,
                "chunks": chunks, "lost_chunks": lost, "lost_fraction": lost / max(chunks, 1),
                "e2e_p95_ms_worst": max(e2e) if e2e else None,
                "e2e_p95_ms_median": float(np.median(e2e)) if e2e else None,
                "decode_p95_ms_worst": max(dec) if dec else None,
                "all_finished": all(s["state"] == "finished" for s in summaries),
                "mean_decode_batch_so_far": batch_sum / max(batch_count, 1),
                "edge_errors": errors[:3],
                "live_streams": live,
            }
            for sid in ids:  # free the receiver for the next level
                httpx.delete(f"{base}/sessions/{sid}", headers={"Authorization": f"Bearer {ADMIN}"}, timeout=10)
            row["held"] = bool(row["all_finished"] and not errors and row["lost_fraction"] <= 0.01
                               and e2e and max(e2e) <= deadline_ms)
            levels.append(row)
            print(f"  {level:3d} sessions: lost {lost}/{chunks}, e2e p95 worst "
                  f"{row['e2e_p95_ms_worst'] or float('nan'):.0f} ms, held={row['held']}", flush=True)
            if not row["held"]:
                break
    finally:
        stop(rx)
    held = [r["sessions"] for r in levels if r["held"]]
    return {"deadline_ms": deadline_ms, "levels": levels, "max_sessions_held": max(held) if held else 0,
            "live_streams": getattr(args, "live_streams", 0)}


def _live_streams(base: str, token: str, ids: list[str], n: int):
    """``--live-streams N``: the live view's stream open on the first N sessions of a level."""
    if n <= 0:
        return None
    from ndpca.liveview import LiveStreams

    return LiveStreams(base, token, ids[:n]).start()


def run_bench(args: argparse.Namespace) -> int:
    from shared.codec import Codec

    logging.getLogger("httpx").setLevel(logging.WARNING)
    out: Path = args.out
    out.mkdir(parents=True, exist_ok=True)
    result: dict[str, Any] = {"machine": machine()}
    prep = prepare(args)
    codec = Codec.load(prep.checkpoint)
    import soundfile as sf

    data, _ = sf.read(prep.room, dtype="float32", always_2d=True)
    mics = torch.from_numpy(np.ascontiguousarray(data.T))
    period = codec.rate.chunk_seconds
    result["model"] = {"arch": codec.cfg.arch, "sha256": codec.sha256, "random": prep.random_model,
                       "chunk_seconds": period, "latent_sizes": codec.latent_sizes}
    print("encoder real-time factor per edge ...", flush=True)
    result["encoder_rtf"] = encoder_rtf(codec, mics)
    print("decode real-time factor per session ...", flush=True)
    result["decode_rtf"] = decode_rtf(codec)
    print(f"loopback run: receiver + {prep.n_sources} edges, {args.seconds:g} s in real time ...", flush=True)
    result["loopback"] = loopback(args, prep, out)
    print("concurrent 4-source sessions in one receiver ...", flush=True)
    result["sessions"] = sessions_held(args, prep, codec, mics, out)
    try:
        result["machine"]["load_average_1min_at_end"] = os.getloadavg()[0]
    except OSError:
        pass
    (out / "bench.json").write_text(json.dumps(result, indent=1))
    (out / "bench.md").write_text(markdown(result))
    print(markdown(result))
    print(f"written {out / 'bench.json'} and {out / 'bench.md'}")
    return 0


def markdown(r: dict[str, Any]) -> str:
    m, lb, T = r["machine"], r["loopback"], r["model"]["chunk_seconds"]
    enc = max(v["mean"] for v in r["encoder_rtf"].values())
    enc95 = max(v["p95"] for v in r["encoder_rtf"].values())
    dec1 = r["decode_rtf"]["1"]
    best_b, best = min(r["decode_rtf"].items(), key=lambda kv: kv[1]["mean"])
    s = r["sessions"]
    lines = [
        f"Machine: {m['cpu']}, {m['cores']} cores, torch {m['torch']}, CUDA {m['cuda']} "
        f"(1-min load average from other jobs at start {m['load_average_1min_at_start']:.1f}); model "
        f"{r['model']['arch']} ({'random weights' if r['model']['random'] else r['model']['sha256'][:8]}), "
        f"T = {T * 1e3:.0f} ms, decoding without enhancement.",
        "",
        "| metric | measured | target |",
        "| --- | --- | --- |",
        f"| edge encoder RTF (worst edge, mean / p95) | {enc:.4f} / {enc95:.4f} | <= 0.05 |",
        f"| receiver decode RTF per 4-source session, alone (mean / p95) | {dec1['mean']:.4f} / {dec1['p95']:.4f} | <= 0.1 |",
        f"| receiver decode RTF per session, batch of {best_b} (mean) | {best['mean']:.4f} | |",
        f"| end-to-end latency on loopback p50 / p95 | {_ms(lb['e2e_ms']['p50'])} / {_ms(lb['e2e_ms']['p95'])} | p95 <= 100 ms (Opus, 20 ms frames, plus network) |",
        f"| steps whose payload fits floor(C_t T) | {lb['steps_payload_within_budget']} / {lb['steps']} | all |",
        f"| payload / budget per step (mean / max) | {lb['payload_over_budget']['mean']:.2f} / {lb['payload_over_budget']['max']:.2f} | <= 1 |",
        f"| whole websocket frames / budget (mean / max) | {lb['frames_over_budget']['mean']:.2f} / {lb['frames_over_budget']['max']:.2f} | (framing overhead) |",
        f"| late / missing chunks (loopback) | {lb['late_chunks']} / {lb['missing_chunks']} | 0 |",
        f"| concurrent 4-source sessions held in real time | {s['max_sessions_held']} | >= 8 |",
        "",
        "| sessions | lost chunks | e2e p95 worst (ms) | decode p95 worst (ms) | mean decode batch | held |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    for row in s["levels"]:
        lines.append(f"| {row['sessions']} | {row['lost_chunks']} / {row['chunks']} | "
                     f"{_ms(row['e2e_p95_ms_worst'])} | {_ms(row['decode_p95_ms_worst'])} | "
                     f"{row['mean_decode_batch_so_far']:.2f} | {row['held']} |")
    return "\n".join(lines) + "\n"


def _ms(v: float | None) -> str:
    return "-" if v is None else f"{v:.0f}"
