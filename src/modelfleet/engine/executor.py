"""Runs one model version's inferences on its own thread, fed by a bounded queue.

The event loop never blocks on a framework call: it enqueues a job and awaits a future that the
executor thread settles through `call_soon_threadsafe`. Jobs whose caller has gone (cancelled
future) are skipped, never executed. Closing drains what is queued, then stops the thread.
"""

from __future__ import annotations

import asyncio
import queue
import threading
import time
from collections.abc import Mapping, Sequence

import numpy as np

from modelfleet.errors import Overloaded
from modelfleet.runtimes.base import Runtime


class Job:
    """One inference: its inputs and, once run, its timings (perf_counter ns)."""

    __slots__ = ("enqueued_ns", "finished_ns", "future", "inputs", "loop", "outputs", "started_ns")

    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        inputs: Mapping[str, np.ndarray],
        outputs: Sequence[str],
    ) -> None:
        self.loop = loop
        self.future: asyncio.Future[list[np.ndarray]] = loop.create_future()
        self.inputs = inputs
        self.outputs = outputs
        self.enqueued_ns = time.perf_counter_ns()
        self.started_ns = 0
        self.finished_ns = 0


def _settle(job: Job, result: list[np.ndarray] | None, error: BaseException | None) -> None:
    future = job.future
    if future.done():  # the caller went away
        return
    if error is not None:
        future.set_exception(error)
    else:
        assert result is not None
        future.set_result(result)


class ModelExecutor:
    def __init__(self, runtime: Runtime, label: str, max_queue_size: int) -> None:
        self._runtime = runtime
        self._label = label
        self._max_queue_size = max_queue_size
        self._queue: queue.SimpleQueue[Job | None] = queue.SimpleQueue()
        self._pending = 0  # jobs submitted and not yet settled; event-loop thread only
        self._thread = threading.Thread(target=self._run, name=f"model:{label}", daemon=True)
        self._thread.start()

    @property
    def pending(self) -> int:
        return self._pending

    async def run(self, inputs: Mapping[str, np.ndarray], outputs: Sequence[str]) -> Job:
        """Queue one inference and wait for it; the finished job carries results' timings."""
        if self._pending >= self._max_queue_size:
            raise Overloaded(f"model '{self._label}' has {self._pending} requests queued; try again later")
        job = Job(asyncio.get_running_loop(), inputs, outputs)
        self._pending += 1
        self._queue.put(job)
        try:
            await job.future
        finally:
            self._pending -= 1
        return job

    def _run(self) -> None:
        runtime = self._runtime
        while (job := self._queue.get()) is not None:
            if job.future.cancelled():
                continue
            job.started_ns = time.perf_counter_ns()
            try:
                result, error = runtime.infer(job.inputs, job.outputs), None
            except BaseException as exc:  # handed to the caller, whatever it is
                result, error = None, exc
            job.finished_ns = time.perf_counter_ns()
            try:
                job.loop.call_soon_threadsafe(_settle, job, result, error)
            except RuntimeError:  # the loop is closed: nobody is waiting any more
                return

    async def close(self) -> None:
        """Let queued jobs finish, then stop the thread."""
        self._queue.put(None)
        await asyncio.to_thread(self._thread.join)
