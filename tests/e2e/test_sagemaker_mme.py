"""A SageMaker multi-model endpoint with worker processes: the artefact staged by the front is loaded
by a worker, answers by its opaque name, and is gone from the repository after the unload."""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from pathlib import Path

from tests.e2e.conftest import ServerProcess
from tests.models import identity

ROW = [i / 16 for i in range(16)]


def call(
    server: ServerProcess, method: str, path: str, doc: object = None, **headers: str
) -> tuple[int, object]:
    body = None if doc is None else json.dumps(doc).encode()
    headers = {"Content-Type": "application/json", **headers}
    request = urllib.request.Request(f"http://{server.url}{path}", body, headers, method=method)
    try:
        with urllib.request.urlopen(request, timeout=60) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read())


def test_a_worker_loads_the_staged_artefact_by_its_opaque_name(tmp_path: Path) -> None:
    repo, root = tmp_path / "repo", tmp_path / "opt" / "ml" / "models"
    repo.mkdir()
    url = str(identity(root / "c0ffee" / "model" / "model.onnx").parent)
    server = ServerProcess(
        repo, "--sagemaker", "--workers", "1", "--sagemaker-model-root", str(root), "--intra-op-threads", "1"
    )
    try:
        server.wait_ready()
        assert call(server, "POST", "/models", {"model_name": "c0ffee", "url": url}) == (
            200,
            {"modelName": "c0ffee", "modelUrl": url},
        )
        target = {"X-Amzn-SageMaker-Target-Model": "c0ffee"}
        assert call(server, "POST", "/invocations", {"instances": [ROW]}, **target) == (
            200,
            {"predictions": [ROW]},
        )
        status, doc = call(server, "GET", "/v2/workers")
        assert status == 200 and any("c0ffee" in json.dumps(w) for w in doc["workers"])  # type: ignore[index]
        assert call(server, "DELETE", "/models/c0ffee") == (200, {"modelName": "c0ffee"})
        assert sorted(p.name for p in repo.iterdir()) == []
        assert call(server, "POST", "/invocations", {"instances": [ROW]}, **target)[0] == 404
    finally:
        assert server.stop() == 0
