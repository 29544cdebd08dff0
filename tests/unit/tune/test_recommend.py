"""Ranking arithmetic: instance counts, costs, the latency bound and the best reachable."""

from __future__ import annotations

import pytest

from modelfleet.tune.errors import TuneInputError
from modelfleet.tune.recommend import CurvePoint, NoConfigurationMeets, Option, price, rank


def option(config: str, capacity: float, latency: float, usd: float, **kw: object) -> Option:
    return Option(config, "t", capacity, latency, usd, **kw)  # type: ignore[arg-type]


def test_count_is_ceil_of_rate_over_capacity_and_exact_multiples_do_not_round_up() -> None:
    assert price(option("a", 53.2, 783, 0.7364), 500).instance_count == 10
    assert price(option("a", 50.0, 10, 1.0), 500).instance_count == 10
    assert price(option("a", 50.0, 10, 1.0), 500.1).instance_count == 11
    assert price(option("a", 1e6, 10, 1.0), 1).instance_count == 1


def test_costs_are_rounded_dollars_and_per_million() -> None:
    r = price(option("a", 3192 / 60, 783, 0.7364), 500)
    assert r.cost_per_hour == 7.364
    assert r.cost_per_million == pytest.approx(7.364 / (500 * 3600) * 1e6)
    assert r.cost_per_million_at_capacity == pytest.approx(0.7364 / (3192 / 60 * 3600) * 1e6)


def test_cheapest_first_and_ties_broken_by_latency() -> None:
    ranking = rank(
        [option("slow", 100, 90, 1.0), option("fast", 100, 10, 1.0), option("dear", 100, 5, 2.0)], 150
    )
    assert [r.config for r in ranking.recommendations] == ["fast", "slow", "dear"]


def test_latency_bound_filters_and_keeps_the_rest_aside() -> None:
    ranking = rank([option("cheap", 100, 900, 1.0), option("quick", 50, 400, 1.0)], 200, max_latency_ms=500)
    assert [r.config for r in ranking.recommendations] == ["quick"]
    assert [r.config for r in ranking.over_latency] == ["cheap"]


def test_nobody_meets_the_bound_names_the_best_reachable() -> None:
    with pytest.raises(NoConfigurationMeets, match="best reachable is b on t at 300 ms") as info:
        rank([option("a", 100, 900, 1.0), option("b", 10, 300, 1.0)], 50, max_latency_ms=100)
    assert info.value.best.config == "b"


def test_predicted_p90_follows_the_measured_curve_below_capacity() -> None:
    curve = (CurvePoint(40, 5.0), CurvePoint(80, 9.0), CurvePoint(100, 20.0))
    o = option("a", 100, 20.0, 1.0, curve=curve)
    assert price(o, 150).predicted_p90_ms == 9.0  # 2 instances at 75/s each
    assert price(o, 30).predicted_p90_ms == 5.0
    assert price(o, 100).predicted_p90_ms == 20.0


@pytest.mark.parametrize("rate", [0, -1, float("inf"), float("nan")])
def test_bad_rate(rate: float) -> None:
    with pytest.raises(TuneInputError, match="--rate"):
        rank([option("a", 1, 1, 1)], rate)


def test_no_options() -> None:
    with pytest.raises(TuneInputError, match="no configuration"):
        rank([], 10)
