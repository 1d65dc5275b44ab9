"""Recordings on disk: written as the session runs, served from the file, kept across receiver
restarts (graceful, or a crash between two flushes)."""

import asyncio
import io
import json
import time

import numpy as np
import soundfile as sf
import torch
from conftest import tiny_codec
from streaming_harness import Edges, Receiver, free_port, one_torch_thread, wait_for  # noqa: F401

from server.recording import HEADER_BYTES, RecordingStore
from server.report import snr_db
from server.settings import ReceiverSettings

TOKEN = "storage-token"
ADMIN = "storage-admin"
AUTH = {"Authorization": f"Bearer {ADMIN}"}



def test_recording_grows_on_disk_while_the_session_runs(tmp_path):
    """The WAV in --record-dir is valid and growing mid-session; GET audio serves exactly that
    file; a finished session keeps no audio in memory; the final SNR over the whole output
    (summed as it goes) equals the SNR of the downloaded audio."""
    codec = tiny_codec()
    torch.manual_seed(5)
    n = 50 * codec.chunk_samples
    audio = torch.randn(4, n) * 0.1
    room = tmp_path / "room.wav"
    sf.write(room, audio.T.numpy(), codec.sample_rate, subtype="FLOAT")
    record = tmp_path / "record"
    settings = ReceiverSettings(session="room", token=TOKEN, capacity_bps=2000.0, grace_s=0.4,
                                record_dir=str(record), mics_reference=str(room), admin_token=ADMIN)
    with Receiver(settings, codec) as rx:
        edges = Edges(rx.url, "room", TOKEN, codec, audio, [0, 1, 2, 3]).start()
        wait_for(lambda: rx.stats("room")["summary"]["steps"] >= 30, 30, "no steps")
        # about a second per flush: after 30 steps (1.9 s) the file holds audio already
        mid = wait_for(lambda: (record / "room.wav").is_file() and sf.info(record / "room.wav").frames > 0
                    and sf.info(record / "room.wav"), 5, "nothing on disk while the session runs")
        assert mid.samplerate == codec.sample_rate and mid.channels == 4 and mid.subtype == "FLOAT"
        assert json.loads((record / "room.json").read_text())["state"] == "running"
        results = edges.join(60)
        rx.wait_state("room", "finished", 20)
        r = rx.get("/sessions/room/audio", headers=AUTH)
        summary = rx.get("/sessions/room", headers=AUTH).json()
        session = rx.app.state.manager.get("room")
        assert not session.tail and session.tail_samples == 0  # finished: nothing kept in memory
    assert all(isinstance(x, dict) for x in results), results
    assert r.status_code == 200 and r.headers["content-type"] == "audio/wav"
    assert int(r.headers["content-length"]) == len(r.content) == HEADER_BYTES + n * 4 * 4
    assert r.content == (record / "room.wav").read_bytes()
    decoded, sr = sf.read(record / "room.wav", dtype="float32", always_2d=True)
    assert sr == codec.sample_rate and decoded.shape == (n, 4) and mid.frames < n
    meta = json.loads((record / "room.json").read_text())
    assert meta["state"] == "finished" and meta["samples"] == n and meta["offset_samples"] == 0
    assert summary["recorded_samples"] == summary["output_samples"] == n
    expected = snr_db(decoded.T, audio.numpy(), 0)
    assert abs(summary["quality"]["mics_snr_db_overall"] - expected) < 1e-6


def test_receiver_restart_appends_to_the_recording_and_counts_the_outage_missing(tmp_path):
    """Stop the receiver mid-stream (gracefully) and start it again on the same --record-dir:
    the recording keeps everything from step 0, the steps of the outage are silence in it and
    count as missing chunks (4 per step), and the summary adds up both runs."""
    codec = tiny_codec()
    torch.manual_seed(3)
    n = 60 * codec.chunk_samples
    audio = torch.randn(4, n) * 0.1
    record = tmp_path / "record"
    port = free_port()
    settings = ReceiverSettings(session="room", token=TOKEN, capacity_bps=1500.0, grace_s=0.4,
                                record_dir=str(record), admin_token=ADMIN)
    rx = Receiver(settings, codec, port=port)
    rx.start()
    edges = Edges(rx.url, "room", TOKEN, codec, audio, [0, 1, 2, 3], retry_for_s=20).start()
    wait_for(lambda: rx.stats("room")["summary"]["steps"] >= 25, 20, "no steps")
    rx.stop()
    before_meta = json.loads((record / "room.json").read_text())
    before, _ = sf.read(record / "room.wav", dtype="float32", always_2d=True)
    time.sleep(0.5)  # the outage
    rx2 = Receiver(settings, codec, port=port)
    rx2.start()
    try:
        results = edges.join(60)
        rx2.wait_state("room", "finished", 20)
        stats = rx2.get("/sessions/room/stats", headers=AUTH).json()
        r = rx2.get("/sessions/room/audio", headers=AUTH)
    finally:
        rx2.stop()
    assert all(isinstance(x, dict) for x in results), results
    assert before_meta["state"] == "stopped" and before_meta["samples"] == before.shape[0] > 0
    summary, steps = stats["summary"], stats["steps"]
    (restart,) = summary["restarts"]
    stopped, resumed = restart["stopped_at_step"], restart["resumed_at_step"]
    assert stopped == before_meta["next_step"] and resumed == summary["first_step"] == steps[0]["step"]
    outage = resumed - stopped
    assert outage >= 0.5 / codec.chunk_seconds - 1 and summary["outage_steps"] == outage
    assert restart["missing_chunks"] == 4 * outage
    assert summary["missing_chunks"] == (before_meta["missing"] + 4 * outage
                                         + sum(len(s["missing"]) for s in steps))
    assert summary["steps"] == before_meta["steps"] + len(steps)
    decoded, _ = sf.read(io.BytesIO(r.content), dtype="float32", always_2d=True)
    assert decoded.shape == (n, 4)  # from step 0, not from the restart
    np.testing.assert_array_equal(decoded[: before.shape[0]], before)
    c = codec.chunk_samples
    assert before.shape[0] <= stopped * c
    assert not decoded[stopped * c: resumed * c].any()  # the outage is silence
    assert np.abs(decoded[resumed * c + c:]).mean() > 0.3 * np.abs(before).mean() > 0  # decoding goes on


def test_recording_after_a_crash_resumes_at_its_last_flush(tmp_path):
    """A receiver killed between writing audio and its side file leaves more data than the side
    file claims: the next run truncates to the side file and appends; the file stays a valid WAV."""
    rng = np.random.default_rng(0)
    blocks = [rng.standard_normal((2, 400)).astype(np.float32) for _ in range(5)]

    async def first_run():
        store = RecordingStore(tmp_path, flush_seconds=0.05)  # 800 samples at 16 kHz
        rec = store.open("s", 16000, 2, "ab" * 32)
        assert rec.previous is None
        rec.meta = lambda: {"epoch": 123.0, "next_step": 7, "state": "running"}
        rec.start(offset=4096)
        for b in blocks:
            rec.append(b)  # flushed after blocks 2 and 4: 1600 samples; block 5 is pending
        await store.sync()
        return rec.written

    written = asyncio.run(first_run())  # no close: the process died
    assert written == 1600
    with open(tmp_path / "s.wav", "ab") as f:  # what the crash left past the last side file
        f.write(np.ones((100, 2), dtype="<f4").tobytes())

    more = rng.standard_normal((2, 300)).astype(np.float32)

    async def second_run():
        store = RecordingStore(tmp_path)
        rec = store.open("s", 16000, 2, "ab" * 32)
        prev = rec.previous
        assert prev is not None and prev["samples"] == 1600 and prev["next_step"] == 7
        rec.start(0, resume=True)
        assert rec.offset == 4096 and rec.samples == 1600
        rec.pad(50)
        rec.append(more)
        done = rec.close("finished")
        await asyncio.wrap_future(done)
        await store.close()
        # a different codec or output layout does not resume it
        assert RecordingStore(tmp_path).open("s", 16000, 4, "ab" * 32).previous is None

    asyncio.run(second_run())
    data, sr = sf.read(tmp_path / "s.wav", dtype="float32", always_2d=True)
    expected = np.concatenate([*blocks[:4], np.zeros((2, 50), np.float32), more], axis=-1).T
    assert sr == 16000 and data.shape == expected.shape
    np.testing.assert_array_equal(data, expected)
    meta = json.loads((tmp_path / "s.json").read_text())
    assert meta["samples"] == 1950 and meta["offset_samples"] == 4096 and meta["state"] == "finished"


def test_downloads_share_one_paced_byte_rate():
    """The store's pacer spaces pieces of every download by bytes / rate: two downloads of
    1.5 MB each at 3 MB/s together take about a second; rate 0 does not wait."""
    import asyncio
    import time

    from server.recording import DownloadPacer

    async def download(pacer, pieces):
        for _ in range(pieces):
            await pacer.take(500_000)

    async def both(rate):
        pacer = DownloadPacer(rate)
        t0 = time.monotonic()
        await asyncio.gather(download(pacer, 3), download(pacer, 3))
        return time.monotonic() - t0

    took = asyncio.run(both(3e6))
    assert 0.75 <= took < 3.0, took  # 6 pieces: the last starts 5/6 s after the first
    assert asyncio.run(both(0)) < 0.2
