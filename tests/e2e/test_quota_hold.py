"""A tenant past its quota gets 429 at once, and its connection reads nothing more until the
quota could take a request (server/quota.py `hold`, server/http1.py): through the real server."""

from __future__ import annotations

import json
import select
import socket
from pathlib import Path

from modelfleet.server.auth import key_digest
from tests.e2e.conftest import ServerProcess
from tests.models import CallsBegun, slow_repo

KEY = "acme-key-0123456789abcdef"
SLOW_S = 1.5  # what the slow model simulates for the call that fills the tenant's quota


def _request(model: str, doc: dict[str, object]) -> bytes:
    body = json.dumps(doc).encode()
    head = (
        f"POST /v2/models/{model}/infer HTTP/1.1\r\nHost: t\r\nAuthorization: Bearer {KEY}\r\n"
        f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n"
    )
    return head.encode() + body


def _response(sock: socket.socket) -> tuple[int, bytes]:
    """One whole HTTP/1.1 response (content-length framed) from a keep-alive connection."""
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        assert chunk, "connection closed"
        data += chunk
    head, body = data.split(b"\r\n\r\n", 1)
    lines = head.decode().split("\r\n")
    length = int(
        next(v for k, _, v in (line.partition(": ") for line in lines[1:]) if k.lower() == "content-length")
    )
    while len(body) < length:
        body += sock.recv(65536)
    return int(lines[0].split()[1]), body


def test_a_refused_connection_reads_its_next_request_only_when_the_quota_frees(tmp_path: Path) -> None:
    begun = CallsBegun(tmp_path / "begun")
    keys = tmp_path / "keys.json"
    tenant = {"keys": [key_digest(KEY)], "models": ["slow", "identity"], "quota": {"max_concurrent": 1}}
    keys.write_text(json.dumps({"tenants": {"acme": tenant}}))
    server = ServerProcess(
        slow_repo(tmp_path / "repo"), "--python-models", "--auth-keys-file", str(keys),
        "--startup-load", "all", "--intra-op-threads", "1",
        env={"SLOW_FIFO": str(begun.path)},
    )  # fmt: skip
    try:
        server.wait_ready()
        slow = {"inputs": [{"name": "x", "datatype": "FP32", "shape": [1, 1], "data": [SLOW_S]}]}
        quick = {"inputs": [{"name": "input", "datatype": "FP32", "shape": [1, 16], "data": [0.5] * 16}]}
        with (
            socket.create_connection(("127.0.0.1", server.port)) as busy,
            socket.create_connection(("127.0.0.1", server.port)) as refused,
        ):
            busy.sendall(_request("slow", slow))
            assert begun.wait(1) == 1  # the tenant's one request in flight is running
            refused.sendall(_request("identity", quick))
            status, body = _response(refused)
            assert (status, json.loads(body)) == (
                429, {"error": "tenant 'acme' has 1 requests in flight, its quota is 1"}
            )  # fmt: skip
            refused.sendall(_request("identity", quick))  # held: not read while the slow call runs
            ready, _, _ = select.select([busy, refused], [], [], 30)
            assert busy in ready, "the held connection answered before the tenant's call ended"
            assert _response(busy)[0] == 200
            status, body = _response(refused)  # read once the slow call left the quota
            assert status == 200, body
            assert json.loads(body)["outputs"][0]["data"] == [0.5] * 16
    finally:
        assert server.stop() == 0
        begun.close()
