"""Inline runs: the jobs of a cheap model that arrive in one event-loop turn, run on the loop at
the end of that turn instead of on the model's thread (see ModelExecutor's docstring).
Event-loop thread only."""

from __future__ import annotations

import asyncio

from modelfleet.engine.executor.jobs import Batching, Job
from modelfleet.engine.executor.runs import Costs

_SIZE_SLACK = 1.5  # rows up to this much larger than the last measured ones may run inline


class InlineTurn:
    def __init__(self, bound_ns: int, batching: Batching | None, costs: Costs) -> None:
        self.bound_ns = bound_ns
        self._batching = batching
        self._costs = costs
        self.jobs: list[Job] = []  # this turn's jobs
        self._rows = 0  # their rows
        self._keys: set[tuple[object, ...]] = set()  # their batch keys (batched, 2+ jobs)
        self.handle: asyncio.Handle | None = None  # the run scheduled at the end of the turn

    def fits(self, job: Job, thread_idle: bool) -> bool:
        """Whether a new job joins this turn's run: the model is cheap by measure, the job's rows
        are no larger than the ones measured (a longer sequence costs more per row), the turn stays
        within the bound (its rows, and the fixed cost of each run it needs: one per job unbatched,
        one per batch key batched), and the thread is idle (never both on one runtime at once; the
        thread's count may lag, which only sends a job to the thread)."""
        costs = self._costs
        job.cells = sum(a.size for a in job.inputs.values())  # wherever it runs, it is measured
        if not 0 < costs.ns_per_run <= self.bound_ns:
            return False  # the fixed cost of a call alone passes the bound (or nothing measured yet)
        if job.cells > job.rows * costs.cells_per_row * _SIZE_SLACK:
            return False  # larger rows than measured: the thread runs (and measures) them
        if (self._rows + job.rows) * costs.ns_per_row > self.bound_ns:
            return False
        if not self.jobs:
            return thread_idle
        if self._batching is None:
            return (len(self.jobs) + 1) * costs.ns_per_run <= self.bound_ns
        keys = self._keys
        if not keys:
            keys.add(self.jobs[0].key())
        key = job.key()
        if key not in keys:
            if (len(keys) + 1) * costs.ns_per_run > self.bound_ns:
                return False
            keys.add(key)
        return True

    def add(self, job: Job) -> None:
        self.jobs.append(job)
        self._rows += job.rows

    def take(self) -> list[Job]:
        """This turn's jobs, leaving none (and no run scheduled)."""
        if self.handle is not None:
            self.handle.cancel()  # a no-op when the run is this call's caller
        jobs, self.jobs, self._rows, self.handle = self.jobs, [], 0, None
        self._keys.clear()
        return jobs
