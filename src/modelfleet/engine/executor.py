"""Runs one model's inferences on its own thread, fed by a bounded queue, batching what is queued.

The event loop never blocks on a framework call: it enqueues a job and awaits a future that the
executor thread settles through `call_soon_threadsafe`. Jobs whose caller has gone (cancelled
future) are skipped, never executed. Closing drains what is queued, then stops the thread.

Each wake-up of the thread takes every job already queued (waiting up to `max_queue_delay_ns` for
more when batching asks for it). Jobs with the same requested outputs and the same non-batch
shapes run as one batch: inputs concatenated along the batch axis, outputs split back row by row,
N in and N out. A job may carry a `post` step run on its own rows (an adapter's head over a shared
base model). If a merged batch fails, its jobs are run again one by one so that only the faulty
one fails. Results go back in groups (one loop wake-up per group instead of per job) once FLUSH_NS
have passed since the group's first job started, so slow models still answer job by job.
"""

from __future__ import annotations

import asyncio
import queue
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from modelfleet.errors import InferenceFailed, Overloaded, Unavailable
from modelfleet.runtimes.base import Runtime

FLUSH_NS = 50_000  # hand results back at least this often (ns) while draining a busy queue

Arrays = list[np.ndarray]
Post = Callable[[Arrays], Arrays]


@dataclass(frozen=True, slots=True)
class Batching:
    max_rows: int  # most rows in one execution
    max_queue_delay_ns: int = 0  # how long the first job may wait for company


class Job:
    """One request's inference: its inputs and, once run, its results' timings (clock ns)."""

    __slots__ = (
        "batch_rows",
        "enqueued_ns",
        "finished_ns",
        "future",
        "inputs",
        "loop",
        "outputs",
        "post",
        "rows",
        "started_ns",
    )

    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        inputs: Mapping[str, np.ndarray],
        outputs: Sequence[str],
        rows: int,
        post: Post | None,
        enqueued_ns: int,
    ) -> None:
        self.loop = loop
        self.future: asyncio.Future[Arrays] = loop.create_future()
        self.inputs = inputs
        self.outputs = outputs
        self.rows = rows
        self.post = post
        self.enqueued_ns = enqueued_ns
        self.started_ns = 0
        self.finished_ns = 0
        self.batch_rows = rows  # rows of the execution this job was part of

    def key(self) -> tuple[object, ...]:
        """Jobs with equal keys can share one execution."""
        return (
            tuple(self.outputs),
            tuple((name, a.shape[1:], a.dtype.str) for name, a in sorted(self.inputs.items())),
        )


Outcome = tuple[Job, Arrays | None, BaseException | None]


def _settle_all(done: list[Outcome]) -> None:
    for job, result, error in done:
        future = job.future
        if future.done():  # the caller went away
            continue
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
        batching: Batching | None = None,
        clock: Callable[[], int] = time.perf_counter_ns,
    ) -> None:
        self._runtime = runtime
        self._label = label
        self._max_queue_size = max_queue_size
        self._batching = batching
        self._clock = clock
        self._queue: queue.SimpleQueue[Job | None] = queue.SimpleQueue()
        self._pending = 0  # jobs submitted and not yet settled; event-loop thread only
        self._closed = False
        self._thread = threading.Thread(target=self._run, name=f"model:{label}", daemon=True)
        self._thread.start()

    @property
    def pending(self) -> int:
        return self._pending

    async def run(
        self,
        inputs: Mapping[str, np.ndarray],
        outputs: Sequence[str],
        rows: int = 1,
        post: Post | None = None,
        label: str | None = None,
    ) -> Job:
        """Queue one inference and wait for it; the finished job carries its results and timings.
        `label` names the model in errors (an adapter's own name, not its base's)."""
        if self._closed:
            raise Unavailable(f"model '{label or self._label}' was unloaded; try again")
        if self._pending >= self._max_queue_size:
            raise Overloaded(f"model '{label or self._label}' has too many requests queued; try again later")
        job = Job(asyncio.get_running_loop(), inputs, outputs, rows, post, self._clock())
        self._pending += 1
        self._queue.put(job)
        try:
            await job.future
        finally:
            self._pending -= 1
        return job

    async def close(self) -> None:
        """Refuse new jobs, let queued ones finish, then stop the thread."""
        self._closed = True
        self._queue.put(None)
        await asyncio.to_thread(self._thread.join)

    # -- the executor thread ------------------------------------------------------------------------

    def _run(self) -> None:
        while True:
            jobs, stop = self._take()
            live = [j for j in jobs if not j.future.cancelled()]
            done: list[Outcome] = []
            try:
                for group in self._groups(live):
                    done.extend(self._execute(group))
                    if done and done[-1][0].finished_ns - done[0][0].started_ns >= FLUSH_NS:
                        if not self._hand_back(done):
                            return
                        done = []
            except BaseException as exc:  # a bug here must not leave requests waiting forever
                settled = {id(job) for job, _, _ in done}
                failure = InferenceFailed(f"model '{self._label}' failed: {type(exc).__name__}")
                done += [(job, None, failure) for job in live if id(job) not in settled]
            if not self._hand_back(done) or stop:
                return

    def _take(self) -> tuple[list[Job], bool]:
        """Block for one job, then take what else is queued (waiting up to the batching delay)."""
        first = self._queue.get()
        if first is None:
            return [], True
        jobs = [first]
        rows = first.rows
        delay = self._batching.max_queue_delay_ns if self._batching else 0
        deadline = self._clock() + delay
        max_rows = self._batching.max_rows if self._batching else 0
        while True:
            remaining = (deadline - self._clock()) / 1e9 if delay and rows < max_rows else 0.0
            try:
                more = self._queue.get(timeout=remaining) if remaining > 0 else self._queue.get_nowait()
            except queue.Empty:
                return jobs, False
            if more is None:
                return jobs, True
            jobs.append(more)
            rows += more.rows

    def _groups(self, jobs: list[Job]) -> list[list[Job]]:
        """Jobs that can run together, in order of arrival, at most max_rows rows each."""
        if self._batching is None:
            return [[j] for j in jobs]
        groups: list[list[Job]] = []
        open_group: dict[tuple[object, ...], list[Job]] = {}
        for job in jobs:
            key = job.key()
            group = open_group.get(key)
            if group is None or sum(j.rows for j in group) + job.rows > self._batching.max_rows:
                group = open_group[key] = []
                groups.append(group)
            group.append(job)
        return groups

    def _execute(self, group: list[Job]) -> list[Outcome]:
        if len(group) == 1:
            return [self._single(group[0])]
        started = self._clock()
        try:
            first = group[0]
            feeds = {name: np.concatenate([j.inputs[name] for j in group]) for name in first.inputs}
            merged = self._runtime.infer(feeds, first.outputs)
            total = sum(j.rows for j in group)
            if any(o.shape[:1] != (total,) for o in merged):
                raise ValueError("an output lost the batch dimension")
        except BaseException:  # run them one by one: only a faulty job may fail
            return [self._single(j) for j in group]
        finished = self._clock()
        outcomes: list[Outcome] = []
        offset = 0
        for job in group:
            rows = [o[offset : offset + job.rows] for o in merged]
            offset += job.rows
            job.started_ns, job.batch_rows = started, total
            result: Arrays | None = rows
            error: BaseException | None = None
            if job.post is not None:
                try:
                    result = job.post(rows)
                except BaseException as exc:
                    result, error = None, exc
            job.finished_ns = finished if job.post is None else self._clock()
            outcomes.append((job, result, error))
        return outcomes

    def _single(self, job: Job) -> Outcome:
        job.started_ns = self._clock()
        result: Arrays | None
        try:
            result, error = self._runtime.infer(job.inputs, job.outputs), None
            if job.post is not None:
                result = job.post(result)
        except BaseException as exc:  # handed to the caller, whatever it is
            result, error = None, exc
        job.finished_ns = self._clock()
        return job, result, error

    @staticmethod
    def _hand_back(done: list[Outcome]) -> bool:
        """Settle finished jobs on their loop; False when the loop is gone (nobody waits any more)."""
        if not done:
            return True
        try:
            done[0][0].loop.call_soon_threadsafe(_settle_all, done)
        except RuntimeError:
            return False
        return True
