"""`modelfleet advise`: four options on five axes, each score explained; the grouping check splits
size spreads over 10x."""

from __future__ import annotations

from pathlib import Path

import pytest

from modelfleet.planner.advise import AXES, advice_document, advise, grouping, spider_chart
from modelfleet.planner.catalog import Catalog
from modelfleet.planner.problem import build_problem
from modelfleet.planner.spec import load_fleet_spec
from tests.unit.planner.conftest import HETEROGENEOUS, SEED_002


def test_seed_002_scores_and_recommends_packing(catalog: Catalog, tmp_path: Path) -> None:
    advice = advise(load_fleet_spec(SEED_002), catalog, time_limit_s=5)
    names = [o.name for o in advice.options]
    assert names == ["single", "lru", "packed", "serverless"]
    for option in advice.options:
        assert [s.axis for s in option.scores] == list(AXES)
        assert all(0.0 <= s.value <= 5.0 and s.why for s in option.scores)
    packed = advice.options[2]
    assert packed.cost_per_hour == 45.974
    single = advice.options[0]
    assert single.cost_per_hour == pytest.approx(3040 * 0.228)  # one inf1.xlarge per model
    assert advice.recommended == "packed"
    spider_chart(advice, tmp_path / "fitness.png")
    assert (tmp_path / "fitness.png").read_bytes()[:4] == b"\x89PNG"
    assert advice_document(advice)["recommended"] == "packed"


def test_a_100x_spread_is_split_into_groups_of_at_most_10x(catalog: Catalog) -> None:
    problem = build_problem(load_fleet_spec(HETEROGENEOUS), catalog)
    groups = grouping(problem)
    assert len(groups) >= 2
    assert sum(g.members for g in groups) == problem.n_models
    assert all(g.largest_bytes <= 10 * g.smallest_bytes for g in groups)
