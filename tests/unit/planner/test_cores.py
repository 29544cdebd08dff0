"""Models on accelerator cores: a copy lives on one core, within that core's memory and compute."""

from __future__ import annotations

from pathlib import Path

import pytest

from modelfleet.planner.catalog import load_catalog
from modelfleet.planner.cores import assign_cores
from modelfleet.planner.errors import InfeasiblePlan, NoPlanFound
from modelfleet.planner.problem import build_problem, with_max_total
from modelfleet.planner.solve import Method, solve
from modelfleet.planner.spec import load_fleet_spec

from .conftest import check_plan

GIB = 2**30
CATALOG = f"""
types:
  - {{name: acc.big, family: acc, vcpus: 8, memory_bytes: {64 * GIB}, usd_per_hour: 1.0,
     accelerators: {{kind: test, count: 1, memory_bytes: {16 * GIB}, cores: 2}}}}
"""
FLEET = """
models:
  - pattern: "m-{i}"
    count: 3
    memory_bytes: 1_000_000
    accelerator_memory_bytes: %d
    traffic_rps: %g
    capacity: {acc.big: {rps_per_core: 10}}
"""


def plan_for(tmp_path: Path, device_bytes: int, traffic: float, method: Method) -> object:
    (tmp_path / "catalog.yaml").write_text(CATALOG, encoding="utf-8")
    (tmp_path / "fleet.yaml").write_text(FLEET % (device_bytes, traffic), encoding="utf-8")
    problem = build_problem(load_fleet_spec(tmp_path / "fleet.yaml"), load_catalog(tmp_path / "catalog.yaml"))
    plan = solve(problem, method, time_limit_s=5, workers=1)
    check_plan(problem, plan)
    return plan


@pytest.mark.parametrize("method", [Method.AUTO, Method.HEURISTIC])
def test_device_memory_is_packed_per_core(tmp_path: Path, method: Method) -> None:
    # 3 x 5 GiB fit the instance's 16 GiB in total, but one 8 GiB core holds only one of them
    plan = plan_for(tmp_path, 5 * GIB, 1.0, method)
    assert len(plan.instances) == 2
    assert sorted(len(core) for inst in plan.instances for core in inst.cores) == [0, 1, 1, 1]
    if method is Method.AUTO:  # identical models: the counts model knows the cores, and proves it
        assert plan.gap == 0.0


def test_small_copies_share_cores_and_spread_over_them(tmp_path: Path) -> None:
    plan = plan_for(tmp_path, 1 * GIB, 1.0, Method.AUTO)
    assert len(plan.instances) == 1
    assert sorted(len(core) for core in plan.instances[0].cores) == [1, 2]


def test_compute_is_packed_per_core(tmp_path: Path) -> None:
    # 6 req/s each at 10 per core: two fit the instance's 20 but not one core's 10
    plan = plan_for(tmp_path, 1 * GIB, 6.0, Method.AUTO)
    assert len(plan.instances) == 2
    assert all(len(core) <= 1 for inst in plan.instances for core in inst.cores)


def test_assign_cores_reports_what_fits_no_core(tmp_path: Path) -> None:
    (tmp_path / "catalog.yaml").write_text(CATALOG, encoding="utf-8")
    (tmp_path / "fleet.yaml").write_text(FLEET % (5 * GIB, 1.0), encoding="utf-8")
    problem = build_problem(load_fleet_spec(tmp_path / "fleet.yaml"), load_catalog(tmp_path / "catalog.yaml"))
    cores, left = assign_cores(problem, 0, [0, 1, 2])
    assert sorted(map(len, cores)) == [1, 1] and len(left) == 1


def test_a_limit_that_per_core_placement_exceeds_is_an_error(tmp_path: Path) -> None:
    (tmp_path / "catalog.yaml").write_text(CATALOG, encoding="utf-8")
    (tmp_path / "fleet.yaml").write_text(FLEET % (5 * GIB, 1.0), encoding="utf-8")
    problem = build_problem(load_fleet_spec(tmp_path / "fleet.yaml"), load_catalog(tmp_path / "catalog.yaml"))
    one = with_max_total(problem, 1)
    # the heuristic packs whole copies per core: it finds no fleet of one instance (or, where a
    # packing of totals fits the limit, solve says that the cores need 2)
    with pytest.raises(NoPlanFound, match=r"max_instances 1"):
        solve(one, Method.HEURISTIC, time_limit_s=5, workers=1)
    with pytest.raises(InfeasiblePlan):  # the counts model knows the cores: it proves it
        solve(one, Method.AUTO, time_limit_s=5, workers=1)
