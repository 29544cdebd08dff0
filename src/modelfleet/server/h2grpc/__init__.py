"""gRPC's HTTP/2 transport for unary calls (cleartext, prior knowledge), on one asyncio Protocol.

Parts: wire.py (frames, codes, limits, stream state), headers.py (HPACK in and out), base.py,
frames.py, flow.py, calls.py and connection.py (one Connection), server.py (H2Server).

Why not grpcio's server: measured here (docs/benchmarks.md, "gRPC against HTTP"), a bare grpcio
call costs the server 160-190 us of CPU, more than our whole HTTP request (~100 us); and why not
the sans-IO `h2` library: the same bench ("The HTTP/2 layer: h2 or our own") measured it at
~200 us per call against ~40 us here, 0.3x of HTTP. This module does only what a unary gRPC
service needs: frames, SETTINGS / PING / GOAWAY, flow control both ways, HPACK decoding (the
`hpack` library; answers use fixed, never-indexed header blocks), the 5-byte message framing,
deadlines (`grpc-timeout`) and cancellation (RST_STREAM, lost connections). Handlers get the
message bytes and a `Call`, return the answer's bytes or raise `Status`.

A hostile peer is bounded (see `Limits`): frame, header list, message and window sizes; bytes
buffered before dispatch per connection (flow-control credit comes back as messages are handed to
handlers); write back-pressure (a peer that does not read is not read from); budgets of RST_STREAM,
PING, SETTINGS and empty frames (GOAWAY ENHANCE_YOUR_CALM past them); preface and idle timeouts; a
connection cap. Buffers are linear in the bytes they carry. `begin_shutdown` / `end_shutdown` /
`stop` drain the server. tests/integration/test_h2_conformance.py checks all this with the `h2`
library as an independent peer.

Spec: RFC 9113 (HTTP/2), RFC 7541 (HPACK), grpc/doc/PROTOCOL-HTTP2.md.
"""

from modelfleet.server.h2grpc.connection import Connection
from modelfleet.server.h2grpc.headers import (
    MAX_STATUS_MESSAGE_BYTES,
    parse_timeout,
    percent_encode,
    status_block,
)
from modelfleet.server.h2grpc.server import H2Server
from modelfleet.server.h2grpc.wire import (
    ACK,
    CONTINUATION,
    DATA,
    END_HEADERS,
    END_STREAM,
    GOAWAY,
    HEADERS,
    INITIAL_WINDOW_SIZE,
    MAX_CONCURRENT_STREAMS,
    MAX_FRAME_SIZE,
    PADDED,
    PING,
    PREFACE,
    PRIORITY,
    PRIORITY_FLAG,
    PUSH_PROMISE,
    RST_STREAM,
    SETTINGS,
    WINDOW_UPDATE,
    Call,
    H2ConnectionError,
    H2Error,
    Handler,
    Limits,
    Status,
    StatusCode,
    frame,
)

__all__ = [
    "ACK",
    "CONTINUATION",
    "DATA",
    "END_HEADERS",
    "END_STREAM",
    "GOAWAY",
    "HEADERS",
    "INITIAL_WINDOW_SIZE",
    "MAX_CONCURRENT_STREAMS",
    "MAX_FRAME_SIZE",
    "MAX_STATUS_MESSAGE_BYTES",
    "PADDED",
    "PING",
    "PREFACE",
    "PRIORITY",
    "PRIORITY_FLAG",
    "PUSH_PROMISE",
    "RST_STREAM",
    "SETTINGS",
    "WINDOW_UPDATE",
    "Call",
    "Connection",
    "H2ConnectionError",
    "H2Error",
    "H2Server",
    "Handler",
    "Limits",
    "Status",
    "StatusCode",
    "frame",
    "parse_timeout",
    "percent_encode",
    "status_block",
]
