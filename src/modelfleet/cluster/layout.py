"""From plan.yaml to the servers this machine runs: each planned instance's models, and its memory
budget and threads scaled so that the whole plan fits here (`--scale`).

Only reads: the plan (the planner's plan.yaml shape, planner/result.py), the instance catalogue for
each type's memory and vCPUs, and the repository's model names. Every mismatch is a ClusterError.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import yaml

from modelfleet.config import machine_memory_bytes

PLAN_FILE = "plan.yaml"
MIN_BUDGET_BYTES = 256 << 20  # below this a server cannot hold MiniLM's base and a few heads


class ClusterError(Exception):
    """Bad input or a failed start: the CLI prints it and exits 2; nothing is left running."""


@dataclass(frozen=True, slots=True)
class ServerSpec:
    """One `modelfleet serve` process: a planned instance's models on this machine."""

    name: str  # server-0, server-1, ... in plan order
    instance_type: str
    models: tuple[str, ...]
    memory_budget_bytes: int
    threads: int
    cpus: tuple[int, ...] = ()  # the CPUs it is pinned to (`--pin`); () : not pinned


def pin_cpus(threads: list[int], allowed: list[int]) -> list[tuple[int, ...]]:
    """CPUs for each server when pinned (`--pin`): `threads[i]` CPUs each, taken in turn from
    `allowed` (this process's CPUs, sorted) so that servers get CPUs of their own while they last, and
    share them round the list when the plan has more threads than the machine has CPUs."""
    if not allowed:
        raise ClusterError("--pin: this process may run on no CPU")
    out, k = [], 0
    for n in threads:
        take = min(n, len(allowed))
        out.append(tuple(sorted(allowed[(k + j) % len(allowed)] for j in range(take))))
        k += take
    return out


def read_plan(plan_dir: Path) -> list[tuple[str, list[str]]]:
    """(instance type, models) per planned instance, from PLAN_DIR/plan.yaml."""
    path = plan_dir / PLAN_FILE
    if not path.is_file():
        raise ClusterError(f"{path} does not exist: write it with `modelfleet plan FLEET --out {plan_dir}`")
    try:
        doc = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError) as exc:
        raise ClusterError(f"{path}: cannot read it as YAML ({exc})") from None
    instances = doc.get("instances") if isinstance(doc, dict) else None
    if not isinstance(instances, list) or not instances:
        raise ClusterError(f"{path}: no 'instances' list (is it a plan written by `modelfleet plan`?)")
    planned = []
    for i, item in enumerate(instances):
        models = item.get("models") if isinstance(item, dict) else None
        kind = item.get("type") if isinstance(item, dict) else None
        if not isinstance(kind, str) or not isinstance(models, list) or not models:
            raise ClusterError(f"{path}: instance {i} needs a 'type' and a non-empty 'models' list")
        if not all(isinstance(m, str) for m in models):
            raise ClusterError(f"{path}: instance {i}: every model must be a name")
        planned.append((kind, list(models)))
    return planned


def check_models(planned: list[tuple[str, list[str]]], available: set[str], repo: str) -> None:
    """ClusterError naming the planned models the repository does not have."""
    unknown = sorted({m for _, models in planned for m in models} - available)
    if unknown:
        shown = ", ".join(unknown[:5]) + (f" and {len(unknown) - 5} more" if len(unknown) > 5 else "")
        raise ClusterError(
            f"the plan does not match the repository {repo}: {len(unknown)} planned model(s) are not in "
            f"it ({shown}); plan the repository's own models, or pass the right --repo"
        )


def fit_scale(types: list[dict[str, Any]], machine_bytes: int, cores: int) -> float:
    """The largest scale (at most 1) at which the planned instances' memory fits in 60 % of this
    machine's and their vCPUs in its cores: more threads than cores only contend (ONNX Runtime's
    threads spin while they wait for work)."""
    memory = sum(t["memory_bytes"] for t in types)
    vcpus = sum(t["vcpus"] for t in types)
    return min(1.0, 0.6 * machine_bytes / memory if memory else 1.0, cores / vcpus if vcpus else 1.0)


def layout(
    planned: list[tuple[str, list[str]]],
    catalog: dict[str, dict[str, Any]],
    scale: float | None,
    pin: bool = False,
) -> tuple[list[ServerSpec], float]:
    """The servers to run and the scale used (`scale` None: fit this machine). `catalog`: type
    name -> {'memory_bytes', 'vcpus'}. `pin`: each server gets CPUs of its own (pin_cpus)."""
    missing = sorted({kind for kind, _ in planned} - set(catalog))
    if missing:
        raise ClusterError(
            f"instance type(s) {', '.join(missing)} are not in the catalogue: pass the one the plan "
            "was made with (--catalog)"
        )
    if scale is None:
        scale = fit_scale([catalog[kind] for kind, _ in planned], machine_memory_bytes(), os.cpu_count() or 1)
    if not 0 < scale <= 1:
        raise ClusterError(f"--scale must be above 0 and at most 1, got {scale:g}")
    servers = []
    for i, (kind, models) in enumerate(planned):
        spec = catalog[kind]
        budget = int(spec["memory_bytes"] * scale)
        if budget < MIN_BUDGET_BYTES:
            raise ClusterError(
                f"--scale {scale:g} leaves server-{i} ({kind}) {budget >> 20} MiB of memory budget, "
                f"under {MIN_BUDGET_BYTES >> 20} MiB: raise --scale or plan fewer instances"
            )
        threads = max(1, int(spec["vcpus"] * scale))
        servers.append(ServerSpec(f"server-{i}", kind, tuple(models), budget, threads))
    if pin:
        cpus = pin_cpus([s.threads for s in servers], sorted(os.sched_getaffinity(0)))
        servers = [replace(s, cpus=c) for s, c in zip(servers, cpus, strict=True)]
    return servers, scale
