"""Batch forming and fairness, as pure functions of the queued jobs."""

from __future__ import annotations

import asyncio

import numpy as np

from modelfleet.engine.executor.forming import cut, fair, next_runs, queued_work_ns
from modelfleet.engine.executor.jobs import Batching, Job


def _job(loop: asyncio.AbstractEventLoop, label: str, at: int, rows: int = 1, priority: int = 10) -> Job:
    return Job(loop, {"x": np.zeros((rows, 2), np.float32)}, ["y"], rows, None, at, priority, label)


def test_senders_take_turns_within_a_priority() -> None:
    loop = asyncio.new_event_loop()
    try:
        jobs = [_job(loop, "a", t) for t in range(3)] + [_job(loop, "b", 10), _job(loop, "c", 11, priority=1)]
        assert [(j.label, j.enqueued_ns) for j in fair(jobs)] == [
            ("c", 11),
            ("a", 0),
            ("b", 10),
            ("a", 1),
            ("a", 2),
        ]
    finally:
        loop.close()


def test_one_sender_at_one_priority_goes_in_arrival_order() -> None:
    loop = asyncio.new_event_loop()
    try:
        jobs = [_job(loop, "a", t) for t in (5, 1, 3)]
        assert [j.enqueued_ns for j in fair(jobs)] == [1, 3, 5]
        assert fair([]) == []
    finally:
        loop.close()


def test_a_batch_is_cut_at_a_preferred_size_and_the_rest_waits() -> None:
    loop = asyncio.new_event_loop()
    try:
        jobs = [_job(loop, "a", t, rows=2) for t in range(5)]
        groups, rest = next_runs(jobs, Batching(max_rows=16, preferred=(4, 8)))
        assert [sum(j.rows for j in g) for g in groups] == [8] and len(rest) == 1
        groups, rest = next_runs(jobs, None)
        assert len(groups) == 5 and rest == []
    finally:
        loop.close()


def test_cut_and_queued_work() -> None:
    assert cut(8, 10, Batching(max_rows=16, preferred=(4, 8))) == 8  # the largest it can reach
    assert cut(4, 10, Batching(max_rows=16, preferred=(4, 8))) == 16  # 8 is still reachable
    assert cut(2, 3, Batching(max_rows=16, preferred=(4, 8))) == 16
    assert queued_work_ns(10, 2e6, 2) == 10e6
