"""One client connection: the asyncio Protocol that assembles frames in, flow control and calls,
with the connection's own life (preface, idle and message timeouts, GOAWAY, close)."""

from __future__ import annotations

import asyncio
import logging
import struct
from collections.abc import Callable

import hpack

from modelfleet.server.h2grpc.calls import Calls
from modelfleet.server.h2grpc.flow import FlowControl
from modelfleet.server.h2grpc.frames import FrameReader
from modelfleet.server.h2grpc.wire import (
    DEFAULT_WINDOW,
    GOAWAY,
    INITIAL_WINDOW_SIZE,
    LINGER_S,
    MAX_CONCURRENT_STREAMS,
    MAX_FRAME_SIZE,
    MAX_HEADER_LIST_SIZE,
    SETTINGS,
    WINDOW_UPDATE,
    H2ConnectionError,
    H2Error,
    Status,
    StatusCode,
    _u32,
    frame,
)
from modelfleet.server.quota import hold_timeout_s

log = logging.getLogger("modelfleet.server.h2grpc")


class Connection(FrameReader, FlowControl, Calls):
    """One client connection: parses frames as they arrive, runs one task per call."""

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
        for timer in (self._timer, self._read_timer, self._hold_timer):
            if timer is not None:
                timer.cancel()
        self._timer = self._read_timer = self._hold_timer = None
        self._held = False
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
            if not self._held:
                transport.resume_reading()
            self._flush_blocked()

    def _hold_reads(self) -> Callable[[], bool]:
        """Read nothing more from this connection (its calls still answer) until the returned
        callable is called, or quota.MAX_HOLD_S (spread) has passed."""
        transport = self._transport
        if not self._held and transport is not None and not transport.is_closing():
            self._held = True
            transport.pause_reading()
            self._hold_timer = asyncio.get_running_loop().call_later(hold_timeout_s(), self._let_reads)
        return self._let_reads

    def _let_reads(self) -> bool:
        """Read again after a hold; False when the connection was not held (or is gone)."""
        if not self._held:
            return False
        self._held = False
        if self._hold_timer is not None:
            self._hold_timer.cancel()
            self._hold_timer = None
        transport = self._transport
        if transport is None or transport.is_closing():
            return False
        if not self._paused:
            transport.resume_reading()
        return True

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
                if self._paused or self._held:
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
