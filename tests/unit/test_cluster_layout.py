"""cluster/layout.py and cluster/state.py: a plan.yaml read into servers, checked against the
repository, scaled to this machine; the state file written and read back."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import yaml

from modelfleet.cluster.layout import (
    MIN_BUDGET_BYTES,
    ClusterError,
    check_models,
    fit_scale,
    layout,
    pin_cpus,
    read_plan,
)
from modelfleet.cluster.state import (
    ClusterState,
    ServerState,
    read_state,
    remove_state,
    state_folder,
    write_state,
)

GiB = 1 << 30
CATALOG = {"small": {"memory_bytes": 4 * GiB, "vcpus": 2}, "big": {"memory_bytes": 16 * GiB, "vcpus": 8}}


def write_plan(folder: Path, instances: object) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "plan.yaml").write_text(yaml.safe_dump({"cost_per_hour": 1.0, "instances": instances}))
    return folder


def test_a_plan_is_read_instance_by_instance(tmp_path: Path) -> None:
    plan = write_plan(
        tmp_path,
        [{"type": "small", "use": {}, "models": ["a", "b"]}, {"type": "big", "models": ["c"]}],
    )
    assert read_plan(plan) == [("small", ["a", "b"]), ("big", ["c"])]


@pytest.mark.parametrize(
    ("instances", "message"),
    [
        ([], "no 'instances' list"),
        ("x", "no 'instances' list"),
        ([{"type": "small", "models": []}], "instance 0 needs a 'type' and a non-empty 'models' list"),
        ([{"models": ["a"]}], "instance 0 needs a 'type'"),
        ([{"type": "small", "models": ["a", 3]}], "instance 0: every model must be a name"),
    ],
)
def test_bad_plans_are_refused(tmp_path: Path, instances: object, message: str) -> None:
    with pytest.raises(ClusterError, match=message):
        read_plan(write_plan(tmp_path, instances))


def test_a_missing_or_unreadable_plan_says_how_to_make_one(tmp_path: Path) -> None:
    with pytest.raises(ClusterError, match="modelfleet plan FLEET --out"):
        read_plan(tmp_path)
    (tmp_path / "plan.yaml").write_text("instances: [oops")
    with pytest.raises(ClusterError, match="cannot read it as YAML"):
        read_plan(tmp_path)


def test_models_missing_from_the_repository_are_named() -> None:
    planned = [("small", ["a", "b"]), ("small", [f"x{i}" for i in range(7)])]
    check_models([("small", ["a"])], {"a", "b"}, "repo")
    with pytest.raises(
        ClusterError, match=r"7 planned model\(s\) are not in it \(x0, x1, x2, x3, x4 and 2 more\)"
    ):
        check_models(planned, {"a", "b"}, "repo")


def test_servers_get_the_scaled_memory_and_threads_of_their_type() -> None:
    servers, scale = layout([("small", ["a", "b"]), ("big", ["c"])], CATALOG, 0.5)
    assert scale == 0.5
    assert [(s.name, s.instance_type, s.models) for s in servers] == [
        ("server-0", "small", ("a", "b")),
        ("server-1", "big", ("c",)),
    ]
    assert [(s.memory_budget_bytes, s.threads) for s in servers] == [(2 * GiB, 1), (8 * GiB, 4)]
    tiny, _ = layout([("small", ["a"])], CATALOG, 0.1)
    assert tiny[0].threads == 1  # never none


def test_the_default_scale_fits_the_plan_in_this_machine() -> None:
    assert fit_scale([CATALOG["big"]] * 3, 8 * GiB, 64) == pytest.approx(0.6 * 8 / 48)  # memory binds
    assert fit_scale([CATALOG["small"]] * 3, 64 * GiB, 2) == pytest.approx(2 / 6)  # cores bind
    assert fit_scale([CATALOG["small"]], 64 * GiB, 64) == 1.0  # never more than the instance
    servers, scale = layout([("small", ["a"])] * 2, CATALOG, None)
    assert 0 < scale <= 1 and servers[0].memory_budget_bytes == int(4 * GiB * scale)


@pytest.mark.parametrize(
    ("planned", "scale", "message"),
    [
        ([("nosuch", ["a"])], 1.0, "instance type\\(s\\) nosuch are not in the catalogue"),
        ([("small", ["a"])], 0.0, "--scale must be above 0 and at most 1, got 0"),
        ([("small", ["a"])], 1.5, "--scale must be above 0 and at most 1, got 1.5"),
        ([("small", ["a"])], 0.01, f"under {MIN_BUDGET_BYTES >> 20} MiB"),
    ],
)
def test_bad_layouts_are_refused(planned: list[tuple[str, list[str]]], scale: float, message: str) -> None:
    with pytest.raises(ClusterError, match=message):
        layout(planned, CATALOG, scale)


def test_the_state_file_round_trips_and_goes(tmp_path: Path) -> None:
    assert read_state(tmp_path) is None
    server = ServerState("server-0", "small", 123, 9001, 2, "/x/server-0.models", GiB, 1)
    state = ClusterState("127.0.0.1", 8080, "/repo", 0.5, 122, (server,))
    state_folder(tmp_path).mkdir()
    write_state(tmp_path, state)
    assert read_state(tmp_path) == state
    assert state.pids == [122, 123]
    remove_state(tmp_path)
    assert read_state(tmp_path) is None
    (state_folder(tmp_path) / "state.json").write_text('{"host": 1}')
    with pytest.raises(ClusterError, match="is not a cluster state this version wrote"):
        read_state(tmp_path)


def test_pinned_servers_take_cpus_in_turn_and_share_them_only_when_too_few() -> None:
    assert pin_cpus([1, 1], [0, 1, 2, 3]) == [(0,), (1,)]
    assert pin_cpus([2, 1], [4, 5, 6]) == [(4, 5), (6,)]
    assert pin_cpus([1, 1, 1], [0, 1]) == [(0,), (1,), (0,)]  # more servers than CPUs: round the list
    assert pin_cpus([3], [0, 1]) == [(0, 1)]  # never more CPUs than there are
    with pytest.raises(ClusterError, match="no CPU"):
        pin_cpus([1], [])


def test_layout_pins_only_when_asked(tmp_path: Path) -> None:
    planned = [("small", ["a"]), ("small", ["b"])]
    loose, _ = layout(planned, CATALOG, 0.5)
    assert [s.cpus for s in loose] == [(), ()]
    pinned, _ = layout(planned, CATALOG, 0.5, pin=True)
    allowed = sorted(os.sched_getaffinity(0))
    assert [s.cpus for s in pinned] == pin_cpus([1, 1], allowed)
