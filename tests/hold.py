"""Holding a model's runs in tests, without sleeps: `HeldRuns(runtime)` replaces the runtime's
`infer` by one that signals `entered` and waits for `release()`.

A held run must be on the model's executor thread. Were it ever called on the event loop (inline
execution), waiting there would stall every request of the test, so it fails at once instead,
naming why. Tests wait for `started()`, an event, never for a guessed number of milliseconds.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np


class HeldRuns:
    def __init__(self, runtime: Any, timeout_s: float = 10.0) -> None:
        self.runtime = runtime
        self.entered = threading.Event()
        self.gate = threading.Event()
        self.calls = 0
        self._real = runtime.infer
        self._timeout_s = timeout_s

    def __enter__(self) -> HeldRuns:
        self.runtime.infer = self._held
        return self

    def __exit__(self, *exc: object) -> None:
        self.gate.set()
        del self.runtime.infer  # the class's method again
        self._real = None  # it holds the session: let the model's memory go with the model

    def _held(self, inputs: Mapping[str, np.ndarray], outputs: Sequence[str]) -> list[np.ndarray]:
        if _on_event_loop():
            raise AssertionError(
                "a held run was called on the event loop (inline execution): it would stall it"
            )
        self.calls += 1
        self.entered.set()
        if not self.gate.wait(self._timeout_s):
            raise TimeoutError(f"a held run was not released within {self._timeout_s} s")
        assert self._real is not None
        return self._real(inputs, outputs)  # type: ignore[no-any-return]

    async def started(self, timeout_s: float = 5.0) -> None:
        """Return once a run has begun (and is held)."""
        if not await asyncio.to_thread(self.entered.wait, timeout_s):
            raise AssertionError(f"no run began within {timeout_s} s")

    def release(self) -> None:
        self.gate.set()


def _on_event_loop() -> bool:
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return False
    return True
