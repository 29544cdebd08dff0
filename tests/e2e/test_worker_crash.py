"""Workers that fail without being killed from outside: a model that crashes its worker process (a
Python model calling os._exit), and a worker that hangs (stopped with SIGSTOP). The request in
flight gets a clear 503, never a hang; the other worker keeps serving; the worker is replaced and
its model reloaded on demand."""

from __future__ import annotations

import contextlib
import os
import signal
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.e2e.conftest import ServerProcess
from tests.e2e.test_workers import IDENTITY, call, holder, workers
from tests.models import identity, write_config

CRASHER = """
import os


class Model:
    def load(self, folder):
        pass

    def infer(self, inputs):
        x = inputs["x"]
        if (x < 0).any():
            os._exit(3)  # a native crash, as far as the server can tell
        return {"y": x * 2}
"""


def crasher_doc(value: float) -> dict[str, object]:
    return {"inputs": [{"name": "x", "datatype": "FP32", "shape": [1, 2], "data": [value, 1.0]}]}


@pytest.fixture(scope="module")
def crashing(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    root = tmp_path_factory.mktemp("crash-repo")
    identity(root / "identity" / "1" / "model.onnx")
    (root / "crasher" / "1").mkdir(parents=True)
    (root / "crasher" / "1" / "model.py").write_text(CRASHER)
    write_config(
        root / "crasher",
        {
            "backend": "python",
            "max_batch_size": 8,
            "inputs": [{"name": "x", "datatype": "FP32", "shape": [-1, 2]}],
            "outputs": [{"name": "y", "datatype": "FP32", "shape": [-1, 2]}],
        },
    )
    proc = ServerProcess(
        root, "--workers", "2", "--intra-op-threads", "1", "--startup-load", "none", "--python-models"
    )
    try:
        proc.wait_ready()
        yield proc
    finally:
        proc.stop()


def test_a_crashing_model_fails_its_request_with_503_and_its_worker_comes_back(
    crashing: ServerProcess,
) -> None:
    assert call(crashing, "/v2/models/crasher/infer", crasher_doc(1.0)) == (
        200,
        {
            "model_name": "crasher",
            "model_version": "1",
            "outputs": [{"name": "y", "datatype": "FP32", "shape": [1, 2], "data": [2.0, 2.0]}],
        },
    )
    assert call(crashing, "/v2/models/identity/infer", IDENTITY)[0] == 200
    victim, other = holder(crashing, "crasher"), holder(crashing, "identity")
    assert victim["id"] != other["id"]  # each model on its own worker

    status, body = call(crashing, "/v2/models/crasher/infer", crasher_doc(-1.0))
    assert (status, body) == (
        503,
        {"error": f"worker {victim['id']} died while running model 'crasher'; retry"},
    )

    assert call(crashing, "/v2/models/identity/infer", IDENTITY)[0] == 200  # the other one serves on
    deadline = time.monotonic() + 5
    back = None
    while back is None and time.monotonic() < deadline:
        now = next(w for w in workers(crashing) if w["id"] == victim["id"])
        if now["state"] == "ready" and now["pid"] != victim["pid"]:
            back = now
        time.sleep(0.1)
    assert back is not None and back["restarts"] == 1, "restarted within 5 s"
    assert call(crashing, "/v2/models/crasher/infer", crasher_doc(4.0))[1]["outputs"][0]["data"] == [8.0, 2.0]
    assert holder(crashing, "identity")["pid"] == other["pid"]
    assert f"worker {victim['id']} (pid {victim['pid']}) died with 1 requests in flight" in crashing.output()


def test_a_hung_worker_answers_503_past_the_deadline_and_is_replaced(repo: Path) -> None:
    proc = ServerProcess(repo, "--workers", "1", "--intra-op-threads", "1", "--request-timeout-s", "1")
    worker: dict[str, Any] = {}
    try:
        proc.wait_ready()
        assert call(proc, "/v2/models/identity/infer", IDENTITY)[0] == 200
        (worker,) = workers(proc)
        os.kill(worker["pid"], signal.SIGSTOP)  # alive, its socket open, answering nothing
        started = time.monotonic()
        status, body = call(proc, "/v2/models/identity/infer", IDENTITY)
        waited = time.monotonic() - started
        assert (status, body) == (
            503,
            {"error": f"worker {worker['id']} did not answer for model 'identity' within 6 s; retry"},
        )
        assert 6 <= waited < 9  # the request timeout, the grace, at most a sweep late: never a hang
        deadline = time.monotonic() + 30  # three missed reports, then a kill and a restart
        back = None
        while back is None and time.monotonic() < deadline:
            (now,) = workers(proc)
            if now["state"] == "ready" and now["pid"] != worker["pid"]:
                back = now
            time.sleep(0.2)
        assert back is not None, "a hung worker is killed and replaced"
        assert call(proc, "/v2/models/identity/infer", IDENTITY)[0] == 200
        assert f"worker {worker['id']} (pid {worker['pid']}) has not answered for 3 reports" in proc.output()
    finally:
        if worker:
            with contextlib.suppress(ProcessLookupError):
                os.kill(worker["pid"], signal.SIGKILL)
        proc.stop()
