"""How `--workers` becomes worker specs: counts, core groups, devices, budget shares."""

from __future__ import annotations

import pytest

from modelfleet.workers.plan import neuron_cores, parse_workers, plan


def test_the_setting_is_a_count_or_auto() -> None:
    assert parse_workers("auto") is None
    assert parse_workers(" 3 ") == 3
    for bad in ("-1", "two", "1000", ""):
        with pytest.raises(ValueError, match="workers must be 'auto' or a number"):
            parse_workers(bad)


def test_zero_workers_is_in_process() -> None:
    assert plan(0, 100, cores=[0, 1], gpus=0, neuron_groups=[]) == []


def test_cpu_workers_split_the_cores_and_the_budget() -> None:
    specs = plan(2, 1000, cores=[0, 1, 2, 3], gpus=0, neuron_groups=[])
    assert [(s.device, s.cores, s.budget_bytes, s.threads) for s in specs] == [
        ("cpu:0-1", (0, 1), 500, 2),
        ("cpu:2-3", (2, 3), 500, 2),
    ]
    assert all(s.env == {} for s in specs)


def test_more_workers_than_cores_share_cores() -> None:
    specs = plan(3, 900, cores=[0, 1], gpus=0, neuron_groups=[])
    assert [s.cores for s in specs] == [(0,), (0,), (1,)] or all(len(s.cores) == 1 for s in specs)


def test_auto_is_one_per_gpu_else_one_per_two_cores() -> None:
    assert len(plan(None, 100, cores=list(range(8)), gpus=0, neuron_groups=[])) == 4
    assert len(plan(None, 100, cores=[0], gpus=0, neuron_groups=[])) == 1
    gpus = plan(None, 100, cores=list(range(8)), gpus=2, neuron_groups=[])
    assert [(s.device, s.env["CUDA_VISIBLE_DEVICES"], s.cores) for s in gpus] == [
        ("cuda:0", "0", (0, 1, 2, 3)),
        ("cuda:1", "1", (4, 5, 6, 7)),
    ]


def test_neuron_cores_given_as_groups_of_one_get_one_worker_each() -> None:
    assert neuron_cores("0-2,5") == [0, 1, 2, 5]
    assert neuron_cores(None) == [] and neuron_cores("x") == []
    specs = plan(None, 400, cores=[0, 1, 2, 3], gpus=0, neuron_groups=[(4,), (5,)])
    assert [(s.device, s.env, s.cores) for s in specs] == [
        ("neuron:4", {"NEURON_RT_VISIBLE_CORES": "4"}, (0, 1)),
        ("neuron:5", {"NEURON_RT_VISIBLE_CORES": "5"}, (2, 3)),
    ]


def test_neuron_core_groups_get_a_worker_each_and_the_rest_are_cpu_workers() -> None:
    groups = [(0, 1), (2, 3)]
    auto = plan(None, 400, cores=[0, 1, 2, 3], gpus=0, neuron_groups=groups)
    assert [(s.device, s.env, s.neuron_cores, s.cores) for s in auto] == [
        ("neuron:0-1", {"NEURON_RT_VISIBLE_CORES": "0-1"}, (0, 1), (0, 1)),
        ("neuron:2-3", {"NEURON_RT_VISIBLE_CORES": "2-3"}, (2, 3), (2, 3)),
    ]
    three = plan(3, 300, cores=[0, 1, 2], gpus=0, neuron_groups=[(5,), (7,)])
    assert [(s.device, s.env, s.neuron_cores) for s in three] == [
        ("neuron:5", {"NEURON_RT_VISIBLE_CORES": "5"}, (5,)),
        ("neuron:7", {"NEURON_RT_VISIBLE_CORES": "7"}, (7,)),
        ("cpu:2", {}, ()),  # past the groups: a CPU worker, never a second process on a core
    ]


def test_neuron_cores_of_the_server_are_one_group_each_unless_gpus_are_there(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("NEURON_RT_VISIBLE_CORES", "2-3")
    assert [s.neuron_cores for s in plan(None, 100, cores=[0, 1], gpus=0)] == [(2,), (3,)]
    assert [s.device for s in plan(None, 100, cores=[0, 1], gpus=1)] == ["cuda:0"]


def test_a_model_needs_cores_only_with_device_neuron_and_workers_holding_some() -> None:
    from modelfleet.errors import ModelLoadError
    from modelfleet.repository.config import Device, ModelConfig
    from modelfleet.workers.plan import neuron_cores_needed

    specs = plan(3, 300, cores=[0, 1, 2], gpus=0, neuron_groups=[(0, 1), (2,)])
    wide = ModelConfig(device=Device.NEURON, neuron_cores=2)
    assert neuron_cores_needed(wide, specs) == 2
    assert neuron_cores_needed(ModelConfig(device=Device.NEURON), specs) == 1
    assert neuron_cores_needed(ModelConfig(), specs) == 0
    assert neuron_cores_needed(wide, plan(2, 200, cores=[0, 1], gpus=0, neuron_groups=[])) == 0
    with pytest.raises(ModelLoadError, match="needs a worker holding 3 NeuronCore.*largest core group is 2"):
        neuron_cores_needed(ModelConfig(device=Device.NEURON, neuron_cores=3), specs)
