"""Open-loop figures from known records: statuses, phases by scheduled time, seconds by arrival."""

import math
from array import array

import pytest

from modelfleet.bench.client import ErrorKind
from modelfleet.bench.messages import OpenShareResult
from modelfleet.bench.openloop import FAILURE_CODES
from modelfleet.bench.openstats import merge_open
from modelfleet.bench.spec import BenchSpec, ModelSelection, Phase, Target
from modelfleet.bench.stats import BenchResult

MS = 1_000_000
SATURATED, TIMEOUT = FAILURE_CODES[ErrorKind.SATURATED], FAILURE_CODES[ErrorKind.TIMEOUT]

# (scheduled ms, send lag ms, latency ms, status, model)
Row = tuple[float, float, float, int, int]
SHARE_A: list[Row] = [
    (0, 0.5, 10, 200, 0),
    (250, 0.5, 20, 200, 1),
    (500, 0, 0, SATURATED, 0),
    (750, 0.5, 2, 429, 0),
    (1000, 0.5, 1500, 200, 0),  # answered in the drain, 2.5 s into the run
    (1500, 0.5, 3, 429, 1),
]
SHARE_B: list[Row] = [(900, 1, 5, 503, 0), (1200, 0, 30, TIMEOUT, 1)]


def share(rows: list[Row], cpu_s: float, peak: int) -> OpenShareResult:
    def ns(values: list[float]) -> bytes:
        return array("q", [round(v * MS) for v in values]).tobytes()

    scheduled, lag, latency, status, model = (list(c) for c in zip(*rows, strict=True))
    return OpenShareResult(
        scheduled_ns=ns(scheduled),
        lag_ns=ns(lag),
        latency_ns=ns(latency),
        statuses=array("h", status).tobytes(),
        model_indexes=array("i", model).tobytes(),
        warmup_errors=1,
        cpu_s=cpu_s,
        peak_connections=peak,
    )


def open_spec() -> BenchSpec:
    return BenchSpec(
        Target.parse("http://h:1"), ModelSelection(names=("a", "b")), phases=(Phase(1, 4), Phase(1, 2))
    )


@pytest.fixture
def result() -> BenchResult:
    return merge_open([share(SHARE_A, 0.5, 3), share(SHARE_B, 0.25, 2)], ["a", "b"], open_spec())


def test_closed_loop_figures_cover_the_2xx_answers(result: BenchResult) -> None:
    assert result.requests == 3 and result.requests_per_s == 1.5
    assert result.latency.max_ms == 1500
    assert result.errors == {"client_saturated": 1, "http_429": 2, "http_503": 1, "timeout": 1}
    assert result.warmup_errors == 2
    assert result.client_processes == 2
    assert result.client_cpu_us_per_request == pytest.approx(0.75e6 / 7)  # per request sent
    rows = {r.model: r for r in result.top_models}
    assert (rows["a"].requests, rows["a"].errors, rows["b"].requests, rows["b"].errors) == (2, 3, 1, 2)


def test_phases_by_scheduled_time(result: BenchResult) -> None:
    figures = result.open_loop
    assert figures is not None
    first, second = figures.phases
    assert (first.start_s, first.duration_s, first.rate_per_s) == (0, 1, 4)
    assert (first.scheduled, first.sent, first.ok, first.send_rate_per_s) == (5, 4, 2, 4.0)
    assert (first.goodput_per_s, second.goodput_per_s) == (2, 0)  # the late answer came after the window
    assert first.statuses == {"200": 2, "429": 1, "503": 1}
    assert first.failures == {"client_saturated": 1}
    assert (first.ok_latency.p50_ms, first.ok_latency.max_ms) == (10, 20)
    assert (first.refused_latency.count, first.refused_latency.max_ms) == (1, 2)
    assert (second.start_s, second.scheduled, second.sent, second.ok) == (1, 3, 3, 1)
    assert second.statuses == {"200": 1, "429": 1} and second.failures == {"timeout": 1}
    total = figures.total
    assert (total.scheduled, total.sent, total.ok, total.rate_per_s) == (8, 7, 3, 3.0)
    assert total.refused_latency.p50_ms == 2 and total.refused_latency.max_ms == 3
    assert (figures.peak_connections, figures.max_connections, figures.arrivals) == (5, 512, "constant")
    assert figures.send_lag.count == 7 and figures.send_lag.max_ms == 1


def test_series_by_send_and_answer_time(result: BenchResult) -> None:
    assert result.open_loop is not None
    series = result.open_loop.series
    assert [s.t_s for s in series] == [0, 1, 2]  # the drain's late answer adds a second
    assert [s.sent for s in series] == [4, 3, 0]
    assert [s.ok for s in series] == [2, 0, 1]
    assert [s.refused for s in series] == [1, 1, 0]
    assert [s.failed for s in series] == [1, 1, 0]
    assert [s.saturated for s in series] == [1, 0, 0]
    assert series[0].ok_p99_ms == 20 and math.isnan(series[1].ok_p99_ms) and series[2].ok_p99_ms == 1500


def test_an_empty_window() -> None:
    empty = OpenShareResult(b"", b"", b"", b"", b"", 0, 0.0, 0)
    result = merge_open([empty], ["a", "b"], open_spec())
    assert result.requests == 0 and result.open_loop is not None
    assert [s.sent for s in result.open_loop.series] == [0, 0]
    assert math.isnan(result.open_loop.total.ok_latency.p99_ms)
    assert math.isnan(result.client_cpu_us_per_request)
