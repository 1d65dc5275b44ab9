"""Wire protocol: round trips, and each kind of bad frame maps to its error and close code."""

import math

import msgpack
import pytest

from shared import protocol as p


def _chunk(**kw):
    base = dict(seq=3, capture_time=1.5, k=2, k_allocated=2, alloc_step=3, quant_step=0.35,
                payload=b"\x01\x02", crc=0xDEADBEEF)
    base.update(kw)
    return p.Chunk(**base)


@pytest.mark.parametrize(
    "msg",
    [
        p.Hello(session="room", source=2, token="t", sample_rate=16000, model_hash="ab", epoch=12.5),
        _chunk(end_samples=1234),
        p.Bye(reason="done"),
        p.Welcome(session="r", source=0, epoch=None, step=None, period_s=0.256, mode="realtime",
                  n_sources=4, quant_step=0.35, lookahead_samples=127),
        p.Allocation(step=4, epoch=1.0, k=7, budget_bits=40, bits_per_coefficient=3.65,
                     capacity_bps=900.0, total_coefficients=20, total_bits=230),
        p.Error(code="over_allocation", message="x"),
    ],
)
def test_round_trip(msg):
    """Every message type survives encode/decode unchanged and carries v and type."""
    frame = p.encode(msg)
    raw = msgpack.unpackb(frame)
    assert raw["v"] == p.PROTOCOL_VERSION and raw["type"] == msg.type
    assert p.decode(frame) == msg


def _frame(obj):
    return msgpack.packb(obj, use_bin_type=True)


@pytest.mark.parametrize(
    "frame, code, close",
    [
        (b"\xc1\xff\x00", "malformed", 1003),
        (_frame([1, 2, 3]), "malformed", 1003),
        (_frame({"v": 2, "type": "launch"}), "unknown_type", 1003),
        (_frame({"v": 2, "type": "chunk", "seq": 1}), "invalid_message", 1003),
        (_frame(dict(_chunk().model_dump(), v=1)), "unsupported_version", 1002),
        (_frame({k: v for k, v in _chunk().model_dump().items() if k != "crc"}), "invalid_message", 1003),
        (_frame(dict(_chunk().model_dump(), crc=1 << 32)), "invalid_message", 1003),
        (_frame(dict(_chunk().model_dump(), quant_step=2.0**-11)), "invalid_message", 1003),
        (_frame(dict(_chunk().model_dump(), quant_step=17.0)), "invalid_message", 1003),
        (_frame({"v": 9, "type": "hello"}), "unsupported_version", 1002),
        (_frame({"type": "hello"}), "unsupported_version", 1002),
        (_frame(dict(_chunk().model_dump(), capture_time=math.nan)), "non_finite", 1007),
        (_frame(dict(_chunk().model_dump(), quant_step=math.inf)), "non_finite", 1007),
        (b"\x00" * (p.MAX_FRAME_BYTES + 1), "too_big", 1009),
    ],
)
def test_bad_frames(frame, code, close):
    """Bad frames raise ProtocolError with the documented error code and close code."""
    with pytest.raises(p.ProtocolError) as info:
        p.decode(frame)
    assert info.value.code == code and info.value.close_code == close
    err = p.decode(info.value.to_frame())
    assert isinstance(err, p.Error) and err.code == code


def test_what_the_receiver_accepts_from_an_edge():
    """A receiver's message sent by an edge is unexpected (not invalid); a map with no version
    says that 'v' is missing."""
    welcome = _frame({"v": 2, "type": "welcome"})
    with pytest.raises(p.ProtocolError) as info:
        p.decode(welcome, accept=p.EDGE_MESSAGE_TYPES)
    assert info.value.code == "unexpected_message" and "welcome" in str(info.value)
    with pytest.raises(p.ProtocolError, match="no protocol version 'v'"):
        p.decode(_frame({}))


def test_every_error_code_has_a_close_code():
    """The close-code table covers only valid websocket application-visible codes (RFC 6455
    and the IANA registry: 1013 is "try again later")."""
    assert all(1000 <= c <= 1011 or c == 1013 for c in p.ERROR_CLOSE_CODES.values())
    assert p.ERROR_CLOSE_CODES["unauthorized"] == 1008
