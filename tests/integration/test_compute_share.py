"""--compute-slots through the real server: models take turns on the cores."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np

from modelfleet.config import ServerSettings, StartupLoad
from tests.integration.conftest import client_for
from tests.models import identity
from tests.waiting import entered, until

BODY = {"inputs": [{"name": "input", "shape": [1, 16], "datatype": "FP32", "data": [1.0] * 16}]}


async def test_with_one_compute_slot_two_models_never_run_at_once(tmp_path: Path) -> None:
    for name in ("a", "b"):
        identity(tmp_path / name / "1" / "model.onnx")
    settings = ServerSettings(
        repository=tmp_path, startup_load=StartupLoad.ALL, intra_op_threads=1, compute_slots=1
    )
    ctx = client_for(settings)
    async with ctx as client:
        share = ctx.plane.manager.share
        assert share is not None and share.slots == 1
        running, lock = [0, 0], threading.Lock()
        began, release = threading.Event(), threading.Event()
        for name in ("a", "b"):
            model = ctx.plane.manager.resident(name)
            assert model is not None
            real = model.runtime.infer

            def held(inputs: Mapping[str, np.ndarray], outputs: Sequence[str], real=real) -> list[np.ndarray]:
                with lock:
                    running[0] += 1
                    running[1] = max(running)
                began.set()
                release.wait(5)
                with lock:
                    running[0] -= 1
                return real(inputs, outputs)  # type: ignore[no-any-return]

            model.runtime.infer = held  # type: ignore[method-assign]
        calls = [asyncio.ensure_future(client.post(f"/v2/models/{n}/infer", json=BODY)) for n in ("a", "b")]
        await entered(began, "one model's run began")
        await until(lambda: share.waiting == 1, "the other model waits for the slot")
        release.set()
        responses = await asyncio.gather(*calls)
        assert [r.status_code for r in responses] == [200, 200]
        assert running[1] == 1
