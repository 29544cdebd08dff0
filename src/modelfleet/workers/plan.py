"""How many workers, and what each one gets: device, CPU cores, environment, memory share."""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from modelfleet.config import parse_workers as parse_workers  # re-exported
from modelfleet.errors import ModelLoadError
from modelfleet.repository.config import Device, ModelConfig


@dataclass(frozen=True, slots=True)
class WorkerSpec:
    id: int
    device: str  # "cpu:0-1", "cuda:0"
    cores: tuple[int, ...]
    budget_bytes: int
    env: dict[str, str] = field(default_factory=dict)
    neuron_cores: tuple[int, ...] = ()  # the NeuronCore group it holds (NEURON_RT_VISIBLE_CORES)

    @property
    def threads(self) -> int:
        return max(1, len(self.cores))


def cuda_devices() -> int:
    """NVIDIA devices onnxruntime could run on (0 without its CUDA provider)."""
    try:
        import onnxruntime

        if "CUDAExecutionProvider" not in onnxruntime.get_available_providers():
            return 0
    except ImportError:
        return 0
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    if visible is not None:
        return len([d for d in visible.split(",") if d.strip()])
    return len(list(Path("/dev").glob("nvidia[0-9]*")))


def neuron_cores(visible: str | None) -> list[int]:
    """The Neuron cores of a NEURON_RT_VISIBLE_CORES value ("0-3", "0,2", unset: none)."""
    found: list[int] = []
    for part in (visible or "").split(","):
        low, _, high = part.strip().partition("-")
        if low.isdigit() and (not high or high.isdigit()):
            found.extend(range(int(low), int(high or low) + 1))
    return found


def plan(
    count: int | None,
    budget_bytes: int,
    cores: list[int] | None = None,
    gpus: int | None = None,
    neuron_groups: list[tuple[int, ...]] | None = None,
) -> list[WorkerSpec]:
    """The workers to start for `--workers count` (None: auto) on these cores and devices.

    Workers are numbered GPU ones first (one GPU each), then Neuron ones (one core group each:
    `--neuron-core-groups`, else one core each of the server's NEURON_RT_VISIBLE_CORES), then CPU
    ones. A device is never shared: workers past the devices are CPU workers, and a count below
    them leaves the rest unused. Every worker gets an equal share of the CPU cores and the budget.
    """
    cores = sorted(os.sched_getaffinity(0)) if cores is None else cores
    gpus = cuda_devices() if gpus is None else gpus
    if neuron_groups is None:
        found = [] if gpus else neuron_cores(os.environ.get("NEURON_RT_VISIBLE_CORES"))
        neuron_groups = [(core,) for core in found]
    if count is None:
        count = gpus + len(neuron_groups) or max(1, len(cores) // 2)
    if count == 0:
        return []
    share = budget_bytes // count
    specs = []
    for i in range(count):
        group = tuple(cores[i * len(cores) // count : (i + 1) * len(cores) // count]) or (
            cores[i % len(cores)],
        )
        if i < gpus:
            specs.append(WorkerSpec(i, f"cuda:{i}", group, share, {"CUDA_VISIBLE_DEVICES": str(i)}))
        elif i < gpus + len(neuron_groups):
            mine = _span(neuron_groups[i - gpus])
            env = {"NEURON_RT_VISIBLE_CORES": mine}
            specs.append(WorkerSpec(i, f"neuron:{mine}", group, share, env, neuron_groups[i - gpus]))
        else:
            env = {"CUDA_VISIBLE_DEVICES": ""} if gpus else {}
            specs.append(WorkerSpec(i, f"cpu:{_span(group)}", group, share, env))
    return specs


def neuron_cores_needed(config: ModelConfig, specs: Sequence[WorkerSpec]) -> int:
    """The NeuronCores a copy of a model needs on these workers: 0 unless its config says device:
    neuron and some worker holds cores; ModelLoadError where no worker holds a group that large."""
    groups = [len(spec.neuron_cores) for spec in specs if spec.neuron_cores]
    if not groups or config.device != Device.NEURON:
        return 0
    if max(groups) < config.neuron_cores:
        raise ModelLoadError(
            f"device neuron needs a worker holding {config.neuron_cores} NeuronCore(s), and the "
            f"largest core group is {max(groups)}: give --neuron-core-groups groups that large"
        )
    return config.neuron_cores


def _span(cores: tuple[int, ...]) -> str:
    if len(cores) > 1 and cores[-1] - cores[0] == len(cores) - 1:
        return f"{cores[0]}-{cores[-1]}"
    return ",".join(map(str, cores))
