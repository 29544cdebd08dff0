"""Seed 002's numbers, reproduced exactly: 127 x inf1.2xlarge at $45.974/h proven optimal; with at most
40 instances, 40 x inf1.6xlarge at $47.20/h."""

from __future__ import annotations

import pytest

from modelfleet.planner.bound import lower_bound
from modelfleet.planner.catalog import Catalog
from modelfleet.planner.problem import Problem, build_problem, with_max_total
from modelfleet.planner.result import Status
from modelfleet.planner.solve import Method, solve
from modelfleet.planner.spec import load_fleet_spec
from tests.unit.planner.conftest import SEED_002, check_plan


@pytest.fixture(scope="module")
def seed(catalog: Catalog) -> Problem:
    return build_problem(load_fleet_spec(SEED_002), catalog)


def test_the_optimum_is_127_inf1_2xlarge_proven(seed: Problem) -> None:
    plan = solve(seed)
    assert plan.by_type == {"inf1.2xlarge": 127}
    assert plan.cost_per_hour == pytest.approx(45.974, abs=1e-9)
    assert plan.lower_bound_cost_per_hour == pytest.approx(45.974, abs=1e-9)
    assert plan.gap == 0.0
    assert plan.status is Status.OPTIMAL
    assert plan.models == 3040
    assert plan.cost_per_model_hour == pytest.approx(45.974 / 3040)
    assert not any("unverified" in note for note in plan.notes)  # seed 002's prices are verified
    check_plan(seed, plan)


def test_at_most_40_instances_is_40_inf1_6xlarge(seed: Problem) -> None:
    plan = solve(with_max_total(seed, 40))
    assert plan.by_type == {"inf1.6xlarge": 40}
    assert plan.cost_per_hour == pytest.approx(47.20, abs=1e-9)
    assert plan.gap == 0.0
    assert all(len(i.models) == 76 for i in plan.instances)
    check_plan(with_max_total(seed, 40), plan)


def test_39_instances_cannot_hold_3040_models(seed: Problem) -> None:
    from modelfleet.planner.errors import InfeasiblePlan

    with pytest.raises(InfeasiblePlan, match="max_instances 39"):
        solve(with_max_total(seed, 39))


def test_the_seed_deployment_costs_per_million_inferences(seed: Problem) -> None:
    plan = solve(with_max_total(seed, 40))
    # PRODUCT.md: $47.2/h at 6,230 req/s is about $2.10 per million requests
    assert plan.cost_per_million_inferences == pytest.approx(47.2 / (6230 * 3600) * 1e6, rel=1e-6)


def test_the_heuristic_alone_finds_the_optimum_and_its_bounds_prove_it(seed: Problem) -> None:
    plan = solve(seed, Method.HEURISTIC, time_limit_s=5)
    assert plan.cost_per_hour == pytest.approx(45.974, abs=1e-9)
    # whole instances per type: 3,040 / 24 rounds up to 127
    assert plan.lower_bound_cost_per_hour == pytest.approx(45.974, rel=1e-6)
    check_plan(seed, plan)


def test_the_lp_bound_of_one_class_is_its_volume(seed: Problem) -> None:
    assert lower_bound(seed) == pytest.approx(3040 * 0.362 / 24, rel=1e-6)
