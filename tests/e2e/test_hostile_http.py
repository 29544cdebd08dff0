"""HTTP/1.1 limits against a real `modelfleet serve`: what a slow, stuck or greedy client can hold
(server/http1.py and the body reader in server/http.py). Raw sockets, as such a client would use."""

from __future__ import annotations

import json
import socket
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.e2e.conftest import ServerProcess
from tests.models import identity

LIMITS = {
    "MODELFLEET_HEADER_TIMEOUT_S": "1",
    "MODELFLEET_BODY_TIMEOUT_S": "1",
    "MODELFLEET_MAX_HEADER_BYTES": "4096",
    "MODELFLEET_MAX_CONNECTIONS": "8",
    "MODELFLEET_KEEP_ALIVE_TIMEOUT_S": "1",
}
BODY = json.dumps({"inputs": [{"name": "input", "shape": [1, 16], "datatype": "FP32", "data": [1.0] * 16}]})


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    root = tmp_path_factory.mktemp("hostile-repo")
    identity(root / "identity" / "1" / "model.onnx")
    proc = ServerProcess(root, "--intra-op-threads", "1", "--startup-load", "all", env=LIMITS)
    try:
        proc.wait_ready()
        yield proc
    finally:
        proc.stop()


def connect(server: ServerProcess) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", server.port), timeout=10)
    return sock


def read_all(sock: socket.socket) -> bytes:
    """Everything the server sends until it closes the connection."""
    chunks = []
    while chunk := sock.recv(65536):
        chunks.append(chunk)
    return b"".join(chunks)


def read_one(sock: socket.socket) -> bytes:
    """One whole response (head and Content-Length body) from a kept-alive connection."""
    raw = b""
    while b"\r\n\r\n" not in raw:
        raw += sock.recv(65536)
    head, _, body = raw.partition(b"\r\n\r\n")
    length = next(
        int(line.split(b":")[1])
        for line in head.split(b"\r\n")
        if line.lower().startswith(b"content-length:")
    )
    while len(body) < length:
        body += sock.recv(65536)
    return head + b"\r\n\r\n" + body


def answer(raw: bytes) -> tuple[int, dict[str, str], dict[str, object]]:
    head, _, body = raw.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    headers = dict(line.lower().split(": ", 1) for line in lines[1:])
    return int(lines[0].split()[1]), headers, json.loads(body)


def request(path: str = "/v2/models/identity/infer", body: str = BODY, extra: str = "") -> bytes:
    return (
        f"POST {path} HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(body)}\r\n{extra}\r\n{body}"
    ).encode()


def test_partial_headers_get_408_and_the_connection_closed(server: ServerProcess) -> None:
    with connect(server) as sock:
        started = time.monotonic()
        sock.sendall(b"POST /v2/models/identity/infer HTTP/1.1\r\nHost: x\r\n")
        status, headers, body = answer(read_all(sock))
        assert time.monotonic() - started < 5
    assert (status, headers["connection"]) == (408, "close")
    assert body == {"error": "request headers did not arrive within 1 s"}


def test_a_silent_connection_is_closed_too(server: ServerProcess) -> None:
    with connect(server) as sock:
        status, _, _ = answer(read_all(sock))
    assert status == 408


def test_headers_over_the_cap_get_431(server: ServerProcess) -> None:
    with connect(server) as sock:
        sock.sendall(request(extra=f"X-Big: {'a' * 8192}\r\n"))
        status, headers, body = answer(read_all(sock))
    assert (status, headers["connection"]) == (431, "close")
    assert body == {"error": "request line and headers are larger than 4096 bytes"}


def test_a_body_that_stops_arriving_gets_408(server: ServerProcess) -> None:
    with connect(server) as sock:
        sock.sendall(request()[:-10])  # all but the last 10 bytes of the body
        status, headers, body = answer(read_all(sock))
    assert (status, headers["connection"]) == (408, "close")
    assert body == {"error": "the request body did not arrive within 1 s"}


def test_keep_alive_serves_several_requests_then_closes_when_idle(server: ServerProcess) -> None:
    with connect(server) as sock:
        for _ in range(3):
            sock.sendall(request())
            raw = read_one(sock)
            assert raw.startswith(b"HTTP/1.1 200 "), raw
        started = time.monotonic()
        assert sock.recv(1) == b""  # closed by the keep-alive timeout (1 s)
        assert time.monotonic() - started < 5


def test_one_connection_past_the_cap_gets_503_at_once(server: ServerProcess) -> None:
    held = [connect(server) for _ in range(8)]
    try:
        for sock in held:
            sock.sendall(b"GET /v2/health/live HTTP/1.1\r\nHost: x\r\n\r\n")  # each surely accepted
            assert read_one(sock).startswith(b"HTTP/1.1 200 ")
        with connect(server) as extra:
            status, headers, body = answer(read_all(extra))
        assert (status, headers["retry-after"]) == (503, "1")
        assert body == {"error": "the server holds its limit of 8 connections; retry"}
    finally:
        for sock in held:
            sock.close()
    assert _live_after_the_cap_frees(server)


def _live_after_the_cap_frees(server: ServerProcess) -> bool:
    for _ in range(50):  # the server sees the closes within a few loop turns
        with connect(server) as sock:
            sock.sendall(b"GET /v2/health/live HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            if read_all(sock).startswith(b"HTTP/1.1 200 "):
                return True
    return False


def test_the_server_is_healthy_after_all_that(server: ServerProcess, tmp_path: Path) -> None:
    with connect(server) as sock:
        sock.sendall(request(extra="Connection: close\r\n"))
        raw = read_all(sock)
    assert raw.startswith(b"HTTP/1.1 200 ")
    assert server.proc.poll() is None
