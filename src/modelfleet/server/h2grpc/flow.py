"""Flow control both ways: DATA in (credit kept within the bytes a connection may hold
undispatched), WINDOW_UPDATE, and SETTINGS (which move windows and frame sizes)."""

from __future__ import annotations

import struct

from modelfleet.server.h2grpc.base import ConnectionState
from modelfleet.server.h2grpc.headers import _unpad
from modelfleet.server.h2grpc.wire import (
    ACK,
    ENABLE_PUSH,
    END_STREAM,
    INITIAL_WINDOW_SIZE,
    MAX_FRAME,
    MAX_FRAME_SIZE,
    MAX_WINDOW,
    MIN_FRAME,
    PADDED,
    SETTINGS,
    WINDOW_UPDATE,
    H2ConnectionError,
    H2Error,
    Status,
    StatusCode,
    _u32,
    frame,
)


class FlowControl(ConnectionState):
    """Windows and credit: what the peer may send, what we may send."""

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
