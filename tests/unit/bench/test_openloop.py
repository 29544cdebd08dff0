"""The open loop's pool decisions and bookkeeping, without sockets: idle connections are fakes."""

from typing import cast

import numpy as np

from modelfleet.bench.client import ErrorKind, Request
from modelfleet.bench.messages import OpenLoopJob, ShareJob
from modelfleet.bench.openloop import FAILURE_CODES, OpenShare, PooledConnection
from modelfleet.bench.spec import Arrivals, Phase
from tests.unit.bench.test_client import workload


class FakeConnection:
    def __init__(self) -> None:
        self.sent: list[tuple[int, int]] = []

    def send(self, scheduled_ns: int, model: int, request: Request) -> None:
        self.sent.append((scheduled_ns, model))


def open_share(connections: int = 2) -> OpenShare:
    job = ShareJob(
        workload=workload(["a", "b"]),
        connections=connections,
        warmup_s=0.0,
        duration_s=1.0,
        timeout_s=1.0,
        seed=0,
        open_loop=OpenLoopJob([Phase(1, 10)], Arrivals.CONSTANT, 0, 1),
    )
    return OpenShare(job)


def fake(share: OpenShare) -> FakeConnection:
    conn = FakeConnection()
    pooled = cast(PooledConnection, conn)
    share.connections.add(pooled)
    share.idle.append(pooled)
    return conn


def test_idle_connections_are_reused_warmest_first() -> None:
    share = open_share()
    older, newer = fake(share), fake(share)
    share.fire(10)
    share.fire(20)
    assert [at for at, _ in newer.sent] == [10] and [at for at, _ in older.sent] == [20]
    assert share.outstanding == 2 and not share.idle


def test_a_full_pool_counts_client_saturated_and_sends_nothing() -> None:
    share = open_share(connections=2)
    share.connections.update(cast(PooledConnection, FakeConnection()) for _ in range(2))  # busy
    share.fire(5)
    assert share.outstanding == 0
    result = share.result(cpu_s=0.0)
    assert np.frombuffer(result.statuses, "<i2").tolist() == [FAILURE_CODES[ErrorKind.SATURATED]]
    assert np.frombuffer(result.latency_ns, "<i8").tolist() == [0]


def test_records_outside_the_window_count_only_their_errors() -> None:
    share = open_share()
    share.record_from_ns = 1_000
    share.outstanding = 3
    share.record(500, 600, 900, 200, 0)
    share.record(600, 700, 950, 503, 1)
    assert share.warmup_errors == 1 and not share.result(0.0).scheduled_ns
    assert not share.all_ended.is_set()
    share.record(1_500, 1_600, 2_000, 429, 1)
    result = share.result(0.0)
    columns = (result.scheduled_ns, result.lag_ns, result.latency_ns)
    assert [np.frombuffer(c, "<i8").tolist() for c in columns] == [[500], [100], [500]]
    assert result.warmup_errors == 1
    assert share.outstanding == 0 and share.all_ended.is_set()
