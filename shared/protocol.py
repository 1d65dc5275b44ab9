"""The wire protocol between edge devices and the receiver (Sans-I/O: no sockets here).

Every message is one binary websocket frame holding a msgpack map with a protocol version
``v`` and a ``type``; pydantic v2 models in a discriminated union validate it. The full
specification, with the message sequence and the close-code table, is ``docs/protocol.md``.

Edge -> receiver: :class:`Hello`, :class:`Chunk`, :class:`Bye`.
Receiver -> edge: :class:`Welcome`, :class:`Allocation`, :class:`Error`, :class:`Bye`.

:func:`decode` turns any bad frame into a :class:`ProtocolError` that names the error
``code`` sent back in an :class:`Error` frame and the websocket ``close_code``.

Version 2 (this one) changed the chunk payload's format (integer probability tables and a
canonical Huffman code, see :mod:`shared.entropy`) and added the chunk's ``crc``; a version-1
frame is refused with ``unsupported_version``.
"""

from __future__ import annotations

import math
from typing import Annotated, Any, Literal

import msgpack
from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, ValidationError

from shared.entropy import MAX_STEP, MIN_STEP

PROTOCOL_VERSION = 2
SUPPORTED_VERSIONS = (2,)

#: Largest frame the receiver accepts (bytes); a chunk of 256 coefficients is ~150 bytes.
MAX_FRAME_BYTES = 64 * 1024

# websocket close codes (RFC 6455, section 7.4.1)
CLOSE_NORMAL = 1000
CLOSE_GOING_AWAY = 1001
CLOSE_PROTOCOL_ERROR = 1002
CLOSE_UNSUPPORTED_DATA = 1003
CLOSE_INVALID_DATA = 1007
CLOSE_POLICY = 1008
CLOSE_TOO_BIG = 1009
CLOSE_INTERNAL = 1011
CLOSE_TRY_AGAIN = 1013

#: Error code -> close code. Every error the receiver sends is one of these.
ERROR_CLOSE_CODES: dict[str, int] = {
    "malformed": CLOSE_UNSUPPORTED_DATA,  # not msgpack, not a map, or a text frame
    "unknown_type": CLOSE_UNSUPPORTED_DATA,  # a `type` this version does not define
    "invalid_message": CLOSE_UNSUPPORTED_DATA,  # fields missing or of the wrong type
    "unsupported_version": CLOSE_PROTOCOL_ERROR,  # `v` not in SUPPORTED_VERSIONS
    "non_finite": CLOSE_INVALID_DATA,  # NaN or infinite value in a float field
    "bad_payload": CLOSE_INVALID_DATA,  # payload does not decode to k n_v indices with its crc
    "out_of_range": CLOSE_INVALID_DATA,  # a value beyond what the session holds (seq, end_samples)
    "too_big": CLOSE_TOO_BIG,  # frame larger than MAX_FRAME_BYTES
    "unauthorized": CLOSE_POLICY,  # missing or wrong session token
    "unknown_session": CLOSE_POLICY,
    "unknown_source": CLOSE_POLICY,
    "duplicate_source": CLOSE_POLICY,  # the source already has a live connection
    "over_allocation": CLOSE_POLICY,  # more components than allocated for the step
    "model_mismatch": CLOSE_POLICY,  # edge and receiver load different checkpoints
    "config_mismatch": CLOSE_POLICY,  # sample rate or quantiser step differ
    "unexpected_message": CLOSE_POLICY,  # e.g. a chunk before hello, a second hello
    "session_closed": CLOSE_POLICY,  # the session has finished
    "hello_timeout": CLOSE_POLICY,  # no hello within the receiver's hello timeout
    "too_many_connections": CLOSE_TRY_AGAIN,  # the receiver's connection limits are reached
    "session_failed": CLOSE_INTERNAL,  # the session cannot go on (the message says why)
    "internal": CLOSE_INTERNAL,
}

#: Close codes after which an edge should not retry: its input is wrong, not the network.
FATAL_CLOSE_CODES = frozenset(
    {CLOSE_PROTOCOL_ERROR, CLOSE_UNSUPPORTED_DATA, CLOSE_INVALID_DATA, CLOSE_POLICY, CLOSE_TOO_BIG}
)
#: Error codes that are worth a retry with backoff although they close the connection.
RETRYABLE_ERRORS = frozenset({"duplicate_source", "internal", "hello_timeout", "too_many_connections"})

#: largest step, source or component index an edge may send (2**31 - 1 steps: 2 years at 32 ms)
MAX_INDEX = 2**31 - 1
#: largest stream length (samples) an edge may announce; the session bounds it by ``seq`` too
MAX_SAMPLES = 2**48

# Integers are strict (a bool, a float or a string is refused); floats take ints, not bools.
Finite = Annotated[float, Field(strict=True, allow_inf_nan=False)]
NonNeg = Annotated[int, Field(strict=True, ge=0)]
Index = Annotated[int, Field(strict=True, ge=0, le=MAX_INDEX)]
#: A quantiser step the payload format allows.
QuantStep = Annotated[float, Field(strict=True, ge=MIN_STEP, le=MAX_STEP, allow_inf_nan=False)]


#: The quantiser step profiles (:mod:`shared.steps`).
StepProfile = Literal["uniform", "water"]


class _Message(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    v: Literal[2] = PROTOCOL_VERSION


class Hello(_Message):
    """Edge -> receiver, first frame: who I am and what I run.

    Attributes:
        session: session (room) id. source: source index s in ``[0, S)``.
        token: the session's token ("" when none was configured: refused with 1008).
        sample_rate: Hz of the audio the edge captures.
        model_hash: the codec checkpoint's content hash (must equal the receiver's): the
            hex SHA-256 of the checkpoint file's payload section (the bytes after its JSON
            header), as recorded in the header's ``sha256``; not the hash of the whole file.
        epoch: the session clock's epoch (unix seconds) from a previous welcome, so that a
            restarted receiver resumes the same step numbering; None on a first connect.
        resume_seq: the next chunk the edge will send when it resumes (None at first).
    """

    type: Literal["hello"] = "hello"
    session: str = Field(min_length=1, max_length=128)
    source: Index
    token: str = Field("", max_length=512)
    sample_rate: Annotated[int, Field(strict=True, gt=0, le=1_000_000)]
    model_hash: str = Field(max_length=128)
    epoch: Finite | None = None
    resume_seq: Index | None = None
    client: str = Field("", max_length=128)


class Chunk(_Message):
    """Edge -> receiver: the coded coefficients of one chunk of T seconds.

    Attributes:
        seq: the step (chunk index) t; chunk t holds STFT frames
            ``[t * frames, (t + 1) * frames)`` of the source's signal.
        capture_time: unix time at which the chunk's first sample was captured.
        k: coefficients in ``payload`` (<= the allocation of step ``seq``).
        k_allocated: the allocation the edge applied (the k of the allocation for ``seq``).
        alloc_step: the step of the allocation message the edge applied.
        quant_step: quantiser step Delta the payload was coded with (the welcome's, exactly).
        step_profile: the step profile the payload was coded with (the welcome's):
            ``uniform`` (every component at ``quant_step``) or ``water`` (a step per
            component, from ``k_allocated``; ``docs/protocol.md``, "Per-component steps").
        payload: the coded quantisation indices (``docs/protocol.md``, "Payload"); its
            ``8 * len`` is the bits on the channel.
        crc: CRC-32 of the ``[n_v, k]`` indices the payload codes, in stream order, each a
            little-endian int16 (:func:`shared.coding.indices_crc`); a receiver that decodes
            other indices refuses the chunk (``bad_payload``).
        end_samples: on the last chunk of a finite stream: the stream's length in samples.
    """

    type: Literal["chunk"] = "chunk"
    seq: Index
    capture_time: Finite
    k: Index
    k_allocated: Index
    alloc_step: int = Field(strict=True, ge=-1, le=MAX_INDEX)
    quant_step: QuantStep
    step_profile: StepProfile = "uniform"
    payload: bytes
    crc: int = Field(strict=True, ge=0, lt=1 << 32)
    end_samples: Annotated[int, Field(strict=True, ge=0, le=MAX_SAMPLES)] | None = None


class Bye(_Message):
    """Either way: orderly end (edge: end of stream; receiver: session finished)."""

    type: Literal["bye"] = "bye"
    reason: str = Field("", max_length=256)


class Welcome(_Message):
    """Receiver -> edge, after a valid hello.

    Attributes:
        epoch: session clock epoch (unix seconds), None until the session has started.
        step: the first step the edge should send (None until the session has started).
        period_s: T, seconds per step. mode: ``realtime`` or ``lockstep``.
        n_sources: S. quant_step: the quantiser step both ends use.
        step_profile: how steps are given to components (``uniform`` or ``water``).
        lookahead_samples: samples past a chunk's end the edge needs to frame it.
    """

    type: Literal["welcome"] = "welcome"
    session: str
    source: NonNeg
    epoch: Finite | None
    step: NonNeg | None
    period_s: Annotated[float, Field(gt=0, allow_inf_nan=False)]
    mode: Literal["realtime", "lockstep"]
    n_sources: Annotated[int, Field(gt=0)]
    quant_step: QuantStep
    step_profile: StepProfile = "uniform"
    lookahead_samples: NonNeg


class Allocation(_Message):
    """Receiver -> edge: the components the edge may send for chunk ``step`` (and after).

    Attributes:
        step: first chunk the allocation applies to. epoch: session clock epoch.
        k: components for this source. budget_bits: bits this source may spend per chunk.
        bits_per_coefficient: eta * R(D), what the budget assumes per coefficient.
        capacity_bps: C_t. total_coefficients: L_t. total_bits: floor(C_t T).
    """

    type: Literal["allocation"] = "allocation"
    step: NonNeg
    epoch: Finite
    k: NonNeg
    budget_bits: NonNeg
    bits_per_coefficient: Finite
    capacity_bps: Finite
    total_coefficients: NonNeg
    total_bits: NonNeg


class Error(_Message):
    """Receiver -> edge: what was wrong; ``fatal`` errors are followed by a close."""

    type: Literal["error"] = "error"
    code: str
    message: str
    fatal: bool = True


Message = Annotated[
    Hello | Chunk | Bye | Welcome | Allocation | Error, Field(discriminator="type")
]
MESSAGE_TYPES = ("hello", "chunk", "bye", "welcome", "allocation", "error")
#: what an edge sends (the receiver sends the others)
EDGE_MESSAGE_TYPES = ("hello", "chunk", "bye")
_ADAPTER: TypeAdapter[Any] = TypeAdapter(Message)


class ProtocolError(Exception):
    """A frame that breaks the protocol: ``code`` (see :data:`ERROR_CLOSE_CODES`)."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message

    @property
    def close_code(self) -> int:
        return ERROR_CLOSE_CODES.get(self.code, CLOSE_POLICY)

    def to_frame(self) -> bytes:
        return encode(Error(code=self.code, message=self.message, fatal=True))


def encode(msg: BaseModel) -> bytes:
    """A message -> one binary frame."""
    return msgpack.packb(msg.model_dump(), use_bin_type=True)


def _has_non_finite(obj: Any) -> bool:
    if isinstance(obj, float):
        return not math.isfinite(obj)
    if isinstance(obj, dict):
        return any(_has_non_finite(v) for v in obj.values())
    if isinstance(obj, list | tuple):
        return any(_has_non_finite(v) for v in obj)
    return False


def decode(frame: bytes | bytearray | memoryview, max_bytes: int = MAX_FRAME_BYTES,
           accept: tuple[str, ...] = MESSAGE_TYPES) -> Any:
    """One binary frame -> a validated message.

    Raises:
        ProtocolError: with the code of the first problem found, in this order: too big,
            malformed, unsupported version, unknown type, a type not in ``accept`` (unexpected),
            non-finite value, invalid fields.
    """
    if len(frame) > max_bytes:
        raise ProtocolError("too_big", f"frame of {len(frame)} bytes exceeds {max_bytes}")
    try:
        obj = msgpack.unpackb(bytes(frame), raw=False, strict_map_key=True)
    except Exception as exc:  # msgpack raises several unrelated types
        raise ProtocolError("malformed", f"frame is not valid msgpack ({type(exc).__name__})") from None
    if not isinstance(obj, dict):
        raise ProtocolError("malformed", f"frame holds a {type(obj).__name__}, expected a map")
    version = obj.get("v")
    if "v" not in obj:
        raise ProtocolError("unsupported_version", f"the map has no protocol version 'v'; this receiver speaks "
                            f"{SUPPORTED_VERSIONS} (docs/protocol.md)")
    if version not in SUPPORTED_VERSIONS:
        raise ProtocolError(
            "unsupported_version",
            f"protocol version {version!r} not supported; this receiver speaks "
            f"{SUPPORTED_VERSIONS}: update the edge (docs/protocol.md, Versioning)",
        )
    kind = obj.get("type")
    if kind not in MESSAGE_TYPES:
        raise ProtocolError("unknown_type", f"unknown message type {str(kind)[:40]!r}")
    if kind not in accept:
        raise ProtocolError("unexpected_message", f"a {kind} message is not sent to this end of the link "
                            f"(it accepts {', '.join(accept)})")
    if _has_non_finite(obj):
        raise ProtocolError("non_finite", f"{kind} message holds a NaN or infinite value")
    try:
        return _ADAPTER.validate_python(obj)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"][1:]) or kind
        raise ProtocolError("invalid_message", f"{kind}: {where}: {first['msg']}") from None
