"""Runs one model version's inferences on its own thread, fed by a bounded queue.

The event loop never blocks on a framework call: it enqueues a job and awaits a future that the
executor thread settles through `call_soon_threadsafe`. Jobs whose caller has gone (cancelled
future) are skipped, never executed. Closing drains what is queued, then stops the thread.

Each wake-up of the thread takes every job already queued and hands results back in groups, so a
busy tiny model costs one loop wake-up (and one GIL hand-over) per group rather than per request;
a group is handed back once FLUSH_NS have passed since its first job started, so slow models
answer job by job.
"""

from __future__ import annotations

import asyncio
import queue
import threading
import time
from collections.abc import Callable, Mapping, Sequence

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
        enqueued_ns: int,
    ) -> None:
        self.loop = loop
        self.future: asyncio.Future[list[np.ndarray]] = loop.create_future()
        self.inputs = inputs
        self.outputs = outputs
        self.enqueued_ns = enqueued_ns
        self.started_ns = 0
        self.finished_ns = 0


FLUSH_NS = 50_000  # hand results back at least this often (ns) while draining a busy queue


def _settle_all(done: list[tuple[Job, list[np.ndarray] | None, BaseException | None]]) -> None:
    for job, result, error in done:
        _settle(job, result, error)


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
    def __init__(
        self,
        runtime: Runtime,
        label: str,
        max_queue_size: int,
        clock: Callable[[], int] = time.perf_counter_ns,
    ) -> None:
        self._clock = clock
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
        job = Job(asyncio.get_running_loop(), inputs, outputs, self._clock())
        self._pending += 1
        self._queue.put(job)
        try:
            await job.future
        finally:
            self._pending -= 1
        return job

    def _run(self) -> None:
        runtime, clock = self._runtime, self._clock
        pending = self._queue
        while True:
            jobs = [pending.get()]
            while True:  # everything already waiting, without blocking
                try:
                    jobs.append(pending.get_nowait())
                except queue.Empty:
                    break
            done: list[tuple[Job, list[np.ndarray] | None, BaseException | None]] = []
            for job in jobs:
                if job is None:
                    self._hand_back(done)
                    return
                if job.future.cancelled():
                    continue
                job.started_ns = clock()
                try:
                    result, error = runtime.infer(job.inputs, job.outputs), None
                except BaseException as exc:  # handed to the caller, whatever it is
                    result, error = None, exc
                job.finished_ns = clock()
                done.append((job, result, error))
                if job.finished_ns - done[0][0].started_ns >= FLUSH_NS:
                    if not self._hand_back(done):
                        return
                    done = []
            if not self._hand_back(done):
                return

    @staticmethod
    def _hand_back(done: list[tuple[Job, list[np.ndarray] | None, BaseException | None]]) -> bool:
        """Settle finished jobs on their loop; False when the loop is gone (nobody waits any more)."""
        if not done:
            return True
        try:
            done[0][0].loop.call_soon_threadsafe(_settle_all, done)
        except RuntimeError:
            return False
        return True

    async def close(self) -> None:
        """Let queued jobs finish, then stop the thread."""
        self._queue.put(None)
        await asyncio.to_thread(self._thread.join)
