"""deploy/plan.py: plan.yaml read with errors naming the line, one server group per instance, device
resources from the catalogue, routes for replicated models."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from modelfleet.deploy.plan import (
    NEURON_CORE,
    NVIDIA_GPU,
    DeployError,
    ServerGroup,
    check_models_exist,
    read_plan,
    routes,
    server_groups,
)
from modelfleet.planner.catalog import load_catalog

CATALOG = load_catalog()


def write_plan(folder: Path, instances: list[dict[str, object]]) -> Path:
    """A plan.yaml in the shape `modelfleet plan --out` writes (planner/result.py plan_document)."""
    folder.mkdir(parents=True, exist_ok=True)
    document = {
        "cost_per_hour": 1.0,
        "status": "optimal",
        "instance_count": len(instances),
        "instances": instances,
    }
    (folder / "plan.yaml").write_text(yaml.safe_dump(document, sort_keys=False))
    return folder


def test_one_group_per_instance_named_by_type_and_index(tmp_path: Path) -> None:
    plan = read_plan(
        write_plan(
            tmp_path,
            [
                {"type": "inf1.xlarge", "usd_per_hour": 0.228, "models": ["a", "b"]},
                {"type": "inf1.xlarge", "models": ["c"]},
                {"type": "g4dn.12xlarge", "models": ["d"]},
                {"type": "c7i.large", "models": ["e"]},
            ],
        )
    )
    groups = server_groups(plan, CATALOG)
    assert [g.name for g in groups] == [
        "inf1-xlarge-000",
        "inf1-xlarge-001",
        "g4dn-12xlarge-000",
        "c7i-large-000",
    ]
    assert [g.models for g in groups] == [("a", "b"), ("c",), ("d",), ("e",)]
    assert [g.instance_type for g in groups] == ["inf1.xlarge", "inf1.xlarge", "g4dn.12xlarge", "c7i.large"]


def test_resources_come_from_the_catalogue_and_leave_room_for_the_node(tmp_path: Path) -> None:
    plan = read_plan(
        write_plan(
            tmp_path,
            [
                {"type": "inf1.6xlarge", "models": ["a"]},
                {"type": "g4dn.12xlarge", "models": ["b"]},
                {"type": "c7i.large", "models": ["c"]},
            ],
        )
    )
    neuron, gpu, cpu = server_groups(plan, CATALOG)
    types = CATALOG.by_name()
    # inf1.6xlarge: 4 Inferentia chips of 4 NeuronCores each
    assert neuron.accelerator is not None
    assert (neuron.accelerator.resource, neuron.accelerator.count) == (NEURON_CORE, 16)
    assert gpu.accelerator is not None
    assert (gpu.accelerator.resource, gpu.accelerator.count) == (NVIDIA_GPU, 4)
    assert cpu.accelerator is None
    for group in (neuron, gpu, cpu):
        kind = types[group.instance_type]
        assert 0 < group.cpu_millis < kind.vcpus * 1000
        assert 0 < group.memory_budget_bytes < group.memory_bytes < kind.memory_bytes


def test_a_type_the_catalogue_lacks_is_refused_by_name(tmp_path: Path) -> None:
    plan = read_plan(write_plan(tmp_path, [{"type": "x9.huge", "models": ["a"]}]))
    with pytest.raises(DeployError, match=r"instance types the catalogue does not have: x9\.huge"):
        server_groups(plan, CATALOG)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("instances: [", "not valid YAML"),
        ("- a\n- b\n", "expected a mapping"),
        ("instances: []\n", "instances"),
        ("instances:\n- type: inf1.xlarge\n  models: []\n", "instances.0.models"),
        ("instances:\n- type: inf1.xlarge\n  models: ['../etc']\n", "'../etc' is not a valid model name"),
    ],
)
def test_a_plan_that_does_not_parse_names_the_problem(tmp_path: Path, text: str, message: str) -> None:
    (tmp_path / "plan.yaml").write_text(text)
    with pytest.raises(DeployError, match=message):
        read_plan(tmp_path)


def test_a_folder_without_a_plan_says_how_to_make_one(tmp_path: Path) -> None:
    with pytest.raises(DeployError, match="modelfleet plan FLEET.yaml --out"):
        read_plan(tmp_path)


def _group(name: str, *models: str) -> ServerGroup:
    return ServerGroup(name, "c7i.large", models, 1000, 1 << 30, None)


def test_a_replicated_model_routes_to_a_target_over_all_its_groups() -> None:
    table, shared = routes([_group("g0", "a", "r"), _group("g1", "b", "r", "s"), _group("g2", "s", "r")])
    assert table["a"] == "g0"
    assert table["b"] == "g1"
    assert shared[table["r"]] == ["g0", "g1", "g2"]
    assert shared[table["s"]] == ["g1", "g2"]
    assert len(shared) == 2


def test_models_missing_from_the_repository_are_named() -> None:
    groups = [_group("g0", "a", "b"), _group("g1", "c")]
    check_models_exist(groups, ["a", "b", "c", "d"], "/repo")
    with pytest.raises(DeployError, match=r"2 model\(s\) that repository /repo does not have: b, c"):
        check_models_exist(groups, ["a"], "/repo")
