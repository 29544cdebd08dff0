"""The lower bounds are valid and as strong as they claim: the relaxation with whole instances (Benders)
is never above the optimum that CP-SAT proves on small fleets, never below the LP, and reaches the
optimum where the LP cannot (isolation groups need whole instances each)."""

from __future__ import annotations

import time

import pytest

from modelfleet.planner.benders import CountRelaxation
from modelfleet.planner.bound import lower_bound
from modelfleet.planner.catalog import Catalog
from modelfleet.planner.exact import solve_assignment
from modelfleet.planner.heuristic import first_fit_decreasing
from modelfleet.planner.problem import Problem, build_problem
from modelfleet.planner.result import Status
from modelfleet.planner.spec import Capacity, FleetSpec, ModelSpec, Options
from modelfleet.planner.synth import heterogeneous_fleet

TYPES = ("c7i.2xlarge", "r7i.2xlarge", "inf2.xlarge", "g5.xlarge")


def _optimum(problem: Problem) -> float:
    """The optimum proven by CP-SAT's assignment model alone (its own bound, not the relaxation's).
    Every opened instance counts, empty ones too: a minimum instance count pays for them."""
    start = first_fit_decreasing(problem)
    assert start is not None
    packing = solve_assignment(problem, start, 30, 2, None)
    assert packing is not None and packing.status is Status.OPTIMAL
    return sum(problem.types[t].usd_per_hour for t, _ in packing.bins)


@pytest.mark.parametrize("seed", range(5))
def test_the_relaxation_is_between_the_lp_and_the_proven_optimum(catalog: Catalog, seed: int) -> None:
    spec = heterogeneous_fleet(10, seed=seed, types=TYPES, isolated_share=0.3, mean_rps=20.0)
    problem = build_problem(spec, catalog)
    relaxed = CountRelaxation(problem).solve(time.monotonic() + 10)
    assert relaxed.converged and relaxed.guide is not None
    optimum = _optimum(problem)
    assert lower_bound(problem) <= relaxed.bound + 1e-9
    assert relaxed.bound <= optimum + 1e-9


@pytest.mark.parametrize(
    "options", [{"max_instances": 6}, {"min_instances": 5}, {"min_per_type": {"g5.xlarge": 1}}]
)
def test_fleet_limits_tie_the_groups_and_the_bound_stays_valid(
    catalog: Catalog, options: dict[str, object]
) -> None:
    base = heterogeneous_fleet(10, seed=7, types=TYPES, isolated_share=0.3, mean_rps=20.0)
    spec = FleetSpec(slo=base.slo, models=base.models, options=base.options.model_copy(update=options))
    problem = build_problem(spec, catalog)
    relaxation = CountRelaxation(problem)
    assert relaxation.linked
    relaxed = relaxation.solve(time.monotonic() + 10)
    assert relaxed.bound <= _optimum(problem) + 1e-9


def test_isolation_groups_need_whole_instances_each(catalog: Catalog) -> None:
    # three groups, each with one model using 30 % of a c7i.2xlarge's memory: the LP pays 0.9 of an
    # instance; whole instances per group make it 3, which is the optimum
    def one(name: str, group: str) -> ModelSpec:
        return ModelSpec(
            name=name,
            memory_bytes=int(0.3 * 16 * 2**30),
            traffic_rps=0.0,
            isolation_group=group,
            capacity={"c7i.2xlarge": Capacity(rps=10.0)},
        )

    spec = FleetSpec(models=[one("a", "x"), one("b", "y"), one("c", "z")], options=Options())
    problem = build_problem(spec, catalog)
    price = problem.types[0].usd_per_hour
    assert lower_bound(problem) == pytest.approx(0.9 * price * 16 * 2**30 / problem.capacity[0, 0], rel=1e-6)
    relaxed = CountRelaxation(problem).solve(time.monotonic() + 5)
    assert relaxed.bound == pytest.approx(3 * price, rel=1e-6)
    assert relaxed.counts == {(0, 0): 1, (1, 0): 1, (2, 0): 1}


def test_a_reserve_asks_for_more_instances_and_is_no_bound(catalog: Catalog) -> None:
    problem = build_problem(heterogeneous_fleet(30, seed=8, types=TYPES), catalog)
    relaxation = CountRelaxation(problem)
    plain = relaxation.solve(time.monotonic() + 10)
    roomy = relaxation.solve(time.monotonic() + 10, reserve=0.2)
    assert roomy.bound >= plain.bound
    assert roomy.guide is not None and (problem.eligible[range(problem.n_models), roomy.guide]).all()
