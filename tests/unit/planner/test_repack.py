"""The exact repacks of planner.repack: a victim that no single move can empty goes when its
neighbours are repacked together; a half-empty accelerator instance of small models becomes a CPU one."""

from __future__ import annotations

import time

from modelfleet.planner.bins import Bin
from modelfleet.planner.catalog import Catalog
from modelfleet.planner.heuristic import Packer
from modelfleet.planner.improve import Improver
from modelfleet.planner.problem import Problem, build_problem
from modelfleet.planner.repack import eliminate, retype
from modelfleet.planner.spec import Capacity, FleetSpec, ModelSpec, Options

GIB = 2**30


def _fleet(catalog: Catalog, sizes_gib: list[float], types: dict[str, Capacity]) -> Problem:
    models = [
        ModelSpec(name=f"m{i}", memory_bytes=int(size * GIB), traffic_rps=0.0, capacity=types)
        for i, size in enumerate(sizes_gib)
    ]
    return build_problem(FleetSpec(models=models, options=Options()), catalog)


def _bin(problem: Problem, t: int, members: list[int]) -> Bin:
    return Bin(t, 0, members, problem.demand[members, t, :].sum(axis=0))


def _cost(problem: Problem, bins: list[Bin]) -> float:
    return sum(problem.types[b.type].usd_per_hour for b in bins)


def test_a_victim_no_single_move_empties_goes_when_its_neighbours_are_repacked(catalog: Catalog) -> None:
    # halves and thirds of a 16 GiB instance: {8, 5}, {8, 5}, {5} -> {8, 8}, {5, 5, 5}
    problem = _fleet(catalog, [8, 5, 8, 5, 5], {"c7i.2xlarge": Capacity(rps=10.0)})
    bins = [_bin(problem, 0, [0, 1]), _bin(problem, 0, [2, 3]), _bin(problem, 0, [4])]
    drained = Improver(Packer(problem)).drain(
        [Bin(b.type, b.group, list(b.members), b.load) for b in bins], 1e18
    )
    assert len(drained) == 3  # one move at a time cannot do it
    packed = eliminate(problem, bins, time.monotonic() + 10)
    assert sorted(sorted(b.members) for b in packed) == [[0, 2], [1, 3, 4]]
    assert all((b.load <= problem.capacity[b.type]).all() for b in packed)


def test_half_empty_accelerator_instances_of_small_models_become_one_cpu_instance(catalog: Catalog) -> None:
    types = {"c7i.2xlarge": Capacity(rps=10.0), "inf2.xlarge": Capacity(rps_per_core=10.0)}
    problem = _fleet(catalog, [4, 4, 4], types)
    inf2 = [t.name for t in problem.types].index("inf2.xlarge")
    before = [_bin(problem, inf2, [0, 1]), _bin(problem, inf2, [2])]
    retyped = retype(
        problem, [Bin(b.type, b.group, list(b.members), b.load) for b in before], time.monotonic() + 10
    )
    assert [problem.types[b.type].name for b in retyped] == [
        "c7i.2xlarge"
    ]  # not two, as downsizing each would
    assert sorted(retyped[0].members) == [0, 1, 2]
    assert _cost(problem, retyped) < _cost(problem, before)
