"""Runs one model's inferences on its own threads, fed by a bounded queue, batching what is queued.

The event loop never blocks on a framework call: it enqueues a job and awaits a future that an
executor thread settles through `call_soon_threadsafe`. A job whose future is already settled when
its turn comes (caller gone, deadline passed, shed for a higher-priority request) is never run.
Closing drains what is queued, then stops the threads.

Each wake-up of a thread takes what is queued (waiting up to `max_queue_delay_ns` for company when
batching and other requests of the model are in flight; a lone request never waits). Queued jobs run highest priority first; jobs with the same requested outputs and the
same non-batch shapes run as one batch: inputs concatenated along the batch axis, outputs split
back row by row, N in and N out, cut at a preferred batch size where one is configured. A job may
carry a `post` step run on its own rows (an adapter's head over a shared base model). If a merged
batch fails, its jobs run again one by one so that only the faulty one fails. Results go back in
groups (one loop wake-up per group instead of per job) once FLUSH_NS have passed since the group's
first job started, so slow models still answer job by job.

With `instances` > 1, that many threads share the queue (and the runtime, which must allow
concurrent calls: ONNX Runtime sessions do).

Inline execution (`inline_ns` > 0; a runtime that sets `may_run_inline`, as ONNX Runtime sessions
do and user Python never does; one instance; no batching delay): when the thread is idle, the jobs
that arrive in one loop turn run on the event-loop thread at the end of that turn (batched as
above) as long as a run of the model takes at most `inline_ns` on average and the turn's rows, at
the measured time per row, cost at most that too. The thread hop (a queue put that wakes the
thread, a wake-up of the loop to settle the futures) costs tens of microseconds; a model cheaper
than that answers faster and with less CPU without it, and the loop is never held much longer than
the bound. A costlier model stays on its thread, where its run overlaps the loop's reading and
writing. A job that would pass the bound sends the turn's jobs to the thread with it; a job with
larger rows than the last ones measured (a longer sequence) runs on the thread, which measures it;
a model that gets slower goes back to its thread as soon as its averages pass the bound. A model
runs on its thread until its first execution has been measured.

Admission is bounded twice: by count (`max_queue_size` requests) and by time. The executor keeps a
moving average of the execution time per row; a request that finds more work waiting than
`max_queue_wait_ns` of it (rows in the system x time per row / instances) is refused at once with
429, so that under overload the requests that are accepted keep a bounded latency instead of
queueing for seconds. One request per instance is always accepted (the bound cannot refuse an idle
model). The bound is the latency budget for queueing: set it from the service's latency target.
"""

from __future__ import annotations

import asyncio
import math
import queue
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Protocol

import numpy as np

from modelfleet.errors import DeadlineExceeded, InferenceFailed, Overloaded, Unavailable
from modelfleet.runtimes.base import Runtime

FLUSH_NS = 50_000  # hand results back at least this often (ns) while draining a busy queue
DEFAULT_PRIORITY = 1 << 16  # V2 priority 0 ("default"); 1 is the highest, larger numbers lower
_INLINE_SIZE_SLACK = 1.5  # rows up to this much larger than the last measured ones may run inline
_EWMA = 0.2  # weight of the newest execution in the time-per-row average

Arrays = list[np.ndarray]
Post = Callable[[Arrays], Arrays]


@dataclass(frozen=True, slots=True)
class Batching:
    max_rows: int  # most rows in one execution
    max_queue_delay_ns: int = 0  # how long the first job may wait for company
    preferred: tuple[int, ...] = ()  # batch sizes to cut at, ascending


class Executor(Protocol):
    """What a loaded model runs its requests on: a ModelExecutor, or an ensemble's Pipeline."""

    @property
    def pending(self) -> int: ...

    @property
    def max_queue_size(self) -> int: ...

    async def run(
        self,
        inputs: Mapping[str, np.ndarray],
        outputs: Sequence[str],
        rows: int = 1,
        post: Post | None = None,
        label: str | None = None,
        priority: int = 0,
        timeout_s: float | None = None,
    ) -> Job: ...

    async def close(self) -> None: ...


class Job:
    """One request's inference: its inputs and, once run, its results' timings (clock ns)."""

    __slots__ = (
        "batch_rows",
        "cells",
        "enqueued_ns",
        "finished_ns",
        "future",
        "inputs",
        "label",
        "loop",
        "outputs",
        "post",
        "priority",
        "rows",
        "started_ns",
        "timer",
    )

    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        inputs: Mapping[str, np.ndarray],
        outputs: Sequence[str],
        rows: int,
        post: Post | None,
        enqueued_ns: int,
        priority: int = DEFAULT_PRIORITY,
        label: str = "",
    ) -> None:
        self.loop = loop
        self.label = label  # who sent it (an adapter's name): the unit of fairness
        self.future: asyncio.Future[Arrays] = loop.create_future()
        self.inputs = inputs
        self.outputs = outputs
        self.rows = rows
        self.cells = 0  # input elements, counted only for a model that may run inline
        self.post = post
        self.enqueued_ns = enqueued_ns
        self.priority = priority
        self.started_ns = 0
        self.finished_ns = 0
        self.batch_rows = rows  # rows of the execution this job was part of
        self.timer: asyncio.TimerHandle | None = None

    def key(self) -> tuple[object, ...]:
        """Jobs with equal keys can share one execution."""
        return (
            tuple(self.outputs),
            tuple((name, a.shape[1:], a.dtype.str) for name, a in sorted(self.inputs.items())),
        )


Outcome = tuple[Job, Arrays | None, BaseException | None]


def _settle_all(done: list[Outcome]) -> None:
    for job, result, error in done:
        if job.timer is not None:
            job.timer.cancel()
        future = job.future
        if future.done():  # the caller went away, or the deadline passed
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
        instances: int = 1,
        max_queue_wait_ns: int = 0,
        inline_ns: int = 0,
    ) -> None:
        self._runtime = runtime
        self._label = label
        self.max_queue_size = max_queue_size
        self._batching = batching
        self._clock = clock
        self._instances = instances
        self._queue: queue.SimpleQueue[Job | None] = queue.SimpleQueue()
        self._pending = 0  # jobs submitted and not yet settled; event-loop thread only
        self._pending_rows = 0  # their rows; event-loop thread only
        self._max_wait_ns = max_queue_wait_ns  # 0: no time bound
        self._free_rows = instances  # always admitted: an idle model never refuses
        self.ns_per_row = 0.0  # moving average of execution time per row (written by executor threads)
        self._ns_per_run = 0.0  # moving average of one execution's time, its fixed cost included
        self._cells_per_row = 0.0  # input elements per row of the last execution measured
        self._waiting: set[Job] = set()  # the same jobs, for shedding by priority
        self._closed = False
        # Inline runs: only with one thread and no batching delay to wait for company.
        delayed = batching is not None and batching.max_queue_delay_ns > 0
        allowed = runtime.may_run_inline and instances == 1 and not delayed
        self._inline_ns = inline_ns if allowed else 0
        self._inline: list[Job] = []  # jobs for this loop turn's inline run (event-loop thread only)
        self._inline_rows = 0  # their rows
        self._inline_keys: set[tuple[object, ...]] = set()  # their batch keys (batched, 2+ jobs)
        self._inline_run: asyncio.Handle | None = None  # the run scheduled at the end of the turn
        # Jobs handed to the thread (written by the loop) and jobs it is done with (written by the
        # thread): equal when the thread is idle and the runtime free for an inline run.
        self._sent = 0
        self._returned = 0
        self._threads = [
            threading.Thread(target=self._run, name=f"model:{label}#{i}", daemon=True)
            for i in range(instances)
        ]
        for thread in self._threads:
            thread.start()

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
        priority: int = 0,
        timeout_s: float | None = None,
    ) -> Job:
        """Queue one inference and wait for it; the finished job carries its results and timings.

        `label` names the model in errors (an adapter's own name, not its base's). `priority`: 1 is
        the highest, larger numbers lower, 0 the default; a full queue sheds a queued job of lower
        priority to take a higher one. `timeout_s`: past it the request ends with 504 and, if it
        has not started, is never run.
        """
        name = label or self._label
        if self._closed:
            raise Unavailable(f"model '{name}' was unloaded; try again")
        level = priority or DEFAULT_PRIORITY
        if self._pending >= self.max_queue_size and not self._shed_lower_than(level):
            raise Overloaded(f"model '{name}' has too many requests queued; try again later")
        if self._max_wait_ns and self._pending_rows >= self._free_rows:
            wait_ns = self._pending_rows * self.ns_per_row / self._instances
            if wait_ns > self._max_wait_ns and not self._shed_lower_than(level):
                raise Overloaded(
                    f"model '{name}' is saturated: about {wait_ns / 1e6:.0f} ms of work is queued "
                    f"(the limit is {self._max_wait_ns / 1e6:g} ms); try again later",
                    retry_after_s=max(1, math.ceil(wait_ns / 1e9)),
                )
        loop = asyncio.get_running_loop()
        job = Job(loop, inputs, outputs, rows, post, self._clock(), level, name)
        if timeout_s is not None:
            job.timer = loop.call_later(timeout_s, _expire, job, name, timeout_s)
        self._pending += 1
        self._pending_rows += rows
        self._waiting.add(job)
        if self._inline_ns and self._fits_inline(job):
            if not self._inline:
                self._inline_run = loop.call_soon(self._run_inline)
            self._inline.append(job)
            self._inline_rows += job.rows
        else:
            if self._inline:
                self._to_thread()
            self._sent += 1
            self._queue.put(job)
        try:
            await job.future
        finally:
            self._pending -= 1
            self._pending_rows -= rows
            self._waiting.discard(job)
            if job.timer is not None:
                job.timer.cancel()
        return job

    def _fits_inline(self, job: Job) -> bool:
        """Whether a new job joins this loop turn's inline run: the model is cheap by measure, the
        job's rows are no larger than the ones measured (a longer sequence costs more per row), the
        turn stays within the time bound (its rows, and the fixed cost of each run it needs: one
        per job unbatched, one per batch key batched), and the thread is idle (never both on one
        runtime at once; the thread's count may lag, which only sends a job to the thread)."""
        job.cells = sum(a.size for a in job.inputs.values())  # wherever it runs, it is measured
        if not 0 < self._ns_per_run <= self._inline_ns:
            return False  # the fixed cost of a call alone passes the bound (or nothing measured yet)
        if job.cells > job.rows * self._cells_per_row * _INLINE_SIZE_SLACK:
            return False  # larger rows than measured: the thread runs (and measures) them
        if (self._inline_rows + job.rows) * self.ns_per_row > self._inline_ns:
            return False
        if not self._inline:
            return self._sent == self._returned
        if self._batching is None:
            return (len(self._inline) + 1) * self._ns_per_run <= self._inline_ns
        keys = self._inline_keys
        if not keys:
            keys.add(self._inline[0].key())
        key = job.key()
        if key not in keys:
            if (len(keys) + 1) * self._ns_per_run > self._inline_ns:
                return False
            keys.add(key)
        return True

    def _to_thread(self) -> None:
        """Hand this turn's inline jobs to the thread (a job too many for the bound arrived): one
        place runs the runtime at a time, and the thread batches them with the newcomer."""
        jobs = self._take_inline()
        self._sent += len(jobs)
        for job in jobs:
            self._queue.put(job)

    def _take_inline(self) -> list[Job]:
        """This turn's inline jobs, leaving none (and no run scheduled)."""
        if self._inline_run is not None:
            self._inline_run.cancel()  # a no-op when the run is this call's caller
        jobs, self._inline, self._inline_rows, self._inline_run = self._inline, [], 0, None
        self._inline_keys.clear()
        return jobs

    def _run_inline(self) -> None:
        """Run this loop turn's jobs here, as the thread would (priority, fairness, batches)."""
        jobs = self._take_inline()
        live = [j for j in jobs if not j.future.done()]
        done: list[Outcome] = []
        try:
            while live:
                groups, live = self._next(live)
                for group in groups:
                    done.extend(self._execute_measured(group))
        except BaseException as exc:  # a bug here must not leave requests waiting forever
            done += self._unsettled(done, jobs, exc)
            _settle_all(done)
            if not isinstance(exc, Exception):
                raise  # KeyboardInterrupt, SystemExit: the loop's to handle, once nobody waits
            return
        _settle_all(done)

    def _shed_lower_than(self, level: int) -> bool:
        """Refuse the lowest-priority queued job below `level` (not yet started); False if none."""
        candidates = [
            j for j in self._waiting if j.priority > level and not j.started_ns and not j.future.done()
        ]
        if not candidates:
            return False
        victim = max(candidates, key=lambda j: (j.priority, j.enqueued_ns))
        victim.future.set_exception(
            Overloaded(f"model '{self._label}' is saturated; a higher-priority request took this one's place")
        )
        return True

    async def close(self) -> None:
        """Refuse new jobs, let queued ones finish, then stop the threads."""
        self._closed = True
        if self._inline:
            self._run_inline()
        for _ in self._threads:
            self._queue.put(None)
        for thread in self._threads:
            await asyncio.to_thread(thread.join)

    # -- the executor threads ------------------------------------------------------------------------

    def _run(self) -> None:
        backlog: list[Job] = []  # taken from the queue, not run yet (this thread's)
        stopping = False
        while True:
            if not stopping:
                fresh, stopping = self._take(block=not backlog)
                backlog += fresh
            held = len(backlog)
            live = [j for j in backlog if not j.future.done()]
            if not live:
                self._returned += held
                if stopping:
                    return
                backlog = []
                continue
            groups: list[list[Job]] = [live]  # if forming the batch fails, every job here fails
            done: list[Outcome] = []
            try:
                groups, backlog = self._next(live)
                for group in groups:
                    done.extend(self._execute_measured(group))
                    # the last group's answers go back below, once the thread counts itself idle
                    if (
                        group is not groups[-1]
                        and done[-1][0].finished_ns - done[0][0].started_ns >= FLUSH_NS
                    ):
                        if not self._hand_back(done):
                            return
                        done = []
            except BaseException as exc:  # a bug here must not leave requests waiting forever
                done += self._unsettled(done, [job for group in groups for job in group], exc)
                backlog = [j for j in backlog if all(j is not g for group in groups for g in group)]
            self._returned += held - len(backlog)
            if not self._hand_back(done):
                return

    def _take(self, block: bool) -> tuple[list[Job], bool]:
        """What is queued: block for the first job unless told not to; when batching, wait up to the
        batching delay for company; one job when instances share the queue unbatched."""
        try:
            first = self._queue.get() if block else self._queue.get_nowait()
        except queue.Empty:
            return [], False
        if first is None:
            return [], True
        batching = self._batching
        if batching is None and self._instances > 1:
            return [first], False
        jobs, rows = [first], first.rows
        target = (batching.preferred[-1] if batching.preferred else batching.max_rows) if batching else 0
        # Wait for company only while other requests of this model are in flight (queued, running
        # or being answered): a lone request gains nothing from waiting. `_pending` is the event
        # loop's; reading a possibly stale int here is harmless.
        delay = batching.max_queue_delay_ns if batching and self._pending > 1 else 0
        deadline = self._clock() + delay
        while True:
            remaining = (deadline - self._clock()) / 1e9 if delay and rows < target else 0.0
            try:
                more = self._queue.get(timeout=remaining) if remaining > 0 else self._queue.get_nowait()
            except queue.Empty:
                return jobs, False
            if more is None:
                return jobs, True
            jobs.append(more)
            rows += more.rows

    def _next(self, jobs: list[Job]) -> tuple[list[list[Job]], list[Job]]:
        """What to run now, and what waits for the next round.

        Jobs go best priority first and, within a priority, round robin over the models (tenants)
        that sent them, so that one tenant's flood does not queue everyone else behind it. Without
        batching every job runs now, one by one; with batching the next batch is formed: jobs that
        can share an execution, at most max_rows rows, cut at a preferred batch size it reaches.
        """
        ordered = _fair(jobs)
        batching = self._batching
        if batching is None:
            return [[j] for j in ordered], []
        key = ordered[0].key()
        same = [j for j in ordered if j.key() == key]
        available = sum(j.rows for j in same)
        group: list[Job] = []
        rows = 0
        for job in same:
            if group and rows + job.rows > self._cut(rows, available, batching):
                break
            group.append(job)
            rows += job.rows
        chosen = {id(j) for j in group}
        return [group], [j for j in ordered if id(j) not in chosen]

    @staticmethod
    def _cut(rows: int, available: int, batching: Batching) -> int:
        """Where to close the current group: at a preferred size it can reach, else max_rows."""
        reachable = [p for p in batching.preferred if p <= min(available, batching.max_rows)]
        return reachable[-1] if reachable and rows >= reachable[-1] else batching.max_rows

    def _unsettled(self, done: list[Outcome], jobs: list[Job], exc: BaseException) -> list[Outcome]:
        """Failures for the jobs not yet in `done`, after a fault in the executor itself."""
        settled = {id(job) for job, _, _ in done}
        failure = InferenceFailed(f"model '{self._label}' failed: {type(exc).__name__}")
        return [(job, None, failure) for job in jobs if id(job) not in settled]

    def _execute_measured(self, group: list[Job]) -> list[Outcome]:
        """Run one group and fold its time into the averages, unless every job in it failed (a
        request refused in microseconds says nothing of what a run costs)."""
        started = self._clock()
        outcomes = self._execute(group)
        if any(error is None for _, _, error in outcomes):
            self._observe(self._clock() - started, group)
        return outcomes

    def _execute(self, group: list[Job]) -> list[Outcome]:
        if len(group) == 1:
            return [self._single(group[0])]
        started = self._clock()
        for job in group:
            job.started_ns = started
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
            job.batch_rows = total
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

    def _observe(self, elapsed_ns: int, group: list[Job]) -> None:
        """Fold one execution into the averages of time per row and per run (float stores: safe
        across threads)."""
        rows = sum(j.rows for j in group)
        if rows > 0:
            if self._inline_ns:
                self._cells_per_row = sum(j.cells for j in group) / rows
            per_row = elapsed_ns / rows
            self.ns_per_row = (
                per_row if not self.ns_per_row else self.ns_per_row + _EWMA * (per_row - self.ns_per_row)
            )
            run = self._ns_per_run
            self._ns_per_run = elapsed_ns if not run else run + _EWMA * (elapsed_ns - run)

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


def _fair(jobs: list[Job]) -> list[Job]:
    """Priority first; then each sender's first job, each sender's second job, ...; then arrival."""
    seen: dict[str, int] = {}
    ranked = []
    for job in sorted(jobs, key=lambda j: j.enqueued_ns):
        nth = seen.get(job.label, 0)
        seen[job.label] = nth + 1
        ranked.append((job.priority, nth, job.enqueued_ns, job))
    ranked.sort(key=lambda r: r[:3])
    return [r[3] for r in ranked]


def _expire(job: Job, name: str, timeout_s: float) -> None:
    if not job.future.done():
        state = "running" if job.started_ns else "queued (it will not run)"
        job.future.set_exception(
            DeadlineExceeded(f"model '{name}': request timed out after {timeout_s:g} s while {state}")
        )
