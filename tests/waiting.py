"""Waiting in tests for a state the test can observe, never for a guessed number of milliseconds.

`await until(lambda: executor.pending == 2, "two jobs queued")` lets the event loop run, one turn at
a time, until the condition holds; it fails, naming what never happened, after `timeout_s`. For a
state reached on another thread, prefer an event: `await entered(event)`.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable


async def until(condition: Callable[[], object], what: str, timeout_s: float = 5.0) -> None:
    """Return once `condition()` is true; the loop runs its other tasks and callbacks meanwhile."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout_s
    while not condition():
        if loop.time() > deadline:
            raise AssertionError(f"never happened within {timeout_s} s: {what}")
        await asyncio.sleep(0)  # one loop turn: whatever is ready runs, then the condition again


async def entered(event: threading.Event, what: str = "a run began", timeout_s: float = 5.0) -> None:
    """Return once a thread has set `event` (without blocking the loop)."""
    if not await asyncio.to_thread(event.wait, timeout_s):
        raise AssertionError(f"never happened within {timeout_s} s: {what}")
