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

With a ComputeShare (share.py), each run waits for one of the machine's compute slots, and models
take turns by the run time they have used; inline runs are off then (they would bypass it).
"""

from __future__ import annotations

import asyncio
import math
import queue
import threading
import time
from collections.abc import Callable, Mapping, Sequence

import numpy as np

from modelfleet.engine.executor.forming import next_runs, queued_work_ns
from modelfleet.engine.executor.inline import InlineTurn
from modelfleet.engine.executor.jobs import (
    DEFAULT_PRIORITY,
    Batching,
    Job,
    Outcome,
    Post,
    expire,
    hand_back,
    settle_all,
)
from modelfleet.engine.executor.runs import Costs, execute
from modelfleet.engine.executor.share import ComputeShare
from modelfleet.errors import InferenceFailed, Overloaded, Unavailable
from modelfleet.runtimes.base import Runtime

FLUSH_NS = 50_000  # hand results back at least this often (ns) while draining a busy queue
TIMER_AFTER_S = 1.0  # a request with a longer timeout gets its deadline's timer only if still pending then


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
        share: ComputeShare | None = None,
    ) -> None:
        self._runtime = runtime
        self._label = label
        self.max_queue_size = max_queue_size
        self._batching = batching
        self._clock = clock
        self._instances = instances
        self._share = share
        self._queue: queue.SimpleQueue[Job | None] = queue.SimpleQueue()
        self._pending = 0  # jobs submitted and not yet settled; event-loop thread only
        self._pending_rows = 0  # their rows; event-loop thread only
        self._max_wait_ns = max_queue_wait_ns  # 0: no time bound
        self._free_rows = instances  # always admitted: an idle model never refuses
        self._costs = Costs()  # written by whoever runs the model
        self._waiting: set[Job] = set()  # the same jobs, for shedding by priority
        # Deadlines: a timer armed and cancelled per request costs ~3 µs (uvloop). A request with a
        # timeout over `timer_after_s` gets its timer (for its exact deadline) only if it is still
        # pending when the next sweep comes, at most `timer_after_s` later; most are answered by then.
        self.timer_after_s = TIMER_AFTER_S
        self._sweep: asyncio.TimerHandle | None = None
        self._closed = False
        # Inline runs: only with one thread, no batching delay to wait for company, no share.
        delayed = batching is not None and batching.max_queue_delay_ns > 0
        allowed = runtime.may_run_inline and instances == 1 and not delayed and share is None
        self._inline = InlineTurn(inline_ns, batching, self._costs) if allowed and inline_ns else None
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

    @property
    def ns_per_row(self) -> float:
        """Moving average of execution time per row."""
        return self._costs.ns_per_row

    @ns_per_row.setter
    def ns_per_row(self, value: float) -> None:
        self._costs.ns_per_row = value

    @property
    def _ns_per_run(self) -> float:
        return self._costs.ns_per_run

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
        level = priority or DEFAULT_PRIORITY
        self._admit(name, level)
        loop = asyncio.get_running_loop()
        job = Job(loop, inputs, outputs, rows, post, self._clock(), level, name)
        if timeout_s is not None:
            if timeout_s <= self.timer_after_s:
                job.timer = loop.call_later(timeout_s, expire, job, name, timeout_s)
            else:
                job.deadline = (loop.time() + timeout_s, timeout_s)
                if self._sweep is None:
                    self._sweep = loop.call_later(self.timer_after_s, self._arm_timers, loop)
        self._pending += 1
        self._pending_rows += rows
        self._waiting.add(job)
        inline = self._inline
        if inline is not None and inline.fits(job, self._sent == self._returned):
            if not inline.jobs:
                inline.handle = loop.call_soon(self._run_inline)
            inline.add(job)
        else:
            if inline is not None and inline.jobs:
                self._to_thread(inline.take())
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

    def _arm_timers(self, loop: asyncio.AbstractEventLoop) -> None:
        """The sweep: a timer at its deadline for every pending job that has none yet."""
        self._sweep = None
        for job in self._waiting:
            if job.timer is None and job.deadline is not None and not job.future.done():
                deadline, timeout_s = job.deadline
                job.timer = loop.call_at(deadline, expire, job, job.label, timeout_s)

    def _admit(self, name: str, level: int) -> None:
        """Refuse a job the model cannot take: unloaded, queue full, or more queued work than the
        time bound (unless a queued job of lower priority gives up its place)."""
        if self._closed:
            raise Unavailable(f"model '{name}' was unloaded; try again")
        if self._pending >= self.max_queue_size and not self._shed_lower_than(level):
            raise Overloaded(f"model '{name}' has too many requests queued; try again later")
        if self._max_wait_ns and self._pending_rows >= self._free_rows:
            wait_ns = queued_work_ns(self._pending_rows, self._costs.ns_per_row, self._instances)
            if wait_ns > self._max_wait_ns and not self._shed_lower_than(level):
                raise Overloaded(
                    f"model '{name}' is saturated: about {wait_ns / 1e6:.0f} ms of work is queued "
                    f"(the limit is {self._max_wait_ns / 1e6:g} ms); try again later",
                    retry_after_s=max(1, math.ceil(wait_ns / 1e9)),
                )

    def _to_thread(self, jobs: list[Job]) -> None:
        """Hand this turn's inline jobs to the thread (a job too many for the bound arrived): one
        place runs the runtime at a time, and the thread batches them with the newcomer."""
        self._sent += len(jobs)
        for job in jobs:
            self._queue.put(job)

    def _run_inline(self) -> None:
        """Run this loop turn's jobs here, as the thread would (priority, fairness, batches)."""
        assert self._inline is not None
        jobs = self._inline.take()
        live = [j for j in jobs if not j.future.done()]
        done: list[Outcome] = []
        try:
            while live:
                groups, live = self._next(live)
                for group in groups:
                    done.extend(self._execute_measured(group))
        except BaseException as exc:  # a bug here must not leave requests waiting forever
            done += self._unsettled(done, jobs, exc)
            settle_all(done)
            if not isinstance(exc, Exception):
                raise  # KeyboardInterrupt, SystemExit: the loop's to handle, once nobody waits
            return
        settle_all(done)

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
        if self._inline is not None and self._inline.jobs:
            self._run_inline()
        for _ in self._threads:
            self._queue.put(None)
        for thread in self._threads:
            await asyncio.to_thread(thread.join)
        if self._share is not None:
            self._share.forget(self._label)

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
                        if not hand_back(done):
                            return
                        done = []
            except BaseException as exc:  # a bug here must not leave requests waiting forever
                done += self._unsettled(done, [job for group in groups for job in group], exc)
                backlog = [j for j in backlog if all(j is not g for group in groups for g in group)]
            self._returned += held - len(backlog)
            if not hand_back(done):
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
        """What to run now, and what waits for the next round (forming.next_runs)."""
        return next_runs(jobs, self._batching)

    def _unsettled(self, done: list[Outcome], jobs: list[Job], exc: BaseException) -> list[Outcome]:
        """Failures for the jobs not yet in `done`, after a fault in the executor itself."""
        settled = {id(job) for job, _, _ in done}
        failure = InferenceFailed(f"model '{self._label}' failed: {type(exc).__name__}")
        return [(job, None, failure) for job in jobs if id(job) not in settled]

    def _execute_measured(self, group: list[Job]) -> list[Outcome]:
        """Run one group (in its turn of the compute share, if any) and fold its time into the
        averages, unless every job in it failed (a request refused in microseconds says nothing
        of what a run costs)."""
        share = self._share
        tag = share.acquire(self._label) if share is not None else 0.0
        started = self._clock()
        try:
            outcomes = execute(self._runtime, group, self._clock)
        finally:
            elapsed = self._clock() - started
            if share is not None:
                share.release(self._label, tag, elapsed)
        if any(error is None for _, _, error in outcomes):
            self._costs.observe(elapsed, group, self._inline is not None)
        return outcomes
