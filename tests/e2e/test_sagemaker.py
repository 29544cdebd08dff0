"""`modelfleet serve --sagemaker` as SageMaker runs it: /ping, then /invocations naming the model."""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from pathlib import Path

from tests.e2e.conftest import ServerProcess

ROW = [i / 16 for i in range(16)]


def call(
    server: ServerProcess, method: str, path: str, body: bytes | None = None, **headers: str
) -> tuple[int, bytes]:
    request = urllib.request.Request(f"http://{server.url}{path}", body, headers, method=method)
    try:
        with urllib.request.urlopen(request, timeout=30) as r:
            return r.status, r.read()
    except urllib.error.HTTPError as e:
        return e.code, e.read()


def test_ping_and_invocations_with_the_target_model_header(repo: Path) -> None:
    server = ServerProcess(repo, "--sagemaker", "--intra-op-threads", "1", "--startup-load", "none")
    try:
        server.wait_ready()
        assert call(server, "GET", "/ping") == (200, b'{"ready":true}')
        body = json.dumps({"instances": [ROW, ROW]}).encode()
        headers = {"Content-Type": "application/json", "X-Amzn-SageMaker-Target-Model": "identity.tar.gz"}
        status, answer = call(server, "POST", "/invocations", body, **headers)
        assert status == 200, answer
        assert json.loads(answer) == {"predictions": [ROW, ROW]}
        status, answer = call(
            server,
            "POST",
            "/invocations",
            body,
            **{**headers, "X-Amzn-SageMaker-Target-Model": "../identity"},
        )
        assert status == 400 and "X-Amzn-SageMaker-Target-Model" in json.loads(answer)["error"]
        models = json.loads(call(server, "GET", "/models")[1])
        assert models == {"models": [{"modelName": "identity", "modelUrl": f"{repo}/identity"}]}
    finally:
        assert server.stop() == 0
