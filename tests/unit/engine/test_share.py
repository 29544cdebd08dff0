"""ComputeShare: a bounded number of model runs at once, turns by the run time used."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Mapping, Sequence

import numpy as np
import pytest

from modelfleet.engine.executor import ComputeShare, ModelExecutor
from modelfleet.protocol.v2 import TensorSpec
from tests.waiting import until


def _waiter(share: ComputeShare, flow: str, order: list[str]) -> threading.Thread:
    def run() -> None:
        tag = share.acquire(flow)
        order.append(flow)
        share.release(flow, tag, 1_000)

    thread = threading.Thread(target=run, name=f"wants:{flow}")
    thread.start()
    return thread


async def test_the_model_that_used_less_goes_first_whatever_the_arrival() -> None:
    share = ComputeShare(1)
    share.release("heavy", share.acquire("heavy"), 10_000_000)  # 10 ms of runs charged to it
    holder = share.acquire("holder")
    order: list[str] = []
    first = _waiter(share, "heavy", order)
    await until(lambda: share.waiting == 1, "the heavy model waits")
    second = _waiter(share, "light", order)
    await until(lambda: share.waiting == 2, "the light model waits too")
    assert order == [] and share.busy == 1
    share.release("holder", holder, 1_000)
    for thread in (first, second):
        await asyncio.to_thread(thread.join, 5)
    assert order == ["light", "heavy"]
    assert (share.busy, share.waiting) == (0, 0)


async def test_slots_bound_the_runs_at_once() -> None:
    share = ComputeShare(2)
    a, b = share.acquire("a"), share.acquire("b")  # two slots: neither blocks
    order: list[str] = []
    thread = _waiter(share, "c", order)
    await until(lambda: share.waiting == 1, "a third run waits for a slot")
    assert order == []
    share.release("a", a, 1_000)
    await asyncio.to_thread(thread.join, 5)
    assert order == ["c"]
    share.release("b", b, 1_000)
    assert share.busy == 0


def test_a_share_needs_a_slot() -> None:
    with pytest.raises(ValueError, match="at least one slot"):
        ComputeShare(0)


class Counting:
    """A runtime that counts how many of its kind run at once (across instances and models)."""

    inputs = [TensorSpec("x", "FP32", (-1,))]
    outputs = [TensorSpec("y", "FP32", (-1,))]
    may_run_inline = True

    def __init__(self, running: list[int], lock: threading.Lock, release: threading.Event) -> None:
        self._running, self._lock, self._release = running, lock, release

    def infer(self, inputs: Mapping[str, np.ndarray], outputs: Sequence[str]) -> list[np.ndarray]:
        with self._lock:
            self._running[0] += 1
            self._running[1] = max(self._running[1], self._running[0])
        self._release.wait(5)
        with self._lock:
            self._running[0] -= 1
        return [inputs["x"] * 2]

    def unload(self) -> None:
        pass


async def test_models_on_one_share_never_run_at_once_and_skip_inline_runs() -> None:
    running, lock, release = [0, 0], threading.Lock(), threading.Event()
    share = ComputeShare(1)
    executors = [
        ModelExecutor(
            Counting(running, lock, release), f"m{i}/1", 16, instances=2, inline_ns=10**9, share=share
        )
        for i in range(2)
    ]
    calls = [asyncio.ensure_future(e.run({"x": np.array([1.0])}, ["y"])) for e in executors for _ in range(4)]
    await until(lambda: share.busy == 1 and share.waiting == 3, "one run and three waiting threads")
    release.set()
    jobs = await asyncio.gather(*calls)
    assert all(job.future.result()[0].tolist() == [2.0] for job in jobs)
    assert running[1] == 1  # four threads of two models, never two runs at once
    for executor in executors:
        assert executor._inline is None
        await executor.close()
