"""Calls: a complete request message dispatched to its handler, its answer or status written
as flow control allows, resets and closes of streams."""

from __future__ import annotations

import asyncio
import logging

from modelfleet.server.h2grpc.base import ConnectionState
from modelfleet.server.h2grpc.headers import _OK_TRAILERS, _RESPONSE_HEADERS, status_block
from modelfleet.server.h2grpc.wire import (
    _NO_BYTES,
    DATA,
    END_HEADERS,
    END_STREAM,
    HEADERS,
    RST_STREAM,
    H2Error,
    Handler,
    Status,
    StatusCode,
    _pack_header,
    _Stream,
    _u32,
    frame,
)

log = logging.getLogger("modelfleet.server.h2grpc")


class Calls(ConnectionState):
    """One task per call; answers wait for credit without blocking other streams."""

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
