"""What only a real socket can show: raw paths, mixed good and bad traffic, SIGTERM."""

from __future__ import annotations

import json
import socket
import threading
from pathlib import Path

import numpy as np
import tritonclient.http as httpclient

from tests.e2e.conftest import ServerProcess


def raw_request(server: ServerProcess, head: str, body: bytes = b"") -> tuple[int, bytes]:
    with socket.create_connection(("127.0.0.1", server.port), timeout=10) as s:
        s.sendall(head.encode() + b"\r\n" + body)
        data = b""
        while chunk := s.recv(65536):
            data += chunk
    status = int(data.split(b" ", 2)[1])
    return status, data.split(b"\r\n\r\n", 1)[1]


def test_dot_segments_and_encoded_separators_are_refused(server: ServerProcess) -> None:
    for path in ("/v2/models/../identity/infer", "/v2/models/..%2Fidentity", "/v2/models/a%5c/ready"):
        status, body = raw_request(server, f"GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n")
        assert status == 400, path
        assert json.loads(body) == {"error": "invalid characters or dot-segments in the URL path"}


def test_declared_body_over_the_limit_is_refused_before_it_is_sent(server: ServerProcess) -> None:
    head = (
        "POST /v2/models/identity/infer HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        f"Content-Length: {100 * 1024 * 1024}\r\n"
    )
    status, body = raw_request(server, head)  # no body at all: the answer must not wait for it
    assert status == 413
    assert "max_body_bytes" in json.loads(body)["error"]


def test_bad_requests_do_not_disturb_concurrent_good_ones(server: ServerProcess) -> None:
    """Triton's own test: one client sends a wrong binary size while others infer; answers stay exact."""
    errors: list[str] = []
    bad_statuses: list[int] = []

    def good(seed: int) -> None:
        client = httpclient.InferenceServerClient(server.url)
        try:
            rng = np.random.default_rng(seed)
            for _ in range(40):
                x = rng.standard_normal((2, 16)).astype(np.float32)
                t = httpclient.InferInput("input", [2, 16], "FP32")
                t.set_data_from_numpy(x)
                got = client.infer("identity", [t]).as_numpy("output")
                if not np.array_equal(got, x):
                    errors.append(f"client {seed}: wrong answer")
        finally:
            client.close()  # in its own thread: gevent refuses to close it from another one

    def bad() -> None:
        header = json.dumps(
            {
                "inputs": [
                    {
                        "name": "input",
                        "shape": [2, 16],
                        "datatype": "FP32",
                        "parameters": {"binary_data_size": 100},
                    }
                ]
            }
        ).encode()
        body = header + bytes(100)
        for _ in range(40):
            head = (
                "POST /v2/models/identity/infer HTTP/1.1\r\nHost: x\r\nConnection: close\r\n"
                f"Inference-Header-Content-Length: {len(header)}\r\nContent-Length: {len(body)}\r\n"
            )
            status, _ = raw_request(server, head, body)
            bad_statuses.append(status)

    threads = [threading.Thread(target=good, args=(i,)) for i in range(3)] + [threading.Thread(target=bad)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert errors == []
    assert bad_statuses == [400] * 40


def test_sigterm_exits_cleanly(repo: Path) -> None:
    proc = ServerProcess(repo, "--intra-op-threads", "1")
    proc.wait_ready()
    assert proc.stop() == 0
    assert "Traceback" not in proc.output()
