"""Issue 16's HTTP/2 targets through `modelfleet serve`: a client that never reads floods the gRPC port
with 2,000,000 PINGs or 3,000,000 SETTINGS; the server closes the connection (GOAWAY ENHANCE_YOUR_CALM;
tests/integration/test_h2_conformance.py reads it back deterministically), its memory grows by less
than 64 MiB, and it goes on serving other clients (benchmarks/h2_abuse.py has the figures)."""

from __future__ import annotations

import contextlib
import socket
import struct
import threading
from pathlib import Path

import pytest
import tritonclient.grpc as grpcclient

from tests.e2e.conftest import ServerProcess

PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
GOAWAY, ENHANCE_YOUR_CALM = 7, 11


def frame(kind: int, flags: int, stream: int, payload: bytes = b"") -> bytes:
    return struct.pack(">IBI", (len(payload) << 8) | kind, flags, stream) + payload


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise KeyError("VmRSS")


def goaway_code(sock: socket.socket) -> int | None:
    """Read what the server sent until its GOAWAY (its error code) or the end (None). A reset
    or silence (the server aborts a peer that neither reads nor closes 2 s after its GOAWAY; the
    reset may overtake the GOAWAY still queued for this unread socket, or be dropped by its kernel
    as out of window) counts as the end."""
    buffer = b""
    with contextlib.suppress(ConnectionResetError, TimeoutError):
        while chunk := sock.recv(1 << 16):
            buffer += chunk
            pos = 0
            while len(buffer) - pos >= 9:
                word, _, _ = struct.unpack_from(">IBI", buffer, pos)
                length, kind = word >> 8, word & 0xFF
                if len(buffer) - pos - 9 < length:
                    break
                if kind == GOAWAY:
                    return int(struct.unpack_from(">I", buffer, pos + 13)[0])
                pos += 9 + length
            buffer = buffer[pos:]
    return None


@pytest.mark.parametrize(
    ("one", "count"),
    [(frame(6, 0, 0, b"12345678"), 2_000_000), (frame(4, 0, 0), 3_000_000)],
    ids=["ping", "settings"],
)
def test_a_flood_from_a_client_that_never_reads(server: ServerProcess, one: bytes, count: int) -> None:
    sock = socket.create_connection(("127.0.0.1", server.grpc_port))
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.sendall(PREFACE + frame(4, 0, 0))
    before = peak = rss_kib(server.proc.pid)
    done = threading.Event()

    def watch() -> None:
        nonlocal peak
        while not done.wait(0.02):
            peak = max(peak, rss_kib(server.proc.pid))

    watcher = threading.Thread(target=watch)
    watcher.start()
    sock.settimeout(3)
    try:
        for _ in range(0, count, 10_000):
            sock.sendall(one * 10_000)
    except (ConnectionError, TimeoutError):
        pass  # the server closed the connection, or stopped reading, before the flood was all sent
    finally:
        done.set()
        watcher.join()
    assert goaway_code(sock) in {ENHANCE_YOUR_CALM, None}  # None: reset, GOAWAY overtaken (see there)
    sock.close()
    assert (max(peak, rss_kib(server.proc.pid)) - before) < 64 * 1024
    client = grpcclient.InferenceServerClient(server.grpc_url)  # and the server serves on
    assert client.is_server_live()
    client.close()
