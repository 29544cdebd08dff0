"""The closed loop's record: thresholds judged on a window, the exact request limit, the user clock."""

from array import array

import numpy as np
import pytest

from modelfleet.bench.encode import Body
from modelfleet.bench.messages import ShareJob, StopInfo, Workload
from modelfleet.bench.record import Recorder, crossed
from modelfleet.bench.spec import Popularity, Target, Thresholds, UserPhase

MS = 1_000_000


def ms(*values: float) -> np.ndarray:
    return np.array([int(v * MS) for v in values], dtype=np.int64)


def test_latency_thresholds_use_nearest_rank_percentiles() -> None:
    window = ms(*range(1, 101))  # 1..100 ms: P90 90, P99 99
    assert crossed(Thresholds(p90_ms=90), window, 0, 100) is None
    assert crossed(Thresholds(p90_ms=89.5), window, 0, 100) == StopInfo("p90", 90.0, 89.5)
    assert crossed(Thresholds(p99_ms=98), window, 0, 100) == StopInfo("p99", 99.0, 98.0)
    assert crossed(Thresholds(p90_ms=200, p99_ms=200), window, 0, 100) is None


def test_error_rate_counts_failures_among_all_answers() -> None:
    window = ms(*[1] * 30)
    assert crossed(Thresholds(error_rate=0.25), window, 10, 40) is None  # exactly 25 %: not over
    found = crossed(Thresholds(error_rate=0.25), window, 11, 41)
    assert found is not None and found.reason == "error_rate" and found.value == pytest.approx(11 / 41)


def test_too_few_answers_are_not_judged_but_the_request_limit_is() -> None:
    few = ms(500, 500)
    assert crossed(Thresholds(p90_ms=1, error_rate=0.0), few, 2, 4) is None
    assert crossed(Thresholds(max_requests=4), few, 2, 4) == StopInfo("max_requests", 4.0, 4.0)


def job(thresholds: Thresholds, users: list[UserPhase]) -> ShareJob:
    workload = Workload(Target.parse("http://h:1"), ["m"], [Body(b"{}", "application/json")], [[0]], [0],
                        Popularity.UNIFORM, 1.1)  # fmt: skip
    return ShareJob(workload, 1, 0.0, 10.0, 1.0, 0, users=users, thresholds=thresholds)


def test_the_request_limit_ends_the_record_at_that_answer() -> None:
    record = Recorder(job(Thresholds(max_requests=3), [UserPhase(1, 0, 10)]))
    record.record_from_ns, record.end_ns = 1_000, 10_000_000_000
    record.ok(0, 1_000, 2_000)
    record.error("http_500", 0, 3_000)
    assert record.stopped is None
    record.ok(0, 3_000, 5_000)
    assert record.stopped == StopInfo("max_requests", 3.0, 3.0, 4_000 / 1e9)
    assert record.end_ns == 5_000
    record.ok(0, 5_000, 6_000)  # after the end: not recorded
    result = record.result()
    assert array("q", result.done_ns).tolist() == [1_000, 4_000]
    assert array("q", result.error_times_ns).tolist() == [2_000]
    assert result.errors == {"http_500": 1} and result.recorded_s == 4_000 / 1e9


def test_answers_before_the_window_are_warm_up() -> None:
    record = Recorder(job(Thresholds(), [UserPhase(1, 0, 10)]))
    record.record_from_ns, record.end_ns = 1_000, 2_000
    record.ok(0, 0, 500)
    record.error("timeout", 0, 600)
    assert len(record.latencies) == 0 and record.warmup_errors == 1 and record.errors == {}
