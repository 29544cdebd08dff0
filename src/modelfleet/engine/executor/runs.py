"""One execution of a group of jobs on a runtime, as a batch or one by one, and the moving
averages of what executions cost (the basis of admission by time and of inline runs)."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from modelfleet.engine.executor.jobs import Arrays, Job, Outcome
from modelfleet.runtimes.base import Runtime

_EWMA = 0.2  # weight of the newest execution in the averages


class Costs:
    """Moving averages of one model's executions: time per row, per run (its fixed cost
    included), and input elements per row (float stores: safe to read across threads)."""

    __slots__ = ("cells_per_row", "ns_per_row", "ns_per_run")

    def __init__(self) -> None:
        self.ns_per_row = 0.0
        self.ns_per_run = 0.0
        self.cells_per_row = 0.0

    def observe(self, elapsed_ns: int, group: list[Job], count_cells: bool) -> None:
        rows = sum(j.rows for j in group)
        if rows <= 0:
            return
        if count_cells:
            self.cells_per_row = sum(j.cells for j in group) / rows
        per_row = elapsed_ns / rows
        self.ns_per_row = (
            per_row if not self.ns_per_row else self.ns_per_row + _EWMA * (per_row - self.ns_per_row)
        )
        run = self.ns_per_run
        self.ns_per_run = elapsed_ns if not run else run + _EWMA * (elapsed_ns - run)


def execute(runtime: Runtime, group: list[Job], clock: Callable[[], int]) -> list[Outcome]:
    """Run a group as one batch (inputs concatenated on the batch axis, outputs split back row by
    row, N in and N out); if the merged run fails, run its jobs one by one so that only a faulty
    one fails."""
    if len(group) == 1:
        return [single(runtime, group[0], clock)]
    started = clock()
    for job in group:
        job.started_ns = started
    try:
        first = group[0]
        feeds = {name: np.concatenate([j.inputs[name] for j in group]) for name in first.inputs}
        merged = runtime.infer(feeds, first.outputs)
        total = sum(j.rows for j in group)
        if any(o.shape[:1] != (total,) for o in merged):
            raise ValueError("an output lost the batch dimension")
    except BaseException:
        return [single(runtime, j, clock) for j in group]
    finished = clock()
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
        job.finished_ns = finished if job.post is None else clock()
        outcomes.append((job, result, error))
    return outcomes


def single(runtime: Runtime, job: Job, clock: Callable[[], int]) -> Outcome:
    job.started_ns = clock()
    result: Arrays | None
    try:
        result, error = runtime.infer(job.inputs, job.outputs), None
        if job.post is not None:
            result = job.post(result)
    except BaseException as exc:  # handed to the caller, whatever it is
        result, error = None, exc
    job.finished_ns = clock()
    return job, result, error
