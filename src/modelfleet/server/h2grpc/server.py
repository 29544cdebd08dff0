"""The listening server: connections, the connection cap, and shutdown in one or two steps."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import time
from collections.abc import Callable, Mapping

from modelfleet.server.h2grpc.connection import Connection
from modelfleet.server.h2grpc.wire import (
    LINGER_S,
    Handler,
    Limits,
    Status,
    StatusCode,
)


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
