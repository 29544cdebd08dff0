import math
from array import array

import numpy as np
import pytest

from modelfleet.bench.messages import ShareResult
from modelfleet.bench.stats import LatencySummary, merge, percentile


def test_nearest_rank_percentiles() -> None:
    values = np.arange(1, 101)
    assert [percentile(values, p) for p in (50, 90, 95, 99, 100)] == [50, 90, 95, 99, 100]
    assert percentile(values, 0) == 1
    assert percentile(np.array([7]), 99) == 7
    assert percentile(np.arange(1, 11), 95) == 10  # rank ceil(9.5) = 10
    assert math.isnan(percentile(np.array([]), 50))


def test_summary_is_in_milliseconds_and_ordered() -> None:
    rng = np.random.default_rng(0)
    ns = rng.integers(100_000, 10_000_000, size=10_000)
    s = LatencySummary.of(ns)
    assert s.count == 10_000
    assert s.p50_ms <= s.p90_ms <= s.p95_ms <= s.p99_ms <= s.max_ms
    assert s.max_ms == pytest.approx(ns.max() / 1e6)
    assert s.mean_ms == pytest.approx(ns.mean() / 1e6)


def test_empty_summary() -> None:
    s = LatencySummary.of(np.array([], dtype=np.int64))
    assert s.count == 0 and math.isnan(s.p99_ms)


def share(
    latencies_ms: list[int], models: list[int], errors: dict[str, int], model_errors: dict[int, int]
) -> ShareResult:
    return ShareResult(
        latencies_ns=array("q", [v * 1_000_000 for v in latencies_ms]).tobytes(),
        model_indexes=array("i", models).tobytes(),
        errors=errors,
        model_errors=model_errors,
        warmup_errors=1,
        cpu_s=0.5,
    )


def test_merge_concatenates_shares() -> None:
    a = share([1, 2, 3], [0, 1, 1], {"timeout": 1}, {1: 1})
    b = share([4, 5], [1, 2], {"timeout": 2, "http_503": 1}, {0: 3})
    result = merge([a, b], ["m0", "m1", "m2", "m3"], duration_s=2.0, top=10)
    assert result.requests == 5
    assert result.requests_per_s == 2.5
    assert result.latency.max_ms == 5 and result.latency.p50_ms == 3
    assert result.errors == {"http_503": 1, "timeout": 3}
    assert result.error_total == 4
    assert result.warmup_errors == 2
    assert result.client_processes == 2
    assert result.client_cpu_s == 1.0
    assert result.models_hit == 3
    rows = {r.model: r for r in result.top_models}
    assert [r.model for r in result.top_models] == ["m0", "m1", "m2"]  # by requests + errors
    assert rows["m1"].requests == 3 and rows["m1"].errors == 1 and rows["m1"].latency.max_ms == 4
    assert rows["m0"].requests == 1 and rows["m0"].errors == 3


def test_merge_top_limit_and_single_model() -> None:
    many = share([1] * 6, [0, 1, 2, 3, 3, 3], {}, {})
    assert [r.model for r in merge([many], list("abcd"), 1.0, top=2).top_models] == ["d", "a"]
    single = merge([share([1, 2], [0, 0], {}, {})], ["only"], 1.0, top=10)
    assert single.top_models == [] and single.models_hit == 1
