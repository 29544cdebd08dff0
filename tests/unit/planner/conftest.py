"""Small fleets for the planner's tests, and a checker that every plan obeys its constraints."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import numpy as np
import pytest

from modelfleet.planner.catalog import Catalog, load_catalog
from modelfleet.planner.cores import per_core_capacity
from modelfleet.planner.problem import Dim, Problem
from modelfleet.planner.result import Plan

ROOT = Path(__file__).resolve().parents[3]
SEED_002 = ROOT / "examples" / "seed-002" / "fleet.yaml"
HETEROGENEOUS = ROOT / "examples" / "heterogeneous" / "fleet.yaml"


@pytest.fixture(scope="session")
def catalog() -> Catalog:
    return load_catalog()


def check_plan(problem: Problem, plan: Plan) -> None:
    """Every replica placed once per instance, within capacity, isolation and never-with."""
    index = {name: i for i, name in enumerate(problem.model_names)}
    types = {t.name: i for i, t in enumerate(problem.types)}
    placed: Counter[int] = Counter()
    for inst in plan.instances:
        t = types[inst.type]
        members = [index[name] for name in inst.models]
        assert len(set(members)) == len(members), f"replicas share an instance: {inst.models}"
        assert all(problem.eligible[m, t] for m in members)
        load = problem.demand[members, t, :].sum(axis=0) if members else np.zeros(4)
        assert (load <= problem.capacity[t]).all(), f"over capacity on {inst.type}: {load}"
        assert len({int(problem.group[m]) for m in members}) <= 1, "isolation groups mixed"
        for m in members:
            assert problem.conflicts.get(m, set()).isdisjoint(members)
        if problem.accel_cores[t]:
            on_cores = [index[name] for core in inst.cores for name in core]
            assert sorted(on_cores) == sorted(members), "every model on exactly one core"
            cap = per_core_capacity(problem, t)
            for core in inst.cores:
                rows = [index[name] for name in core]
                load = problem.demand[rows][:, t, [Dim.ACCELERATOR, Dim.COMPUTE]].sum(axis=0)
                assert (load <= cap).all(), f"over a core's capacity on {inst.type}: {load}"
        placed.update(members)
    assert placed == Counter({m: int(problem.replicas[m]) for m in range(problem.n_models)})
    assert plan.lower_bound_cost_per_hour <= plan.cost_per_hour + 1e-9
    if problem.max_total is not None:
        assert len(plan.instances) <= problem.max_total
