"""server/h2grpc.py against an independent HTTP/2 implementation: the `h2` library (python-hyper) as
the client, over a real socket. h2 checks every frame the server sends against RFC 9113 (a frame or
state it does not accept raises), so these runs are a conformance check of normal behaviour (SETTINGS,
flow control both ways, PING, RST_STREAM, GOAWAY, CONTINUATION) and of the answers to the HTTP/2
attacks of SAFETY.md 39 (floods answered GOAWAY ENHANCE_YOUR_CALM, credit only as messages are
dispatched, strict WINDOW_UPDATE). h2spec, the usual suite, is a Go binary on no registry we use."""

from __future__ import annotations

import asyncio
import contextlib
import struct
from collections.abc import AsyncIterator, Callable
from typing import Any

import h2.config
import h2.connection
import h2.errors
import h2.events
import h2.settings
import hyperframe.frame
import pytest

from modelfleet.server.h2grpc import Call, H2Server, Limits, Status, StatusCode

ECHO, SLOW = "/conformance.Service/Echo", "/conformance.Service/Slow"
REQUEST = [(":method", "POST"), (":scheme", "http"), (":authority", "localhost"), ("content-type", "application/grpc"), ("te", "trailers")]  # fmt: skip


def grpc_message(message: bytes) -> bytes:
    return b"\x00" + struct.pack(">I", len(message)) + message


class Peer:
    """One h2 client connection: h2 keeps the state machine, this only moves bytes."""

    opened: list[Peer] = []  # closed by the `serve` fixture

    def __init__(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, settings: dict[int, int]
    ) -> None:
        self.reader, self.writer = reader, writer
        self.h2 = h2.connection.H2Connection(
            h2.config.H2Configuration(client_side=True, header_encoding="utf-8")
        )
        self.h2.local_settings = h2.settings.Settings(client=True, initial_values=settings)
        self.events: list[h2.events.Event] = []
        self.streams: dict[int, dict[str, Any]] = {}  # per stream: headers, data, trailers, ended, reset

    @classmethod
    async def connect(cls, port: int, **settings: int) -> Peer:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        peer = cls(
            reader, writer, {getattr(h2.settings.SettingCodes, k.upper()): v for k, v in settings.items()}
        )
        cls.opened.append(peer)
        peer.h2.initiate_connection()
        peer.flush()
        await peer.until(lambda e: isinstance(e, h2.events.SettingsAcknowledged))
        return peer

    def flush(self) -> None:
        self.writer.write(self.h2.data_to_send())

    async def until(self, done: Callable[[h2.events.Event], bool], timeout_s: float = 10) -> h2.events.Event:
        """Read and process until an event satisfies `done`; that event."""
        async with asyncio.timeout(timeout_s):
            while True:
                data = await self.reader.read(65_536)
                if not data:
                    raise ConnectionError("closed by the server")
                found = None
                for event in self.h2.receive_data(data):
                    self.events.append(event)
                    self._keep(event)
                    if found is None and done(event):
                        found = event
                self.flush()
                if found is not None:
                    return found

    def _keep(self, event: h2.events.Event) -> None:
        stream_id = getattr(event, "stream_id", None)
        if stream_id is None:
            return
        stream = self.streams.setdefault(stream_id, {"data": b"", "ended": False, "reset": None})
        if isinstance(event, h2.events.ResponseReceived):
            stream["headers"] = dict(event.headers or ())
        elif isinstance(event, h2.events.DataReceived):
            stream["data"] += event.data or b""
            self.h2.acknowledge_received_data(event.flow_controlled_length, stream_id)  # as a client reads
        elif isinstance(event, h2.events.TrailersReceived):
            stream["trailers"] = dict(event.headers or ())
        elif isinstance(event, h2.events.StreamEnded):
            stream["ended"] = True
        elif isinstance(event, h2.events.StreamReset):
            stream["reset"] = event.error_code

    def open(self, path: str = ECHO, extra: tuple[tuple[str, str], ...] = ()) -> int:
        stream_id = self.h2.get_next_available_stream_id()
        self.h2.send_headers(stream_id, [*REQUEST[:2], (":path", path), *REQUEST[2:], *extra])
        self.flush()
        return stream_id

    async def send(self, stream_id: int, body: bytes) -> None:
        """The body and END_STREAM, as the server's flow-control windows allow."""
        view = memoryview(body)
        while view:
            size = min(
                len(view), self.h2.local_flow_control_window(stream_id), self.h2.max_outbound_frame_size
            )
            if size == 0:
                await self.until(lambda e: isinstance(e, h2.events.WindowUpdated))
                continue
            self.h2.send_data(stream_id, view[:size].tobytes())
            view = view[size:]
            self.flush()
        self.h2.end_stream(stream_id)
        self.flush()

    async def call(
        self, message: bytes, path: str = ECHO, extra: tuple[tuple[str, str], ...] = ()
    ) -> dict[str, Any]:
        stream_id = self.open(path, extra)
        await self.send(stream_id, grpc_message(message))
        return await self.answer(stream_id)

    async def answer(self, stream_id: int) -> dict[str, Any]:
        if not self.streams.get(stream_id, {}).get("ended"):
            await self.until(lambda e: isinstance(e, h2.events.StreamEnded) and e.stream_id == stream_id)
        return self.streams[stream_id]

    async def terminated(self) -> h2.events.ConnectionTerminated:
        event = await self.until(lambda e: isinstance(e, h2.events.ConnectionTerminated))
        assert isinstance(event, h2.events.ConnectionTerminated)
        return event

    async def frames_to_eof(self) -> list[hyperframe.frame.Frame]:
        """Every frame until the server closes, parsed by hyperframe (h2's own frame layer): h2
        takes a GOAWAY for the end of the connection and refuses the frames of streams that the
        server still finishes after it (RFC 9113 6.8 allows them)."""
        data = await asyncio.wait_for(self.reader.read(), 10)
        frames, view = [], memoryview(data)
        while view:
            parsed, length = hyperframe.frame.Frame.parse_frame_header(view[:9])
            parsed.parse_body(view[9 : 9 + length])
            frames.append(parsed)
            view = view[9 + length :]
        return frames

    def decode(self, block: bytes) -> dict[str, str]:
        return {name.decode(): value.decode() for name, value in self.h2.decoder.decode(block, raw=True)}

    def raw(self, data: bytes) -> None:
        """Bytes h2 would not send: written as they are, past h2's state machine."""
        self.writer.write(data)

    def close(self) -> None:
        self.writer.close()


def frame(kind: int, flags: int, stream_id: int, payload: bytes = b"") -> bytes:
    return struct.pack(">IBI", (len(payload) << 8) | kind, flags, stream_id) + payload


entered = asyncio.Event


async def echo(message: bytes, call: Call) -> bytes:
    if message.startswith(b"big:"):
        return b"x" * int(message[4:])
    if message == b"meta":
        return repr(sorted(call.metadata)).encode()
    if message == b"fail":
        raise Status(StatusCode.NOT_FOUND, "no such model")
    return message[::-1]


class Slow:
    """A handler that waits until released, and says when it has started or been cancelled."""

    def __init__(self) -> None:
        self.started, self.cancelled, self.release = asyncio.Event(), asyncio.Event(), asyncio.Event()

    async def __call__(self, message: bytes, call: Call) -> bytes:
        self.started.set()
        try:
            await self.release.wait()
        except asyncio.CancelledError:
            self.cancelled.set()
            raise
        return message


@pytest.fixture
async def slow() -> Slow:
    return Slow()


@pytest.fixture
async def serve(slow: Slow) -> AsyncIterator[Callable[..., Any]]:
    """serve(**limits): an H2Server on a free port; its (server, port)."""
    servers: list[H2Server] = []

    async def start(**limits: Any) -> tuple[H2Server, int]:
        server = H2Server({ECHO: echo, SLOW: slow}, Limits(**limits))
        servers.append(server)
        return server, await server.start("127.0.0.1", 0)

    yield start
    slow.release.set()
    for peer in Peer.opened:
        peer.close()
        with contextlib.suppress(ConnectionError):
            await peer.writer.wait_closed()
    Peer.opened.clear()
    for server in servers:
        await server.stop(1)


async def test_settings_calls_and_trailers(serve: Any) -> None:
    _, port = await serve(max_concurrent_streams=7, stream_window_bytes=1 << 20)
    peer = await Peer.connect(port)
    remote = peer.h2.remote_settings
    assert remote.max_concurrent_streams == 7 and remote.initial_window_size == 1 << 20
    streams = [peer.open() for _ in range(5)]  # five calls in flight on one connection
    for i, stream_id in enumerate(streams):
        await peer.send(stream_id, grpc_message(f"call {i}".encode()))
    for i, stream_id in enumerate(streams):
        stream = await peer.answer(stream_id)
        assert (
            stream["headers"][":status"] == "200" and stream["headers"]["content-type"] == "application/grpc"
        )
        assert stream["data"] == grpc_message(f"call {i}".encode()[::-1])
        assert stream["trailers"] == {"grpc-status": "0"}
    failed = await peer.call(b"fail")
    assert failed["headers"]["grpc-status"] == str(StatusCode.NOT_FOUND.value) and "trailers" not in failed
    peer.close()


async def test_flow_control_both_ways(serve: Any) -> None:
    """A request larger than the server's windows and an answer larger than the client's: both
    wait for WINDOW_UPDATEs, neither side sends past a window (h2 would raise)."""
    _, port = await serve(
        stream_window_bytes=65_535, connection_window_bytes=65_535, max_message_bytes=1 << 20
    )
    peer = await Peer.connect(port, initial_window_size=1000, max_frame_size=16_384)
    message = bytes(range(256)) * 2000  # 512,000 bytes
    stream = await peer.call(message)
    assert stream["data"] == grpc_message(message[::-1])
    stream = await peer.call(b"big:300000")
    assert stream["data"] == grpc_message(b"x" * 300_000) and stream["trailers"] == {"grpc-status": "0"}
    peer.close()


async def test_ping_is_acknowledged(serve: Any) -> None:
    _, port = await serve()
    peer = await Peer.connect(port)
    peer.h2.ping(b"conform!")
    peer.flush()
    event = await peer.until(lambda e: isinstance(e, h2.events.PingAckReceived))
    assert isinstance(event, h2.events.PingAckReceived) and event.ping_data == b"conform!"
    peer.close()


async def test_reset_stream_cancels_the_call_and_the_connection_serves_on(serve: Any, slow: Slow) -> None:
    server, port = await serve()
    peer = await Peer.connect(port)
    stream_id = peer.open(SLOW)
    await peer.send(stream_id, grpc_message(b"wait"))
    await slow.started.wait()
    peer.h2.reset_stream(stream_id, h2.errors.ErrorCodes.CANCEL)
    peer.flush()
    await slow.cancelled.wait()
    assert (await peer.call(b"after"))["data"] == grpc_message(b"retfa")
    assert server.in_flight == 0
    peer.close()


async def test_header_block_in_continuation_frames(serve: Any) -> None:
    _, port = await serve(max_header_list_bytes=65_536, max_frame_bytes=16_384)
    peer = await Peer.connect(port)
    value = "v" * 20_000  # larger than a frame: HEADERS + CONTINUATION
    stream = await peer.call(b"meta", extra=(("x-big", value),))
    assert value in stream["data"].decode()
    peer.close()


async def test_goaway_on_shutdown_lets_the_call_in_flight_end(serve: Any, slow: Slow) -> None:
    server, port = await serve()
    peer = await Peer.connect(port)
    stream_id = peer.open(SLOW)
    await peer.send(stream_id, grpc_message(b"wait"))
    await slow.started.wait()
    server.begin_shutdown()
    event = await peer.terminated()
    assert event.error_code == h2.errors.ErrorCodes.NO_ERROR and event.last_stream_id == stream_id
    with pytest.raises(ConnectionRefusedError):
        await asyncio.open_connection("127.0.0.1", port)  # no longer listening
    slow.release.set()
    frames = await peer.frames_to_eof()  # then the server closes the connection
    assert [type(f).__name__ for f in frames] == ["HeadersFrame", "DataFrame", "HeadersFrame"]
    assert frames[1].data == grpc_message(b"wait")
    assert "END_STREAM" in frames[2].flags and peer.decode(frames[2].data) == {"grpc-status": "0"}


async def test_the_deadline_answers_calls_in_flight_unavailable(serve: Any, slow: Slow) -> None:
    server, port = await serve()
    peer = await Peer.connect(port)
    stream_id = peer.open(SLOW)
    await peer.send(stream_id, grpc_message(b"wait"))
    await slow.started.wait()
    stopping = asyncio.create_task(server.stop(0.05))  # the grace passes with the call still running
    goaway, headers = await peer.frames_to_eof()
    peer.close()  # the server waits for this (or LINGER_S) to be sure its last frames were read
    await stopping
    assert isinstance(goaway, hyperframe.frame.GoAwayFrame) and goaway.last_stream_id == stream_id
    assert isinstance(headers, hyperframe.frame.HeadersFrame) and "END_STREAM" in headers.flags
    fields = peer.decode(headers.data)
    assert fields["grpc-status"] == str(StatusCode.UNAVAILABLE.value)
    assert fields["grpc-message"] == "server shutting down"
    assert slow.cancelled.is_set()


# -- the attacks: each answered GOAWAY ENHANCE_YOUR_CALM, read back by h2 ---------------------------------


def flood(peer: Peer, kind: str, count: int) -> None:
    if kind == "ping":
        for i in range(count):
            peer.h2.ping(struct.pack(">Q", i))
    elif kind == "settings":
        for i in range(count):
            peer.h2.update_settings({h2.settings.SettingCodes.MAX_HEADER_LIST_SIZE: 16_384 + i})
    elif kind == "rapid-reset":
        for _ in range(count):
            stream_id = peer.open()
            peer.h2.reset_stream(stream_id, h2.errors.ErrorCodes.CANCEL)
    peer.flush()
    if kind == "empty-continuation":
        stream_id = peer.h2.get_next_available_stream_id()
        peer.raw(frame(1, 0, stream_id, b"\x83") + frame(9, 0, stream_id) * count)  # HEADERS, CONTINUATION
    elif kind == "empty-data":
        stream_id = peer.open()
        peer.raw(frame(0, 0, stream_id) * count)


@pytest.mark.parametrize("kind", ["ping", "settings", "rapid-reset", "empty-continuation", "empty-data"])
async def test_floods_are_answered_goaway_enhance_your_calm(serve: Any, kind: str) -> None:
    _, port = await serve()
    peer = await Peer.connect(port)
    flood(peer, kind, 5000)
    event = await peer.terminated()
    assert event.error_code == h2.errors.ErrorCodes.ENHANCE_YOUR_CALM
    peer.close()


async def test_window_update_of_zero_and_past_the_maximum(serve: Any) -> None:
    _, port = await serve()
    peer = await Peer.connect(port)
    stream_id = peer.open()
    peer.raw(frame(8, 0, stream_id, struct.pack(">I", 0)))  # a stream's: RST_STREAM PROTOCOL_ERROR
    await peer.until(lambda e: isinstance(e, h2.events.StreamReset))
    assert peer.streams[stream_id]["reset"] == h2.errors.ErrorCodes.PROTOCOL_ERROR
    peer.raw(frame(8, 0, 0, struct.pack(">I", 2**31 - 1)))  # the connection's, past 2^31-1
    event = await peer.terminated()
    assert event.error_code == h2.errors.ErrorCodes.FLOW_CONTROL_ERROR
    peer.close()


async def test_credit_is_granted_as_messages_are_dispatched(serve: Any) -> None:
    """A client may send no more than the connection holds undispatched: h2 sees the window stop
    at the cap while messages are incomplete; the stream that fills it is refused, its bytes
    dropped, and the window opens again."""
    limits = {
        "max_undispatched_bytes": 200_000,
        "max_message_bytes": 150_000,
        "connection_window_bytes": 200_000,
    }
    _, port = await serve(**limits)
    peer = await Peer.connect(port)
    assert peer.h2.outbound_flow_control_window == 200_000
    first, second = peer.open(), peer.open()
    body = grpc_message(b"z" * 150_000)
    peer.h2.send_data(first, body[:100_000])
    peer.h2.send_data(second, body[:90_000])  # 190,000 held
    peer.h2.ping(b"syncsync")
    peer.flush()
    await peer.until(lambda e: isinstance(e, h2.events.PingAckReceived))
    assert peer.h2.outbound_flow_control_window == 10_000  # no credit for what is held
    peer.h2.send_data(second, body[90_000:100_000])  # 200,000: full, and no call can end
    peer.flush()
    stream = await peer.answer(second)
    assert stream["headers"]["grpc-status"] == str(StatusCode.RESOURCE_EXHAUSTED.value)
    assert "waiting on one connection" in stream["headers"]["grpc-message"]
    # the WINDOW_UPDATE follows the refusal at once (the same read): the second call's bytes came back
    assert peer.h2.outbound_flow_control_window == 100_000
    peer.h2.send_data(first, body[100_000:], end_stream=True)
    peer.flush()
    assert (await peer.answer(first))["data"] == grpc_message(b"z" * 150_000)
    peer.close()
