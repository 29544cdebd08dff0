"""SIGTERM with a slow call in flight on each front: one deadline (--shutdown-timeout-s) for both.
gRPC refuses new calls at once, the calls still running at the deadline are answered (JSON 503 on
HTTP, UNAVAILABLE on gRPC), and the process exits 0 soon after, well within Kubernetes' 30 s."""

from __future__ import annotations

import json
import signal
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import numpy as np
import tritonclient.grpc as grpcclient
from tritonclient.utils import InferenceServerException

from tests.e2e.conftest import ServerProcess
from tests.models import CallsBegun, slow_repo

TIMEOUT_S = 3.0


def http_call(server: ServerProcess, seconds: float, out: dict[str, Any]) -> None:
    doc = {"inputs": [{"name": "x", "datatype": "FP32", "shape": [1, 1], "data": [seconds]}]}
    request = urllib.request.Request(
        f"http://{server.url}/v2/models/slow/infer",
        json.dumps(doc).encode(),
        {"Content-Type": "application/json"},
    )
    try:
        with urllib.request.urlopen(request, timeout=30) as r:
            out["status"], out["body"] = r.status, r.read()
    except urllib.error.HTTPError as exc:
        out["status"], out["body"], out["type"] = exc.code, exc.read(), exc.headers["content-type"]
    out["at"] = time.monotonic()


def grpc_call(server: ServerProcess, seconds: float, out: dict[str, Any]) -> None:
    client = grpcclient.InferenceServerClient(server.grpc_url)
    x = grpcclient.InferInput("x", [1, 1], "FP32")
    x.set_data_from_numpy(np.array([[seconds]], dtype=np.float32))
    try:
        result = client.infer("slow", [x], client_timeout=30)
        out["ok"] = result.as_numpy("y").tolist()
    except InferenceServerException as exc:
        out["status"], out["message"] = exc.status(), exc.message()
    finally:
        out["at"] = time.monotonic()
        client.close()


def _ready(server: ServerProcess) -> bool:
    try:
        with urllib.request.urlopen(f"http://{server.url}/v2/health/ready", timeout=5) as r:
            return bool(r.status == 200)
    except urllib.error.HTTPError as exc:
        if exc.code != 503:
            raise
        return False
    except OSError:  # the listener is closed, or the connection reset: not ready either
        return False


def test_sigterm_one_deadline_for_both_fronts(tmp_path: Path) -> None:
    begun = CallsBegun(tmp_path / "begun")
    server = ServerProcess(
        slow_repo(tmp_path / "repo"),
        "--python-models",
        "--startup-load",
        "all",
        "--shutdown-timeout-s",
        str(TIMEOUT_S),
        env={"SLOW_FIFO": str(begun.path)},
    )
    try:
        server.wait_ready()
        results: list[dict[str, Any]] = [{}, {}]
        threads = [
            threading.Thread(target=http_call, args=(server, 20.0, results[0])),
            threading.Thread(target=grpc_call, args=(server, 20.0, results[1])),
        ]
        for t in threads:
            t.start()
        assert begun.wait(2) == 2, server.output()  # both calls are running in the server

        term = time.monotonic()
        server.proc.send_signal(signal.SIGTERM)
        while _ready(server) and time.monotonic() - term < 2:  # each probe a round trip: no sleep
            pass
        refused: dict[str, Any] = {}  # readiness is 503: the gRPC front has begun its shutdown too
        while "status" not in refused and time.monotonic() - term < 2:
            grpc_call(server, 0.0, refused)
        assert refused.get("status") == "StatusCode.UNAVAILABLE", refused
        assert refused["at"] - term < 2.0

        for t in threads:
            t.join(30)
        http, grpc = results
        assert http["status"] == 503, http
        assert http["type"] == "application/json"
        assert json.loads(http["body"]) == {"error": "the server is shutting down; retry on another replica"}
        assert TIMEOUT_S - 0.5 < http["at"] - term < TIMEOUT_S + 3
        assert grpc["status"] == "StatusCode.UNAVAILABLE", grpc
        assert "shutting down" in grpc["message"]
        assert server.proc.wait(30) == 0
        assert time.monotonic() - term < TIMEOUT_S + 3  # the model runs (20 s) are not waited for
    finally:
        server.stop()
        begun.close()
