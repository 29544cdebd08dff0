"""The front's end of a worker socket: answers matched by id, deadlines, a lost worker."""

from __future__ import annotations

import asyncio
import socket

import numpy as np
import pytest

from modelfleet.errors import Unavailable
from modelfleet.workers import client
from modelfleet.workers import messages as m
from modelfleet.workers.client import Connection
from tests.waiting import until


def infer(ident: int) -> m.Infer:
    tensors, _ = m.describe([("x", "FP32", np.ones(1, np.float32))])
    return m.Infer(ident, "m", None, tensors)


def answer(worker: socket.socket, ident: int) -> None:
    tensors, buffers = m.describe([("y", "FP32", np.full(1, float(ident), np.float32))])
    worker.sendall(b"".join(bytes(chunk) for chunk in m.encode(m.Result(ident, "m", "1", tensors), buffers)))


async def test_a_request_past_its_deadline_gets_503_and_the_others_still_get_answers(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(client, "SWEEP_S", 0.02)
    front, worker = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
    connection = await Connection.open(3, front)
    untimed = asyncio.create_task(connection.request(infer(connection.next_id()), model="m"))
    timed_id = connection.next_id()
    with pytest.raises(Unavailable, match=r"^worker 3 did not answer for model 'm' within 0.05 s; retry$"):
        await asyncio.wait_for(connection.request(infer(timed_id), model="m", within_s=0.05), 2.0)
    assert not untimed.done()  # no deadline: still waiting
    later_id = connection.next_id()
    later = asyncio.create_task(connection.request(infer(later_id), model="m", within_s=5.0))
    await until(lambda: later_id in connection._pending, "the later request sent and waiting")
    answer(worker, timed_id)  # late: dropped, nobody waits for it
    answer(worker, later_id)
    answer(worker, 1)
    reply, raw = await asyncio.wait_for(later, 2.0)
    assert isinstance(reply, m.Result) and m.arrays(reply.outputs, raw)[0].tolist() == [float(later_id)]
    reply, raw = await asyncio.wait_for(untimed, 2.0)
    assert isinstance(reply, m.Result) and m.arrays(reply.outputs, raw)[0].tolist() == [1.0]
    assert connection.alive and connection.failed == 0
    worker.close()
    await asyncio.wait_for(connection.lost, 2.0)


async def test_a_lost_worker_fails_every_waiting_request_at_once() -> None:
    front, worker = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
    connection = await Connection.open(2, front)
    told: list[int] = []
    connection.on_lost = lambda: told.append(connection.failed)
    waiting = [
        asyncio.create_task(connection.request(infer(connection.next_id()), model="m", within_s=s))
        for s in (None, 30.0)
    ]
    await until(lambda: len(connection._pending) == 2, "both requests sent and waiting")
    worker.close()
    for task in waiting:
        with pytest.raises(Unavailable, match=r"^worker 2 died while running model 'm'; retry$"):
            await asyncio.wait_for(task, 2.0)  # at once, not after the 30 s deadline
        assert told == [2]  # the fleet heard of the loss before any request resumed (once)
    assert connection.failed == 2 and not connection.alive
    with pytest.raises(Unavailable, match="worker 2 died"):
        await connection.request(infer(connection.next_id()), model="m")
