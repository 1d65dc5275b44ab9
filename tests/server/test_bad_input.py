"""Each bad input gets an error frame and the right close code; other sessions never notice."""

import logging
import math
import time

import msgpack
import numpy as np
import pytest
import torch
from conftest import tiny_codec
from streaming_harness import Edges, Receiver, expect_error, one_torch_thread  # noqa: F401
from websockets.sync.client import connect

from server.settings import ReceiverSettings, SessionConfig
from shared import protocol as P

TOKEN_A, TOKEN_B = "token-of-room-a", "token-of-room-b"


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    """A receiver with room A (for abuse) and room B (streamed by four well-behaved edges)."""
    codec = tiny_codec()
    codec.save(tmp_path_factory.mktemp("ckpt") / "c.ckpt")
    folder = tmp_path_factory.mktemp("cfg")
    sessions = folder / "sessions.json"
    import json

    sessions.write_text(json.dumps({"sessions": [
        SessionConfig(id="A", token=TOKEN_A, capacity_bps=2000.0, start_timeout_s=0.0,
                      idle_timeout_s=60).model_dump(),
        SessionConfig(id="B", token=TOKEN_B, capacity_bps=1000.0, grace_s=0.4).model_dump(),
    ]}))
    rx = Receiver(ReceiverSettings(sessions_file=str(sessions)), codec)
    rx.start()
    audio = torch.randn(4, 40 * codec.chunk_samples) * 0.1  # ~2.6 s of streaming in room B
    edges = Edges(rx.url, "B", TOKEN_B, codec, audio, [0, 1, 2, 3]).start()
    yield rx, codec, edges
    rx.stop()


def hello(codec, **kw):
    base = dict(session="A", source=0, token=TOKEN_A, sample_rate=codec.sample_rate,
                model_hash=codec.sha256)
    base.update(kw)
    return P.encode(P.Hello(**base))


def room_b_unaffected(rx) -> None:
    """Room B still has its four edges (or they finished their streams) and has lost nothing."""
    stats = rx.stats("B")
    summary = stats["summary"]
    if summary["state"] != "finished":  # edges that sent their last chunk leave before the session ends
        done = {int(s) for s, st in stats["sources"].items() if st.get("finished")}
        assert sorted(set(summary["connected"]) | done) == [0, 1, 2, 3], summary
    assert summary["missing_chunks"] == 0 and summary["late_chunks"] == 0



def raw(obj) -> bytes:
    return msgpack.packb(obj, use_bin_type=True)


def test_malformed_msgpack(setup):
    """Bytes that are not msgpack: malformed, 1003."""
    rx, codec, _ = setup
    with connect(rx.url) as ws:
        ws.send(b"\xc1\xc1\xc1")
        expect_error(ws, "malformed", 1003)
    room_b_unaffected(rx)


def test_text_frame(setup):
    """A text frame instead of binary msgpack: malformed, 1003."""
    rx, codec, _ = setup
    with connect(rx.url) as ws:
        ws.send('{"v": 1, "type": "hello"}')
        expect_error(ws, "malformed", 1003)
    room_b_unaffected(rx)


def test_unknown_message_type(setup):
    """A type the protocol does not define: unknown_type, 1003."""
    rx, codec, _ = setup
    with connect(rx.url) as ws:
        ws.send(raw({"v": P.PROTOCOL_VERSION, "type": "launch_missiles"}))
        expect_error(ws, "unknown_type", 1003)
    room_b_unaffected(rx)


def test_wrong_protocol_version(setup):
    """A frame of protocol version 99: unsupported_version, 1002."""
    rx, codec, _ = setup
    with connect(rx.url) as ws:
        ws.send(raw(dict(msgpack.unpackb(hello(codec)), v=99)))
        expect_error(ws, "unsupported_version", 1002)
    room_b_unaffected(rx)


def test_oversized_frame(setup):
    """A frame over the size limit: too_big, 1009."""
    rx, codec, _ = setup
    with connect(rx.url, max_size=None) as ws:
        ws.send(b"\x00" * (P.MAX_FRAME_BYTES + 10))
        expect_error(ws, "too_big", 1009)
    room_b_unaffected(rx)


def test_unknown_session(setup):
    """A hello for a session the receiver does not have: unknown_session, 1008."""
    rx, codec, _ = setup
    with connect(rx.url) as ws:
        ws.send(hello(codec, session="nope"))
        expect_error(ws, "unknown_session", 1008)
    room_b_unaffected(rx)


def test_unknown_source(setup):
    """A source index outside the session: unknown_source, 1008."""
    rx, codec, _ = setup
    with connect(rx.url) as ws:
        ws.send(hello(codec, source=7))
        expect_error(ws, "unknown_source", 1008)
    room_b_unaffected(rx)


@pytest.mark.parametrize("token", [None, "wrong-token-value-123"])
def test_missing_or_wrong_token(setup, caplog, token):
    """A missing or wrong token is refused with 1008 and logged without the token's value."""
    rx, codec, _ = setup
    caplog.set_level(logging.INFO)
    with connect(rx.url) as ws:
        ws.send(hello(codec, token=token or ""))
        expect_error(ws, "unauthorized", 1008)
    assert "refused" in caplog.text and ("missing" if token is None else "wrong") in caplog.text
    assert TOKEN_A not in caplog.text and "wrong-token-value-123" not in caplog.text
    room_b_unaffected(rx)


def test_chunk_before_hello(setup):
    """A chunk without a hello first: unexpected_message, 1008."""
    rx, codec, _ = setup
    with connect(rx.url) as ws:
        ws.send(P.encode(P.Chunk(seq=0, capture_time=0.0, k=0, k_allocated=0, alloc_step=0,
                                 quant_step=codec.coder.step, payload=b"", crc=0)))
        expect_error(ws, "unexpected_message", 1008)
    room_b_unaffected(rx)


def _join_and_get_allocation(ws, codec, source):
    ws.send(hello(codec, source=source))
    assert isinstance(P.decode(ws.recv(timeout=5)), P.Welcome)
    while True:
        msg = P.decode(ws.recv(timeout=5))
        if isinstance(msg, P.Allocation) and msg.k > 0:
            return msg


def test_more_components_than_allocated(setup):
    """A chunk with k above the allocation: over_allocation, 1008."""
    rx, codec, _ = setup
    with connect(rx.url) as ws:
        alloc = _join_and_get_allocation(ws, codec, 1)
        k = alloc.k + 1
        zeros = torch.zeros(codec.cfg.vectors_per_step, alloc.k).numpy()
        enc = codec.encode_payload(zeros, alloc.k, None, source=1)  # refused before decoding
        ws.send(P.encode(P.Chunk(seq=alloc.step, capture_time=time.time(), k=k, k_allocated=alloc.k,
                                 alloc_step=alloc.step, quant_step=codec.coder.step,
                                 step_profile=codec.step_profile, payload=enc.payload, crc=enc.crc)))
        expect_error(ws, "over_allocation", 1008)
    room_b_unaffected(rx)


def test_wrong_step_profile_and_k_above_its_allocation(setup):
    """A chunk coded with another step profile than the welcome's: config_mismatch, 1008; a
    chunk with more components than its own k_allocated: out_of_range, 1007."""
    rx, codec, _ = setup
    assert codec.step_profile == "water"
    for kw, code, close in [(dict(step_profile="uniform"), "config_mismatch", 1008),
                            (dict(k_allocated=0), "out_of_range", 1007)]:
        with connect(rx.url) as ws:
            alloc = _join_and_get_allocation(ws, codec, 1)
            zeros = torch.zeros(codec.cfg.vectors_per_step, alloc.k).numpy()
            enc = codec.encode_payload(zeros, alloc.k, None, source=1)
            fields = dict(seq=alloc.step, capture_time=time.time(), k=alloc.k, k_allocated=alloc.k,
                          alloc_step=alloc.step, quant_step=codec.coder.step,
                          step_profile=codec.step_profile, payload=enc.payload, crc=enc.crc)
            ws.send(P.encode(P.Chunk(**{**fields, **kw})))
            err = expect_error(ws, code, close)
            assert ("step profile" in err.message) if code == "config_mismatch" else "k_allocated" in err.message
    room_b_unaffected(rx)


def test_nan_and_infinite_values(setup):
    """NaN or infinite floats in a chunk: non_finite, 1007."""
    rx, codec, _ = setup
    for bad in (math.nan, math.inf):
        with connect(rx.url) as ws:
            alloc = _join_and_get_allocation(ws, codec, 2)
            chunk = dict(v=P.PROTOCOL_VERSION, type="chunk", seq=alloc.step, capture_time=bad, k=0,
                         k_allocated=alloc.k, alloc_step=alloc.step, quant_step=codec.coder.step,
                         payload=b"", crc=0)
            ws.send(raw(chunk))
            expect_error(ws, "non_finite", 1007)
    room_b_unaffected(rx)


@pytest.mark.parametrize("wrong", ["crc", "payload"])
def test_payload_failing_its_crc(setup, wrong):
    """A chunk whose payload decodes cleanly to other indices than its crc covers (or whose
    crc is wrong): bad_payload, 1007, naming the CRC; the other session goes on."""
    rx, codec, _ = setup
    n_v = codec.cfg.vectors_per_step
    with connect(rx.url) as ws:
        alloc = _join_and_get_allocation(ws, codec, 2)
        k = 2 if alloc.budget_bits >= 64 else 1
        coeffs = np.arange(n_v * k, dtype=np.float64).reshape(n_v, k) * 0.4 - 0.5
        enc = codec.encode_payload(coeffs, k, alloc.budget_bits, source=2)
        assert enc.k == k
        payload, crc = enc.payload, enc.crc
        if wrong == "crc":
            crc ^= 0x80000000
        else:  # a valid payload of other indices (one coefficient a few steps away) under the same crc
            coder = codec.coder_for(2, k)
            other = coeffs.copy()
            step0 = coder.steps[0] if hasattr(coder, "steps") else coder.step
            other[0, 0] += 3 * float(step0)
            payload = codec.encode_payload(other, k, None, source=2).payload
            assert payload != enc.payload
        ws.send(P.encode(P.Chunk(seq=alloc.step, capture_time=time.time(), k=k, k_allocated=k,
                                 alloc_step=alloc.step, quant_step=codec.coder.step,
                                 step_profile=codec.step_profile, payload=payload, crc=crc)))
        err = expect_error(ws, "bad_payload", 1007)
    assert "CRC-32" in err.message and "docs/protocol.md" in err.message
    room_b_unaffected(rx)


def test_duplicate_source_connection(setup):
    """A second connection for a connected source is refused; the first keeps streaming."""
    rx, codec, _ = setup
    with connect(rx.url) as first:
        _join_and_get_allocation(first, codec, 3)
        with connect(rx.url) as second:
            second.send(hello(codec, source=3))
            expect_error(second, "duplicate_source", 1008)
        assert isinstance(P.decode(first.recv(timeout=5)), P.Allocation)
    room_b_unaffected(rx)


def test_model_hash_mismatch(setup):
    """An edge running another checkpoint: model_mismatch, 1008."""
    rx, codec, _ = setup
    with connect(rx.url) as ws:
        ws.send(hello(codec, model_hash="0" * 64))
        expect_error(ws, "model_mismatch", 1008)
    room_b_unaffected(rx)


def test_late_chunk_is_counted_not_fatal(setup):
    """A chunk arriving after its step's deadline is counted late, dropped, and not an error."""
    rx, codec, _ = setup
    with connect(rx.url) as ws:
        alloc = _join_and_get_allocation(ws, codec, 0)
        time.sleep(codec.rate.chunk_seconds + 0.3)  # past the deadline (T + look-ahead + grace)
        zeros = torch.zeros(codec.cfg.vectors_per_step, alloc.k).numpy()
        enc = codec.encode_payload(zeros, alloc.k, None, source=0)
        ws.send(P.encode(P.Chunk(seq=alloc.step, capture_time=time.time(), k=alloc.k,
                                 k_allocated=alloc.k, alloc_step=alloc.step,
                                 quant_step=codec.coder.step, step_profile=codec.step_profile,
                                 payload=enc.payload, crc=enc.crc)))
        msg = P.decode(ws.recv(timeout=5))  # the stream goes on: the next allocation, no error
        assert isinstance(msg, P.Allocation)
        stats = rx.stats("A")
    entry = next(s for s in stats["steps"] if s["step"] == alloc.step)
    assert 0 in entry["late"] and 0 in entry["missing"]
    assert stats["summary"]["late_chunks"] >= 1
    room_b_unaffected(rx)


def test_zz_other_session_unaffected(setup):
    """Room B, streamed during all the abuse above, lost no chunk and decoded every step."""
    rx, codec, edges = setup
    results = edges.join(60)
    assert all(isinstance(r, dict) for r in results), results
    rx.wait_state("B", "finished", 20)
    summary = rx.stats("B")["summary"]
    assert summary["missing_chunks"] == 0 and summary["late_chunks"] == 0
    assert summary["steps"] == 41  # 40 chunks of samples + the frame centred on the last one
    metrics = rx.get("/metrics").text
    for code in ("malformed", "unknown_type", "unsupported_version", "too_big", "unauthorized",
                 "over_allocation", "non_finite", "duplicate_source", "bad_payload"):
        assert f'ndpca_protocol_errors_total{{code="{code}"}}' in metrics
