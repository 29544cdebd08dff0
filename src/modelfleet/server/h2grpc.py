"""gRPC's HTTP/2 transport for unary calls (cleartext, prior knowledge), on one asyncio Protocol.

Why not grpcio's server: measured here (docs/benchmarks.md, "gRPC against HTTP"), a bare grpcio
call costs the server 160-190 us of CPU, more than our whole HTTP request (~100 us); and why not
the sans-IO `h2` library: the same bench ("The HTTP/2 layer: h2 or our own") measured it at
~200 us per call against ~40 us here, 0.3x of HTTP. This module does only what a unary gRPC
service needs: frames, SETTINGS / PING / GOAWAY, flow control both ways, HPACK decoding (the
`hpack` library; answers use fixed, never-indexed header blocks), the 5-byte message framing,
deadlines (`grpc-timeout`) and cancellation (RST_STREAM, lost connections). Handlers get the
message bytes and a `Call`, return the answer's bytes or raise `Status`.

A hostile peer is bounded (see `Limits`): frame, header list, message and window sizes; bytes
buffered before dispatch per connection (flow-control credit comes back as messages are handed to
handlers); write back-pressure (a peer that does not read is not read from); budgets of RST_STREAM,
PING, SETTINGS and empty frames (GOAWAY ENHANCE_YOUR_CALM past them); preface and idle timeouts; a
connection cap. Buffers are linear in the bytes they carry. `begin_shutdown` / `end_shutdown` /
`stop` drain the server. tests/integration/test_h2_conformance.py checks all this with the `h2`
library as an independent peer.

Spec: RFC 9113 (HTTP/2), RFC 7541 (HPACK), grpc/doc/PROTOCOL-HTTP2.md.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
import socket
import struct
import time
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass
from enum import IntEnum
from typing import cast

import hpack

log = logging.getLogger(__name__)

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
    socket has none, e.g. a Unix socket)."""

    path: str
    metadata: tuple[tuple[str, str], ...]
    peer: str | None


Handler = Callable[[bytes, Call], Awaitable[bytes]]


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


# -- HPACK output: fixed blocks, literal fields never indexed, so no dynamic table to keep -----------------


def _hpack_int(value: int, prefix_bits: int, first: int) -> bytes:
    limit = (1 << prefix_bits) - 1
    if value < limit:
        return bytes((first | value,))
    out = bytearray((first | limit,))
    value -= limit
    while value >= 128:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def _literal(name: bytes, value: bytes) -> bytes:
    """A literal header field without indexing, with a literal name (RFC 7541 6.2.2), no Huffman."""
    return b"\x00" + _hpack_int(len(name), 7, 0) + name + _hpack_int(len(value), 7, 0) + value


_STATUS_200 = b"\x88"  # static table entry 8
_GRPC_CONTENT_TYPE = b"\x0f\x10" + _hpack_int(16, 7, 0) + b"application/grpc"  # name: static entry 31
_RESPONSE_HEADERS = _STATUS_200 + _GRPC_CONTENT_TYPE + _literal(b"grpc-accept-encoding", b"identity")
_OK_TRAILERS = _literal(b"grpc-status", b"0")
_UNSAFE_MESSAGE_BYTES = re.compile(rb"[^\x20-\x24\x26-\x7e]")
MAX_STATUS_MESSAGE_BYTES = 4096
HEAD_CACHE_SIZE = 64  # distinct header blocks remembered per connection


def percent_encode(message: str) -> bytes:
    """grpc-message's encoding: UTF-8, with bytes outside printable ASCII and '%' as %XX."""
    raw = message.encode()[:MAX_STATUS_MESSAGE_BYTES]
    return _UNSAFE_MESSAGE_BYTES.sub(lambda m: b"%%%02X" % m.group()[0], raw)


def status_block(status: Status) -> bytes:
    block = _literal(b"grpc-status", str(int(status.code)).encode())
    if status.message:
        block += _literal(b"grpc-message", percent_encode(status.message))
    for name, value in status.trailers:
        block += _literal(name.encode(), value.encode())
    return block


# grpc-timeout: at most 8 digits and a unit (PROTOCOL-HTTP2.md)
_TIMEOUT_UNITS = {"H": 3600.0, "M": 60.0, "S": 1.0, "m": 1e-3, "u": 1e-6, "n": 1e-9}


def parse_timeout(value: str) -> float | None:
    """Seconds in a `grpc-timeout` value; None when it is malformed."""
    digits, unit = value[:-1], value[-1:]
    if not (1 <= len(digits) <= 8 and digits.isdigit() and digits.isascii()) or unit not in _TIMEOUT_UNITS:
        return None
    return int(digits) * _TIMEOUT_UNITS[unit]


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


class Connection(asyncio.Protocol):
    """One client connection: parses frames as they arrive, runs one task per call."""

    def __init__(self, server: H2Server) -> None:
        self._server = server
        self._limits = limits = server.limits
        self._clock = server.clock
        self._transport: asyncio.Transport | None = None  # None once closed
        self._closing: asyncio.Transport | None = None  # the transport, kept to abort it
        self._buffer = bytearray()  # the start of a frame (or preface) not all here yet
        self._need = 0  # bytes _buffer must hold before it is worth parsing again
        self._preface = False
        self._decoder = hpack.Decoder(max_header_list_size=limits.max_header_list_bytes)
        self._streams: dict[int, _Stream] = {}
        self._last_stream = 0
        self._send_window = DEFAULT_WINDOW
        self._peer_initial_window = DEFAULT_WINDOW
        self._peer_max_frame = MIN_FRAME
        self._cap = max(limits.max_undispatched_bytes, limits.max_message_bytes + 5)
        self._window = min(limits.connection_window_bytes, self._cap)  # connection credit to keep open
        self._recv_window = DEFAULT_WINDOW  # what the client may still send on the connection
        self._undispatched = 0  # request bytes held in stream bodies
        # the client may send on a stream before it has our SETTINGS: at least the default window
        self._stream_recv_window = max(limits.stream_window_bytes, DEFAULT_WINDOW)
        self._heads: dict[bytes, tuple[int, _Head]] = {}  # header blocks read, by table version
        self._table_version = 0
        self._continuation: tuple[int, int, bytearray] | None = None  # stream, flags, block so far
        self._blocked: dict[int, _Stream] = {}  # streams with answer bytes waiting for credit
        self._going_away = False  # our GOAWAY is sent: no new streams
        self._paused = False  # the transport's write buffer is full: we do not read either
        self._peer: str | None = None
        self._timer: asyncio.TimerHandle | None = None  # the preface timeout, then the idle check
        self._read_timer: asyncio.TimerHandle | None = None  # the message timeout check
        self._idle_mark = 0  # _last_stream at the previous idle check
        self._quiet_checks = 0  # idle checks in a row with no stream
        now = self._clock()
        self._resets = _Budget(limits.max_rst_stream_frames, limits.frame_budget_refill_per_s, now)
        self._pings = _Budget(limits.max_ping_frames, limits.frame_budget_refill_per_s, now)
        self._settings = _Budget(limits.max_settings_frames, limits.frame_budget_refill_per_s, now)
        self._empties = _Budget(limits.max_empty_frames, limits.frame_budget_refill_per_s, now)

    # -- asyncio.Protocol ----------------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = transport  # type: ignore[assignment]  # uvloop's is no asyncio.Transport subclass
        peername = transport.get_extra_info("peername")
        self._peer = peername[0] if isinstance(peername, tuple) and isinstance(peername[0], str) else None
        server, limits = self._server, self._limits
        if server.shutting_down or len(server.connections) >= limits.max_connections:
            reason = "server shutting down" if server.shutting_down else "too many connections"
            code = H2Error.NO_ERROR if server.shutting_down else H2Error.ENHANCE_YOUR_CALM
            log.info("refusing a gRPC connection: %s", reason)
            self._write(frame(SETTINGS, 0, 0))
            self._close(code, reason, quiet=True)
            return
        settings = b"".join(
            struct.pack(">HI", key, value)
            for key, value in (
                (MAX_CONCURRENT_STREAMS, limits.max_concurrent_streams),
                (INITIAL_WINDOW_SIZE, limits.stream_window_bytes),
                (MAX_FRAME_SIZE, limits.max_frame_bytes),
                (MAX_HEADER_LIST_SIZE, limits.max_header_list_bytes),
            )
        )
        hello = frame(SETTINGS, 0, 0, settings)
        if self._window > DEFAULT_WINDOW:  # the connection's starts at 65,535
            hello += frame(WINDOW_UPDATE, 0, 0, _u32.pack(self._window - DEFAULT_WINDOW))
            self._recv_window = self._window
        self._write(hello)
        self._timer = asyncio.get_running_loop().call_later(limits.preface_timeout_s, self._no_preface)
        server.connections.add(self)

    def connection_lost(self, exc: Exception | None) -> None:
        self._server.connections.discard(self)
        for timer in (self._timer, self._read_timer):
            if timer is not None:
                timer.cancel()
        self._timer = self._read_timer = None
        self._cancel_calls()
        self._blocked.clear()
        self._server.undispatched -= self._undispatched  # bodies never dispatched go with it
        self._undispatched = 0
        self._transport = self._closing = None
        self._server.idle.set()

    def data_received(self, data: bytes) -> None:
        if self._transport is None:
            return  # closing: what the peer still sends is dropped
        if self._buffer:
            self._buffer += data
            if len(self._buffer) < self._need:
                return  # a frame still incomplete: no copy, no parse
            data = bytes(self._buffer)
            self._buffer.clear()
        try:
            self._frames(data)
        except H2ConnectionError as exc:
            self._close(exc.code, str(exc))
        except (hpack.HPACKError, UnicodeDecodeError) as exc:
            self._close(H2Error.COMPRESSION_ERROR, f"bad header block: {exc}")
        except Exception:  # a bug here must not leave the connection half-parsed
            log.exception("closing a gRPC connection after an unexpected error")
            self._close(H2Error.INTERNAL_ERROR, "internal error")

    def eof_received(self) -> bool | None:
        return None  # the transport closes

    def pause_writing(self) -> None:
        """The peer reads slower than we write: read nothing more from it until it catches up."""
        self._paused = True
        transport = self._transport
        if transport is not None and not transport.is_closing():
            transport.pause_reading()

    def resume_writing(self) -> None:
        self._paused = False
        transport = self._transport
        if transport is not None and not transport.is_closing():
            transport.resume_reading()
            self._flush_blocked()

    # -- frames in ---------------------------------------------------------------------------------

    def _frames(self, data: bytes) -> None:
        pos = 0
        if not self._preface:
            if len(data) < len(PREFACE):
                if not PREFACE.startswith(data):
                    raise H2ConnectionError(H2Error.PROTOCOL_ERROR, "not an HTTP/2 connection preface")
                self._buffer += data
                self._need = len(PREFACE)
                return
            if data[: len(PREFACE)] != PREFACE:
                raise H2ConnectionError(H2Error.PROTOCOL_ERROR, "not an HTTP/2 connection preface")
            self._preface = True
            if self._timer is not None:
                self._timer.cancel()
            loop = asyncio.get_running_loop()
            self._timer = loop.call_later(self._limits.idle_timeout_s / 2, self._idle_check)
            self._read_timer = loop.call_later(self._limits.message_timeout_s / 2, self._read_check)
            pos = len(PREFACE)
        end = len(data)
        max_frame = self._limits.max_frame_bytes
        while end - pos >= 9 and self._transport is not None:  # (a frame may close the connection)
            word, flags, stream_id = _unpack_header(data, pos)
            length, kind = word >> 8, word & 0xFF
            stream_id &= 0x7FFFFFFF
            if length > max_frame:
                raise H2ConnectionError(H2Error.FRAME_SIZE_ERROR, f"frame of {length} bytes")
            if end - pos - 9 < length:
                self._need = 9 + length
                break
            start, pos = pos + 9, pos + 9 + length
            if self._continuation is not None and kind != CONTINUATION:
                raise H2ConnectionError(H2Error.PROTOCOL_ERROR, "expected CONTINUATION")
            if kind == DATA:
                # a large payload as a view, not a copy; a small one is cheaper copied
                payload = data[start:pos] if length <= SMALL_DATA_FRAME else memoryview(data)[start:pos]
                self._on_data(stream_id, flags, payload)
            elif kind == HEADERS:
                self._on_headers(stream_id, flags, data[start:pos])
            elif kind == WINDOW_UPDATE:
                self._on_window_update(stream_id, data[start:pos])
            elif kind == SETTINGS:
                self._on_settings(stream_id, flags, data[start:pos])
            elif kind == PING:
                self._on_ping(stream_id, flags, data[start:pos])
            elif kind == RST_STREAM:
                self._on_rst_stream(stream_id, length)
            elif kind == CONTINUATION:
                self._on_continuation(stream_id, flags, data[start:pos])
            elif kind == GOAWAY:
                if stream_id != 0:
                    raise H2ConnectionError(H2Error.PROTOCOL_ERROR, "GOAWAY on a stream")
                # the client opens no more streams; those open finish
            elif kind == PUSH_PROMISE:
                raise H2ConnectionError(H2Error.PROTOCOL_ERROR, "a client may not push")
            else:  # PRIORITY (deprecated, RFC 9113 5.3.2) and unknown types (5.5): ignored, within a budget
                if kind == PRIORITY:
                    self._on_priority(stream_id, length)
                self._spend(self._empties, "empty or ignored frames")
        else:
            if pos < end:
                self._need = 9
        if pos < end and self._transport is not None:
            self._buffer += memoryview(data)[pos:]

    def _spend(self, budget: _Budget, what: str) -> None:
        if not budget.take(self._clock()):
            raise H2ConnectionError(H2Error.ENHANCE_YOUR_CALM, f"too many {what}")

    def _on_data(self, stream_id: int, flags: int, payload: bytes | memoryview) -> None:
        if stream_id == 0:
            raise H2ConnectionError(H2Error.PROTOCOL_ERROR, "DATA on stream 0")
        size = len(payload)
        self._recv_window -= size
        if self._recv_window < 0:
            raise H2ConnectionError(H2Error.FLOW_CONTROL_ERROR, "DATA past the connection window")
        stream = self._streams.get(stream_id)
        if stream is None or stream.half_closed:
            if stream_id > self._last_stream:
                raise H2ConnectionError(H2Error.PROTOCOL_ERROR, f"DATA on idle stream {stream_id}")
            if not size and not flags & END_STREAM:
                self._spend(self._empties, "empty frames")
            if (
                self._recv_window <= self._window >> 1
            ):  # a stream we have closed or answered already: its data is dropped
                self._credit()
            return
        stream.recv_window -= size
        if stream.recv_window < 0:
            raise H2ConnectionError(H2Error.FLOW_CONTROL_ERROR, f"DATA past stream {stream_id}'s window")
        if flags & PADDED:
            payload = _unpad(payload)
        body = stream.body
        if flags & END_STREAM:
            if body:
                body += payload
                self._hold(len(payload))
                self._dispatch(stream, body)
            else:  # the whole message in one frame: no copy into a buffer
                self._dispatch(stream, payload)
            if self._recv_window <= self._window >> 1:  # else no credit is due yet
                self._credit()
            return
        if not payload:  # nothing, or padding only: its credit comes back at once
            self._spend(self._empties, "empty frames")
            if self._recv_window <= self._window >> 1:  # else no credit is due yet
                self._credit()
            return
        body += payload
        self._hold(len(payload))
        limit = self._limits.max_message_bytes
        if len(body) > limit + 5 or (len(body) >= 5 and _u32.unpack_from(body, 1)[0] > limit):
            self._send_status(
                stream,
                Status(
                    StatusCode.RESOURCE_EXHAUSTED, f"request message larger than the limit of {limit} bytes"
                ),
            )
        elif self._undispatched >= self._cap:  # the connection would stall: this call gives way
            self._send_status(
                stream,
                Status(
                    StatusCode.RESOURCE_EXHAUSTED,
                    f"more than {self._cap} request bytes waiting on one connection",
                ),
            )
        elif self._server.undispatched > self._limits.max_undispatched_bytes_total:
            total = self._limits.max_undispatched_bytes_total
            self._send_status(
                stream,
                Status(
                    StatusCode.RESOURCE_EXHAUSTED,
                    f"the server holds its limit of {total} request bytes being received; retry",
                ),
            )
        elif stream.recv_window <= self._limits.stream_window_bytes >> 1:
            increment = self._limits.stream_window_bytes - stream.recv_window
            stream.recv_window += increment
            self._write(frame(WINDOW_UPDATE, 0, stream_id, _u32.pack(increment)))
        if self._recv_window <= self._window >> 1:  # else no credit is due yet
            self._credit()

    def _hold(self, n: int) -> None:
        """Count request bytes held in stream bodies (negative: let go), here and server-wide."""
        self._undispatched += n
        self._server.undispatched += n

    def _credit(self) -> None:
        """Give the connection credit back, as far as bytes held undispatched allow: the client may
        then send at most what the cap leaves. Sent in half-window steps (so none is due while the
        client still has more than half the window: callers on the hot path check that first)."""
        target = min(self._window, self._cap - self._undispatched)
        increment = target - self._recv_window
        if increment > 0 and increment >= target >> 1:
            self._recv_window = target
            self._write(frame(WINDOW_UPDATE, 0, 0, _u32.pack(increment)))

    def _on_headers(self, stream_id: int, flags: int, payload: bytes) -> None:
        if stream_id == 0 or stream_id % 2 == 0:
            raise H2ConnectionError(H2Error.PROTOCOL_ERROR, f"HEADERS on stream {stream_id}")
        if flags & PADDED:
            payload = bytes(_unpad(payload))
        if flags & PRIORITY_FLAG:
            if len(payload) < 5:
                raise H2ConnectionError(H2Error.FRAME_SIZE_ERROR, "HEADERS too short for its priority")
            if _u32.unpack_from(payload)[0] & 0x7FFFFFFF == stream_id:
                raise H2ConnectionError(H2Error.PROTOCOL_ERROR, f"stream {stream_id} depends on itself")
            payload = payload[5:]
        if len(payload) > self._limits.max_header_list_bytes:
            raise H2ConnectionError(H2Error.ENHANCE_YOUR_CALM, "header block too large")
        if not flags & END_HEADERS:
            if not payload:
                self._spend(self._empties, "empty frames")
            self._continuation = (stream_id, flags, bytearray(payload))
            return
        self._on_header_block(stream_id, flags, payload)

    def _on_continuation(self, stream_id: int, flags: int, payload: bytes) -> None:
        if self._continuation is None or self._continuation[0] != stream_id:
            raise H2ConnectionError(H2Error.PROTOCOL_ERROR, "CONTINUATION without HEADERS")
        first_flags, block = self._continuation[1], self._continuation[2]
        if not payload and not flags & END_HEADERS:
            self._spend(self._empties, "empty CONTINUATION frames")
        block += payload
        if len(block) > self._limits.max_header_list_bytes:
            raise H2ConnectionError(H2Error.ENHANCE_YOUR_CALM, "header block too large")
        if flags & END_HEADERS:
            self._continuation = None
            self._on_header_block(stream_id, first_flags, bytes(block))

    def _on_header_block(self, stream_id: int, flags: int, block: bytes) -> None:
        head = self._head(block)  # always, to keep the dynamic table in step
        known = self._streams.get(stream_id)
        if known is not None:  # trailers from the client: only their END_STREAM matters
            if not known.half_closed:
                if not flags & END_STREAM:
                    raise H2ConnectionError(H2Error.PROTOCOL_ERROR, "trailers without END_STREAM")
                self._dispatch(known, known.body)
                self._credit()
            return
        if stream_id <= self._last_stream:
            return  # a closed stream: nothing more to do with it
        self._last_stream = stream_id
        if self._going_away:
            self._write(frame(RST_STREAM, 0, stream_id, _u32.pack(H2Error.REFUSED_STREAM)))
            return
        if len(self._streams) >= self._limits.max_concurrent_streams:
            self._spend(self._resets, "streams past SETTINGS_MAX_CONCURRENT_STREAMS")
            self._write(frame(RST_STREAM, 0, stream_id, _u32.pack(H2Error.REFUSED_STREAM)))
            return
        if head.refusal is not None:
            self._answer_http(stream_id, head.refusal)
            return
        stream = _Stream(
            stream_id,
            self._peer_initial_window,
            self._stream_recv_window,
            head.call,
            head.timeout_s,
            self._clock(),
        )
        self._streams[stream_id] = stream
        if flags & END_STREAM:
            self._dispatch(stream, b"")

    def _head(self, block: bytes) -> _Head:
        """A request's header block, read. Clients send the same block for every call once its
        fields are in the dynamic table (indexed, or literals kept out of it, so the table does not
        change): such a block is read once while the table stays as it was."""
        cached = self._heads.get(block)
        if cached is not None and cached[0] == self._table_version:
            return cached[1]
        # names and values are str (raw=False); undecodable UTF-8 raises, closing the connection
        head = _read_head(cast(list[tuple[str, str]], self._decoder.decode(block)), self._peer)
        if _table_neutral(block):
            if len(self._heads) >= HEAD_CACHE_SIZE:
                self._heads.clear()
            self._heads[block] = (self._table_version, head)
        else:
            self._table_version += 1  # the table may have changed: what is cached may mean other fields
        return head

    def _on_window_update(self, stream_id: int, payload: bytes) -> None:
        if len(payload) != 4:
            raise H2ConnectionError(H2Error.FRAME_SIZE_ERROR, "WINDOW_UPDATE of a wrong size")
        increment = _u32.unpack(payload)[0] & 0x7FFFFFFF
        if stream_id == 0:
            if increment == 0:
                raise H2ConnectionError(H2Error.PROTOCOL_ERROR, "WINDOW_UPDATE of 0")
            self._send_window += increment
            if self._send_window > MAX_WINDOW:
                raise H2ConnectionError(H2Error.FLOW_CONTROL_ERROR, "connection window past 2^31-1")
            self._flush_blocked()
            return
        if stream_id > self._last_stream:
            raise H2ConnectionError(H2Error.PROTOCOL_ERROR, f"WINDOW_UPDATE on idle stream {stream_id}")
        stream = self._streams.get(stream_id)
        if stream is None:
            return  # closed already
        if increment == 0:
            self._reset(stream, H2Error.PROTOCOL_ERROR)
            return
        stream.send_window += increment
        if stream.send_window > MAX_WINDOW:
            self._reset(stream, H2Error.FLOW_CONTROL_ERROR)
        elif stream.id in self._blocked:
            self._flush(stream)

    def _on_settings(self, stream_id: int, flags: int, payload: bytes) -> None:
        if stream_id != 0:
            raise H2ConnectionError(H2Error.PROTOCOL_ERROR, "SETTINGS on a stream")
        if flags & ACK:
            if payload:
                raise H2ConnectionError(H2Error.FRAME_SIZE_ERROR, "SETTINGS ACK with a payload")
            self._spend(self._settings, "SETTINGS frames")
            delta = self._limits.stream_window_bytes - self._stream_recv_window
            if delta:  # our SETTINGS_INITIAL_WINDOW_SIZE holds from now on (RFC 9113 6.9.2)
                self._stream_recv_window += delta
                for stream in self._streams.values():
                    stream.recv_window += delta
            return
        if len(payload) % 6:
            raise H2ConnectionError(H2Error.FRAME_SIZE_ERROR, "SETTINGS of a wrong size")
        self._spend(self._settings, "SETTINGS frames")
        more_credit = False
        for offset in range(0, len(payload), 6):
            key, value = struct.unpack_from(">HI", payload, offset)
            if key == INITIAL_WINDOW_SIZE:
                if value > MAX_WINDOW:
                    raise H2ConnectionError(H2Error.FLOW_CONTROL_ERROR, "initial window past 2^31-1")
                delta, self._peer_initial_window = value - self._peer_initial_window, value
                for stream in self._streams.values():
                    stream.send_window += delta
                    if stream.send_window > MAX_WINDOW:
                        raise H2ConnectionError(H2Error.FLOW_CONTROL_ERROR, "a stream window past 2^31-1")
                more_credit |= delta > 0
            elif key == MAX_FRAME_SIZE:
                if not MIN_FRAME <= value <= MAX_FRAME:
                    raise H2ConnectionError(H2Error.PROTOCOL_ERROR, f"SETTINGS_MAX_FRAME_SIZE {value}")
                more_credit |= value > self._peer_max_frame
                self._peer_max_frame = value
            elif key == ENABLE_PUSH and value > 1:
                raise H2ConnectionError(H2Error.PROTOCOL_ERROR, f"SETTINGS_ENABLE_PUSH {value}")
        self._write(frame(SETTINGS, ACK, 0))
        if more_credit:
            self._flush_blocked()

    def _on_ping(self, stream_id: int, flags: int, payload: bytes) -> None:
        if stream_id != 0:
            raise H2ConnectionError(H2Error.PROTOCOL_ERROR, "PING on a stream")
        if len(payload) != 8:
            raise H2ConnectionError(H2Error.FRAME_SIZE_ERROR, "PING of a wrong size")
        self._spend(self._pings, "PING frames")
        if not flags & ACK:
            self._write(frame(PING, ACK, 0, payload))

    def _on_rst_stream(self, stream_id: int, length: int) -> None:
        if stream_id == 0:
            raise H2ConnectionError(H2Error.PROTOCOL_ERROR, "RST_STREAM on stream 0")
        if length != 4:
            raise H2ConnectionError(H2Error.FRAME_SIZE_ERROR, "RST_STREAM of a wrong size")
        if stream_id > self._last_stream:
            raise H2ConnectionError(H2Error.PROTOCOL_ERROR, f"RST_STREAM on idle stream {stream_id}")
        self._spend(self._resets, "RST_STREAM frames")
        stream = self._streams.get(stream_id)
        if stream is not None:
            self._closed(stream)
            if stream.task is not None:
                stream.task.cancel()  # the client gave up: its call's work stops

    def _on_priority(self, stream_id: int, length: int) -> None:
        if stream_id == 0:
            raise H2ConnectionError(H2Error.PROTOCOL_ERROR, "PRIORITY on stream 0")
        if length != 5:
            stream = self._streams.get(stream_id)
            if stream is not None:
                self._reset(stream, H2Error.FRAME_SIZE_ERROR)
            else:
                self._write(frame(RST_STREAM, 0, stream_id, _u32.pack(H2Error.FRAME_SIZE_ERROR)))

    # -- calls ---------------------------------------------------------------------------------------

    def _dispatch(self, stream: _Stream, body: bytes | bytearray | memoryview) -> None:
        """The request is complete: check its one message and start the handler. Its bytes are
        no longer undispatched (the caller gives the credit back)."""
        if stream.body:
            self._hold(-len(stream.body))
            stream.body = bytearray()
        stream.half_closed = True
        call = stream.call
        handler = self._server.handlers.get(call.path)
        if handler is None:
            self._send_status(stream, Status(StatusCode.UNIMPLEMENTED, f"unknown method {call.path}"))
            return
        if len(body) < 5 or _u32.unpack_from(body, 1)[0] != len(body) - 5:
            self._send_status(
                stream, Status(StatusCode.INVALID_ARGUMENT, "a unary call takes exactly one message")
            )
            return
        if len(body) - 5 > self._limits.max_message_bytes:
            self._send_status(
                stream,
                Status(
                    StatusCode.RESOURCE_EXHAUSTED,
                    f"request message larger than the limit of {self._limits.max_message_bytes} bytes",
                ),
            )
            return
        if body[0] != 0:
            self._send_status(
                stream, Status(StatusCode.UNIMPLEMENTED, "compressed messages are not supported")
            )
            return
        message = body[5:] if isinstance(body, bytes) else bytes(memoryview(body)[5:])
        stream.task = asyncio.get_running_loop().create_task(self._run(stream, handler, message))

    async def _run(self, stream: _Stream, handler: Handler, message: bytes) -> None:
        call = stream.call
        self._server.in_flight += 1
        try:
            if stream.timeout_s is None:
                answer = await handler(message, call)
            else:
                async with asyncio.timeout(stream.timeout_s):
                    answer = await handler(message, call)
        except Status as status:
            self._send_status(stream, status)
        except TimeoutError:
            self._send_status(stream, Status(StatusCode.DEADLINE_EXCEEDED, "deadline exceeded"))
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("unexpected error in %s", call.path)
            self._send_status(stream, Status(StatusCode.INTERNAL, "internal server error"))
        else:
            self._send_answer(stream, answer)
        finally:
            self._server.in_flight -= 1

    def _live(self, stream: _Stream) -> bool:
        """False when the client reset the stream or the connection is gone."""
        return self._transport is not None and self._streams.get(stream.id) is stream

    def _send_status(self, stream: _Stream, status: Status) -> None:
        """A failed call: one trailers-only HEADERS frame, whether or not a handler ran (trailers
        after the answer's HEADERS when those are out); a client still sending is told to stop."""
        if not self._live(stream):
            return
        block = status_block(status) if stream.answering else _RESPONSE_HEADERS + status_block(status)
        self._write(frame(HEADERS, END_HEADERS | END_STREAM, stream.id, block))
        if not stream.half_closed:
            self._write(frame(RST_STREAM, 0, stream.id, _u32.pack(H2Error.NO_ERROR)))
        self._closed(stream)

    def _send_answer(self, stream: _Stream, answer: bytes) -> None:
        """Headers, the answer's message (as flow control allows), then OK trailers."""
        if not self._live(stream):
            return
        message = b"\x00" + _u32.pack(len(answer)) + answer
        size = len(message)
        if size <= self._send_window and size <= stream.send_window and size <= self._peer_max_frame:
            self._send_window -= size
            self._write(
                frame(HEADERS, END_HEADERS, stream.id, _RESPONSE_HEADERS)
                + frame(DATA, 0, stream.id, message)
                + frame(HEADERS, END_HEADERS | END_STREAM, stream.id, _OK_TRAILERS)
            )
            self._closed(stream)
            return
        self._write(frame(HEADERS, END_HEADERS, stream.id, _RESPONSE_HEADERS))
        stream.answering = True
        stream.opened = self._clock()
        stream.pending = memoryview(message)
        self._blocked[stream.id] = stream
        self._flush(stream)

    def _flush(self, stream: _Stream) -> None:
        """Send what credit allows of a waiting answer (nothing while the transport is full); its
        trailers once it is all out. Slices of a memoryview: each byte is copied once."""
        if self._paused:
            return
        pending, offset = stream.pending, stream.offset
        end = len(pending)
        chunks: list[bytes | memoryview] = []
        while offset < end:
            size = min(end - offset, self._send_window, stream.send_window, self._peer_max_frame)
            if size <= 0:
                break
            chunks.append(_pack_header((size << 8) | DATA, 0, stream.id))
            chunks.append(pending[offset : offset + size])
            offset += size
            self._send_window -= size
            stream.send_window -= size
        stream.offset = offset
        if offset == end:
            chunks.append(frame(HEADERS, END_HEADERS | END_STREAM, stream.id, _OK_TRAILERS))
            self._closed(stream)
        if chunks:
            self._write(b"".join(chunks))

    def _flush_blocked(self) -> None:
        for stream in list(self._blocked.values()):
            if self._send_window <= 0 or self._paused:
                return
            self._flush(stream)

    def _answer_http(self, stream_id: int, status_field: bytes) -> None:
        """A request that is not gRPC at all gets a bare HTTP status (its stream is never opened)."""
        self._write(
            frame(HEADERS, END_HEADERS | END_STREAM, stream_id, status_field)
            + frame(RST_STREAM, 0, stream_id, _u32.pack(H2Error.NO_ERROR))
        )

    def _reset(self, stream: _Stream, code: H2Error) -> None:
        """A stream error: RST_STREAM, and its call stops."""
        self._write(frame(RST_STREAM, 0, stream.id, _u32.pack(code)))
        self._closed(stream)
        if stream.task is not None:
            stream.task.cancel()

    def _closed(self, stream: _Stream) -> None:
        self._streams.pop(stream.id, None)
        if stream.answering:
            self._blocked.pop(stream.id, None)
            stream.pending = _NO_BYTES
        if stream.body:  # dropped before dispatch: its credit may come back
            self._hold(-len(stream.body))
            stream.body = bytearray()
            self._credit()
        if self._going_away and not self._streams:
            self._server.idle.set()
            self._shut()  # GOAWAY is out and nothing is left in flight

    def _cancel_calls(self) -> None:
        for stream in self._streams.values():
            if stream.task is not None:
                stream.task.cancel()
        self._streams.clear()

    # -- connection --------------------------------------------------------------------------------

    def _write(self, data: bytes) -> None:
        if self._transport is not None:
            self._transport.write(data)

    def _no_preface(self) -> None:
        self._timer = None
        if not self._preface and self._transport is not None:
            log.info("closing a gRPC connection that sent no HTTP/2 preface in time")
            self._shut()

    def _idle_check(self) -> None:
        """Every idle_timeout_s / 2: two checks in a row with no stream open and none opened close
        the connection."""
        self._timer = None
        if self._transport is None:
            return
        if self._streams or self._last_stream != self._idle_mark:
            self._idle_mark, self._quiet_checks = self._last_stream, 0
        else:
            self._quiet_checks += 1
            if self._quiet_checks >= 2:
                self._close(H2Error.NO_ERROR, "idle", quiet=True)
                return
        self._timer = asyncio.get_running_loop().call_later(self._limits.idle_timeout_s / 2, self._idle_check)

    def _read_check(self) -> None:
        """Every message_timeout_s / 2: streams whose request, or whose answer waiting for the
        client's credit, has taken longer are ended."""
        self._read_timer = None
        if self._transport is None:
            return
        limit = self._limits.message_timeout_s
        oldest = self._clock() - limit
        for stream in list(self._streams.values()):
            if stream.opened >= oldest:
                continue
            if stream.answering:
                self._reset(stream, H2Error.CANCEL)
            elif not stream.half_closed:
                status = Status(
                    StatusCode.DEADLINE_EXCEEDED, f"request message not received within {limit:g} s"
                )
                self._send_status(stream, status)
        if self._transport is not None:
            self._read_timer = asyncio.get_running_loop().call_later(limit / 2, self._read_check)

    def _close(self, code: H2Error, reason: str, quiet: bool = False) -> None:
        """GOAWAY with `code`, then close: a connection error (its calls are cancelled), or a
        refused or idle connection (`quiet`: not logged)."""
        if self._transport is None:
            return
        if not quiet:
            log.info("closing a gRPC connection: %s", reason)
        self._write(frame(GOAWAY, 0, 0, struct.pack(">II", self._last_stream, code) + reason.encode()[:256]))
        self._cancel_calls()
        self._shut()

    def _shut(self) -> None:
        """End our side once what is written is out (FIN), reading and dropping what the peer still
        sends: closing with unread data would reset the connection and lose the GOAWAY. The peer's
        FIN closes it; one that does not read or close within LINGER_S is aborted."""
        transport = self._transport
        if transport is None:
            return
        self._transport, self._closing = None, transport
        self._buffer.clear()
        for timer in (self._timer, self._read_timer):
            if timer is not None:
                timer.cancel()
        self._read_timer = None
        try:
            if transport.can_write_eof():
                if self._paused:
                    transport.resume_reading()  # to see its FIN
                transport.write_eof()
            else:
                transport.close()
        except OSError:  # the peer is gone already (asyncio's write_eof lets ENOTCONN through)
            transport.abort()
            return
        self._timer = asyncio.get_running_loop().call_later(LINGER_S, self.abort)

    def go_away(self) -> None:
        """Graceful shutdown: GOAWAY with the last stream id; new streams are refused; those open
        may finish; closed at once when none is open."""
        if self._going_away or self._transport is None:
            return
        self._going_away = True
        self._write(frame(GOAWAY, 0, 0, struct.pack(">II", self._last_stream, H2Error.NO_ERROR)))
        if not self._streams:
            self._shut()

    def cut(self, status: Status) -> None:
        """The end of a shutdown: every call still open is answered `status`, then close."""
        for stream in list(self._streams.values()):
            task = stream.task
            self._send_status(stream, status)
            if task is not None:
                task.cancel()
        self._shut()

    @property
    def busy(self) -> bool:
        return bool(self._streams)

    def abort(self) -> None:
        transport = self._transport or self._closing
        if transport is not None:
            transport.abort()


@dataclass(frozen=True, slots=True)
class _Head:
    """A request's headers as the server needs them: a bare HTTP status to refuse it with (not
    gRPC), or its call and deadline."""

    refusal: bytes | None
    call: Call
    timeout_s: float | None


def _read_head(headers: list[tuple[str, str]], peer: str | None) -> _Head:
    method = path = content_type = ""
    timeout_s: float | None = None
    metadata: list[tuple[str, str]] = []
    for name, value in headers:
        if name.startswith(":"):
            if name == ":path":
                path = value
            elif name == ":method":
                method = value
        elif name == "content-type":
            content_type = value
        elif name == "grpc-timeout":
            timeout_s = parse_timeout(value)
        else:
            metadata.append((name, value))
    refusal = None
    if method != "POST":
        refusal = _status_field(405)
    elif not content_type.startswith("application/grpc"):
        refusal = _status_field(415)
    return _Head(refusal, Call(path, tuple(metadata), peer), timeout_s)


def _table_neutral(block: bytes) -> bool:
    """True when an HPACK block (already decoded without error) leaves the dynamic table as it
    was: only indexed fields (RFC 7541 6.1) and literals not added to it (6.2.2, 6.2.3)."""
    pos, end = 0, len(block)
    while pos < end:
        byte = block[pos]
        if byte & 0x80:  # indexed field
            pos = _hpack_int_end(block, pos, 7)[1]
        elif byte & 0xE0 == 0:  # literal without indexing / never indexed
            index, pos = _hpack_int_end(block, pos, 4)
            if index == 0:  # a literal name
                length, pos = _hpack_int_end(block, pos, 7)
                pos += length
            length, pos = _hpack_int_end(block, pos, 7)
            pos += length
        else:  # added to the table, or a table size update
            return False
    return True


def _hpack_int_end(block: bytes, pos: int, prefix_bits: int) -> tuple[int, int]:
    """The integer at block[pos] with an N-bit prefix (RFC 7541 5.1), and where it ends."""
    limit = (1 << prefix_bits) - 1
    value = block[pos] & limit
    pos += 1
    if value == limit:
        shift = 0
        while True:
            byte = block[pos]
            pos += 1
            value += (byte & 0x7F) << shift
            shift += 7
            if not byte & 0x80:
                break
    return value, pos


def _unpad(payload: bytes | memoryview) -> bytes | memoryview:
    if not payload or payload[0] >= len(payload):
        raise H2ConnectionError(H2Error.PROTOCOL_ERROR, "padding longer than the frame")
    return payload[1 : len(payload) - payload[0]]


def _status_field(status: int) -> bytes:
    """`:status` as a literal with the static table's name (index 8), never indexed."""
    return b"\x08" + _hpack_int(3, 7, 0) + str(status).encode()


class H2Server:
    """A listening gRPC server: `handlers` maps method paths (`/package.Service/Method`) to
    handlers. `clock` (monotonic seconds) paces the frame budgets; tests inject their own.

    Shutdown, in two steps or one: `begin_shutdown()` at once (no new connections or calls),
    `end_shutdown()` at the deadline (calls still in flight answered UNAVAILABLE); `stop(grace_s)`
    does both with `wait_idle(grace_s)` between them."""

    def __init__(
        self,
        handlers: Mapping[str, Handler],
        limits: Limits | None = None,
        *,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.handlers = dict(handlers)
        self.limits = limits or Limits()
        self.clock = clock
        # hpack logs every header it decodes at DEBUG, API keys included, and pays for it per call
        logging.getLogger("hpack").setLevel(logging.WARNING)
        self.connections: set[Connection] = set()
        self.in_flight = 0
        self.undispatched = 0  # request bytes held in stream bodies, all connections together
        self.idle = asyncio.Event()  # set when a connection may have become idle
        self.shutting_down = False
        self._server: asyncio.Server | None = None
        self._stopped = False

    async def start(self, host: str, port: int) -> int:
        """Listen on host:port (port 0: any free one); the port bound. OSError when it is taken."""
        loop = asyncio.get_running_loop()
        if host == "::":  # every address, IPv4 too (asyncio's own sockets would be IPv6-only)
            sock = socket.socket(socket.AF_INET6, socket.SOCK_STREAM)
            try:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
                sock.bind(("::", port))
            except OSError:
                sock.close()
                raise
            self._server = await loop.create_server(lambda: Connection(self), sock=sock)
        else:
            self._server = await loop.create_server(lambda: Connection(self), host, port, reuse_address=True)
        return int(self._server.sockets[0].getsockname()[1])

    def begin_shutdown(self) -> None:
        """At once: stop listening, send every connection GOAWAY (NO_ERROR, its last stream id) and
        refuse the streams it opens after that (RST_STREAM REFUSED_STREAM, which gRPC clients see
        as UNAVAILABLE or retry elsewhere); connections with no call open are closed. Calls in
        flight go on. Synchronous, for the loop's thread: e.g. `loop.add_signal_handler(SIGTERM,
        server.begin_shutdown)`. Idempotent."""
        self.shutting_down = True
        if self._server is not None:
            self._server.close()
        for connection in list(self.connections):
            connection.go_away()

    async def wait_idle(self, timeout_s: float) -> bool:
        """Wait up to timeout_s for every open call to end; True when none is left."""
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(timeout_s):
                while any(connection.busy for connection in self.connections):
                    self.idle.clear()
                    await self.idle.wait()
        return not any(connection.busy for connection in self.connections)

    def end_shutdown(self, message: str = "server shutting down") -> None:
        """The deadline: every call still open is answered UNAVAILABLE (`message`) and its handler
        cancelled; every connection is closed (aborted if its peer does not read within LINGER_S).
        Calls begin_shutdown() first if it was not."""
        self.begin_shutdown()
        status = Status(StatusCode.UNAVAILABLE, message)
        for connection in list(self.connections):
            connection.cut(status)

    async def stop(self, grace_s: float) -> None:
        """begin_shutdown(), let open calls finish within grace_s, end_shutdown(), then wait (up to
        LINGER_S) for the connections to close."""
        if self._stopped:
            return
        self._stopped = True
        self.begin_shutdown()
        await self.wait_idle(grace_s)
        self.end_shutdown()
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(LINGER_S):
                while self.connections:
                    self.idle.clear()
                    await self.idle.wait()
        for connection in list(self.connections):
            connection.abort()
        self._server = None
