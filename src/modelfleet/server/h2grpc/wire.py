"""HTTP/2 and gRPC on the wire: frame types and flags, error and status codes, the limits of a
server, frames, frame budgets and the state of one stream."""

from __future__ import annotations

import asyncio
import struct
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from enum import IntEnum
from typing import Any, Protocol

PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"

# frame types and flags (RFC 9113 section 6)
DATA, HEADERS, PRIORITY, RST_STREAM, SETTINGS, PUSH_PROMISE, PING, GOAWAY, WINDOW_UPDATE, CONTINUATION = (
    range(10)
)
END_STREAM = ACK = 0x1
END_HEADERS = 0x4
PADDED = 0x8
PRIORITY_FLAG = 0x20

# SETTINGS identifiers
HEADER_TABLE_SIZE, ENABLE_PUSH, MAX_CONCURRENT_STREAMS, INITIAL_WINDOW_SIZE, MAX_FRAME_SIZE = 1, 2, 3, 4, 5
MAX_HEADER_LIST_SIZE = 6

DEFAULT_WINDOW = 65_535
MAX_WINDOW = 2**31 - 1
MIN_FRAME = 16_384
MAX_FRAME = 2**24 - 1


class H2Error(IntEnum):
    """HTTP/2 error codes (RFC 9113 section 7), for RST_STREAM and GOAWAY."""

    NO_ERROR = 0
    PROTOCOL_ERROR = 1
    INTERNAL_ERROR = 2
    FLOW_CONTROL_ERROR = 3
    STREAM_CLOSED = 5
    FRAME_SIZE_ERROR = 6
    REFUSED_STREAM = 7
    CANCEL = 8
    COMPRESSION_ERROR = 9
    ENHANCE_YOUR_CALM = 11


class StatusCode(IntEnum):
    """gRPC status codes (grpc/doc/statuscodes.md)."""

    OK = 0
    CANCELLED = 1
    UNKNOWN = 2
    INVALID_ARGUMENT = 3
    DEADLINE_EXCEEDED = 4
    NOT_FOUND = 5
    ALREADY_EXISTS = 6
    PERMISSION_DENIED = 7
    RESOURCE_EXHAUSTED = 8
    FAILED_PRECONDITION = 9
    ABORTED = 10
    OUT_OF_RANGE = 11
    UNIMPLEMENTED = 12
    INTERNAL = 13
    UNAVAILABLE = 14
    DATA_LOSS = 15
    UNAUTHENTICATED = 16


class Status(Exception):
    """A call ends with this gRPC status: raised by handlers for every non-OK answer."""

    def __init__(self, code: StatusCode, message: str, trailers: Iterable[tuple[str, str]] = ()) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.trailers = tuple(trailers)


@dataclass(frozen=True, slots=True)
class Call:
    """What a handler may know of its call: the method path, the metadata (request headers other
    than HTTP/2's own, lower-case names, values as sent) and the client's IP address (None when the
    socket has none, e.g. a Unix socket). `hold()` stops reading from the call's connection (a
    tenant past its quota: server/quota.py) until the callable it returns is called, or a while."""

    path: str
    metadata: tuple[tuple[str, str], ...]
    peer: str | None
    hold: Callable[[], Callable[[], bool]] | None = field(default=None, compare=False)


Handler = Callable[[bytes, Call], Awaitable[bytes]]


class ServerState(Protocol):
    """What a connection reads and counts of its server (server.py's H2Server)."""

    limits: Limits
    clock: Callable[[], float]
    handlers: dict[str, Handler]
    connections: set[Any]
    in_flight: int
    undispatched: int
    idle: asyncio.Event
    shutting_down: bool


@dataclass(frozen=True, slots=True)
class Limits:
    """Bounds of one server; per connection unless said otherwise.

    - `max_message_bytes` (64 MiB): a larger request message is RESOURCE_EXHAUSTED as soon as its
      5-byte prefix declares it, before it is read.
    - `max_concurrent_streams` (256), `max_header_list_bytes` (16 KiB), `max_frame_bytes` (1 MiB):
      advertised in SETTINGS and enforced (streams past the first: RST_STREAM REFUSED_STREAM).
    - `stream_window_bytes` (4 MiB), `connection_window_bytes` (16 MiB): the flow-control credit
      the client is given; DATA past it is a FLOW_CONTROL_ERROR.
    - `max_undispatched_bytes` (64 MiB; never less than one message, `max_message_bytes` + 5):
      request bytes a connection may hold that no handler has taken yet. Connection credit is kept
      within what is left of it and comes back as messages are dispatched (or dropped); a stream
      whose data fills it without ending its message is answered RESOURCE_EXHAUSTED.
    - `max_undispatched_bytes_total` (512 MiB, server-wide): the same, all connections together; a
      stream whose data would pass it is answered RESOURCE_EXHAUSTED (its bytes are dropped), so
      many connections at their own cap cannot hold the machine's memory.
    - `preface_timeout_s` (10 s): a connection that has not opened HTTP/2 by then is closed.
    - `message_timeout_s` (60 s): a request message must arrive whole within this of its HEADERS
      (checked every half of it); else DEADLINE_EXCEEDED and RST_STREAM, so a stream trickling
      its data holds neither a stream slot nor the connection for ever. Likewise an answer that
      waits longer for the client's flow-control credit is dropped (RST_STREAM CANCEL).
    - `idle_timeout_s` (300 s): a connection with no stream open for that long (checked every half
      of it: closed between 1x and 1.5x after its last stream) gets GOAWAY NO_ERROR and is closed.
    - `max_connections` (1000, server-wide): a connection past it gets SETTINGS, GOAWAY
      ENHANCE_YOUR_CALM, and is closed.
    - `max_rst_stream_frames`, `max_ping_frames`, `max_settings_frames`, `max_empty_frames` (1000
      each): budgets of frames that cost the server work but carry no call, each refilled at
      `frame_budget_refill_per_s` (100 frames/s) up to its size; past one, GOAWAY
      ENHANCE_YOUR_CALM. RST_STREAM counts the client's resets and the streams it opens past
      `max_concurrent_streams`; PING and SETTINGS count acknowledgements too (the server sends one
      SETTINGS and no PING); empty frames are DATA with no data and no END_STREAM, HEADERS and
      CONTINUATION with no header bytes and no END_HEADERS, PRIORITY and unknown frame types.
    """

    max_message_bytes: int = 64 * 2**20
    max_concurrent_streams: int = 256
    max_header_list_bytes: int = 16_384
    stream_window_bytes: int = 4 * 2**20
    connection_window_bytes: int = 16 * 2**20
    max_frame_bytes: int = 1 * 2**20
    preface_timeout_s: float = 10.0
    message_timeout_s: float = 60.0
    max_undispatched_bytes: int = 64 * 2**20
    max_undispatched_bytes_total: int = 512 * 2**20
    idle_timeout_s: float = 300.0
    max_connections: int = 1000
    max_rst_stream_frames: int = 1000
    max_ping_frames: int = 1000
    max_settings_frames: int = 1000
    max_empty_frames: int = 1000
    frame_budget_refill_per_s: float = 100.0


_frame_header = struct.Struct(">IBI")  # length (24 bits) << 8 | type, flags, stream id
_pack_header = _frame_header.pack
_unpack_header = _frame_header.unpack_from
_u32 = struct.Struct(">I")


def frame(kind: int, flags: int, stream_id: int, payload: bytes = b"") -> bytes:
    return _pack_header((len(payload) << 8) | kind, flags, stream_id) + payload


class H2ConnectionError(Exception):
    """A connection error: GOAWAY with this code, then close."""

    def __init__(self, code: H2Error, reason: str) -> None:
        super().__init__(reason)
        self.code = code


class _Budget:
    """A token bucket of frames: `size` at once, refilled at `refill_per_s` up to `size`."""

    __slots__ = ("refill_per_s", "size", "stamp", "tokens")

    def __init__(self, size: int, refill_per_s: float, now: float) -> None:
        self.size = size
        self.refill_per_s = refill_per_s
        self.tokens = float(size)
        self.stamp = now

    def take(self, now: float) -> bool:
        """One frame spent; False when the budget is exhausted."""
        tokens = min(self.size, self.tokens + (now - self.stamp) * self.refill_per_s)
        self.stamp = now
        if tokens < 1:
            self.tokens = tokens
            return False
        self.tokens = tokens - 1
        return True


_NO_BYTES = memoryview(b"")
SMALL_DATA_FRAME = 4096  # DATA payloads up to this are sliced as bytes, larger ones as memoryviews


class _Stream:
    __slots__ = (
        "answering",
        "body",
        "call",
        "half_closed",
        "id",
        "offset",
        "opened",
        "pending",
        "recv_window",
        "send_window",
        "task",
        "timeout_s",
    )

    def __init__(
        self,
        stream_id: int,
        send_window: int,
        recv_window: int,
        call: Call,
        timeout_s: float | None,
        opened: float,
    ) -> None:
        self.id = stream_id
        self.opened = opened  # when its HEADERS came, then when its answer began to wait for credit
        self.send_window = send_window
        self.recv_window = recv_window  # what the client may still send on this stream
        self.call = call
        self.timeout_s = timeout_s
        self.body = bytearray()  # the request so far, not yet dispatched
        self.half_closed = False  # the client's END_STREAM has come
        self.task: asyncio.Task[None] | None = None
        self.answering = False  # the answer's HEADERS are out, its message waits for credit
        self.pending = _NO_BYTES  # that answer message
        self.offset = 0  # how much of it is sent


LINGER_S = 2.0  # a closed connection whose peer does not read what is left is aborted after this
