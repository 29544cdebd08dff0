"""A fleet plan: the instances with their models, what it costs and how far from optimal it may be.

Solvers return bins (`Packing`); `make_plan` turns them into a `Plan` with every figure the reports
print. `plan_document` is the plan.yaml / --json shape.
"""

from __future__ import annotations

import enum
from collections import Counter
from dataclasses import dataclass
from typing import Any

import numpy as np

from modelfleet.planner.problem import Dim, Problem

OPTIMAL_TOLERANCE = 1e-6  # a relative gap below this is optimal (the MIP bound's solver tolerance)


class Status(enum.StrEnum):
    OPTIMAL = "optimal"  # proven: cost equals the lower bound
    FEASIBLE = "feasible"  # a valid plan; the gap says how far from optimal it may be


@dataclass(frozen=True, slots=True)
class Packing:
    """Solver output: per instance, its type index and the model indices it holds."""

    bins: list[tuple[int, list[int]]]
    lower_bound: float
    solver: str
    status: Status
    notes: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class Instance:
    type: str
    usd_per_hour: float
    models: list[str]
    use: dict[str, float]  # dimension -> fraction of capacity used
    shares: tuple[tuple[float, float], ...] = ()  # per model: (memory, compute or slots) fraction, for charts
    cores: tuple[tuple[str, ...], ...] = ()  # accelerator types: the models on each core


@dataclass(frozen=True, slots=True)
class Plan:
    instances: list[Instance]
    cost_per_hour: float
    lower_bound_cost_per_hour: float
    gap: float  # (cost - lower bound) / cost
    status: Status
    solver: str
    solve_time_s: float
    models: int
    replicas: int
    traffic_rps: float
    notes: tuple[str, ...]

    @property
    def by_type(self) -> dict[str, int]:
        return dict(Counter(i.type for i in self.instances).most_common())

    @property
    def cost_per_model_hour(self) -> float:
        return self.cost_per_hour / self.models if self.models else 0.0

    @property
    def cost_per_million_inferences(self) -> float | None:
        if self.traffic_rps <= 0:
            return None
        return self.cost_per_hour / (self.traffic_rps * 3600.0) * 1e6


def make_plan(
    problem: Problem, packing: Packing, solve_time_s: float, cores: list[list[list[int]]] | None = None
) -> Plan:
    """The plan of `packing`; `cores`, per bin, the models on each accelerator core (see planner.cores)."""
    prices = problem.prices
    instances: list[Instance] = []
    cap = np.where(problem.capacity > 0, problem.capacity, 1).astype(np.float64)
    for b, (t, members) in enumerate(packing.bins):
        layout = cores[b] if cores is not None else []
        load = problem.demand[members, t, :].sum(axis=0) if members else np.zeros(len(Dim))
        use = {Dim(d).name.lower(): round(float(load[d] / cap[t, d]), 6) for d in range(len(Dim))}
        frac = problem.demand[members, t, :] / cap[t]
        shares = tuple((float(f[Dim.MEMORY]), float(max(f[Dim.COMPUTE], f[Dim.SLOTS]))) for f in frac)
        instances.append(
            Instance(
                type=problem.types[t].name,
                usd_per_hour=float(prices[t]),
                models=[problem.model_names[m] for m in members],
                use=use,
                shares=shares,
                cores=tuple(tuple(problem.model_names[m] for m in core) for core in layout),
            )
        )
    instances.sort(key=lambda i: (i.type, -len(i.models)))
    cost = round(float(sum(i.usd_per_hour for i in instances)), 9)
    bound = round(min(packing.lower_bound, cost), 9)
    gap = 0.0 if cost <= 0 else max(0.0, (cost - bound) / cost)
    if gap <= OPTIMAL_TOLERANCE:
        gap, bound = 0.0, cost
    status = Status.OPTIMAL if gap <= OPTIMAL_TOLERANCE else packing.status
    unverified = sorted({i.type for i in instances} - {t.name for t in problem.types if t.price_verified})
    notes = packing.notes
    if unverified:
        notes += (f"unverified catalogue prices for {', '.join(unverified)}: check them before buying",)
    return Plan(
        instances=instances,
        cost_per_hour=cost,
        lower_bound_cost_per_hour=bound,
        gap=round(gap, 9),
        status=status,
        solver=packing.solver,
        solve_time_s=solve_time_s,
        models=problem.n_models,
        replicas=int(problem.replicas.sum()),
        traffic_rps=float(problem.traffic_rps.sum()),
        notes=notes,
    )


def plan_document(plan: Plan) -> dict[str, Any]:
    """The plan as plain data: what plan.yaml holds and --json prints."""
    return {
        "cost_per_hour": round(plan.cost_per_hour, 6),
        "lower_bound_cost_per_hour": round(plan.lower_bound_cost_per_hour, 6),
        "gap": round(plan.gap, 6),
        "status": plan.status.value,
        "solver": plan.solver,
        "solve_time_s": round(plan.solve_time_s, 3),
        "models": plan.models,
        "replicas": plan.replicas,
        "traffic_rps": round(plan.traffic_rps, 6),
        "cost_per_model_hour": round(plan.cost_per_model_hour, 6),
        "cost_per_million_inferences": (
            None if plan.cost_per_million_inferences is None else round(plan.cost_per_million_inferences, 6)
        ),
        "instance_count": len(plan.instances),
        "by_type": plan.by_type,
        "notes": list(plan.notes),
        "instances": [_instance_document(i) for i in plan.instances],
    }


def _instance_document(instance: Instance) -> dict[str, Any]:
    doc: dict[str, Any] = {
        "type": instance.type,
        "usd_per_hour": round(instance.usd_per_hour, 6),
        "use": instance.use,
        "models": instance.models,
    }
    if instance.cores:
        doc["cores"] = [list(core) for core in instance.cores]
    return doc
