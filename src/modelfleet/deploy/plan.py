"""The planner's plan.yaml as `modelfleet deploy` reads it, and the server groups made from it.

Each planned instance becomes one server group (a Deployment of its own, serving only its models);
the instance's type is looked up in the planner's catalogue for the node's CPUs, memory and
accelerators. Only the fields deploy needs are read; the planner's other figures are ignored.
"""

from __future__ import annotations

import re
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field

from modelfleet.config import is_model_name
from modelfleet.planner import Catalog, InstanceType, PlanInputError, load_yaml_model

PLAN_FILE = "plan.yaml"
NEURON_CORE = "aws.amazon.com/neuroncore"
NVIDIA_GPU = "nvidia.com/gpu"
# the part of a node a server asks for: the rest is the kubelet's, the system's and the daemonsets'
CPU_SHARE = 0.85
MEMORY_SHARE = 0.8
# of the container's memory, what resident models may use (the rest: Python, buffers, requests)
BUDGET_SHARE = 0.75


class DeployError(Exception):
    """Input `modelfleet deploy` cannot use: the message names the file, field or model."""


class PlannedInstance(BaseModel):
    model_config = ConfigDict(extra="ignore", frozen=True)

    type: str = Field(min_length=1)
    models: list[str] = Field(min_length=1)


class PlanFile(BaseModel):
    """plan.yaml: what `modelfleet plan --out DIR` writes (planner/result.py plan_document)."""

    model_config = ConfigDict(extra="ignore", frozen=True)

    instances: list[PlannedInstance] = Field(min_length=1)


@dataclass(frozen=True, slots=True)
class Accelerator:
    resource: str  # the device plugin's extended resource
    count: int


@dataclass(frozen=True, slots=True)
class ServerGroup:
    """One planned instance: its server's name, node type and models."""

    name: str  # DNS-1123 label part: instance type with dots as dashes, and its index
    instance_type: str
    models: tuple[str, ...]
    cpu_millis: int
    memory_bytes: int
    accelerator: Accelerator | None

    @property
    def memory_budget_bytes(self) -> int:
        return int(self.memory_bytes * BUDGET_SHARE)


def read_plan(plan_dir: Path) -> PlanFile:
    """plan.yaml from PLAN_DIR (or the file itself); DeployError naming the line when it is wrong."""
    path = plan_dir / PLAN_FILE if plan_dir.is_dir() else plan_dir
    if not path.is_file():
        raise DeployError(
            f"{path}: no plan here; write one with `modelfleet plan FLEET.yaml --out {plan_dir}`"
        )
    try:
        plan = load_yaml_model(path, PlanFile, "plan")
    except PlanInputError as exc:
        raise DeployError(str(exc)) from None
    for i, instance in enumerate(plan.instances):
        bad = [m for m in instance.models if not is_model_name(m)]
        if bad:
            raise DeployError(f"plan {path}: instances.{i}.models: {bad[0][:64]!r} is not a valid model name")
    return plan


def server_groups(plan: PlanFile, catalog: Catalog) -> list[ServerGroup]:
    """One group per planned instance, in the plan's order, named `<type>-<n>` (n per type)."""
    types = catalog.by_name()
    unknown = sorted({i.type for i in plan.instances} - set(types))
    if unknown:
        raise DeployError(
            f"plan uses instance types the catalogue does not have: {', '.join(unknown)} "
            "(pass the catalogue the plan was made with: --catalog FILE)"
        )
    counters: dict[str, int] = defaultdict(int)
    groups = []
    for instance in plan.instances:
        kind = types[instance.type]
        index = counters[instance.type]
        counters[instance.type] += 1
        groups.append(
            ServerGroup(
                name=f"{_dns_part(instance.type)}-{index:03d}",
                instance_type=instance.type,
                models=tuple(instance.models),
                cpu_millis=int(kind.vcpus * 1000 * CPU_SHARE),
                memory_bytes=int(kind.memory_bytes * MEMORY_SHARE) // (1 << 20) * (1 << 20),
                accelerator=accelerator_of(kind),
            )
        )
    return groups


def accelerator_of(kind: InstanceType) -> Accelerator | None:
    """The device plugin resource of a type: NeuronCores for Inferentia, GPUs for NVIDIA."""
    devices = kind.accelerators
    if devices is None:
        return None
    if devices.kind.startswith("inferentia") or devices.kind.startswith("trainium"):
        return Accelerator(NEURON_CORE, devices.count * devices.cores)
    if devices.kind.startswith("nvidia"):
        return Accelerator(NVIDIA_GPU, devices.count)
    raise DeployError(
        f"instance type {kind.name}: accelerator kind {devices.kind!r} has no known Kubernetes device "
        "plugin (known: inferentia*, trainium* -> aws.amazon.com/neuroncore, nvidia* -> nvidia.com/gpu)"
    )


def check_models_exist(groups: list[ServerGroup], available: list[str], where: str) -> None:
    """DeployError naming the planned models the repository at `where` lacks."""
    missing = sorted({m for g in groups for m in g.models} - set(available))
    if missing:
        shown = ", ".join(missing[:5]) + (f" and {len(missing) - 5} more" if len(missing) > 5 else "")
        raise DeployError(
            f"the plan names {len(missing)} model(s) that repository {where} does not have: {shown}"
        )


def routes(groups: list[ServerGroup]) -> tuple[dict[str, str], dict[str, list[str]]]:
    """model -> route target, and the targets made of several groups (replicated models).

    A model planned on one instance routes to its group; one planned on several routes to a shared
    target named `shared-<k>` whose addresses are all of those groups' (second value: target ->
    groups), so nginx balances it over every server holding it.
    """
    holders: dict[str, list[str]] = defaultdict(list)
    for group in groups:
        for model in group.models:
            if group.name not in holders[model]:
                holders[model].append(group.name)
    shared: dict[tuple[str, ...], str] = {}
    table: dict[str, str] = {}
    for model, names in holders.items():
        if len(names) == 1:
            table[model] = names[0]
        else:
            key = tuple(sorted(names))
            table[model] = shared.setdefault(key, f"shared-{len(shared)}")
    return table, {target: list(key) for key, target in shared.items()}


def _dns_part(text: str) -> str:
    part = re.sub(r"[^a-z0-9-]+", "-", text.lower()).strip("-")
    return part[:40] or "instance"
