"""The HTTP/2 layer of the gRPC front, driven frame by frame through a fake transport (no socket):
handshake, calls, flow control both ways, every protocol error and bound, cancellation, deadlines,
graceful GOAWAY. Real grpcio clients over sockets are in tests/integration/test_grpc.py."""

from __future__ import annotations

import asyncio
import struct
from typing import Any

import hpack
import pytest

from modelfleet.server.h2grpc import (
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
    PRIORITY_FLAG,
    PUSH_PROMISE,
    RST_STREAM,
    SETTINGS,
    WINDOW_UPDATE,
    Call,
    Connection,
    H2Error,
    H2Server,
    Limits,
    Status,
    StatusCode,
    frame,
    headers,
    parse_timeout,
    percent_encode,
    wire,
)

PATH = "/test.Service/Echo"


class Wire:
    """A fake transport: keeps what the server writes (`wrote` is set on each write); `gone` is set
    once it is closed."""

    def __init__(self, peer: Any = ("127.0.0.1", 5000)) -> None:
        self.out = bytearray()
        self.closed = False
        self.aborted = False
        self.reading = True
        self.peer = peer
        self.gone = asyncio.Event()
        self.wrote = asyncio.Event()
        self.protocol: Connection | None = None

    def write(self, data: bytes) -> None:
        assert not self.closed, "write after close"
        self.out += data
        self.wrote.set()

    def close(self) -> None:
        """As a real transport: the protocol hears of it on the next loop iteration."""
        if not self.closed and self.protocol is not None:
            asyncio.get_running_loop().call_soon(self.protocol.connection_lost, None)
        self.closed = True
        self.gone.set()

    def abort(self) -> None:
        self.aborted = True
        self.close()

    def can_write_eof(self) -> bool:
        return True

    write_eof = close  # and the peer closes its side at once

    def is_closing(self) -> bool:
        return self.closed

    def pause_reading(self) -> None:
        self.reading = False

    def resume_reading(self) -> None:
        self.reading = True

    def get_extra_info(self, key: str, default: Any = None) -> Any:
        return self.peer if key == "peername" else default


Frame = tuple[int, int, int, bytes]  # type, flags, stream, payload


class Client:
    """One HTTP/2 client connection to a Connection, frame by frame."""

    def __init__(self, server: H2Server, peer: Any = ("127.0.0.1", 5000), settings: bytes = b"") -> None:
        self.wire = Wire(peer)
        self.conn = Connection(server)
        self.wire.protocol = self.conn
        self.conn.connection_made(self.wire)  # type: ignore[arg-type]
        self.encoder = hpack.Encoder()
        self.decoder = hpack.Decoder()
        self.send(PREFACE + frame(SETTINGS, 0, 0, settings) + frame(SETTINGS, ACK, 0))
        self.handshake = self.frames()  # the server's SETTINGS and WINDOW_UPDATE, then its ACK

    def send(self, data: bytes) -> None:
        self.conn.data_received(data)

    def frames(self) -> list[Frame]:
        out, pos, data = [], 0, bytes(self.wire.out)
        while pos < len(data):
            word, flags, stream = struct.unpack_from(">IBI", data, pos)
            length = word >> 8
            out.append((word & 0xFF, flags, stream, data[pos + 9 : pos + 9 + length]))
            pos += 9 + length
        self.wire.out.clear()
        return out

    def block(self, headers: list[tuple[str, str]]) -> bytes:
        return bytes(self.encoder.encode(headers))

    def headers(
        self, path: str = PATH, extra: tuple[tuple[str, str], ...] = (), **kw: str
    ) -> list[tuple[str, str]]:
        return [
            (":method", kw.get("method", "POST")),
            (":scheme", "http"),
            (":path", path),
            (":authority", "localhost"),
            ("content-type", kw.get("content_type", "application/grpc")),
            ("te", "trailers"),
            *extra,
        ]

    def open(self, stream: int, path: str = PATH, **kw: Any) -> None:
        """A call's HEADERS, no END_STREAM: its message is still to come."""
        self.send(frame(HEADERS, END_HEADERS, stream, self.block(self.headers(path, **kw))))

    def call(self, stream: int, message: bytes | None, path: str = PATH, **kw: Any) -> None:
        """HEADERS, then one DATA frame with the message (gRPC-framed) and END_STREAM."""
        self.open(stream, path, **kw)
        if message is not None:
            self.send(frame(DATA, END_STREAM, stream, grpc_message(message)))

    def decode(self, payload: bytes) -> dict[str, str]:
        return dict(self.decoder.decode(payload))


def grpc_message(message: bytes, compressed: int = 0) -> bytes:
    return bytes((compressed,)) + struct.pack(">I", len(message)) + message


async def echo(message: bytes, call: Call) -> bytes:
    if message == b"fail":
        raise Status(StatusCode.NOT_FOUND, "model 'x' not found — 100%", (("retry-after", "2"),))
    if message == b"boom":
        raise RuntimeError("secret internals")
    if message == b"slow":
        await asyncio.sleep(10)
    if message == b"who":
        return f"{call.peer} {dict(call.metadata).get('x-api-key')}".encode()
    if message == b"hold":
        assert call.hold is not None
        HOLDS.append(call.hold())
        return b"held"
    if message.startswith(b"big:"):
        return b"x" * int(message[4:])
    return message[::-1]


HOLDS: list[Any] = []  # what `hold` calls returned, to let their connections go


def server(**limits: Any) -> H2Server:
    return H2Server({PATH: echo}, Limits(**limits))


async def settle() -> None:
    for _ in range(5):
        await asyncio.sleep(0)


def answer(client: Client, stream: int) -> tuple[dict[str, str], bytes, dict[str, str]]:
    """Headers, message and trailers of one finished call (trailers-only: headers hold all)."""
    mine = [f for f in client.frames() if f[2] == stream]
    heads = [client.decode(f[3]) for f in mine if f[0] == HEADERS]
    body = b"".join(f[3] for f in mine if f[0] == DATA)
    assert mine[-1][1] & END_STREAM, "the call did not end"
    message = b""
    if body:
        assert body[0] == 0 and struct.unpack(">I", body[1:5])[0] == len(body) - 5
        message = body[5:]
    return heads[0], message, heads[-1]


async def test_handshake_settings_and_window() -> None:
    client = Client(server(max_concurrent_streams=7, max_message_bytes=100))
    assert [f[:3] for f in client.handshake] == [(SETTINGS, 0, 0), (WINDOW_UPDATE, 0, 0), (SETTINGS, ACK, 0)]
    settings = client.handshake[0][3]
    values = dict(struct.unpack_from(">HI", settings, i) for i in range(0, len(settings), 6))
    assert values[wire.MAX_CONCURRENT_STREAMS] == 7
    assert values[wire.INITIAL_WINDOW_SIZE] == Limits().stream_window_bytes
    increment = struct.unpack(">I", client.handshake[1][3])[0]
    assert increment + 65_535 == Limits().connection_window_bytes


async def test_a_call_and_its_answer() -> None:
    client = Client(server())
    client.call(1, b"hello")
    await settle()
    headers, message, trailers = answer(client, 1)
    assert headers[":status"] == "200" and headers["content-type"] == "application/grpc"
    assert message == b"olleh"
    assert trailers == {"grpc-status": "0"}


async def test_many_calls_on_one_connection_interleaved() -> None:
    client = Client(server())
    for stream in (1, 3, 5):
        client.open(stream)
    for stream in (5, 1, 3):
        client.send(frame(DATA, END_STREAM, stream, grpc_message(f"s{stream}".encode())))
    await settle()
    frames = client.frames()
    for stream in (1, 3, 5):
        data = b"".join(f[3] for f in frames if f[2] == stream and f[0] == DATA)
        assert data[5:] == f"s{stream}".encode()[::-1]


async def test_message_split_over_frames_and_padding() -> None:
    client = Client(server())
    client.open(1)
    body = grpc_message(b"abcdef")
    padded = bytes((3,)) + body[:4] + b"\x00\x00\x00"
    wire = frame(DATA, PADDED, 1, padded) + frame(DATA, END_STREAM, 1, body[4:])
    for i in range(len(wire)):  # one byte at a time: frames cut anywhere
        client.send(wire[i : i + 1])
    await settle()
    assert answer(client, 1)[1] == b"fedcba"


async def test_headers_with_priority_padding_and_continuation() -> None:
    client = Client(server())
    block = client.block(client.headers())
    first = bytes((2,)) + b"\x00\x00\x00\x00\x10" + block[:3] + b"\x00\x00"
    client.send(frame(HEADERS, PADDED | PRIORITY_FLAG, 1, first))
    client.send(frame(CONTINUATION, 0, 1, block[3:5]))
    client.send(frame(CONTINUATION, END_HEADERS, 1, block[5:]))
    client.send(frame(DATA, END_STREAM, 1, grpc_message(b"ab")))
    await settle()
    assert answer(client, 1)[1] == b"ba"


async def test_errors_are_trailers_only_with_percent_encoded_message() -> None:
    client = Client(server())
    client.call(1, b"fail")
    await settle()
    frames = client.frames()
    assert len(frames) == 1 and frames[0][1] == END_HEADERS | END_STREAM
    fields = client.decode(frames[0][3])
    assert fields[":status"] == "200" and fields["grpc-status"] == str(StatusCode.NOT_FOUND.value)
    assert fields["grpc-message"] == "model 'x' not found %E2%80%94 100%25"
    assert fields["retry-after"] == "2"


async def test_an_unexpected_handler_error_is_internal_without_internals(
    caplog: pytest.LogCaptureFixture,
) -> None:
    client = Client(server())
    client.call(1, b"boom")
    await settle()
    _, _, trailers = answer(client, 1)
    assert trailers["grpc-status"] == str(StatusCode.INTERNAL.value)
    assert trailers["grpc-message"] == "internal server error"
    assert "secret internals" in caplog.text  # logged for the operator, not sent
    client.call(3, b"ok")  # and the connection still serves
    await settle()
    assert answer(client, 3)[1] == b"ko"


@pytest.mark.parametrize(
    ("kwargs", "message", "code", "text"),
    [
        ({"path": "/test.Service/Nope"}, b"x", StatusCode.UNIMPLEMENTED, "unknown method /test.Service/Nope"),
        ({}, None, StatusCode.INVALID_ARGUMENT, "exactly one message"),
    ],
)
async def test_unknown_methods_and_missing_messages(
    kwargs: dict[str, Any], message: bytes | None, code: StatusCode, text: str
) -> None:
    client = Client(server())
    client.call(1, message, **kwargs)
    if message is None:
        client.send(frame(DATA, END_STREAM, 1, b""))
    await settle()
    _, _, trailers = answer(client, 1)
    assert trailers["grpc-status"] == str(code.value) and text in trailers["grpc-message"]


async def test_two_messages_truncated_messages_and_compressed_ones_are_refused() -> None:
    client = Client(server())
    cases = {
        1: (grpc_message(b"a") + grpc_message(b"b"), StatusCode.INVALID_ARGUMENT),
        3: (grpc_message(b"abc")[:-1], StatusCode.INVALID_ARGUMENT),
        5: (b"\x00\x00", StatusCode.INVALID_ARGUMENT),
        7: (grpc_message(b"abc", compressed=1), StatusCode.UNIMPLEMENTED),
    }
    for stream, (body, _) in cases.items():
        client.open(stream)
        client.send(frame(DATA, END_STREAM, stream, body))
    await settle()
    frames = client.frames()
    for stream, (_, code) in cases.items():
        (fields,) = [client.decode(f[3]) for f in frames if f[2] == stream and f[0] == HEADERS]
        assert fields["grpc-status"] == str(code.value)


async def test_not_grpc_gets_a_bare_http_status() -> None:
    client = Client(server())
    client.call(1, b"x", method="GET")
    client.call(3, b"x", content_type="application/json")
    await settle()
    frames = client.frames()
    statuses = {f[2]: client.decode(f[3])[":status"] for f in frames if f[0] == HEADERS}
    assert statuses == {1: "405", 3: "415"}
    assert {(f[2], f[3]) for f in frames if f[0] == RST_STREAM} == {(1, b"\0\0\0\0"), (3, b"\0\0\0\0")}


async def test_a_message_over_the_limit_is_refused_before_it_is_all_read() -> None:
    client = Client(server(max_message_bytes=1000))
    client.open(1)
    body = grpc_message(b"y" * 5000)
    client.send(frame(DATA, 0, 1, body[:2000]))
    frames = client.frames()
    fields = client.decode(frames[0][3])
    assert fields["grpc-status"] == str(StatusCode.RESOURCE_EXHAUSTED.value)
    assert fields["grpc-message"] == "request message larger than the limit of 1000 bytes"
    assert (frames[1][0], frames[1][2], frames[1][3]) == (RST_STREAM, 1, b"\0\0\0\0")  # stop sending
    client.send(frame(DATA, END_STREAM, 1, body[2000:]))  # what was on its way is dropped
    client.call(3, b"ok")
    await settle()
    assert answer(client, 3)[1] == b"ko"


async def test_received_data_is_credited_back() -> None:
    limits = Limits(stream_window_bytes=10_000, connection_window_bytes=70_000, max_message_bytes=10**6)
    client = Client(H2Server({PATH: echo}, limits))
    client.open(1)
    body = grpc_message(b"z" * 60_000)
    for i in range(0, 55_000, 5000):
        client.send(frame(DATA, 0, 1, body[i : i + 5000]))
    updates = [(f[2], struct.unpack(">I", f[3])[0]) for f in client.frames() if f[0] == WINDOW_UPDATE]
    assert sum(n for s, n in updates if s == 1) == 55_000  # each half window, per stream
    assert updates.count((0, 35_000)) == 1 and sum(n for s, n in updates if s == 0) == 35_000
    client.send(frame(DATA, END_STREAM, 1, body[55_000:]))
    await settle()
    assert len(answer(client, 1)[1]) == 60_000


async def test_a_large_answer_waits_for_the_clients_window_and_frame_size() -> None:
    client = Client(server())  # the client's windows: the default 65,535 bytes
    client.call(1, b"big:200000")
    await settle()
    frames = client.frames()
    sent = sum(len(f[3]) for f in frames if f[0] == DATA)
    assert sent == 65_535
    assert max(len(f[3]) for f in frames if f[0] == DATA) <= 16_384
    assert not any(f[1] & END_STREAM for f in frames)
    client.send(frame(WINDOW_UPDATE, 0, 1, struct.pack(">I", 200_000)))  # the stream's, not enough alone
    assert client.frames() == []
    client.send(frame(WINDOW_UPDATE, 0, 0, struct.pack(">I", 200_000)))
    frames = client.frames()
    assert sum(len(f[3]) for f in frames if f[0] == DATA) == 200_005 - 65_535
    assert frames[-1][0] == HEADERS and frames[-1][1] & END_STREAM
    assert client.decode(frames[-1][3]) == {"grpc-status": "0"}


async def test_settings_raise_the_stream_window_and_frame_size() -> None:
    settings = struct.pack(">HIHI", wire.INITIAL_WINDOW_SIZE, 1 << 20, wire.MAX_FRAME_SIZE, 1 << 20)
    client = Client(server(), settings=settings)
    client.frames()
    client.send(frame(WINDOW_UPDATE, 0, 0, struct.pack(">I", 1 << 20)))
    client.call(1, b"big:200000")
    await settle()
    frames = [f for f in client.frames() if f[2] == 1]
    assert [f[0] for f in frames] == [HEADERS, DATA, HEADERS]  # one write, no waiting


async def test_ping_is_answered_and_bad_frames_close_the_connection() -> None:
    client = Client(server())
    client.send(frame(PING, 0, 0, b"12345678"))
    assert client.frames() == [(PING, ACK, 0, b"12345678")]
    for bad in (
        frame(PING, 0, 0, b"short"),
        frame(DATA, 0, 0, b"x"),
        frame(HEADERS, END_HEADERS, 2, b""),
        frame(PUSH_PROMISE, 0, 1, b"\0\0\0\2"),
        frame(WINDOW_UPDATE, 0, 0, struct.pack(">I", 0)),
        frame(SETTINGS, 0, 0, b"12345"),
        frame(SETTINGS, 0, 1, b""),
        frame(DATA, 0, 99, b"x"),  # a stream never opened
        frame(HEADERS, 0, 1, b"") + frame(PING, 0, 0, b"12345678"),  # CONTINUATION expected
        frame(HEADERS, END_HEADERS, 1, b"\xff\xff\xff\xff"),  # not HPACK
        frame(HEADERS, END_HEADERS, 1, b"\x00\x01x\x02\xff\xfe"),  # a value that is not UTF-8
        struct.pack(">IBI", (2**21 << 8) | DATA, 0, 1),  # a frame larger than we allow
    ):
        client = Client(server())
        client.frames()
        client.send(bad)
        frames = client.frames()
        assert frames[-1][0] == GOAWAY and client.wire.closed, bad
        code = struct.unpack(">I", frames[-1][3][4:8])[0]
        assert code in {H2Error.PROTOCOL_ERROR, H2Error.FRAME_SIZE_ERROR, H2Error.COMPRESSION_ERROR}


async def test_an_empty_header_name_is_no_crash() -> None:
    client = Client(server())
    block = client.block(client.headers()) + b"\x00\x00\x01v"  # literal, empty name
    client.send(frame(HEADERS, END_HEADERS, 1, block))
    client.send(frame(DATA, END_STREAM, 1, grpc_message(b"ab")))
    await settle()
    assert answer(client, 1)[1] == b"ba"


async def test_a_wrong_preface_closes_and_a_missing_one_times_out() -> None:
    wire = Wire()
    conn = Connection(server())
    conn.connection_made(wire)  # type: ignore[arg-type]
    conn.data_received(b"GET / HTTP/1.1\r\n")
    assert wire.closed
    quiet = Wire()
    conn = Connection(server(preface_timeout_s=0.01))
    conn.connection_made(quiet)  # type: ignore[arg-type]
    conn.data_received(PREFACE[:10])
    await asyncio.wait_for(quiet.gone.wait(), 2)


async def test_a_header_block_too_large_is_refused() -> None:
    client = Client(server(max_header_list_bytes=1000))
    client.send(frame(HEADERS, 0, 1, b"\x00" * 600))
    client.send(frame(CONTINUATION, 0, 1, b"\x00" * 600))
    assert client.frames()[-1][0] == GOAWAY and client.wire.closed


async def test_streams_past_the_limit_are_refused() -> None:
    client = Client(server(max_concurrent_streams=2))
    for stream in (1, 3, 5):
        client.open(stream)
    assert [(f[0], f[2], f[3]) for f in client.frames()] == [
        (RST_STREAM, 5, struct.pack(">I", H2Error.REFUSED_STREAM))
    ]


async def test_a_reset_stream_cancels_its_call() -> None:
    srv = server()
    client = Client(srv)
    client.call(1, b"slow")
    await settle()
    assert srv.in_flight == 1
    client.send(frame(RST_STREAM, 0, 1, struct.pack(">I", H2Error.CANCEL)))
    await settle()
    assert srv.in_flight == 0 and client.frames() == []


async def test_a_lost_connection_cancels_its_calls() -> None:
    srv = server()
    client = Client(srv)
    client.call(1, b"slow")
    await settle()
    client.conn.connection_lost(None)
    await settle()
    assert srv.in_flight == 0 and client.conn not in srv.connections


async def test_grpc_timeout_ends_the_call_with_deadline_exceeded() -> None:
    client = Client(server())
    client.call(1, b"slow", extra=(("grpc-timeout", "20m"),))
    client.wire.wrote.clear()
    await asyncio.wait_for(client.wire.wrote.wait(), 2)  # the answer, once the deadline passes
    _, _, trailers = answer(client, 1)
    assert trailers["grpc-status"] == str(StatusCode.DEADLINE_EXCEEDED.value)


async def test_the_call_knows_its_peer_and_metadata() -> None:
    client = Client(server(), peer=("::1", 5000, 0, 0))
    client.call(1, b"who", extra=(("x-api-key", "k1"),))
    await settle()
    assert answer(client, 1)[1] == b"::1 k1"
    client = Client(server(), peer="/tmp/a-unix-socket")
    client.call(1, b"who")
    await settle()
    assert answer(client, 1)[1] == b"None None"


@pytest.mark.parametrize(
    ("block", "neutral"),
    [
        (b"\x82\x86", True),  # indexed only
        (b"\x82\x0f\x10\x03abc\x86", True),  # literal without indexing, name from the table
        (b"\x00\x01k\x01v\x10\x01k\x01w", True),  # literal names, without / never indexed
        (b"\x00\x7f\x01" + b"k" * 128 + b"\x01v", True),  # a long name
        (b"\x82\x40\x01k\x01v", False),  # added to the table
        (b"\x44\x01/", False),  # added, name from the table
        (b"\x3f\xe1\x1f\x82", False),  # a table size update
    ],
)
def test_which_blocks_leave_the_table_alone(block: bytes, neutral: bool) -> None:
    hpack.Decoder().decode(block)  # each is a valid block
    assert headers._table_neutral(block) is neutral


def test_long_indices_are_skipped_whole() -> None:
    assert headers._hpack_int_end(b"\xff\x80\x01\x82", 0, 7) == (255, 3)  # 127 + 0 + (1 << 7)
    assert headers._table_neutral(b"\xff\x80\x01\x82")
    assert not headers._table_neutral(b"\xff\x80\x01\x40\x01k\x01v")


def _string(text: str) -> bytes:
    return bytes((len(text),)) + text.encode()  # short, no Huffman


async def test_repeated_header_blocks_are_read_again_once_the_table_changes() -> None:
    """A block of indexed fields only is read once and remembered; a block that adds to the
    dynamic table shifts its indices, so the same bytes then mean other fields."""
    client = Client(server())
    post_http = b"\x83\x86"  # :method POST, :scheme http (static table)
    first = (
        post_http
        + b"\x44" + _string(PATH)  # :path, added to the table
        + b"\x5f" + _string("application/grpc")  # content-type, added
        + b"\x40" + _string("x-api-key") + _string("one")  # added: 62 key, 63 type, 64 path
    )  # fmt: skip
    again = post_http + b"\xc0\xbf\xbe"  # indexed 64, 63, 62: the same fields
    changed = post_http + b"\xc0\xbf\x40" + _string("x-api-key") + _string("two")  # now 62 is "two"
    after = post_http + b"\xc1\xc0\xbe"  # :path is 65 now
    assert headers._table_neutral(again) and not headers._table_neutral(first)
    for stream, block in ((1, first), (3, again), (5, again), (7, changed), (9, after), (11, again)):
        client.send(frame(HEADERS, END_HEADERS, stream, block))
        client.send(frame(DATA, END_STREAM, stream, grpc_message(b"who")))
        await settle()
        _, message, trailers = answer(client, stream)
        if stream < 11:
            assert trailers == {"grpc-status": "0"}, (stream, trailers)
            assert message == (b"127.0.0.1 one" if stream < 7 else b"127.0.0.1 two")
    # stream 11's bytes now read as content-type twice and no :path: not the call of stream 3
    assert trailers["grpc-status"] == str(StatusCode.UNIMPLEMENTED.value)


async def test_stop_sends_goaway_and_answers_calls_past_the_grace_unavailable() -> None:
    srv = server()
    await srv.start("127.0.0.1", 0)  # only to have a listener to close; the calls use the fake wire
    client = Client(srv)
    client.call(1, b"slow")
    await settle()
    stopping = asyncio.create_task(srv.stop(0.2))
    await settle()
    goaway = [f for f in client.frames() if f[0] == GOAWAY]
    assert struct.unpack(">II", goaway[0][3]) == (1, H2Error.NO_ERROR)
    client.call(3, b"late")  # refused: opened after GOAWAY
    assert [(f[0], f[2], f[3]) for f in client.frames()] == [
        (RST_STREAM, 3, struct.pack(">I", H2Error.REFUSED_STREAM))
    ]
    await stopping  # the slow call outlived the grace: answered UNAVAILABLE, then closed
    _, _, trailers = answer(client, 1)
    assert trailers["grpc-status"] == str(StatusCode.UNAVAILABLE.value)
    assert trailers["grpc-message"] == "server shutting down"
    assert client.wire.closed and srv.in_flight == 0 and not srv.connections


async def test_stop_returns_once_calls_finish() -> None:
    srv = server()
    await srv.start("127.0.0.1", 0)
    client = Client(srv)
    client.call(1, b"abc")
    client.open(3)
    stopping = asyncio.create_task(srv.stop(5))
    await settle()
    assert not stopping.done()
    client.send(frame(DATA, END_STREAM, 3, grpc_message(b"xy")))  # an open call may still finish
    await asyncio.wait_for(stopping, 1)
    frames = client.frames()
    assert b"".join(f[3] for f in frames if f[0] == DATA and f[2] == 3)[5:] == b"yx"


@pytest.mark.parametrize(
    ("value", "seconds"),
    [("1S", 1.0), ("20m", 0.02), ("3H", 10800.0), ("5M", 300.0), ("7u", 7e-6), ("99999999n", 0.099999999)],
)
def test_parse_timeout(value: str, seconds: float) -> None:
    assert parse_timeout(value) == pytest.approx(seconds)


# the last: an Arabic-Indic digit, which str.isdigit accepts
@pytest.mark.parametrize("value", ["", "S", "1", "123456789S", "1x", "-1S", "1.5S", "\u0661S"])
def test_malformed_timeouts_are_none(value: str) -> None:
    assert parse_timeout(value) is None


def test_percent_encoding_keeps_printable_ascii() -> None:
    assert percent_encode("plain text: ok!") == b"plain text: ok!"
    assert percent_encode("50% é\n") == b"50%25 %C3%A9%0A"
    assert len(percent_encode("x" * 10_000)) == headers.MAX_STATUS_MESSAGE_BYTES


# -- hostile peers: budgets, back-pressure, credit, timeouts, caps (issue 16, SAFETY.md 39) --------------


def goaway_code(client: Client) -> int | None:
    """The code of the GOAWAY the server sent (None: none), once it has closed the connection."""
    codes = [struct.unpack(">I", f[3][4:8])[0] for f in client.frames() if f[0] == GOAWAY]
    if not codes:
        return None
    assert client.wire.closed
    return codes[-1]


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


BLOCK_START = b"\x83\x86"  # the first fields of a header block: :method POST, :scheme http


def flood_frames(kind: str) -> Any:
    """Frames of one kind that each spend one frame of a budget, endlessly."""
    stream = 1
    while True:
        if kind == "ping":
            yield frame(PING, 0, 0, b"12345678")
        elif kind == "ping-ack":
            yield frame(PING, ACK, 0, b"12345678")
        elif kind == "settings":
            yield frame(SETTINGS, 0, 0)
        elif kind == "rst":
            yield frame(HEADERS, END_HEADERS, stream, HEADER_BLOCK) + frame(
                RST_STREAM, 0, stream, b"\0\0\0\x08"
            )
        elif kind == "refused":  # streams past max_concurrent_streams (1), never ended
            yield frame(HEADERS, END_HEADERS, stream, HEADER_BLOCK)
        elif kind == "empty-data":
            yield (frame(HEADERS, END_HEADERS, 1, HEADER_BLOCK) if stream == 1 else b"") + frame(DATA, 0, 1)
        elif kind == "empty-continuation":
            yield (frame(HEADERS, 0, 1, BLOCK_START) if stream == 1 else b"") + frame(CONTINUATION, 0, 1)
        elif kind == "priority":
            yield frame(wire.PRIORITY, 0, 1, b"\0\0\0\0\x10")
        elif kind == "unknown":
            yield frame(0x20, 0, 0, b"x")
        stream += 2


HEADER_BLOCK = hpack.Encoder().encode(
    [(":method", "POST"), (":scheme", "http"), (":path", PATH), ("content-type", "application/grpc")]
)
KINDS = [
    "ping",
    "ping-ack",
    "settings",
    "rst",
    "refused",
    "empty-data",
    "empty-continuation",
    "priority",
    "unknown",
]
BUDGETS = ("max_rst_stream_frames", "max_ping_frames", "max_settings_frames", "max_empty_frames")


@pytest.mark.parametrize("kind", KINDS)
async def test_frame_floods_end_in_goaway_enhance_your_calm(kind: str) -> None:
    clock = Clock()
    limits = Limits(max_concurrent_streams=1, frame_budget_refill_per_s=2.0, **dict.fromkeys(BUDGETS, 4))
    client = Client(H2Server({PATH: echo}, limits, clock=clock))
    client.frames()
    frames = flood_frames(kind)
    # the first stream is not refused; the client's SETTINGS and its ACK are spent already
    allowed = {"refused": 5, "settings": 2}.get(kind, 4)
    for _ in range(allowed):
        client.send(next(frames))
    assert goaway_code(client) is None
    clock.now += 1.0  # two more
    for _ in range(2):
        client.send(next(frames))
    assert goaway_code(client) is None
    client.send(next(frames))
    assert goaway_code(client) == H2Error.ENHANCE_YOUR_CALM
    client.send(next(frames))  # what still comes is dropped


async def test_budgets_are_per_connection_and_the_defaults_are_generous() -> None:
    assert Limits().max_ping_frames >= 1000 and Limits().frame_budget_refill_per_s >= 100
    srv = server()
    first, second = Client(srv), Client(srv)
    for client in (first, second):
        client.send(frame(PING, 0, 0, b"12345678") * 1000)
    assert goaway_code(first) is None and goaway_code(second) is None
    first.send(frame(PING, 0, 0, b"12345678") * 100)  # more than 1 s of refill, at once
    assert goaway_code(first) == H2Error.ENHANCE_YOUR_CALM and goaway_code(second) is None


async def test_a_peer_that_does_not_read_is_not_read_from() -> None:
    client = Client(server())  # the client's windows: the default 65,535 bytes
    client.call(1, b"big:200000")
    await settle()
    assert sum(len(f[3]) for f in client.frames() if f[0] == DATA) == 65_535
    client.conn.pause_writing()  # the transport's buffer is past its high-water mark
    assert not client.wire.reading
    client.send(frame(WINDOW_UPDATE, 0, 0, struct.pack(">I", 200_000)))
    client.send(frame(WINDOW_UPDATE, 0, 1, struct.pack(">I", 200_000)))
    assert client.frames() == []  # nothing more is queued while it is full
    client.conn.resume_writing()
    assert client.wire.reading
    frames = client.frames()
    assert sum(len(f[3]) for f in frames if f[0] == DATA) == 200_005 - 65_535
    assert client.decode(frames[-1][3]) == {"grpc-status": "0"}


def credit(client: Client, stream: int = 0) -> int:
    return sum(
        struct.unpack(">I", f[3])[0] for f in client.frames() if f[0] == WINDOW_UPDATE and f[2] == stream
    )


async def test_connection_credit_comes_back_as_messages_are_dispatched() -> None:
    limits = Limits(max_undispatched_bytes=100_000, max_message_bytes=60_000, connection_window_bytes=100_000)
    client = Client(H2Server({PATH: echo}, limits))
    assert [f[3] for f in client.handshake if f[0] == WINDOW_UPDATE] == [struct.pack(">I", 100_000 - 65_535)]
    body = grpc_message(b"z" * 50_000)
    client.open(1)
    client.send(frame(DATA, 0, 1, body[:40_000]))
    assert credit(client) == 0  # held, not dispatched: no credit
    client.send(frame(DATA, END_STREAM, 1, body[40_000:]))  # dispatched: all of it comes back
    assert credit(client) == 50_005
    await settle()
    assert len(answer(client, 1)[1]) == 50_000


async def test_padding_and_dropped_data_are_credited_at_once() -> None:
    limits = Limits(max_undispatched_bytes=100_000, max_message_bytes=60_000, connection_window_bytes=100_000)
    client = Client(H2Server({PATH: echo}, limits))
    client.frames()
    client.open(1)
    client.send(frame(DATA, PADDED, 1, bytes((255,)) + b"\0" * 255) * 200)  # 51,200 bytes of padding
    assert credit(client) >= 50_000
    client.send(frame(DATA, END_STREAM, 1, grpc_message(b"ab")))
    client.send(frame(DATA, 0, 1, b"\0" * 60_000))  # after END_STREAM: dropped
    assert credit(client) >= 60_000  # (the answer comes once the handler has run)
    await settle()
    assert answer(client, 1)[1] == b"ba"


async def test_bytes_held_on_a_connection_are_capped() -> None:
    limits = Limits(max_undispatched_bytes=100_000, max_message_bytes=60_000, connection_window_bytes=100_000)
    client = Client(H2Server({PATH: echo}, limits))
    client.frames()
    body = grpc_message(b"z" * 60_000)
    client.open(1)
    client.open(3)
    client.send(frame(DATA, 0, 1, body[:50_000]))
    client.send(frame(DATA, 0, 3, body[:50_000]))  # the window is used up; neither call can end
    frames = client.frames()
    (fields,) = [client.decode(f[3]) for f in frames if f[0] == HEADERS and f[2] == 3]
    assert fields["grpc-status"] == str(StatusCode.RESOURCE_EXHAUSTED.value)
    assert "more than 100000 request bytes waiting on one connection" in fields["grpc-message"]
    assert (RST_STREAM, 3) in [(f[0], f[2]) for f in frames]
    assert sum(struct.unpack(">I", f[3])[0] for f in frames if f[0] == WINDOW_UPDATE and f[2] == 0) == 50_000
    client.send(frame(DATA, END_STREAM, 1, body[50_000:]))  # stream 1 still finishes
    await settle()
    assert len(answer(client, 1)[1]) == 60_000


async def test_a_call_may_hold_its_connection_from_reading_until_let_go() -> None:
    HOLDS.clear()
    client = Client(server())
    client.frames()
    client.call(1, b"hold")
    await settle()
    assert answer(client, 1)[1] == b"held"  # the call itself is answered
    assert not client.wire.reading  # nothing more is read from the connection
    client.conn.pause_writing()
    client.conn.resume_writing()
    assert not client.wire.reading  # write back-pressure ending does not end the hold
    (release,) = HOLDS
    assert release() is True and client.wire.reading
    assert release() is False  # once
    client.call(3, b"again")
    await settle()
    assert answer(client, 3)[1] == b"niaga"


async def test_bytes_held_on_all_connections_together_are_capped() -> None:
    limits = Limits(max_undispatched_bytes_total=80_000, max_message_bytes=60_000)
    shared = H2Server({PATH: echo}, limits)
    first, second = Client(shared), Client(shared)
    body = grpc_message(b"z" * 60_000)
    for client in (first, second):
        client.frames()
        client.open(1)
    first.send(frame(DATA, 0, 1, body[:50_000]))
    assert shared.undispatched == 50_000
    second.send(frame(DATA, 0, 1, body[:50_000]))  # 100,000 held across two connections
    (fields,) = [second.decode(f[3]) for f in second.frames() if f[0] == HEADERS and f[2] == 1]
    assert fields["grpc-status"] == str(StatusCode.RESOURCE_EXHAUSTED.value)
    assert "the server holds its limit of 80000 request bytes being received" in fields["grpc-message"]
    assert shared.undispatched == 50_000  # the refused stream's bytes were let go
    first.conn.connection_lost(None)  # a connection that goes away gives its bytes back too
    assert shared.undispatched == 0
    second.open(3)
    second.send(frame(DATA, END_STREAM, 3, body))
    await settle()
    assert len(answer(second, 3)[1]) == 60_000


async def test_data_past_a_window_is_a_flow_control_error() -> None:
    client = Client(server(stream_window_bytes=70_000, max_message_bytes=10**6))
    client.frames()
    client.open(1)
    client.send(frame(DATA, 0, 1, b"\0" * 70_001))
    assert goaway_code(client) == H2Error.FLOW_CONTROL_ERROR
    limits = Limits(max_undispatched_bytes=0, max_message_bytes=65_530, stream_window_bytes=10**6)
    client = Client(H2Server({PATH: echo}, limits))  # may hold 65,535 bytes: no more credit than that
    client.frames()
    client.open(1)
    client.open(3)
    client.send(frame(DATA, 0, 1, b"\0" * 40_000))
    client.send(frame(DATA, 0, 3, b"\0" * 40_000))
    assert goaway_code(client) == H2Error.FLOW_CONTROL_ERROR


async def test_a_message_declared_over_the_limit_is_refused_from_its_prefix() -> None:
    client = Client(server(max_message_bytes=1000))
    client.open(1)
    client.send(frame(DATA, 0, 1, grpc_message(b"y" * 5000)[:5]))  # only the prefix
    (fields,) = [client.decode(f[3]) for f in client.frames() if f[0] == HEADERS]
    assert fields["grpc-status"] == str(StatusCode.RESOURCE_EXHAUSTED.value)


@pytest.mark.parametrize(
    ("frames", "code"),
    [
        (frame(WINDOW_UPDATE, 0, 0, struct.pack(">I", 2**31 - 1)), H2Error.FLOW_CONTROL_ERROR),
        (frame(WINDOW_UPDATE, 0, 99, struct.pack(">I", 1)), H2Error.PROTOCOL_ERROR),  # an idle stream
        (frame(WINDOW_UPDATE, 0, 0, b"\0\0\1"), H2Error.FRAME_SIZE_ERROR),
        (
            frame(WINDOW_UPDATE, 0, 1, struct.pack(">I", 2**31 - 1 - 65_535))
            + frame(SETTINGS, 0, 0, struct.pack(">HI", wire.INITIAL_WINDOW_SIZE, 65_536)),
            H2Error.FLOW_CONTROL_ERROR,  # SETTINGS pushing an open stream's window past 2^31-1
        ),
        (
            frame(SETTINGS, 0, 0, struct.pack(">HI", wire.INITIAL_WINDOW_SIZE, 2**31)),
            H2Error.FLOW_CONTROL_ERROR,
        ),
        (frame(SETTINGS, 0, 0, struct.pack(">HI", wire.ENABLE_PUSH, 2)), H2Error.PROTOCOL_ERROR),
        (frame(SETTINGS, 0, 0, struct.pack(">HI", wire.MAX_FRAME_SIZE, 2**24)), H2Error.PROTOCOL_ERROR),
        (frame(SETTINGS, ACK, 0, b"\0" * 6), H2Error.FRAME_SIZE_ERROR),
        (frame(PING, 0, 1, b"12345678"), H2Error.PROTOCOL_ERROR),
        (frame(RST_STREAM, 0, 0, b"\0\0\0\0"), H2Error.PROTOCOL_ERROR),
        (frame(RST_STREAM, 0, 1, b"\0\0\0"), H2Error.FRAME_SIZE_ERROR),
        (frame(RST_STREAM, 0, 99, b"\0\0\0\0"), H2Error.PROTOCOL_ERROR),  # an idle stream
        (frame(GOAWAY, 0, 1, b"\0" * 8), H2Error.PROTOCOL_ERROR),
        (frame(wire.PRIORITY, 0, 0, b"\0" * 5), H2Error.PROTOCOL_ERROR),
        (frame(HEADERS, END_HEADERS, 1, HEADER_BLOCK), H2Error.PROTOCOL_ERROR),  # trailers without END_STREAM
        (
            frame(HEADERS, END_HEADERS | PRIORITY_FLAG, 3, b"\0\0\0\3\x10" + HEADER_BLOCK),
            H2Error.PROTOCOL_ERROR,
        ),
    ],
)
async def test_connection_errors(frames: bytes, code: H2Error) -> None:
    client = Client(server())
    client.open(1)  # stream 1 is open; its message is still to come
    client.frames()
    client.send(frames)
    assert goaway_code(client) == code


@pytest.mark.parametrize(
    ("frames", "code"),
    [
        (frame(WINDOW_UPDATE, 0, 1, struct.pack(">I", 0)), H2Error.PROTOCOL_ERROR),
        (frame(WINDOW_UPDATE, 0, 1, struct.pack(">I", 2**31 - 1)), H2Error.FLOW_CONTROL_ERROR),
        (frame(wire.PRIORITY, 0, 1, b"\0" * 4), H2Error.FRAME_SIZE_ERROR),
    ],
)
async def test_stream_errors_reset_the_stream_only(frames: bytes, code: H2Error) -> None:
    srv = server()
    client = Client(srv)
    client.call(1, b"slow")
    await settle()
    client.frames()
    client.send(frames)
    assert [(f[0], f[2], f[3]) for f in client.frames()] == [(RST_STREAM, 1, struct.pack(">I", code))]
    await settle()
    assert srv.in_flight == 0  # its call stopped
    client.call(3, b"ok")
    await settle()
    assert answer(client, 3)[1] == b"ko"


async def test_an_idle_connection_is_closed_a_busy_one_is_not() -> None:
    srv = server(idle_timeout_s=0.05)
    quiet, busy = Client(srv), Client(srv)
    busy.call(1, b"slow")
    await asyncio.wait_for(quiet.wire.gone.wait(), 2)  # two checks (50 ms apart) without a stream
    assert goaway_code(quiet) == H2Error.NO_ERROR
    assert not busy.wire.closed  # checked as often, busy each time
    busy.conn.connection_lost(None)


async def test_connections_past_the_cap_are_refused() -> None:
    srv = server(max_connections=2)
    first, second, third = Client(srv), Client(srv), Client(srv)
    assert [f[0] for f in third.handshake] == [SETTINGS, GOAWAY] and third.wire.closed
    assert struct.unpack(">I", third.handshake[1][3][4:8])[0] == H2Error.ENHANCE_YOUR_CALM
    assert srv.connections == {first.conn, second.conn}
    first.call(1, b"ab")
    await settle()
    assert answer(first, 1)[1] == b"ba"


async def test_begin_shutdown_refuses_at_once_and_closes_idle_connections() -> None:
    srv = server()
    port = await srv.start("127.0.0.1", 0)
    busy, quiet = Client(srv), Client(srv)
    busy.call(1, b"slow")
    await settle()
    for client in (busy, quiet):
        client.frames()
    srv.begin_shutdown()  # synchronous: what a signal handler calls
    assert goaway_code(quiet) == H2Error.NO_ERROR  # nothing in flight: closed at once
    frames = busy.frames()
    assert [(f[0], struct.unpack(">II", f[3])) for f in frames] == [(GOAWAY, (1, H2Error.NO_ERROR))]
    assert not busy.wire.closed
    busy.call(3, b"late")
    assert [(f[0], f[2], f[3]) for f in busy.frames()] == [
        (RST_STREAM, 3, struct.pack(">I", H2Error.REFUSED_STREAM))
    ]
    with pytest.raises(ConnectionRefusedError):
        await asyncio.open_connection("127.0.0.1", port)  # no longer listening
    late = Client(srv)  # accepted before the listener closed, set up after
    assert [f[0] for f in late.handshake] == [SETTINGS, GOAWAY] and late.wire.closed
    srv.end_shutdown()
    _, _, trailers = answer(busy, 1)
    assert trailers["grpc-status"] == str(StatusCode.UNAVAILABLE.value)
    await settle()
    assert srv.in_flight == 0 and not srv.connections


async def test_end_shutdown_answers_every_open_call_unavailable() -> None:
    srv = server()
    client = Client(srv)
    client.call(1, b"slow")  # a handler running
    client.open(3)  # a request still arriving
    client.send(frame(DATA, 0, 3, b"\0\0"))
    client.call(5, b"big:200000")  # an answer waiting for the client's window
    await settle()
    client.frames()
    srv.end_shutdown("going down")
    frames = client.frames()
    for stream in (1, 3, 5):
        fields = client.decode([f for f in frames if f[0] == HEADERS and f[2] == stream][-1][3])
        assert fields["grpc-status"] == str(StatusCode.UNAVAILABLE.value)
        assert fields["grpc-message"] == "going down"
        assert (":status" in fields) is (stream != 5)  # 5's headers went out before its message
    assert (RST_STREAM, 3) in [(f[0], f[2]) for f in frames]  # stop sending
    assert frames[0][0] == GOAWAY and client.wire.closed
    await settle()
    assert srv.in_flight == 0 and not srv.connections
    await srv.stop(1)  # then stop has nothing left to do


async def test_a_frame_in_many_pieces_is_parsed_once_whole() -> None:
    client = Client(server())
    client.open(1)
    body = grpc_message(b"q" * 50_000)
    wire = frame(DATA, END_STREAM, 1, body)
    for i in range(0, len(wire), 1000):
        client.send(wire[i : i + 1000])
    await settle()
    assert answer(client, 1)[1] == b"q" * 50_000


async def test_a_request_message_that_does_not_arrive_in_time_is_answered_and_reset() -> None:
    clock = Clock()
    client = Client(H2Server({PATH: echo}, Limits(message_timeout_s=0.02), clock=clock))
    client.open(1)  # its message never comes
    client.call(3, b"slow")  # dispatched: the time its handler takes is not the message's
    await settle()
    client.frames()
    clock.now += 1.0
    client.wire.wrote.clear()
    await asyncio.wait_for(client.wire.wrote.wait(), 2)  # the next check, 10 ms on
    frames = client.frames()
    assert {f[2] for f in frames} == {1}
    (fields,) = [client.decode(f[3]) for f in frames if f[0] == HEADERS]
    assert fields["grpc-status"] == str(StatusCode.DEADLINE_EXCEEDED.value)
    assert fields["grpc-message"] == "request message not received within 0.02 s"
    assert (RST_STREAM, 1) in [(f[0], f[2]) for f in frames]
    client.conn.connection_lost(None)


async def test_an_answer_the_client_never_takes_is_dropped() -> None:
    clock = Clock()
    client = Client(H2Server({PATH: echo}, Limits(message_timeout_s=0.02), clock=clock))
    client.call(1, b"big:200000")  # more than the client's window: waits for credit
    await settle()
    assert not any(f[1] & END_STREAM for f in client.frames())
    clock.now += 1.0
    client.wire.wrote.clear()
    await asyncio.wait_for(client.wire.wrote.wait(), 2)
    assert client.frames() == [(RST_STREAM, 0, 1, struct.pack(">I", H2Error.CANCEL))]
    assert not client.conn.busy  # and the answer is let go
    client.conn.connection_lost(None)
