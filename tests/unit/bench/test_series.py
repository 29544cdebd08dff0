"""A closed loop over time: per-second and per-phase figures from completion times; the cost."""

from array import array

import pytest

from modelfleet.bench.messages import ShareResult, StopInfo
from modelfleet.bench.series import closed_figures, cost_per_million
from modelfleet.bench.spec import UserPhase

S, MS = 1_000_000_000, 1_000_000


def share(done_s: list[float], latency_ms: list[int], errors_s: list[float], recorded_s: float,
          stopped: StopInfo | None = None) -> ShareResult:  # fmt: skip
    return ShareResult(
        latencies_ns=array("q", [v * MS for v in latency_ms]).tobytes(),
        model_indexes=array("i", [0] * len(latency_ms)).tobytes(),
        errors={"http_500": len(errors_s)} if errors_s else {},
        model_errors={},
        warmup_errors=0,
        cpu_s=0.0,
        done_ns=array("q", [int(t * S) for t in done_s]).tobytes(),
        error_times_ns=array("q", [int(t * S) for t in errors_s]).tobytes(),
        recorded_s=recorded_s,
        stopped=stopped,
    )


def test_seconds_and_phases_over_two_processes() -> None:
    phases = (UserPhase(1, 0, 2), UserPhase(4, 60, 2))  # 1 user for 2 s, then 4 and one more a second
    a = share([0.1, 0.5, 1.2, 2.5, 3.9], [10, 20, 30, 40, 50], [3.5], 4.0)
    b = share([0.7, 2.1], [15, 45], [], 4.0)
    figures = closed_figures([a, b], phases)
    assert [(s.t_s, s.users, s.ok, s.errors) for s in figures.series] == [
        (0, 1, 3, 0), (1, 1, 1, 0), (2, 4, 2, 0), (3, 5, 1, 1),
    ]  # fmt: skip
    assert figures.series[0].p50_ms == 15 and figures.series[0].p99_ms == 20
    first, second = figures.phases
    assert (first.start_s, first.users_from, first.users_to, first.ok, first.errors) == (0, 1, 1, 4, 0)
    assert (second.start_s, second.users_from, second.users_to, second.ok, second.errors) == (2, 4, 6, 3, 1)
    assert first.throughput_per_s == 2.0 and second.latency.max_ms == 50
    assert figures.stopped is None and figures.recorded_s == 4.0


def test_a_stopped_record_ends_its_phases_and_seconds_early() -> None:
    stop = StopInfo("p90", 120.0, 100.0, 2.5)
    figures = closed_figures(
        [share([0.2, 1.5, 2.4], [1, 2, 3], [], 2.5, stop)], (UserPhase(2, 0, 3), UserPhase(3, 0, 3))
    )
    assert figures.stopped == stop
    assert [(s.t_s, s.length_s, s.ok) for s in figures.series] == [(0, 1.0, 1), (1, 1.0, 1), (2, 0.5, 1)]
    (only,) = figures.phases  # the second phase never started
    assert only.duration_s == 2.5 and only.throughput_per_s == pytest.approx(3 / 2.5)


def test_cost_per_million_inferences() -> None:
    assert cost_per_million(3.6, 1.0) == pytest.approx(1e6 * 3.6 / 3600)  # $1,000 at 1/s, $3.6/h
    assert cost_per_million(0.7582, 100.0) == pytest.approx(2.1061, rel=1e-4)
    assert cost_per_million(1.0, 0.0) == float("inf")
