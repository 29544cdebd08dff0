"""Issue 16, item 2, option (a): the gRPC front's HTTP/2 layer on the maintained sans-IO `h2` library,
as a prototype behind server/h2grpc.py's handler API, only to measure its cost.

`H2LibServer` takes the same `(handlers, Limits)` and has the same `start` / `stop(grace_s)` as
`H2Server`; `Call`, `Status` and `StatusCode` are h2grpc's own. It serves unary calls only (what
the server's gRPC service needs): frames, SETTINGS, PING, flow control, HPACK and the state machine
are h2's; the 5-byte message framing, deadlines and statuses are a few lines here. Run as a script,
it is `modelfleet` with the gRPC front on this server instead:

    python benchmarks/h2lib_prototype.py serve REPO --grpc-port 8001 ...
    python benchmarks/grpc_vs_http.py --client h2load --h2 lib     # the throughput bench, on it
    H2LIB_NO_CHECKS=1 python benchmarks/grpc_vs_http.py --client h2load --h2 lib   # h2's header checks off

Not used by the server; not tested beyond the bench (the decision is in docs/benchmarks.md).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import sys
from collections.abc import Mapping
from typing import Any

import h2.config
import h2.connection
import h2.events
import h2.exceptions
import h2.settings

from modelfleet.server.h2grpc import Call, Handler, Limits, Status, StatusCode, parse_timeout, percent_encode

log = logging.getLogger(__name__)

_RESPONSE_HEADERS = [
    (b":status", b"200"),
    (b"content-type", b"application/grpc"),
    (b"grpc-accept-encoding", b"identity"),
]
_OK_TRAILERS = [(b"grpc-status", b"0")]

# H2LIB_NO_CHECKS=1: h2's header validation and normalisation off both ways (faster, less safe)
_CHECKS: dict[str, bool] = (
    dict.fromkeys(
        (
            "validate_inbound_headers",
            "normalize_inbound_headers",
            "validate_outbound_headers",
            "normalize_outbound_headers",
        ),
        False,
    )
    if os.environ.get("H2LIB_NO_CHECKS") == "1"
    else {}
)


class _Stream:
    __slots__ = ("body", "call", "pending", "task", "timeout_s")

    def __init__(self, call: Call, timeout_s: float | None) -> None:
        self.call = call
        self.timeout_s = timeout_s
        self.body = bytearray()
        self.task: asyncio.Task[None] | None = None
        self.pending: memoryview | None = None


class _Connection(asyncio.Protocol):
    def __init__(self, server: H2LibServer) -> None:
        self._server = server
        limits = server.limits
        config = h2.config.H2Configuration(client_side=False, header_encoding=None, **_CHECKS)
        self._h2 = h2.connection.H2Connection(config)
        self._h2.local_settings = h2.settings.Settings(
            client=False,
            initial_values={
                h2.settings.SettingCodes.MAX_CONCURRENT_STREAMS: limits.max_concurrent_streams,
                h2.settings.SettingCodes.INITIAL_WINDOW_SIZE: limits.stream_window_bytes,
                h2.settings.SettingCodes.MAX_FRAME_SIZE: limits.max_frame_bytes,
                h2.settings.SettingCodes.MAX_HEADER_LIST_SIZE: limits.max_header_list_bytes,
            },
        )
        self._transport: asyncio.Transport | None = None
        self._streams: dict[int, _Stream] = {}
        self._peer: str | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = transport  # type: ignore[assignment]
        peername = transport.get_extra_info("peername")
        self._peer = peername[0] if isinstance(peername, tuple) else None
        self._h2.initiate_connection()
        window = self._server.limits.connection_window_bytes - 65_535
        if window > 0:
            self._h2.increment_flow_control_window(window)
        self._server.connections.add(self)
        self._send()

    def connection_lost(self, exc: Exception | None) -> None:
        self._server.connections.discard(self)
        for stream in self._streams.values():
            if stream.task is not None:
                stream.task.cancel()
        self._streams.clear()
        self._transport = None

    def data_received(self, data: bytes) -> None:
        try:
            events = self._h2.receive_data(data)
        except h2.exceptions.ProtocolError:
            self._send()
            if self._transport is not None:
                self._transport.close()
            return
        for event in events:
            kind = type(event)
            if kind is h2.events.RequestReceived:
                self._on_request(event)  # type: ignore[arg-type]
            elif kind is h2.events.DataReceived:
                self._on_data(event)  # type: ignore[arg-type]
            elif kind is h2.events.StreamEnded:
                stream = self._streams.get(event.stream_id)  # type: ignore[attr-defined]
                if stream is not None:
                    self._dispatch(event.stream_id, stream)  # type: ignore[attr-defined]
            elif kind is h2.events.StreamReset:
                stream = self._streams.pop(event.stream_id, None)  # type: ignore[attr-defined]
                if stream is not None and stream.task is not None:
                    stream.task.cancel()
            elif kind is h2.events.WindowUpdated:
                self._flush_all()
            elif kind is h2.events.ConnectionTerminated and self._transport is not None:
                self._transport.close()
        self._send()

    def _on_request(self, event: h2.events.RequestReceived) -> None:
        path = method = content_type = b""
        timeout_s = None
        metadata = []
        for name, value in event.headers or ():
            if name[:1] == b":":
                if name == b":path":
                    path = value
                elif name == b":method":
                    method = value
            elif name == b"content-type":
                content_type = value
            elif name == b"grpc-timeout":
                timeout_s = parse_timeout(value.decode())
            else:
                metadata.append((name.decode(), value.decode()))
        stream_id = event.stream_id
        if method != b"POST" or not content_type.startswith(b"application/grpc"):
            status = b"405" if method != b"POST" else b"415"
            self._h2.send_headers(stream_id, [(b":status", status)], end_stream=True)
            return
        self._streams[stream_id] = _Stream(Call(path.decode(), tuple(metadata), self._peer), timeout_s)

    def _on_data(self, event: h2.events.DataReceived) -> None:
        stream = self._streams.get(event.stream_id)
        data = event.data or b""
        if stream is None:
            self._h2.acknowledge_received_data(event.flow_controlled_length, event.stream_id)
            return
        stream.body += data
        if len(stream.body) > self._server.limits.max_message_bytes + 5:
            self._finish(event.stream_id, stream, Status(StatusCode.RESOURCE_EXHAUSTED, "request too large"))
            return
        # the credit goes back as the bytes are taken in (a unary message is taken whole)
        self._h2.acknowledge_received_data(event.flow_controlled_length, event.stream_id)

    def _dispatch(self, stream_id: int, stream: _Stream) -> None:
        body = bytes(stream.body)
        stream.body = bytearray()
        handler = self._server.handlers.get(stream.call.path)
        if handler is None:
            self._finish(
                stream_id, stream, Status(StatusCode.UNIMPLEMENTED, f"unknown method {stream.call.path}")
            )
        elif len(body) < 5 or int.from_bytes(body[1:5], "big") != len(body) - 5 or body[0] != 0:
            self._finish(stream_id, stream, Status(StatusCode.INVALID_ARGUMENT, "one uncompressed message"))
        else:
            stream.task = asyncio.get_running_loop().create_task(
                self._run(stream_id, stream, handler, body[5:])
            )

    async def _run(self, stream_id: int, stream: _Stream, handler: Handler, message: bytes) -> None:
        self._server.in_flight += 1
        try:
            if stream.timeout_s is None:
                answer = await handler(message, stream.call)
            else:
                async with asyncio.timeout(stream.timeout_s):
                    answer = await handler(message, stream.call)
        except Status as status:
            self._finish(stream_id, stream, status)
        except TimeoutError:
            self._finish(stream_id, stream, Status(StatusCode.DEADLINE_EXCEEDED, "deadline exceeded"))
        except Exception:
            log.exception("unexpected error in %s", stream.call.path)
            self._finish(stream_id, stream, Status(StatusCode.INTERNAL, "internal server error"))
        else:
            if self._streams.get(stream_id) is stream:
                self._h2.send_headers(stream_id, _RESPONSE_HEADERS)
                stream.pending = memoryview(b"\x00" + len(answer).to_bytes(4, "big") + answer)
                self._flush(stream_id, stream)
        finally:
            self._server.in_flight -= 1
        self._send()

    def _flush(self, stream_id: int, stream: _Stream) -> None:
        pending = stream.pending
        assert pending is not None
        while pending:
            size = min(
                len(pending), self._h2.local_flow_control_window(stream_id), self._h2.max_outbound_frame_size
            )
            if size <= 0:
                stream.pending = pending
                return
            self._h2.send_data(stream_id, pending[:size].tobytes())
            pending = pending[size:]
        self._h2.send_headers(stream_id, _OK_TRAILERS, end_stream=True)
        del self._streams[stream_id]
        self._server.idle.set()

    def _flush_all(self) -> None:
        for stream_id, stream in list(self._streams.items()):
            if stream.pending is not None:
                self._flush(stream_id, stream)

    def _finish(self, stream_id: int, stream: _Stream, status: Status) -> None:
        if self._streams.pop(stream_id, None) is not stream or self._transport is None:
            return
        self._server.idle.set()
        trailers = [(b"grpc-status", str(int(status.code)).encode())]
        if status.message:
            trailers.append((b"grpc-message", percent_encode(status.message)))
        trailers += [(name.encode(), value.encode()) for name, value in status.trailers]
        with contextlib.suppress(h2.exceptions.StreamClosedError):
            self._h2.send_headers(stream_id, _RESPONSE_HEADERS + trailers, end_stream=True)

    def _send(self) -> None:
        data = self._h2.data_to_send()
        if data and self._transport is not None:
            self._transport.write(data)

    def go_away(self) -> None:
        self._h2.close_connection()
        self._send()

    @property
    def busy(self) -> bool:
        return bool(self._streams)

    def abort(self) -> None:
        if self._transport is not None:
            self._transport.abort()


class H2LibServer:
    """H2Server's API on h2: `handlers` by method path, `Limits`, start / stop."""

    def __init__(self, handlers: Mapping[str, Handler], limits: Limits | None = None) -> None:
        self.handlers = dict(handlers)
        self.limits = limits or Limits()
        logging.getLogger("hpack").setLevel(logging.WARNING)
        logging.getLogger("h2").setLevel(logging.WARNING)
        self.connections: set[_Connection] = set()
        self.in_flight = 0
        self.idle = asyncio.Event()  # set as each call ends
        self._server: asyncio.Server | None = None

    async def start(self, host: str, port: int) -> int:
        loop = asyncio.get_running_loop()
        self._server = await loop.create_server(lambda: _Connection(self), host, port, reuse_address=True)
        return int(self._server.sockets[0].getsockname()[1])

    async def stop(self, grace_s: float) -> None:
        if self._server is None:
            return
        self._server.close()
        for connection in list(self.connections):
            connection.go_away()
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(grace_s):
                while any(connection.busy for connection in self.connections):
                    self.idle.clear()
                    await self.idle.wait()
        for connection in list(self.connections):
            connection.abort()
        self._server = None


def main(argv: list[str]) -> Any:
    """`modelfleet ARGS...` with the gRPC front served by H2LibServer."""
    import modelfleet.server.grpc
    from modelfleet.cli import main as cli_main

    modelfleet.server.grpc.H2Server = H2LibServer  # type: ignore[misc, assignment]
    sys.argv = ["modelfleet", *argv]
    return cli_main()


if __name__ == "__main__":
    main(sys.argv[1:])
