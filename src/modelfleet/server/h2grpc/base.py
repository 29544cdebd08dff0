"""The state of one HTTP/2 connection, which the parts of Connection (frames.py, flow.py,
calls.py, connection.py) share; the methods each part calls on another are declared here."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import TYPE_CHECKING

import hpack

from modelfleet.server.h2grpc.headers import _Head
from modelfleet.server.h2grpc.wire import (
    DEFAULT_WINDOW,
    MIN_FRAME,
    H2Error,
    ServerState,
    Status,
    _Budget,
    _Stream,
)


class ConnectionState(asyncio.Protocol):
    """The state of one connection, shared by the parts of Connection (frames, flow, calls)."""

    def __init__(self, server: ServerState) -> None:
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
        self._held = False  # a call's quota holds the connection: we do not read (connection.py)
        self._hold_timer: asyncio.TimerHandle | None = None
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

    if TYPE_CHECKING:  # what one part of Connection calls on another (frames, flow, calls, connection)

        def _write(self, data: bytes) -> None: ...
        def _spend(self, budget: _Budget, what: str) -> None: ...
        def _dispatch(self, stream: _Stream, body: bytes | bytearray | memoryview) -> None: ...
        def _send_status(self, stream: _Stream, status: Status) -> None: ...
        def _reset(self, stream: _Stream, code: H2Error) -> None: ...
        def _hold(self, n: int) -> None: ...
        def _flush_blocked(self) -> None: ...
        def _credit(self) -> None: ...
        def _shut(self) -> None: ...
        def _read_check(self) -> None: ...
        def _on_window_update(self, stream_id: int, payload: bytes) -> None: ...
        def _on_settings(self, stream_id: int, flags: int, payload: bytes) -> None: ...
        def _on_data(self, stream_id: int, flags: int, payload: bytes | memoryview) -> None: ...
        def _idle_check(self) -> None: ...
        def _flush(self, stream: _Stream) -> None: ...
        def _closed(self, stream: _Stream) -> None: ...
        def _answer_http(self, stream_id: int, status_field: bytes) -> None: ...
        def _hold_reads(self) -> Callable[[], bool]: ...
