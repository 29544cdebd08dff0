"""What an executor runs: jobs (one request's inference each), the batching contract, and the
hand-back of results to the event loop."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Protocol

import numpy as np

from modelfleet.errors import DeadlineExceeded

DEFAULT_PRIORITY = 1 << 16  # V2 priority 0 ("default"); 1 is the highest, larger numbers lower

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
        "_key",
        "batch_rows",
        "cells",
        "deadline",
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
        self._key: tuple[object, ...] | None = None
        self.deadline: tuple[float, float] | None = None  # (loop time, timeout_s) while it has no timer

    def key(self) -> tuple[object, ...]:
        """Jobs with equal keys can share one execution (made once: batch forming asks often)."""
        key = self._key
        if key is None:
            key = self._key = (
                tuple(self.outputs),
                tuple((name, a.shape[1:], a.dtype.str) for name, a in sorted(self.inputs.items())),
            )
        return key


Outcome = tuple[Job, Arrays | None, BaseException | None]


def settle_all(done: list[Outcome]) -> None:
    """Settle finished jobs' futures (event-loop thread); a future already done is left alone."""
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


def hand_back(done: list[Outcome]) -> bool:
    """Settle finished jobs on their loop from an executor thread; False when the loop is gone
    (nobody waits any more)."""
    if not done:
        return True
    try:
        done[0][0].loop.call_soon_threadsafe(settle_all, done)
    except RuntimeError:
        return False
    return True


def expire(job: Job, name: str, timeout_s: float) -> None:
    """A job's deadline passed: 504 for its caller; if it has not started, it never runs."""
    if not job.future.done():
        state = "running" if job.started_ns else "queued (it will not run)"
        job.future.set_exception(
            DeadlineExceeded(f"model '{name}': request timed out after {timeout_s:g} s while {state}")
        )
