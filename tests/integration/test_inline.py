"""Inline execution through the real server: off by default, opted into per model or server-wide,
never for a session that reads memory-mapped blobs."""

from __future__ import annotations

import threading
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from modelfleet.config import ServerSettings, StartupLoad
from tests.integration.conftest import client_for
from tests.models import identity, shared_matmul, write_config

BODY = {"inputs": [{"name": "input", "shape": [1, 16], "datatype": "FP32", "data": [1.0] * 16}]}
MATMUL = {"inputs": [{"name": "x", "shape": [1, 4], "datatype": "FP32", "data": [1.0] * 4}]}
LOOP = threading.current_thread().name  # pytest-asyncio runs the event loop on this thread


def threads_of(runtime: Any) -> list[str]:
    """Record the thread of every call of `runtime` from now on."""
    seen: list[str] = []
    real = runtime.infer

    def recorded(inputs: Mapping[str, np.ndarray], outputs: Sequence[str]) -> list[np.ndarray]:
        seen.append(threading.current_thread().name)
        return real(inputs, outputs)  # type: ignore[no-any-return]

    runtime.infer = recorded
    return seen


@pytest.mark.parametrize(
    ("server_us", "model_us", "inline"),
    [(None, None, False), (None, 1e6, True), (1e6, None, True), (1e6, 0, False)],
)
async def test_inline_only_where_the_model_or_the_server_opts_in(
    tmp_path: Path, server_us: float | None, model_us: float | None, inline: bool
) -> None:
    identity(tmp_path / "m" / "1" / "model.onnx")
    write_config(tmp_path / "m", {} if model_us is None else {"inline_max_us": model_us})
    options: dict[str, Any] = {"startup_load": StartupLoad.ALL, "intra_op_threads": 1}
    if server_us is not None:
        options["inline_max_us"] = server_us
    ctx = client_for(ServerSettings(repository=tmp_path, **options))
    async with ctx as client:
        model = ctx.plane.manager.resident("m")
        assert model is not None
        seen = threads_of(model.runtime)
        for _ in range(4):
            assert (await client.post("/v2/models/m/infer", json=BODY)).status_code == 200
        assert seen[0] != LOOP  # the first run is always measured on the model's thread
        assert (LOOP in seen[1:]) is inline, seen


async def test_a_model_over_shared_blobs_stays_on_its_thread_even_when_opted_in(tmp_path: Path) -> None:
    shared_matmul(tmp_path, "m", np.eye(4, dtype=np.float32), np.zeros(4, np.float32))
    write_config(tmp_path / "m", {"inline_max_us": 1e6})
    settings = ServerSettings(repository=tmp_path, startup_load=StartupLoad.ALL, intra_op_threads=1)
    ctx = client_for(settings)
    async with ctx as client:
        model = ctx.plane.manager.resident("m")
        assert model is not None
        seen = threads_of(model.runtime)
        for _ in range(4):
            r = await client.post("/v2/models/m/infer", json=MATMUL)
            assert r.status_code == 200, r.text
            assert r.json()["outputs"][0]["data"] == [1.0] * 4
        assert LOOP not in seen, seen
