"""Frames in: the frame loop, header blocks (HEADERS / CONTINUATION), PING, RST_STREAM and
PRIORITY, and the budgets of frames that carry no call."""

from __future__ import annotations

import asyncio
from typing import cast

from modelfleet.server.h2grpc.base import ConnectionState
from modelfleet.server.h2grpc.headers import HEAD_CACHE_SIZE, _Head, _read_head, _table_neutral, _unpad
from modelfleet.server.h2grpc.wire import (
    ACK,
    CONTINUATION,
    DATA,
    END_HEADERS,
    END_STREAM,
    GOAWAY,
    HEADERS,
    PADDED,
    PING,
    PREFACE,
    PRIORITY,
    PRIORITY_FLAG,
    PUSH_PROMISE,
    RST_STREAM,
    SETTINGS,
    SMALL_DATA_FRAME,
    WINDOW_UPDATE,
    H2ConnectionError,
    H2Error,
    _Budget,
    _Stream,
    _u32,
    _unpack_header,
    frame,
)


class FrameReader(ConnectionState):
    """Reads frames and dispatches them by type."""

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
        head = _read_head(
            cast(list[tuple[str, str]], self._decoder.decode(block)), self._peer, self._hold_reads
        )
        if _table_neutral(block):
            if len(self._heads) >= HEAD_CACHE_SIZE:
                self._heads.clear()
            self._heads[block] = (self._table_version, head)
        else:
            self._table_version += 1  # the table may have changed: what is cached may mean other fields
        return head

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
