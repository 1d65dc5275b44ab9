"""``ndpca demo`` and ``ndpca bench``: the streaming system on loopback, in one command.

``demo`` prepares a codec (the trained checkpoint, or an untrained one with a warning), builds
one held-out simulated room, starts the receiver (``ndpca serve``) and one ``ndpca edge``
process per source, shows live progress and writes ``decoded.wav``, ``stats.json`` and a plot
in the style of the paper's Fig. 3a. ``bench`` is in :mod:`ndpca.bench`.
"""

from __future__ import annotations

import argparse
import atexit
import json
import logging
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import textwrap
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import soundfile as sf

from shared.argtypes import port_number, positive_float
from shared.errors import UserError

log = logging.getLogger("ndpca.demo")
REPO = Path(__file__).resolve().parents[1]
SESSION = "demo"


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("demo", help="receiver + one edge per source on loopback, live",
                       description="Stream a held-out simulated room through a channel trace: "
                       "receiver and edges as separate processes on 127.0.0.1.")
    _common(p)
    p.add_argument("--fast", action="store_true", help="lockstep simulation instead of real time")
    p.add_argument("--prepare-only", action="store_true",
                   help="only write model, room audio and token to --out (docker compose uses it)")
    p.add_argument("--hold", action="store_true",
                   help="keep the receiver and its live view up after the run, until Ctrl-C")
    p.add_argument("--screenshot", type=Path,
                   help="save a PNG of the live view (headless Chromium) at three quarters of the run")
    p.add_argument("--rooms", type=int, default=1,
                   help="rooms sharing one cell of the trace (default 1; N > 1: ndpca.demo_cell)")
    p.add_argument("--cell-rule", choices=["equal", "pooled"], default="pooled",
                   help="with --rooms N > 1: how each step's capacity is split among the rooms")
    p.set_defaults(func=run_demo)

    b = sub.add_parser("bench", help="real-time factors, latency, bits vs budget, sessions held")
    _common(b)
    b.add_argument("--max-sessions", type=int, default=24, help="largest session count to try")
    b.add_argument("--session-seconds", type=float, default=6.0,
                   help="how long each concurrency level streams")
    b.add_argument("--live-streams", type=int, default=0,
                   help="open the live view's stream on this many sessions of each level (as pages would)")
    b.set_defaults(func=_run_bench)


def codec_options(p: argparse.ArgumentParser) -> None:
    """Output folder, codec checkpoint and channel trace: the options every room runner takes."""
    p.add_argument("--out", type=Path, required=True, help="output folder")
    p.add_argument("--checkpoint", help="codec checkpoint (default: newest checkpoints/<arch>-*.ckpt)")
    p.add_argument("--arch", default="ndpca-e4d1")
    p.add_argument("--checkpoint-dir", default="checkpoints")
    p.add_argument("--trace", help="channel trace (default: channel_traces/traces/default.csv)")


def _common(p: argparse.ArgumentParser) -> None:
    codec_options(p)
    p.add_argument("--seconds", type=positive_float, default=20.0, help="length of the simulated room")
    p.add_argument("--seed", type=int, default=0,
                   help="data set seed (default 0, the training data's: the room is the first of "
                   "its held-out test split, unseen rooms and speakers)")
    p.add_argument("--port", type=port_number, default=0, help="receiver port (0: a free one)")
    p.add_argument("--enhancer", choices=["auto", "identity", "sgmse", "classical"], default="auto",
                   help="receiver enhancement stage (default auto: sgmse, the receiver's real-time "
                        "enhancer, when an enhancer checkpoint is in --checkpoint-dir, else identity; identity: "
                        "the decoded microphones; classical: streaming MVDR beamformer and Wiener post-filter)")
    p.add_argument("--enhance-sampler", default=None,
                   help="sgmse sampler preset (default: the enhancer checkpoint's own, its real-time mode)")
    p.add_argument("--enhance-context", type=int, default=None,
                   help="sgmse: past STFT frames the enhancer sees with each step (default: the checkpoint's)")


def _run_bench(args: argparse.Namespace) -> int:
    from ndpca.bench import run_bench

    return run_bench(args)


# --------------------------------------------------------------------------- preparation


@dataclass
class Prepared:
    checkpoint: Path
    random_model: bool
    room: Path
    clean: Path
    token_file: Path
    trace: Path
    n_sources: int
    sample_rate: int

    @property
    def headers(self) -> dict[str, str]:
        """The session token as ``Authorization: Bearer`` (the receiver's session routes need it)."""
        return {"Authorization": f"Bearer {self.token_file.read_text().strip()}"}


def prepare(args: argparse.Namespace, room_dir: Path | None = None) -> Prepared:
    """Model, token and trace in ``args.out``, the room's audio in ``room_dir`` (default
    ``args.out``; reused when already there)."""
    from channel_traces import default_trace_path, load_trace
    from shared.codec import Codec
    from shared.streaming import find_checkpoint

    out: Path = args.out
    out.mkdir(parents=True, exist_ok=True)
    ckpt = Path(args.checkpoint) if args.checkpoint else find_checkpoint(args.arch, args.checkpoint_dir)
    random_model = ckpt is None
    if ckpt is not None:
        Codec.load(ckpt)  # a missing or corrupt checkpoint is named as the user gave it, before any copy
    if args.trace:
        load_trace(args.trace)  # an unreadable trace: its reader's one line, before the room is built
    room_dir = room_dir or out
    mics, clean = build_room(args.seconds, args.seed, room_dir / "data")
    if ckpt is None:
        log.warning("no trained checkpoint found; using an untrained model (train one with "
                    "`ndpca train --config %s`; it is the linear coder fitted to this room only)", args.arch)
        ckpt = random_codec(args.arch, mics, out / "model-random.ckpt")
    model = out / "model.ckpt"  # a stable name for every process (and docker compose)
    if Path(ckpt).resolve() != model.resolve():
        shutil.copyfile(ckpt, model)
    log.info("codec %s -> %s", ckpt, model)
    codec = Codec.load(model)
    room, clean_path = save_room(mics, clean, room_dir, codec)
    token_file = out / "token"
    if not token_file.is_file():
        token_file.write_text(secrets.token_urlsafe(24) + "\n")
        token_file.chmod(0o600)
    trace = Path(args.trace) if args.trace else default_trace_path()
    return Prepared(model, random_model, room, clean_path, token_file, trace,
                    codec.n_sources, codec.sample_rate)


def save_room(mics: np.ndarray, clean: np.ndarray, room_dir: Path, codec) -> tuple[Path, Path]:
    """Write ``room.wav`` (the microphones) and ``clean.wav`` in ``room_dir``."""
    if codec.cfg.num_mics != mics.shape[0]:
        raise UserError(f"the codec expects {codec.cfg.num_mics} microphones; the room has {mics.shape[0]}")
    room_dir.mkdir(parents=True, exist_ok=True)
    room, clean_path = room_dir / "room.wav", room_dir / "clean.wav"
    sf.write(room, mics.T, codec.sample_rate, subtype="FLOAT")
    sf.write(clean_path, clean, codec.sample_rate, subtype="FLOAT")
    return room, clean_path


def build_room(seconds: float, seed: int, data_dir: Path) -> tuple[np.ndarray, np.ndarray]:
    """One held-out simulated room: ``mics [S, N]`` and ``clean [N]``.

    With the training data's seed the room is test example 0 of that data set: its room and
    its speakers are disjoint from the training split (``training.data.build``)."""
    from training.data.build import DataConfig, build_dataset
    from training.data.dataset import RoomDataset

    cfg = DataConfig(seed=seed, duration_s=seconds, n_train=0, n_val=0, n_test=1)
    t0 = time.time()
    manifest = build_dataset(cfg, data_dir, progress=False)
    item = RoomDataset(manifest, "test")[0]
    log.info("held-out room %s ready in %.1f s", item["id"], time.time() - t0)
    return item["mics"].numpy(), item["clean"].numpy()


def random_codec(arch: str, mics: np.ndarray, path: Path):
    """An untrained codec of ``arch``: its linear transforms and bases fitted on ``mics`` (the
    linear transform coder of this room; the residual networks start at zero); saved to
    ``path``."""
    import torch

    from shared.codec import Codec
    from shared.models.architectures import DistributedAutoencoder, ModelConfig
    from training.train import SpectralBank, fit_bases

    try:
        from training.config import load_config

        model_cfg = load_config(Path(__file__).resolve().parents[1] / "training" / "configs" / f"{arch}.toml").model
    except Exception:  # the configs are optional here: fall back to the defaults
        model_cfg = ModelConfig(arch=arch)
    torch.manual_seed(0)
    model = DistributedAutoencoder(model_cfg).eval()
    bank = SpectralBank.from_examples([torch.from_numpy(mics)], model_cfg)
    model.init_linear(bank.all_chunks(stride=4))
    codec = Codec(model, fit_bases(model, bank.all_chunks(stride=4)))
    codec.save(path, extra_header={"note": "untrained model for the demo: PCA of the demo room only"})
    return path


# --------------------------------------------------------------------------- processes


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _env() -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(REPO), env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    for name in ("NDPCA_TOKEN", "NDPCA_TOKEN_FILE"):  # the demo's processes use its own token file
        env.pop(name, None)
    env.setdefault("OMP_NUM_THREADS", "1")
    return env


def start_receiver(port: int, checkpoint: Path, log_path: Path, extra: list[str],
                   env: dict[str, str] | None = None) -> subprocess.Popen:
    """``ndpca serve`` on loopback; without ``--enhancer`` in ``extra`` it runs the identity stage
    (the benchmarks and load tests measure the codec and the transport, not the enhancer)."""
    enhancer = [] if "--enhancer" in extra else ["--enhancer", "identity"]
    cmd = [sys.executable, "-m", "server", "serve", "--host", "127.0.0.1", "--port", str(port),
           "--checkpoint", str(checkpoint), "--device", "auto", *enhancer, *extra]
    environ = _env()
    environ.pop("OMP_NUM_THREADS", None)
    environ.update(env or {})
    return subprocess.Popen(cmd, cwd=REPO, env=environ, stdout=log_path.open("w"), stderr=subprocess.STDOUT)


def wait_ready(base: str, proc: subprocess.Popen, log_path: Path, timeout: float = 120) -> None:
    deadline = time.time() + timeout
    while time.time() < deadline:
        if proc.poll() is not None:
            raise UserError(f"the receiver exited ({proc.returncode}); see {log_path}:\n"
                            + log_path.read_text()[-1500:])
        try:
            if httpx.get(base + "/readyz", timeout=1).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    raise UserError(f"the receiver did not become ready in {timeout:.0f} s; see {log_path}")


def start_edge(url: str, source: int, prep: Prepared, log_path: Path, fast: bool,
               stats_out: Path, session: str = SESSION) -> subprocess.Popen:
    cmd = [sys.executable, "-m", "edge_client", "edge", "--url", url, "--session", session,
           "--source", str(source), "--input", str(prep.room), "--checkpoint", str(prep.checkpoint),
           "--token-file", str(prep.token_file), "--stats-out", str(stats_out)]
    if fast:
        cmd.append("--fast")
    return subprocess.Popen(cmd, cwd=REPO, env=_env(), stdout=log_path.open("w"), stderr=subprocess.STDOUT)


def stop(proc: subprocess.Popen, timeout: float = 10) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


# --------------------------------------------------------------------------- the demo


def progress_line(st: dict[str, Any], period: float) -> str:
    ks = " ".join(f"{st['allocation'][s]:3d}" for s in sorted(st["allocation"], key=int))
    kbps = st["bits_total"] / period / 1e3
    e2e = f"{st['e2e_ms']:6.0f} ms" if st.get("e2e_ms") is not None else "     - ms"
    miss = f" missing {st['missing']}" if st["missing"] else ""
    return (f"step {st['step']:4d}  t {st['t']:6.2f} s  C {st['capacity_bps']:7.0f} bit/s  "
            f"L {st['budget_coefficients']:3d}  k [{ks}]  {kbps:5.2f} kbit/s  e2e {e2e}{miss}")


def endpoints(args: argparse.Namespace, out: Path) -> tuple[int, str, str, Path]:
    """The receiver's port (``--port`` or a free one), its HTTP and websocket addresses on
    loopback, and the demo's log folder (created)."""
    port = args.port or free_port()
    logs = out / "logs"
    logs.mkdir(exist_ok=True)
    return port, f"http://127.0.0.1:{port}", f"ws://127.0.0.1:{port}/ws", logs


ENHANCER_NAMES = {"sgmse": "the learned enhancer in its real-time mode", "classical": "MVDR beamformer and Wiener post-filter"}


def enhancer_args(args: argparse.Namespace) -> list[str]:
    """Receiver options for the enhancement stage the demo asked for."""
    from shared.streaming import find_checkpoint

    choice = getattr(args, "enhancer", "identity")
    if choice == "identity":
        return ["--enhancer", "identity"]
    if choice == "classical":
        return ["--enhancer", "classical"]
    found = find_checkpoint("enhancer", args.checkpoint_dir)
    if found is None:
        if choice == "sgmse":
            raise UserError(f"no enhancer checkpoint in {args.checkpoint_dir}/; train one with "
                            "`ndpca train-enhancer --ship checkpoints` or use --enhancer identity")
        return ["--enhancer", "identity"]
    sampler = getattr(args, "enhance_sampler", None)
    return ["--enhancer", "sgmse", "--enhancer-checkpoint", str(found),
            *(["--enhance-sampler", sampler] if sampler else []),
            *(["--enhance-context", str(args.enhance_context)]
              if getattr(args, "enhance_context", None) is not None else [])]


def run_demo(args: argparse.Namespace) -> int:
    if getattr(args, "rooms", 1) != 1:
        from ndpca.demo_cell import run_demo_cell

        return run_demo_cell(args)
    t_start = time.time()
    logging.getLogger("httpx").setLevel(logging.WARNING)
    out: Path = args.out
    prep = prepare(args)
    print(f"model      {prep.checkpoint}{'  (UNTRAINED: no trained checkpoint found)' if prep.random_model else ''}")
    print(f"room       {prep.room}  ({args.seconds:g} s, {prep.n_sources} sources)")
    print(f"trace      {prep.trace}")
    if args.prepare_only:
        return 0
    port, base, url, logs = endpoints(args, out)
    rx_log = logs / "receiver.log"
    # an untrained codec's output is no input for the trained enhancer: auto means identity then
    enh = ["--enhancer", "identity"] if prep.random_model and args.enhancer == "auto" else enhancer_args(args)
    rx = start_receiver(port, prep.checkpoint, rx_log, [
        "--session", SESSION, "--token-file", str(prep.token_file), "--trace", str(prep.trace),
        "--reference", str(prep.clean), "--mics-reference", str(prep.room), "--mode", "lockstep" if args.fast else "realtime",
        "--record-dir", str(out / "record"), *enh,
    ])
    edges: list[subprocess.Popen] = []
    ok = False
    try:
        wait_ready(base, rx, rx_log)
        print(f"receiver   {base}  (docs {base}/docs, stats {base}/sessions/{SESSION}/stats)")
        live = _live_view(base, prep, args)
        for s in range(prep.n_sources):
            edges.append(start_edge(url, s, prep, logs / f"edge-{s}.log", args.fast,
                                    out / "edges" / f"edge-{s}.json"))
        stats = _follow(base, edges, prep, args)
        audio = httpx.get(f"{base}/sessions/{SESSION}/audio", headers=prep.headers, timeout=30)
        audio.raise_for_status()
        (out / "decoded.wav").write_bytes(audio.content)
        ok = True
    finally:
        for p in edges:
            stop(p)
        if not (ok and getattr(args, "hold", False)):
            stop(rx)
        else:
            atexit.register(stop, rx)  # --hold: stopped after the hold, or whatever happens
    edge_stats = {}
    for s in range(prep.n_sources):
        f = out / "edges" / f"edge-{s}.json"
        if f.is_file():
            data = json.loads(f.read_text())
            data.pop("sent", None)
            edge_stats[str(s)] = data
    stats["edges"] = edge_stats
    stats["demo"] = {"random_model": prep.random_model, "checkpoint": str(prep.checkpoint),
                     "enhancer": enh[1], "enhancer_options": enh[2:],
                     "room": str(prep.room), "seconds": args.seconds, "mode": "lockstep" if args.fast else "realtime",
                     "wall_seconds": time.time() - t_start}
    (out / "stats.json").write_text(json.dumps(stats, indent=1))
    plot = plot_allocation(stats, out / "allocation.png")
    s = stats["summary"]
    print(f"\n{s['steps']} steps, {s['late_chunks']} late and {s['missing_chunks']} missing chunks, "
          f"{s['steps_within_budget']}/{s['steps']} steps within budget, e2e latency "
          f"p50 {_ms(s['e2e_ms']['p50'])} p95 {_ms(s['e2e_ms']['p95'])}")
    q = s.get("quality", {})
    if q:
        print("quality    SNR of decoded mic 0 vs clean speech "
              f"{_db(q.get('snr_db_overall'))}, of all mics vs the captured mics "
              f"{_db(q.get('mics_snr_db_overall'))}"
              + ("  (untrained model)" if prep.random_model else ""))
    report = quality_report(prep, out / "decoded.wav", stats, enh[1] != "identity", out / "edges")
    stats["demo"]["quality"] = report
    (out / "stats.json").write_text(json.dumps(stats, indent=1))
    print_quality(report)
    print(f"decoded    {out / 'decoded.wav'}"
          + (f"  (enhanced speech of microphone 0, {ENHANCER_NAMES[enh[1]]})" if enh[1] != "identity" else "  (the decoded microphones)"))
    print(f"stats      {out / 'stats.json'}")
    print(f"plot       {plot}")
    print(f"done in {time.time() - t_start:.0f} s")
    _after_live_view(args, rx, live)
    return 0


def _live_view(base: str, prep: Prepared, args: argparse.Namespace) -> tuple[str, Any]:
    """Print the live view's address (the page, server/live.py); start ``--screenshot``."""
    from ndpca.liveview import page_url, start_screenshot

    token = prep.token_file.read_text().strip()
    url = page_url(base, token, SESSION)
    print(f"live view  {url}", flush=True)
    shot = getattr(args, "screenshot", None)
    return url, start_screenshot(base, token, SESSION, shot, args.seconds) if shot else None


def _after_live_view(args: argparse.Namespace, rx: subprocess.Popen, live: tuple[str, Any]) -> None:
    """Report the screenshot; ``--hold`` keeps the receiver up until Ctrl-C."""
    from ndpca.liveview import hold

    url, shot = live
    if shot is not None:
        print(shot.report())
    if getattr(args, "hold", False):
        hold(rx, url, stop)


def quality_report(prep: Prepared, decoded_wav: Path, stats: dict[str, Any], enhanced: bool,
                   edges_dir: Path | None = None) -> dict[str, Any]:
    """What the demo wrote, in numbers: the room rate it used (bits received per second of
    audio) and PESQ-WB / STOI of decoded (or enhanced) microphone 0 against the clean reference
    and against the captured microphone 0, beside the captured microphone's own scores.

    With an enhancer (``enhanced``) and the edges' records of what they sent (``edges_dir``),
    also the decoder's own output, microphone 0 without enhancement: the same chunks decoded
    again (:func:`replay_decoded`), so that the enhancer's gain is read from one run."""
    from training.metrics import pesq_wb, stoi

    sr = prep.sample_rate
    clean = sf.read(prep.clean, dtype="float32")[0]
    mics = sf.read(prep.room, dtype="float32")[0]
    mic0 = mics[:, 0]
    out = sf.read(decoded_wav, dtype="float32")[0]
    out0 = out if out.ndim == 1 else out[:, 0]
    n = min(len(clean), len(mic0), len(out0))
    clean, mic0, out0 = clean[:n], mic0[:n], out0[:n]
    steps = stats["steps"]
    period = stats["rate"]["chunk_seconds"]
    bits = sum(sum(st.get("bits_received", {}).values()) for st in steps)
    budget = sum(st.get("budget_bits", 0) for st in steps)
    report = {
        "output": "enhanced microphone 0" if enhanced else "decoded microphone 0",
        "room_kbps": bits / max(1e-9, len(steps) * period) / 1000,
        "budget_kbps": budget / max(1e-9, len(steps) * period) / 1000,
        "output_vs_clean": {"pesq": pesq_wb(clean, out0, sr), "stoi": stoi(clean, out0, sr)},
        "output_vs_mic": {"pesq": pesq_wb(mic0, out0, sr), "stoi": stoi(mic0, out0, sr)},
        "mic_vs_clean": {"pesq": pesq_wb(clean, mic0, sr), "stoi": stoi(clean, mic0, sr)},
    }
    if enhanced and edges_dir is not None and not prep.random_model:
        sent = [edges_dir / f"edge-{s}.json" for s in range(prep.n_sources)]
        if all(f.is_file() for f in sent):
            records = [json.loads(f.read_text()).get("sent", []) for f in sent]
            dec0 = replay_decoded(prep.checkpoint, mics.T, records,
                                  stats["rate"].get("step_profile", "uniform"))[0][:n]
            report["decoded_vs_clean"] = {"pesq": pesq_wb(clean, dec0, sr), "stoi": stoi(clean, dec0, sr)}
    return report


def replay_decoded(checkpoint: Path, mics: np.ndarray, sent: list[list[dict[str, Any]]],
                   step_profile: str) -> np.ndarray:
    """The decoder's output for what the edges sent, decoded again offline: ``mics`` ``[M, N]``
    as the edges captured them, ``sent[s]`` edge ``s``'s records (``seq``, ``k``,
    ``k_allocated``). Each step's coefficients are quantised with the coder of its
    ``k_allocated`` and its first ``k`` kept, as on the wire, and decoded; a step an edge did not
    send is decoded from nothing (its latent's mean). Returns ``[M, N]``: the receiver's
    decoded microphones (the same numbers as its identity stage, to float rounding)."""
    import torch

    from shared.codec import Codec

    codec = Codec.load(checkpoint, step_profile=step_profile)
    x = torch.from_numpy(np.ascontiguousarray(mics, dtype=np.float32))
    with torch.no_grad():
        full, n_frames = codec.signal_coefficients(x)
        n_steps = full[0].shape[0]
        kept = torch.zeros(n_steps, len(full), dtype=torch.long)
        rows = [torch.zeros(n_steps, f.shape[1], f.shape[2]) for f in full]
        for s, records in enumerate(sent):
            for rec in records:
                i, k = int(rec["seq"]), int(rec["k"])
                if not 0 <= i < n_steps or k <= 0:
                    continue
                coder = codec.coder_for(s, int(rec["k_allocated"]))
                q = coder.dequantise(coder.quantise(full[s][i, :, :k].cpu().numpy()))
                rows[s][i, :, :k] = torch.from_numpy(np.asarray(q, dtype=np.float32))
                kept[i, s] = k
        spec = torch.cat([codec.decode_coefficients([r[i : i + 64] for r in rows], kept[i : i + 64])
                          for i in range(0, n_steps, 64)])
        return codec.to_audio(codec.unchunk(spec, n_frames), x.shape[-1]).cpu().numpy()


def print_quality(q: dict[str, Any]) -> None:
    """The room rate, then the output's and the captured microphone's scores (and, with an
    enhancer, the decoder's own output)."""
    def fmt(d: dict[str, float]) -> str:
        return f"PESQ-WB {d['pesq']:.2f}  STOI {d['stoi']:.3f}"

    print(f"room rate  {q['room_kbps']:.1f} kbit/s received (channel allowed {q['budget_kbps']:.1f} kbit/s)")
    print(f"quality    {q['output']} vs clean reference: {fmt(q['output_vs_clean'])}; "
          f"vs captured microphone 0: {fmt(q['output_vs_mic'])}")
    if "decoded_vs_clean" in q:
        print(f"           decoded microphone 0 (the same chunks, not enhanced) vs clean reference: "
              f"{fmt(q['decoded_vs_clean'])}")
    print(f"           captured (noisy) microphone 0 vs clean reference: {fmt(q['mic_vs_clean'])}")


def _db(v: float | None) -> str:
    return "-" if v is None else f"{v:.1f} dB"


def _ms(v: float | None) -> str:
    return "-" if v is None else f"{v:.0f} ms"


def _follow(base: str, edges: list[subprocess.Popen], prep: Prepared, args: argparse.Namespace) -> dict[str, Any]:
    """Print each step as it is decoded until the session finishes; return the final stats."""
    seen, period, t0 = 0, None, time.time()
    limit = 60 + (args.seconds * (1 if args.fast else 1.5))
    while True:
        r = httpx.get(f"{base}/sessions/{SESSION}/stats", params={"since": seen}, headers=prep.headers,
                      timeout=10)
        r.raise_for_status()
        stats = r.json()
        period = stats["rate"]["chunk_seconds"]
        finished = stats["summary"]["state"] == "finished"
        for st in stats["steps"]:
            if st["decode_ms"] is None and not finished:
                break  # print steps once decoded, in order
            print(progress_line(st, period), flush=True)
            seen += 1
        if finished:
            break
        failed = [i for i, p in enumerate(edges) if p.poll() not in (None, 0)]
        if failed:
            raise UserError(f"edge process(es) {failed} failed; see {args.out / 'logs'}")
        if time.time() - t0 > limit:
            raise UserError(f"the session did not finish within {limit:.0f} s; see {args.out / 'logs'}")
        time.sleep(0.25)
    return httpx.get(f"{base}/sessions/{SESSION}/stats", headers=prep.headers, timeout=10).json()


def plot_allocation(stats: dict[str, Any], path: Path) -> Path:
    """Fig. 3a style: capacity and total allocated dimensions over time; per-source stacks."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    steps = stats["steps"]
    t = np.array([s["t"] for s in steps])
    cap = np.array([s["capacity_bps"] for s in steps])
    sources = sorted(steps[0]["allocation"], key=int) if steps else []
    alloc = np.array([[s["allocation"][k] for k in sources] for s in steps]).T
    got = np.array([[s["k_received"][k] for k in sources] for s in steps]).T
    fig, (ax1, ax2) = plt.subplots(2, 1, figsize=(9, 6), sharex=True)
    ax1.step(t, cap / 1e3, where="post", color="tab:blue", label="capacity C_t")
    ax1.set_ylabel("capacity (kbit/s)", color="tab:blue")
    ax1b = ax1.twinx()
    ax1b.step(t, [s["budget_coefficients"] for s in steps], where="post", color="tab:red",
              label="budget L_t")
    ax1b.step(t, got.sum(0) if len(got) else [], where="post", color="black", lw=0.8, ls="--",
              label="components received")
    ax1b.set_ylabel("total dimensions", color="tab:red")
    lines = ax1.get_lines() + ax1b.get_lines()
    ax1.legend(lines, [ln.get_label() for ln in lines], loc="upper right", fontsize=8)
    model = stats.get("model", {})
    notes = textwrap.shorten(stats.get("trace", {}).get("notes", ""), 110, placeholder=" ...")
    ax1.set_title(f"{model.get('arch', '')}: capacity and allocated dimensions\n{notes}", fontsize=9)
    if len(alloc):
        ax2.stackplot(t, alloc, labels=[f"source {k}" for k in sources], step="post", alpha=0.85)
    ax2.set_ylabel("components per source")
    ax2.set_xlabel("time (s)")
    ax2.legend(loc="upper right", fontsize=8, ncol=len(sources) or 1)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path
