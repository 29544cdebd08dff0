"""HTTP/1.1 connection limits on top of uvicorn's httptools protocol: what a hostile or careless
client can hold before any request reaches the app.

- `header_timeout_s`: a connection that opens, or starts its next request, must finish the
  request's headers in time; else 408 and close (a socket with partial headers is never held for
  ever). One sweep a server checks every connection (at most once a second): no timer per request.
- `max_header_bytes`: request line plus headers; past it 431 and close. Counted per read, not per
  header (no extra call per header on the request path); the exact size is added up only when a
  read that completes a head brings more than the cap.
- `max_connections`: one more connection is answered 503 with Retry-After and closed.
- `keep_alive_timeout_s` (uvicorn's `timeout_keep_alive`, set in server/app.py): an idle
  connection is closed by the same sweep, not by a timer armed and cancelled per request (uvloop's
  cost ~3 µs a request); it closes between the timeout and the timeout plus one sweep period.
- A response's head is written together with its body (`_Writes`): one write a response, one
  system call and one wake-up of the client instead of two.
- A request refused by its tenant's quota may hold its connection (scope extension
  `modelfleet.hold`, server/quota.py): nothing more is read from it until the quota lets it go, or
  quota.MAX_HOLD_S (spread) has passed.

Body size and body time are the app's (server/http.py `read_body`), where the answer is JSON too.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from modelfleet.config import ServerSettings
from modelfleet.protocol.documents import error_json
from modelfleet.server.quota import hold_timeout_s

HOLD = "modelfleet.hold"  # the scope extension: call it to hold the connection after this response
_JOIN_BYTES = 16 * 1024  # a body up to this is copied behind its head; a larger one goes by writev
_REASONS = {408: b"Request Timeout", 431: b"Request Header Fields Too Large", 503: b"Service Unavailable"}


def protocol_for(settings: ServerSettings) -> type[HttpToolsProtocol]:
    """The protocol class uvicorn runs (`http=`), with the settings' limits; one class a server,
    so that its sweep covers that server's connections."""
    return type(
        "LimitedHttpToolsProtocol",
        (LimitedHttpToolsProtocol,),
        {
            "header_timeout_s": settings.header_timeout_s,
            "max_header_bytes": settings.max_header_bytes,
            "max_connections": settings.max_connections,
            "keep_alive_timeout_s": settings.keep_alive_timeout_s,
            "sweep": None,
        },
    )


class LimitedHttpToolsProtocol(HttpToolsProtocol):
    header_timeout_s = 30.0
    max_header_bytes = 32 * 1024
    max_connections = 1024
    keep_alive_timeout_s = 5.0  # for the sweep's period; each connection closes at its own timeout
    sweep: asyncio.TimerHandle | None = None  # the server's sweep, while it has connections

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.waiting_since: float | None = None  # loop time the request now awaited began; None: none
        self.idle_since: float | None = None  # loop time its last response completed, while idle
        self._head_bytes = 0  # its request line and headers so far
        self._refusal: tuple[int, str] | None = None  # sent instead of uvicorn's plain 400
        self._held = False  # read nothing after the current response, until released
        self._hold_timer: asyncio.TimerHandle | None = None
        # Each request's scope extensions: the same for every request of the connection, made once.
        self._extensions = {HOLD: self.hold}

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(_Writes(transport, self))  # type: ignore[arg-type]
        if len(self.connections) > self.max_connections:
            self._refuse(503, f"the server holds its limit of {self.max_connections} connections; retry")
            return
        self.waiting_since = self.loop.time()
        cls = type(self)
        if cls.sweep is None:
            cls.sweep = self.loop.call_later(self._period(), cls._sweep, self.loop, self.connections)

    def data_received(self, data: bytes) -> None:
        if self._refusal is not None:
            return  # answered and closing: nothing more is read
        self.idle_since = None
        cycle = self.cycle
        awaiting = cycle is None or cycle.response_complete  # no request under way: its head comes
        if awaiting and self.waiting_since is None:
            self.waiting_since, self._head_bytes = self.loop.time(), 0
        super().data_received(data)
        if not awaiting or self._refusal is not None:
            return
        self._head_bytes += len(data)
        if self._head_bytes <= self.max_header_bytes:
            if self.cycle is not cycle:  # the head is complete: a new request started
                self.waiting_since = None
            return
        if self.cycle is cycle:  # still no whole head, and already too much of it
            self._refuse(431, f"request line and headers are larger than {self.max_header_bytes} bytes")
            return
        self.waiting_since = None
        head = len(self.url) + sum(len(name) + len(value) + 4 for name, value in self.headers)
        if head > self.max_header_bytes:  # a whole head larger than the cap in one read
            self.cycle.disconnected = True  # its app call, already scheduled, sees a client gone
            self._refuse(431, f"request line and headers are larger than {self.max_header_bytes} bytes")

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self.scope["extensions"] = self._extensions  # type: ignore[typeddict-item]

    def hold(self) -> Callable[[], bool]:
        """Read nothing more from this connection once the current response is complete, until the
        returned callable is called (at most quota.MAX_HOLD_S, spread)."""
        self._held = True
        return self._release

    def on_response_complete(self) -> None:
        # uvicorn's, with the connection stamped idle for the sweep instead of a keep-alive timer
        self.server_state.total_requests += 1
        if self.transport.is_closing():
            return
        self.flow.resume_reading()
        if self.pipeline:
            cycle, app = self.pipeline.pop()
            self._start_asgi_task(cycle, app)
        if self._held:  # not idle: held (idle again once released)
            self.flow.pause_reading()
            self._hold_timer = self.loop.call_later(hold_timeout_s(), self._release)
        elif not self.pipeline:
            self.idle_since = self.loop.time()

    def _release(self) -> bool:
        """Read from the connection again; False when it was not held (or is gone)."""
        if not self._held:
            return False
        self._held = False
        if self._hold_timer is not None:
            self._hold_timer.cancel()
            self._hold_timer = None
        if self.transport.is_closing():
            return False
        if not self.flow.read_paused:
            return True  # let go before its response was complete: never paused
        self.flow.resume_reading()
        if not self.pipeline and self.idle_since is None:
            self.idle_since = self.loop.time()
        return True

    def connection_lost(self, exc: Exception | None) -> None:
        if self._hold_timer is not None:
            self._hold_timer.cancel()
        super().connection_lost(exc)

    def send_400_response(self, msg: str) -> None:
        if self._refusal is not None:
            self._send(*self._refusal)
            return
        super().send_400_response(msg)

    @classmethod
    def _period(cls) -> float:
        return min(1.0, cls.header_timeout_s / 2, cls.keep_alive_timeout_s / 2)

    @classmethod
    def _sweep(cls, loop: asyncio.AbstractEventLoop, connections: set[Any]) -> None:
        """408 for every connection whose awaited head is late, and the idle ones past their
        keep-alive timeout closed; again in a while, while any is open."""
        now = loop.time()
        for connection in list(connections):
            since = getattr(connection, "waiting_since", None)
            idle = getattr(connection, "idle_since", None)
            if connection.transport.is_closing():
                continue
            if since is not None and now - since > cls.header_timeout_s:
                connection._refuse(408, f"request headers did not arrive within {cls.header_timeout_s:g} s")
            elif idle is not None and now - idle > connection.timeout_keep_alive:
                connection.timeout_keep_alive_handler()
        cls.sweep = loop.call_later(cls._period(), cls._sweep, loop, connections) if connections else None

    def _refuse(self, status: int, message: str) -> None:
        self._refusal = (status, message)
        self._send(status, message)

    def _send(self, status: int, message: str) -> None:
        self.waiting_since = None
        body = error_json(message)
        head = [
            b"HTTP/1.1 %d %s" % (status, _REASONS[status]),
            b"content-type: application/json",
            b"content-length: %d" % len(body),
            b"connection: close",
        ]
        if status == 503:
            head.append(b"retry-after: 1")
        self.transport.write(b"\r\n".join(head) + b"\r\n\r\n" + body)
        self.transport.close()


class _Writes:
    """The connection's transport, with a response's head held back until the first write of its
    body: uvicorn writes the two separately (two system calls, two wake-ups of the client). Held
    only when a body must follow (a Content-Length over 0, not HEAD); `close` writes what is held
    first, `abort` drops it. Everything else goes straight to the transport."""

    __slots__ = ("_head", "_headed", "_protocol", "_transport")

    def __init__(self, transport: asyncio.Transport, protocol: HttpToolsProtocol) -> None:
        self._transport = transport
        self._protocol = protocol
        self._head: bytes | None = None
        self._headed: object = None  # the request cycle whose head was written (or held) last

    def write(self, data: bytes) -> None:
        head = self._head
        if head is not None:
            self._head = None
            if len(data) <= _JOIN_BYTES:
                self._transport.write(head + data)
            else:  # one writev, no copy of a large body
                self._transport.writelines((head, data))
            return
        cycle = self._protocol.cycle
        if (
            cycle is not self._headed
            and cycle is not None
            and cycle.response_started
            and not cycle.response_complete
            and not cycle.chunked_encoding
            and cycle.expected_content_length > 0
            and cycle.scope["method"] != "HEAD"
        ):
            # the head: the body still owes its Content-Length, and the next write brings it
            self._head, self._headed = data, cycle
            return
        self._transport.write(data)

    def close(self) -> None:
        self._flush()
        self._transport.close()

    def abort(self) -> None:
        self._head = None
        self._transport.abort()

    def writelines(self, lines: Any) -> None:
        self._flush()
        self._transport.writelines(lines)

    def write_eof(self) -> None:
        self._flush()
        self._transport.write_eof()

    def is_closing(self) -> bool:
        return self._transport.is_closing()

    def _flush(self) -> None:
        if self._head is not None:
            head, self._head = self._head, None
            self._transport.write(head)

    def __getattr__(self, name: str) -> Any:  # get_extra_info, pause_reading, set_protocol, ...
        return getattr(self._transport, name)
