"""gRPC's HTTP/2 transport for unary calls (cleartext, prior knowledge), on one asyncio Protocol.

Why not grpcio's server: measured here (docs/benchmarks.md, "gRPC against HTTP"), a bare grpcio
call costs the server 160-190 us of CPU, more than our whole HTTP request (~100 us). This module
does only what a unary gRPC service needs: frames, SETTINGS / PING / GOAWAY, flow control both
ways, HPACK decoding (the `hpack` library; answers use fixed, never-indexed header blocks), the
5-byte message framing, deadlines (`grpc-timeout`) and cancellation (RST_STREAM, lost
connections). Handlers get the message bytes and a `Call`, return the answer's bytes or raise
`Status`. Every limit is bounded: frame size, header list size, message size, concurrent streams,
and the time a new connection may take to say the HTTP/2 preface.

Spec: RFC 9113 (HTTP/2), RFC 7541 (HPACK), grpc/doc/PROTOCOL-HTTP2.md.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
import socket
import struct
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
    """Bounds of one server. `max_message_bytes`: a request message larger is RESOURCE_EXHAUSTED
    before it is all read; `preface_timeout_s`: a connection that has not opened HTTP/2 by then is
    closed."""

    max_message_bytes: int = 64 * 2**20
    max_concurrent_streams: int = 256
    max_header_list_bytes: int = 16_384
    stream_window_bytes: int = 4 * 2**20
    connection_window_bytes: int = 16 * 2**20
    max_frame_bytes: int = 1 * 2**20
    preface_timeout_s: float = 10.0


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


class _Stream:
    __slots__ = (
        "body",
        "call",
        "half_closed",
        "id",
        "pending",
        "received",
        "send_window",
        "task",
        "timeout_s",
    )

    def __init__(self, stream_id: int, send_window: int, call: Call, timeout_s: float | None) -> None:
        self.id = stream_id
        self.send_window = send_window
        self.call = call
        self.timeout_s = timeout_s
        self.body = bytearray()
        self.half_closed = False  # the client's END_STREAM has come
        self.received = 0  # bytes not yet credited back by a stream WINDOW_UPDATE
        self.task: asyncio.Task[None] | None = None
        self.pending = b""  # answer bytes waiting for flow-control credit


class Connection(asyncio.Protocol):
    """One client connection: parses frames as they arrive, runs one task per call."""

    def __init__(self, server: H2Server) -> None:
        self._server = server
        self._limits = server.limits
        self._transport: asyncio.Transport | None = None
        self._buffer = b""
        self._preface = False
        self._decoder = hpack.Decoder(max_header_list_size=self._limits.max_header_list_bytes)
        self._streams: dict[int, _Stream] = {}
        self._last_stream = 0
        self._send_window = DEFAULT_WINDOW
        self._peer_initial_window = DEFAULT_WINDOW
        self._peer_max_frame = MIN_FRAME
        self._received = 0  # connection-level bytes not yet credited back
        self._heads: dict[bytes, tuple[int, _Head]] = {}  # header blocks read, by table version
        self._table_version = 0
        self._continuation: tuple[int, int, bytearray] | None = None  # stream, flags, block so far
        self._blocked: dict[int, _Stream] = {}  # streams with answer bytes waiting for credit
        self._going_away = False
        self._peer: str | None = None
        self._timer: asyncio.TimerHandle | None = None

    # -- asyncio.Protocol ----------------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = transport  # type: ignore[assignment]  # uvloop's is no asyncio.Transport subclass
        peername = transport.get_extra_info("peername")
        self._peer = peername[0] if isinstance(peername, tuple) and isinstance(peername[0], str) else None
        limits = self._limits
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
        if limits.connection_window_bytes > DEFAULT_WINDOW:  # the connection's starts at 65,535
            hello += frame(WINDOW_UPDATE, 0, 0, _u32.pack(limits.connection_window_bytes - DEFAULT_WINDOW))
        self._write(hello)
        self._timer = asyncio.get_running_loop().call_later(limits.preface_timeout_s, self._no_preface)
        self._server.connections.add(self)

    def connection_lost(self, exc: Exception | None) -> None:
        self._server.connections.discard(self)
        if self._timer is not None:
            self._timer.cancel()
        for stream in self._streams.values():
            if stream.task is not None:
                stream.task.cancel()
        self._streams.clear()
        self._blocked.clear()
        self._transport = None

    def data_received(self, data: bytes) -> None:
        try:
            self._frames(self._buffer + data if self._buffer else data)
        except H2ConnectionError as exc:
            self._close(exc.code, str(exc))
        except (hpack.HPACKError, UnicodeDecodeError) as exc:
            self._close(H2Error.COMPRESSION_ERROR, f"bad header block: {exc}")
        except Exception:  # a bug here must not leave the connection half-parsed
            log.exception("closing a gRPC connection after an unexpected error")
            self._close(H2Error.INTERNAL_ERROR, "internal error")

    def eof_received(self) -> bool | None:
        return None  # close our side too

    # -- frames in ---------------------------------------------------------------------------------

    def _frames(self, data: bytes) -> None:
        pos = 0
        if not self._preface:
            if len(data) < len(PREFACE):
                if not PREFACE.startswith(data):
                    raise H2ConnectionError(H2Error.PROTOCOL_ERROR, "not an HTTP/2 connection preface")
                self._buffer = data
                return
            if data[: len(PREFACE)] != PREFACE:
                raise H2ConnectionError(H2Error.PROTOCOL_ERROR, "not an HTTP/2 connection preface")
            self._preface = True
            if self._timer is not None:
                self._timer.cancel()
                self._timer = None
            pos = len(PREFACE)
        end = len(data)
        max_frame = self._limits.max_frame_bytes
        while end - pos >= 9:
            word, flags, stream_id = _unpack_header(data, pos)
            length, kind = word >> 8, word & 0xFF
            stream_id &= 0x7FFFFFFF
            if length > max_frame:
                raise H2ConnectionError(H2Error.FRAME_SIZE_ERROR, f"frame of {length} bytes")
            if end - pos - 9 < length:
                break
            payload = data[pos + 9 : pos + 9 + length]
            pos += 9 + length
            if self._continuation is not None and kind != CONTINUATION:
                raise H2ConnectionError(H2Error.PROTOCOL_ERROR, "expected CONTINUATION")
            if kind == DATA:
                self._on_data(stream_id, flags, payload)
            elif kind == HEADERS:
                self._on_headers(stream_id, flags, payload)
            elif kind == WINDOW_UPDATE:
                self._on_window_update(stream_id, payload)
            elif kind == SETTINGS:
                self._on_settings(stream_id, flags, payload)
            elif kind == PING:
                self._on_ping(stream_id, flags, payload)
            elif kind == RST_STREAM:
                self._on_rst_stream(stream_id, payload)
            elif kind == CONTINUATION:
                self._on_continuation(stream_id, flags, payload)
            elif kind == GOAWAY:
                self._going_away = True  # the client opens no more streams; those open finish
            elif kind == PUSH_PROMISE:
                raise H2ConnectionError(H2Error.PROTOCOL_ERROR, "a client may not push")
            # PRIORITY and unknown frame types are ignored (RFC 9113 5.5, 5.3.2)
        self._buffer = data[pos:] if pos < end else b""

    def _on_data(self, stream_id: int, flags: int, payload: bytes) -> None:
        if stream_id == 0:
            raise H2ConnectionError(H2Error.PROTOCOL_ERROR, "DATA on stream 0")
        size = len(payload)
        self._received += size
        if self._received >= self._limits.connection_window_bytes // 2:
            self._write(frame(WINDOW_UPDATE, 0, 0, _u32.pack(self._received)))
            self._received = 0
        stream = self._streams.get(stream_id)
        if stream is None or stream.half_closed:
            if stream_id > self._last_stream:
                raise H2ConnectionError(H2Error.PROTOCOL_ERROR, f"DATA on idle stream {stream_id}")
            return  # a stream we have closed or answered already: its data is dropped
        if flags & PADDED:
            payload = _unpad(payload)
        stream.body += payload
        if len(stream.body) > self._limits.max_message_bytes + 5:
            self._send_status(
                stream,
                Status(
                    StatusCode.RESOURCE_EXHAUSTED,
                    f"request message larger than the limit of {self._limits.max_message_bytes} bytes",
                ),
            )
            return
        if flags & END_STREAM:
            self._dispatch(stream)
            return
        stream.received += size
        if stream.received >= self._limits.stream_window_bytes // 2:
            self._write(frame(WINDOW_UPDATE, 0, stream_id, _u32.pack(stream.received)))
            stream.received = 0

    def _on_headers(self, stream_id: int, flags: int, payload: bytes) -> None:
        if stream_id == 0 or stream_id % 2 == 0:
            raise H2ConnectionError(H2Error.PROTOCOL_ERROR, f"HEADERS on stream {stream_id}")
        if flags & PADDED:
            payload = _unpad(payload)
        if flags & PRIORITY_FLAG:
            payload = payload[5:]
        if len(payload) > self._limits.max_header_list_bytes:
            raise H2ConnectionError(H2Error.ENHANCE_YOUR_CALM, "header block too large")
        if not flags & END_HEADERS:
            self._continuation = (stream_id, flags, bytearray(payload))
            return
        self._on_header_block(stream_id, flags, payload)

    def _on_continuation(self, stream_id: int, flags: int, payload: bytes) -> None:
        if self._continuation is None or self._continuation[0] != stream_id:
            raise H2ConnectionError(H2Error.PROTOCOL_ERROR, "CONTINUATION without HEADERS")
        first_flags, block = self._continuation[1], self._continuation[2]
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
            if not known.half_closed and flags & END_STREAM:
                self._dispatch(known)
            return
        if stream_id <= self._last_stream:
            return  # a closed stream: nothing more to do with it
        self._last_stream = stream_id
        if self._going_away or len(self._streams) >= self._limits.max_concurrent_streams:
            self._write(frame(RST_STREAM, 0, stream_id, _u32.pack(H2Error.REFUSED_STREAM)))
            return
        if head.refusal is not None:
            self._answer_http(stream_id, head.refusal)
            return
        stream = _Stream(stream_id, self._peer_initial_window, head.call, head.timeout_s)
        self._streams[stream_id] = stream
        if flags & END_STREAM:
            self._dispatch(stream)

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
            for blocked in list(self._blocked.values()):
                self._flush(blocked)
            return
        stream = self._streams.get(stream_id)
        if stream is not None:
            stream.send_window += increment
            if stream.id in self._blocked:
                self._flush(stream)

    def _on_settings(self, stream_id: int, flags: int, payload: bytes) -> None:
        if stream_id != 0:
            raise H2ConnectionError(H2Error.PROTOCOL_ERROR, "SETTINGS on a stream")
        if flags & ACK:
            return
        if len(payload) % 6:
            raise H2ConnectionError(H2Error.FRAME_SIZE_ERROR, "SETTINGS of a wrong size")
        for offset in range(0, len(payload), 6):
            key, value = struct.unpack_from(">HI", payload, offset)
            if key == INITIAL_WINDOW_SIZE:
                if value > MAX_WINDOW:
                    raise H2ConnectionError(H2Error.FLOW_CONTROL_ERROR, "initial window past 2^31-1")
                delta, self._peer_initial_window = value - self._peer_initial_window, value
                for stream in self._streams.values():
                    stream.send_window += delta
            elif key == MAX_FRAME_SIZE:
                if not MIN_FRAME <= value <= MAX_FRAME:
                    raise H2ConnectionError(H2Error.PROTOCOL_ERROR, f"SETTINGS_MAX_FRAME_SIZE {value}")
                self._peer_max_frame = value
        self._write(frame(SETTINGS, ACK, 0))
        for stream in list(self._blocked.values()):
            self._flush(stream)

    def _on_ping(self, stream_id: int, flags: int, payload: bytes) -> None:
        if stream_id != 0 or len(payload) != 8:
            raise H2ConnectionError(H2Error.PROTOCOL_ERROR, "malformed PING")
        if not flags & ACK:
            self._write(frame(PING, ACK, 0, payload))

    def _on_rst_stream(self, stream_id: int, payload: bytes) -> None:
        stream = self._streams.pop(stream_id, None)
        if stream is None:
            return
        self._blocked.pop(stream_id, None)
        if stream.task is not None:
            stream.task.cancel()  # the client gave up: its call's work stops

    # -- calls ---------------------------------------------------------------------------------------

    def _dispatch(self, stream: _Stream) -> None:
        """The request is complete: check its one message and start the handler."""
        call = stream.call
        body = stream.body
        stream.body = bytearray()
        stream.half_closed = True
        handler = self._server.handlers.get(call.path)
        if handler is None:
            self._send_status(stream, Status(StatusCode.UNIMPLEMENTED, f"unknown method {call.path}"))
            return
        if len(body) < 5 or _u32.unpack_from(body, 1)[0] != len(body) - 5:
            self._send_status(
                stream, Status(StatusCode.INVALID_ARGUMENT, "a unary call takes exactly one message")
            )
            return
        if body[0] != 0:
            self._send_status(
                stream, Status(StatusCode.UNIMPLEMENTED, "compressed messages are not supported")
            )
            return
        stream.task = asyncio.get_running_loop().create_task(self._run(stream, handler, bytes(body[5:])))

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
        """A failed call: one trailers-only HEADERS frame, whether or not a handler ran; a client
        still sending is told to stop."""
        if not self._live(stream):
            return
        block = _RESPONSE_HEADERS + status_block(status)
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
        stream.pending = message
        self._blocked[stream.id] = stream
        self._flush(stream)

    def _flush(self, stream: _Stream) -> None:
        """Send what credit allows of a waiting answer; its trailers once it is all out."""
        chunks = []
        while stream.pending:
            size = min(len(stream.pending), self._send_window, stream.send_window, self._peer_max_frame)
            if size <= 0:
                break
            chunks.append(frame(DATA, 0, stream.id, stream.pending[:size]))
            stream.pending = stream.pending[size:]
            self._send_window -= size
            stream.send_window -= size
        if not stream.pending:
            chunks.append(frame(HEADERS, END_HEADERS | END_STREAM, stream.id, _OK_TRAILERS))
            del self._blocked[stream.id]
            self._closed(stream)
        if chunks:
            self._write(b"".join(chunks))

    def _answer_http(self, stream_id: int, status_field: bytes) -> None:
        """A request that is not gRPC at all gets a bare HTTP status (its stream is never opened)."""
        self._write(
            frame(HEADERS, END_HEADERS | END_STREAM, stream_id, status_field)
            + frame(RST_STREAM, 0, stream_id, _u32.pack(H2Error.NO_ERROR))
        )

    def _closed(self, stream: _Stream) -> None:
        self._streams.pop(stream.id, None)
        if self._going_away and not self._streams:
            self._server.idle.set()

    # -- connection --------------------------------------------------------------------------------

    def _write(self, data: bytes) -> None:
        if self._transport is not None:
            self._transport.write(data)

    def _no_preface(self) -> None:
        self._timer = None
        if not self._preface and self._transport is not None:
            log.info("closing a gRPC connection that sent no HTTP/2 preface in time")
            self._transport.close()

    def _close(self, code: H2Error, reason: str) -> None:
        log.info("closing a gRPC connection: %s", reason)
        self._write(frame(GOAWAY, 0, 0, struct.pack(">II", self._last_stream, code) + reason.encode()[:256]))
        if self._transport is not None:
            self._transport.close()

    def go_away(self) -> None:
        """Graceful shutdown: no new streams; those open may finish."""
        self._going_away = True
        self._write(frame(GOAWAY, 0, 0, struct.pack(">II", self._last_stream, H2Error.NO_ERROR)))

    @property
    def busy(self) -> bool:
        return bool(self._streams)

    def abort(self) -> None:
        if self._transport is not None:
            self._transport.abort()


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


def _unpad(payload: bytes) -> bytes:
    if not payload or payload[0] >= len(payload):
        raise H2ConnectionError(H2Error.PROTOCOL_ERROR, "padding longer than the frame")
    return payload[1 : len(payload) - payload[0]]


def _status_field(status: int) -> bytes:
    """`:status` as a literal with the static table's name (index 8), never indexed."""
    return b"\x08" + _hpack_int(3, 7, 0) + str(status).encode()


class H2Server:
    """A listening gRPC server: `handlers` maps method paths (`/package.Service/Method`) to
    handlers."""

    def __init__(self, handlers: Mapping[str, Handler], limits: Limits | None = None) -> None:
        self.handlers = dict(handlers)
        self.limits = limits or Limits()
        # hpack logs every header it decodes at DEBUG, API keys included, and pays for it per call
        logging.getLogger("hpack").setLevel(logging.WARNING)
        self.connections: set[Connection] = set()
        self.in_flight = 0
        self.idle = asyncio.Event()
        self._server: asyncio.Server | None = None

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

    async def stop(self, grace_s: float) -> None:
        """Stop listening, send GOAWAY, let open calls finish within grace_s, then close."""
        if self._server is None:
            return
        self._server.close()
        for connection in list(self.connections):
            connection.go_away()
        if any(connection.busy for connection in self.connections):
            self.idle.clear()
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(grace_s):
                    while any(connection.busy for connection in self.connections):
                        await self.idle.wait()
                        self.idle.clear()
        for connection in list(self.connections):
            connection.abort()
        self._server = None
