"""``ndpca loadtest --out DIR``: well-behaved real-time sessions while everything else happens.

One receiver process (``python -m server serve`` with an admin token and ``--record-dir
DIR/record``) on loopback. This process runs only the edges of ``--sessions`` well-behaved
4-source real-time sessions (precomputed coefficients, as ``ndpca bench`` does); a second
process (:mod:`ndpca.load_clients`) runs, at the same time and against the same receiver, a
long lockstep session that finishes during the run, repeated downloads of its recording and
of the live sessions' audio, floods of bad input, slow clients and edge kills.

The run stops by itself: the well-behaved sessions stream ``--seconds`` of audio, every wait
after that is bounded. It passes when every well-behaved session finished with 0 late and 0
missing chunks and the receiver still answers. Writes ``loadtest.json`` and ``loadtest.md``
and prints the table; the exit status is 0 when it passed, 1 otherwise.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import secrets
import subprocess
import sys
import threading
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import httpx
import numpy as np

from ndpca.demo import REPO, _env, codec_options, free_port, start_receiver, stop, wait_ready
from shared.errors import UserError

log = logging.getLogger("ndpca.loadtest")


@dataclass
class LoadConfig:
    """What runs against the receiver at once (see :mod:`ndpca.load_clients`)."""

    sessions: int = 8  # well-behaved 4-source real-time sessions
    seconds: float = 60.0  # audio each of them streams (real time)
    long_seconds: float = 300.0  # audio of the long lockstep session (its recording is downloaded)
    long_tail_s: float = 2.0  # its last seconds, streamed during the real-time sessions
    long_finish_at_s: float = 10.0  # ... this long after they started
    downloaders: int = 3  # clients downloading audio over and over
    download_pause_s: float = 0.5
    flood_rate: float = 20.0  # bad inputs a second
    slow_ws: int = 8  # websockets that never send a hello
    slow_readers: int = 2  # downloads read at slow_read_bps
    slow_read_bps: float = 16000.0
    slow_requests: int = 4  # HTTP requests never finished
    kill_every_s: float = 4.0  # a churn-session edge loses its connection this often
    start_timeout_s: float = 3.0
    # how long a real-time step waits for late chunks: 0.2 s, not the receiver's default 0.1 s,
    # which scheduling stalls of a fully loaded 2-core machine exceed (docs/benchmark.md)
    grace_s: float = 0.2


class _Memory:
    """The receiver process's resident memory (``/proc/PID/status``), sampled twice a second."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.samples: list[tuple[float, float]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def rss_mb(self) -> float | None:
        try:
            for line in Path(f"/proc/{self.pid}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) / 1024
        except OSError:
            return None
        return None

    def _run(self) -> None:
        t0 = self.t0
        while not self._stop.wait(0.5):
            v = self.rss_mb()
            if v is not None:
                self.samples.append((time.time() - t0, v))

    def start(self) -> _Memory:
        self.t0 = time.time()
        self._thread.start()
        return self

    def stop(self) -> list[tuple[float, float]]:
        self._stop.set()
        self._thread.join(2)
        return self.samples


def _run_edges(clients: list, results: list) -> None:
    async def main():
        return await asyncio.gather(*(c.run() for c in clients), return_exceptions=True)

    results.extend(asyncio.run(main()))


def run_load(cfg: LoadConfig, checkpoint: Path, room: Path, out: Path, trace: Path | None = None,
             capacity_bps: float | None = None, receiver_args: list[str] | None = None) -> dict[str, Any]:
    """Run the load test against a fresh receiver; returns everything measured (``passed``)."""
    import soundfile as sf
    import torch

    from edge_client.client import EdgeClient, EdgeConfig
    from edge_client.encoder import PrecomputedEncoder
    from shared.codec import Codec

    out.mkdir(parents=True, exist_ok=True)
    (out / "load-clients.ready").unlink(missing_ok=True)
    logs = out / "logs"
    logs.mkdir(exist_ok=True)
    # hex: a token starting with "-" would read as an option on the receiver's command line
    admin, token = secrets.token_hex(16), secrets.token_hex(16)
    auth = {"Authorization": f"Bearer {admin}"}
    port = free_port()
    base, url = f"http://127.0.0.1:{port}", f"ws://127.0.0.1:{port}/ws"
    codec = Codec.load(checkpoint)
    data, _ = sf.read(room, dtype="float32", always_2d=True)
    n = int(cfg.seconds * codec.sample_rate)
    mics = torch.from_numpy(np.ascontiguousarray(np.tile(data.T, (1, -(-n // data.shape[0])))[:, :n]))
    encoders = [PrecomputedEncoder(codec, s, mics[g]) for s, g in enumerate(codec.mic_groups)]
    rt = [f"rt-{i}" for i in range(cfg.sessions)]
    channel = {"capacity_bps": capacity_bps} if capacity_bps is not None else \
        {"trace": str(trace)} if trace is not None else {}
    rx_log = logs / "load-receiver.log"
    rx = start_receiver(port, checkpoint, rx_log, ["--admin-token", admin, "--record-dir", str(out / "record"),
                                                   *(receiver_args or [])])
    clients_proc: subprocess.Popen | None = None
    memory: _Memory | None = None
    result: dict[str, Any] = {"config": asdict(cfg), "sessions": rt}
    try:
        wait_ready(base, rx, rx_log)
        for sid, mode in [*((s, "realtime") for s in rt), ("churn", "realtime"), ("long", "lockstep")]:
            r = httpx.post(f"{base}/sessions", headers=auth, timeout=10, json={
                "id": sid, "token": token, "mode": mode, "start_timeout_s": cfg.start_timeout_s,
                "grace_s": cfg.grace_s, **channel,
                "lockstep_timeout_s": 600.0, "idle_timeout_s": 3600.0 if mode == "lockstep" else 10.0})
            r.raise_for_status()
        memory = _Memory(rx.pid).start()
        result["receiver_rss_mb_before"], result["receiver_rss_t0"] = memory.rss_mb(), memory.t0
        clients_cfg = {**asdict(cfg), "base": base, "url": url, "admin_token": admin, "token": token,
                       "checkpoint": str(checkpoint), "room": str(room), "realtime_sessions": rt,
                       "max_seconds": cfg.seconds * 3 + 120, "result": str(out / "load-clients.json"),
                       "ready": str(out / "load-clients.ready")}
        cfg_path = out / "load-clients-config.json"
        cfg_path.write_text(json.dumps(clients_cfg))
        cfg_path.chmod(0o600)  # it holds the tokens
        clients_proc = subprocess.Popen([sys.executable, "-m", "ndpca.load_clients", str(cfg_path)], cwd=REPO,
                                        env=_env(), stdout=(logs / "load-clients.log").open("w"),
                                        stderr=subprocess.STDOUT)
        # the clients process loads the codec, the coefficients, runs the long session but its end
        deadline = time.time() + 300 + cfg.long_seconds
        while not (out / "load-clients.ready").is_file():
            if clients_proc.poll() is not None or time.time() > deadline:
                raise UserError(f"the load test's clients did not start; see {logs / 'load-clients.log'}")
            time.sleep(0.2)
        edges = [EdgeClient(EdgeConfig(url, sid, s, token, retry_for_s=10), codec, encoders[s])
                 for sid in rt for s in range(codec.n_sources)]
        results: list = []
        thread = threading.Thread(target=_run_edges, args=(edges, results), daemon=True)
        t0 = result["realtime_started_at"] = time.time()
        thread.start()
        thread.join(cfg.seconds * 2 + 60)
        result["realtime_edges_done_at"] = time.time()
        summaries = {}
        for sid in rt:
            deadline = time.time() + 30
            while True:
                s = httpx.get(f"{base}/sessions/{sid}", headers=auth, timeout=10).json()
                if s["state"] == "finished" or time.time() > deadline:
                    break
                time.sleep(0.2)
            summaries[sid] = s
        result["realtime_wall_s"] = time.time() - t0
        result["lost_steps"] = {}  # where a well-behaved session lost chunks: which steps, when
        for sid, s in summaries.items():
            if s["late_chunks"] or s["missing_chunks"]:
                st = httpx.get(f"{base}/sessions/{sid}/stats", headers=auth, timeout=30).json()
                result["lost_steps"][sid] = [
                    {k: e.get(k) for k in ("step", "closed_by", "missing", "late", "decode_ms", "e2e_ms")}
                    | {"at": st["summary"]["epoch"] + e["t"]} for e in st["steps"] if e["missing"] or e["late"]]
        clients_proc.terminate()
        try:
            clients_proc.wait(60)
        except subprocess.TimeoutExpired:
            clients_proc.kill()
        clients_path = out / "load-clients.json"
        result["clients"] = json.loads(clients_path.read_text()) if clients_path.is_file() else None
        churn = httpx.get(f"{base}/sessions/churn", headers=auth, timeout=10).json()
        ready = httpx.get(f"{base}/readyz", timeout=10)
        result["receiver_ready_at_end"] = ready.status_code == 200
        result["receiver_rss_mb_after"] = memory.rss_mb()
    finally:
        if clients_proc is not None and clients_proc.poll() is None:
            clients_proc.kill()
        samples = memory.stop() if memory is not None else []
        stop(rx)
    chunks = sum(s["steps"] for s in summaries.values()) * codec.n_sources
    late = sum(s["late_chunks"] for s in summaries.values())
    missing = sum(s["missing_chunks"] for s in summaries.values())
    errors = [repr(r) for r in results if not isinstance(r, dict)]
    e2e = [s["e2e_ms"]["p95"] for s in summaries.values() if s["e2e_ms"]["p95"] is not None]
    result.update({
        "realtime": {sid: {k: s[k] for k in ("state", "steps", "late_chunks", "missing_chunks", "e2e_ms",
                                              "decode_ms")} for sid, s in summaries.items()},
        "chunks": chunks, "late_chunks": late, "missing_chunks": missing, "edge_errors": errors[:5],
        "e2e_p95_ms_worst": max(e2e) if e2e else None,
        "all_finished": all(s["state"] == "finished" for s in summaries.values()),
        "churn": {k: churn.get(k) for k in ("state", "steps", "late_chunks", "missing_chunks")},
        "receiver_rss_mb_max": max((v for _, v in samples), default=None),
        "receiver_rss_mb": samples,
    })
    result["passed"] = bool(result["all_finished"] and chunks > 0 and late == 0 and missing == 0
                            and not errors and result["receiver_ready_at_end"])
    (out / "loadtest.json").write_text(json.dumps(result, indent=1))
    return result


def markdown(r: dict[str, Any]) -> str:
    c, cl = r["config"], r.get("clients") or {}
    downloads = cl.get("downloads", [])
    long_dl = [d for d in downloads if d["session"] == "long" and d["status"] == 200]
    biggest = max((d["bytes"] for d in long_dl), default=0)
    floods = cl.get("floods", {})
    slow = cl.get("slow", {})
    never = slow.get("ws_never_hello", [])
    closed = [e["closed_by_receiver_after_s"] for e in never if e.get("closed_by_receiver_after_s") is not None]
    readers = slow.get("slow_readers", [])
    long = cl.get("long", {})
    lines = [
        "| | measured |",
        "| --- | --- |",
        f"| well-behaved real-time sessions ({c['sessions']} x 4 edges, {c['seconds']:g} s) | "
        f"{'all finished' if r['all_finished'] else 'NOT all finished'}, "
        f"{r['late_chunks']} late / {r['missing_chunks']} missing of {r['chunks']} chunks |",
        f"| their end-to-end latency p95, worst session | {_ms(r['e2e_p95_ms_worst'])} ms |",
        f"| long lockstep session ({c['long_seconds']:g} s of audio) | "
        + (f"finished at {long['finished_at_s']:.0f} s, {long['summary']['steps']} steps |"
           if "finished_at_s" in long else "not finished during the run |"),
        f"| audio downloads (long session / all) | {len(long_dl)} / {len(downloads)}, largest "
        f"{biggest / 1e6:.1f} MB, {len(cl.get('download_errors', []))} errors |",
        f"| bad inputs ({c['flood_rate']:g}/s) | {cl.get('flood_attempts', 0)}: "
        + "; ".join(f"{k}: {', '.join(f'{o} x{n}' for o, n in v.items())}" for k, v in floods.items()) + " |",
        f"| websockets never sending a hello | {len(never)}, closed by the receiver: {len(closed)}"
        + (f" (after {min(closed):.1f}-{max(closed):.1f} s)" if closed else "") + " |",
        f"| slow downloads ({c['slow_read_bps'] / 1e3:g} kB/s) | "
        + ", ".join(f"{e['bytes'] / 1e3:.0f} kB ({e['ended']})" for e in readers) + " |",
        f"| unfinished HTTP requests | {len(slow.get('unfinished_requests', []))}: "
        + ", ".join(sorted({str(e['ended']) for e in slow.get('unfinished_requests', [])})) + " |",
        f"| edge connections killed (churn session) | {cl.get('kills', 0)}; churn session: "
        f"{r['churn'].get('missing_chunks')} missing, {r['churn'].get('late_chunks')} late |",
        f"| receiver memory (RSS) before / max / after | {_mb(r.get('receiver_rss_mb_before'))} / "
        f"{_mb(r.get('receiver_rss_mb_max'))} / {_mb(r.get('receiver_rss_mb_after'))} MB |",
        f"| receiver ready at the end | {r['receiver_ready_at_end']} |",
        f"| **passed** (0 late, 0 missing in the well-behaved sessions) | **{r['passed']}** |",
    ]
    return "\n".join(lines) + "\n"


def _ms(v: float | None) -> str:
    return "-" if v is None else f"{v:.0f}"


def _mb(v: float | None) -> str:
    return "-" if v is None else f"{v:.0f}"


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("loadtest", help="well-behaved real-time sessions against downloads, bad input, "
                       "slow clients and edge kills on one receiver (bounded, loopback)",
                       description=__doc__.split("\n\n")[1] if __doc__ else None)
    codec_options(p)
    p.add_argument("--seed", type=int, default=0, help="data set seed of the held-out room")
    d = LoadConfig()
    p.add_argument("--sessions", type=int, default=d.sessions, help="well-behaved real-time sessions")
    p.add_argument("--seconds", type=float, default=d.seconds, help="audio each of them streams in real time")
    p.add_argument("--long-seconds", type=float, default=d.long_seconds,
                   help="audio of the long lockstep session whose recording is downloaded")
    p.add_argument("--downloaders", type=int, default=d.downloaders)
    p.add_argument("--flood-rate", type=float, default=d.flood_rate, help="bad inputs a second")
    p.add_argument("--slow-ws", type=int, default=d.slow_ws, help="websockets that never send a hello")
    p.add_argument("--grace", type=float, default=d.grace_s, dest="grace_s",
                   help="seconds a real-time step waits for late chunks (default 0.2; the receiver's own "
                   "default is 0.1)")
    p.add_argument("--kill-every", type=float, default=d.kill_every_s, dest="kill_every_s",
                   help="seconds between edge kills in the churn session")
    p.set_defaults(func=run_loadtest)


def run_loadtest(args: argparse.Namespace) -> int:
    from ndpca.bench import machine
    from ndpca.demo import prepare

    logging.getLogger("httpx").setLevel(logging.WARNING)
    cfg = LoadConfig(sessions=args.sessions, seconds=args.seconds, long_seconds=args.long_seconds,
                     downloaders=args.downloaders, flood_rate=args.flood_rate, slow_ws=args.slow_ws,
                     kill_every_s=args.kill_every_s, grace_s=args.grace_s)
    for name in ("sessions", "downloaders"):
        if getattr(cfg, name) < 1:
            from shared.errors import ConfigError

            raise ConfigError(f"--{name} must be at least 1")
    room_args = argparse.Namespace(**{**vars(args), "seconds": min(args.seconds, 30.0)})
    prep = prepare(room_args)  # the room (at most 30 s, repeated), codec and trace
    print(f"load test: {cfg.sessions} real-time sessions for {cfg.seconds:g} s against downloads, "
          f"bad input, slow clients and edge kills ...", flush=True)
    m = machine()
    result = run_load(cfg, prep.checkpoint, prep.room, args.out, trace=prep.trace)
    try:
        import os

        m["load_average_1min_at_end"] = os.getloadavg()[0]
    except OSError:
        pass
    result["machine"] = m
    result["model"] = {"checkpoint": str(prep.checkpoint), "random": prep.random_model}
    (args.out / "loadtest.json").write_text(json.dumps(result, indent=1))  # with the machine
    table = markdown(result)
    (args.out / "loadtest.md").write_text(table)
    print(table)
    print(f"written {args.out / 'loadtest.json'} and {args.out / 'loadtest.md'}")
    return 0 if result["passed"] else 1
