"""HTTP/1.1 connection limits on top of uvicorn's httptools protocol: what a hostile or careless
client can hold before any request reaches the app.

- `header_timeout_s`: a connection that opens, or starts a request, must finish its headers in
  time; else 408 and close (a socket with partial headers is never held for ever).
- `max_header_bytes`: request line plus headers; past it 431 and close.
- `max_connections`: one more connection is answered 503 with Retry-After and closed.
- `keep_alive_timeout_s` is uvicorn's own keep-alive timer (set in server/app.py).

Body size and body time are the app's (server/http.py `read_body`), where the answer is JSON too.
"""

from __future__ import annotations

import asyncio
from typing import Any

import orjson
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from modelfleet.config import ServerSettings

_REASONS = {408: b"Request Timeout", 431: b"Request Header Fields Too Large", 503: b"Service Unavailable"}


def protocol_for(settings: ServerSettings) -> type[HttpToolsProtocol]:
    """The protocol class uvicorn runs (`http=`), with the settings' limits."""
    return type(
        "LimitedHttpToolsProtocol",
        (LimitedHttpToolsProtocol,),
        {
            "header_timeout_s": settings.header_timeout_s,
            "max_header_bytes": settings.max_header_bytes,
            "max_connections": settings.max_connections,
        },
    )


class LimitedHttpToolsProtocol(HttpToolsProtocol):
    header_timeout_s = 30.0
    max_header_bytes = 32 * 1024
    max_connections = 1024

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._header_timer: asyncio.TimerHandle | None = None
        self._header_bytes = 0
        self._refusal: tuple[int, str] | None = None  # sent instead of uvicorn's plain 400

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        if len(self.connections) > self.max_connections:
            self._refuse(503, f"the server holds its limit of {self.max_connections} connections; retry")
            return
        self._arm_header_timer()

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm_header_timer()
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        if self._refusal is not None:
            return  # answered and closing: nothing more is read
        if self._header_timer is None and (self.cycle is None or self.cycle.response_complete):
            self._arm_header_timer()  # a keep-alive connection starts its next request
        super().data_received(data)

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._header_bytes = 0

    def on_url(self, url: bytes) -> None:
        self._count(len(url))
        super().on_url(url)

    def on_header(self, name: bytes, value: bytes) -> None:
        self._count(len(name) + len(value) + 4)
        super().on_header(name, value)

    def on_headers_complete(self) -> None:
        self._disarm_header_timer()
        super().on_headers_complete()

    def send_400_response(self, msg: str) -> None:
        if self._refusal is not None:  # a callback of ours stopped the parser: send our answer
            self._send(*self._refusal)
            return
        super().send_400_response(msg)

    def _count(self, n: int) -> None:
        self._header_bytes += n
        if self._header_bytes > self.max_header_bytes:
            self._refusal = (431, f"request line and headers are larger than {self.max_header_bytes} bytes")
            raise ValueError("headers too large")  # httptools stops; uvicorn calls send_400_response

    def _arm_header_timer(self) -> None:
        self._header_timer = self.loop.call_later(self.header_timeout_s, self._headers_late)

    def _disarm_header_timer(self) -> None:
        if self._header_timer is not None:
            self._header_timer.cancel()
            self._header_timer = None

    def _headers_late(self) -> None:
        self._header_timer = None
        if self.transport.is_closing() or (self.cycle is not None and not self.cycle.response_complete):
            return
        self._refuse(408, f"request headers did not arrive within {self.header_timeout_s:g} s")

    def _refuse(self, status: int, message: str) -> None:
        self._refusal = (status, message)
        self._send(status, message)

    def _send(self, status: int, message: str) -> None:
        self._disarm_header_timer()
        body = orjson.dumps({"error": message})
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
