"""A client written from docs/protocol.md alone streams beside three project edges.

Its payload coder (``tests/docs_coder.py``) and its messages (plain msgpack maps) follow the
document, not the project's code: it imports neither ``shared.coding`` nor
``shared.protocol``. The project's codec only supplies the neural encoder's coefficients,
which are not part of the wire format. The receiver must accept every chunk and decode the
same audio as the offline decoding of the same allocations.
"""

import asyncio
import threading
import time

import msgpack
import numpy as np
import pytest
import soundfile as sf
import torch
import websockets
from conftest import tiny_codec
from docs_coder import DocsCoder, DocsWaterCoder, table_from_docs
from streaming_harness import (  # noqa: F401
    Edges,
    Receiver,
    offline_decode,
    one_torch_thread,
    write_capacity_trace,
)

from server.settings import ReceiverSettings

TOKEN = "third-party-token"
SOURCE = 3


def pack(msg: dict) -> bytes:
    return msgpack.packb(dict(msg, v=2), use_bin_type=True)


async def docs_client(url: str, model_hash: str, sample_rate: int, coeffs: np.ndarray,
                      n_samples: int, sigma: list[float]) -> dict[int, dict]:
    """Stream ``coeffs`` ``[n_steps, n_v, d]`` as source 3; returns what it sent per step.
    ``sigma``: the source's coefficient deviations (checkpoint ``ndpca.3.std``)."""
    table = table_from_docs()
    table_l = table_from_docs("L")  # the water profile's
    sent: dict[int, dict] = {}
    async with websockets.connect(url, max_size=1 << 20) as ws:
        await ws.send(pack({"type": "hello", "session": "room", "source": SOURCE, "token": TOKEN,
                            "sample_rate": sample_rate, "model_hash": model_hash,
                            "client": "docs-client"}))
        welcome = msgpack.unpackb(await ws.recv())
        assert welcome["type"] == "welcome", welcome
        step = welcome["quant_step"]
        profile = welcome.get("step_profile", "uniform")
        coder = DocsCoder(step, table)
        async for frame in ws:
            msg = msgpack.unpackb(frame)
            assert msg["type"] in ("allocation", "bye"), msg
            if msg["type"] == "bye":
                break
            t = msg["step"]
            if t >= len(coeffs):
                continue
            rows = coeffs[t][:, : msg["k"]].tolist()
            if profile == "water" and msg["k"]:
                k, payload, crc = DocsWaterCoder(sigma, step, msg["k"], table_l).encode_within(
                    rows, msg["budget_bits"])
            else:
                k, payload, crc = coder.encode_within(rows, msg["budget_bits"])
            last = t == len(coeffs) - 1
            await ws.send(pack({"type": "chunk", "seq": t, "capture_time": time.time(), "k": k,
                                "k_allocated": msg["k"], "alloc_step": t, "quant_step": step,
                                "step_profile": profile, "payload": payload, "crc": crc,
                                "end_samples": n_samples if last else None}))
            sent[t] = {"k": k, "payload": payload, "crc": crc, "k_allocated": msg["k"],
                       "budget_bits": msg["budget_bits"]}
            if last:
                await ws.send(pack({"type": "bye", "reason": "end of stream"}))
                break
    return sent


@pytest.mark.parametrize("profile", ["water", "uniform"])
def test_docs_client_beside_three_edges_matches_offline(tmp_path, profile):
    """The docs-only client's chunks are all accepted, its bytes equal the project coder's,
    and the receiver's output equals the offline decoding of the allocations it applied."""
    codec = tiny_codec(step_profile=profile)
    codec.save(tmp_path / "codec.ckpt")
    trace = write_capacity_trace(tmp_path / "trace.csv",
                                 [(0.0, 400.0), (0.2, 2500.0), (0.45, 150.0), (0.6, 5000.0)])
    torch.manual_seed(3)
    n = 12 * codec.chunk_samples + 211
    audio = torch.randn(4, n) * 0.1
    wav = tmp_path / "mics.wav"
    sf.write(wav, audio.T.numpy(), codec.sample_rate, subtype="FLOAT")
    chunks = codec.chunk(codec.spectra(audio))
    coeffs = codec.source_coefficients(SOURCE, chunks[:, codec.mic_groups[SOURCE]]).numpy()
    settings = ReceiverSettings(session="room", token=TOKEN, trace=str(trace), grace_s=0.4,
                                mics_reference=str(wav))
    with Receiver(settings, codec) as rx:
        result: dict = {}
        client = threading.Thread(target=lambda: result.update(sent=asyncio.run(
            docs_client(rx.url, codec.sha256, codec.sample_rate, coeffs, n,
                        codec.bases[SOURCE].std.tolist()))), daemon=True)
        client.start()
        edges = Edges(rx.url, "room", TOKEN, codec, audio, [0, 1, 2]).start()
        results = edges.join(60)
        client.join(60)
        rx.wait_state("room", "finished", 30)
        stats = rx.stats("room")
        decoded = rx.audio("room")
    assert all(isinstance(r, dict) for r in results), results
    sent = result["sent"]
    steps = stats["steps"]
    assert len(steps) == len(coeffs) == len(sent) == 13
    assert stats["summary"]["missing_chunks"] == 0
    src = str(SOURCE)
    for st in steps:
        mine = sent[st["step"]]
        assert st["missing"] == [] and st["late"] == []
        assert st["k_applied"][src] == st["allocation"][src] == mine["k_allocated"]
        assert st["k_received"][src] == mine["k"]
        # byte for byte what the project's coder writes for the same coefficients and budget
        ref = codec.encode_payload(coeffs[st["step"]], mine["k_allocated"], mine["budget_bits"],
                                   source=SOURCE)
        assert (ref.payload, ref.k, ref.crc) == (mine["payload"], mine["k"], mine["crc"])
    assert sum(m["k"] for m in sent.values()) > 0
    assert len({m["k"] for m in sent.values()}) >= 2  # the capacity changed what fit
    ref_audio = offline_decode(codec, audio, steps).numpy()
    assert decoded.shape == (4, n)
    np.testing.assert_allclose(decoded, ref_audio, atol=2e-5, rtol=1e-4)
