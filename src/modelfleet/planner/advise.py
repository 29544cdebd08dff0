"""`modelfleet advise`: the hosting options scored on seed 001's five fitness functions.

    single      one endpoint (instance) per model replica, the cheapest type that holds it
    lru         a multi-model server with LRU (our server, SageMaker MME): only the models that carry
                HOT_TRAFFIC_SHARE of the traffic stay resident; the rest load on demand
    packed      the fleet plan: every model resident, packed at least cost (`modelfleet plan`)
    serverless  scale to zero per model, CPU only, paid per busy second at SERVERLESS_PREMIUM

Each axis is scored 0..5 (higher is better, the size axis included: it says how well the option
copes with the fleet's sizes) from the fleet's own numbers, and each score carries its reason.
The constants below are assumptions, stated so that they can be argued with.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from rich.console import Console
from rich.table import Table

from modelfleet.planner.catalog import Catalog
from modelfleet.planner.errors import PlanInputError
from modelfleet.planner.problem import BoolArray, Dim, FloatArray, Problem, build_problem
from modelfleet.planner.result import Plan
from modelfleet.planner.solve import solve
from modelfleet.planner.spec import FleetSpec

AXES = ("model size", "latency", "isolation", "cost", "scalability")
HOT_TRAFFIC_SHARE = 0.95  # lru: the most used models carrying this share of requests stay loaded
IDLE_TIMEOUT_S = 600.0  # serverless: an idle function is reclaimed after this (cold start next time)
SERVERLESS_PREMIUM = 2.4  # Lambda $/vCPU-hour over c7i on-demand $/vCPU-hour (0.106 / 0.0446)
SERVERLESS_MAX_BYTES = 10 * 2**30  # Lambda's memory limit
LOAD_BYTES_PER_S = 500e6  # model load speed from object storage, for cold-start seconds
SIZE_SPREAD_LIMIT = 10.0  # seed 001: similar sizes group well; 10-100x spreads should be split


@dataclass(frozen=True, slots=True)
class Score:
    axis: str
    value: float
    why: str


@dataclass(frozen=True, slots=True)
class Option:
    name: str
    title: str
    cost_per_hour: float
    scores: tuple[Score, ...]

    @property
    def total(self) -> float:
        return sum(s.value for s in self.scores)


@dataclass(frozen=True, slots=True)
class Group:
    members: int
    smallest_bytes: float
    largest_bytes: float
    families: tuple[str, ...]
    first: str
    last: str


@dataclass(frozen=True, slots=True)
class Advice:
    options: tuple[Option, ...]
    recommended: str
    groups: tuple[Group, ...]
    size_spread: float
    plan: Plan


def advise(spec: FleetSpec, catalog: Catalog, time_limit_s: float = 10.0) -> Advice:
    problem = build_problem(spec, catalog)
    plan = solve(problem, time_limit_s=time_limit_s)
    sizes = problem.memory_bytes
    spread = float(sizes.max() / max(sizes.min(), 1.0))
    costs = {
        "single": _single_cost(problem),
        "lru": _lru_cost(problem, time_limit_s),
        "packed": plan.cost_per_hour,
        "serverless": _serverless_cost(problem),
    }
    cheapest = min(costs.values())
    cold = _cold_shares(problem)
    options = tuple(
        _option(name, problem, plan, costs, cheapest, cold, spread)
        for name in ("single", "lru", "packed", "serverless")
    )
    best = max(options, key=lambda o: (o.total, -o.cost_per_hour))
    return Advice(options, best.name, tuple(grouping(problem)), spread, plan)


# --- costs ---------------------------------------------------------------------------------------


def _single_cost(problem: Problem) -> float:
    prices = np.where(problem.eligible, problem.prices[None, :], np.inf).min(axis=1)
    return float((prices * problem.replicas).sum())


def _hot_set(problem: Problem) -> BoolArray:
    order = np.argsort(-problem.traffic_rps, kind="stable")
    total = problem.traffic_rps.sum()
    if total <= 0:
        return np.ones(problem.n_models, dtype=bool)
    cumulative = np.cumsum(problem.traffic_rps[order]) / total
    keep = order[: int(np.searchsorted(cumulative, HOT_TRAFFIC_SHARE) + 1)]
    hot = np.zeros(problem.n_models, dtype=bool)
    hot[keep] = True
    return hot


def _lru_cost(problem: Problem, time_limit_s: float) -> float:
    """Compute for all models, memory for the hot set and room for the largest cold model per instance."""
    hot = _hot_set(problem)
    demand = problem.demand.copy()
    demand[~hot, :, Dim.MEMORY] = 0
    demand[~hot, :, Dim.ACCELERATOR] = 0
    demand[~hot, :, Dim.SLOTS] = 0
    capacity = problem.capacity.copy()
    if (~hot).any():
        largest = problem.demand[~hot].max(axis=0)  # [T, D]
        capacity[:, Dim.MEMORY] = np.maximum(capacity[:, Dim.MEMORY] - largest[:, Dim.MEMORY], 0)
        capacity[:, Dim.ACCELERATOR] = np.maximum(
            capacity[:, Dim.ACCELERATOR] - largest[:, Dim.ACCELERATOR], 0
        )
    eligible = problem.eligible & (demand <= capacity[None, :, :]).all(axis=2)
    eligible[~eligible.any(axis=1)] = problem.eligible[~eligible.any(axis=1)]
    lru = dataclasses.replace(problem, demand=demand, capacity=capacity, eligible=eligible)
    try:
        return solve(lru, time_limit_s=max(1.0, time_limit_s / 2)).cost_per_hour
    except PlanInputError:  # no fleet under the limits: the option is out
        return math.inf


def _serverless_busy(problem: Problem) -> FloatArray:
    """Per model, $/h of busy time on its cheapest CPU type (inf where it has no CPU type)."""
    cpu = problem.capacity[:, Dim.ACCELERATOR] == 0
    frac = problem.demand[:, :, Dim.COMPUTE] / max(int(problem.capacity[0, Dim.COMPUTE]), 1)
    busy = np.where(problem.eligible & cpu[None, :], frac * problem.prices[None, :], np.inf)
    return np.asarray(busy.min(axis=1), dtype=np.float64)


def _serverless_runnable(problem: Problem) -> BoolArray:
    return np.asarray(np.isfinite(_serverless_busy(problem)) & (problem.memory_bytes <= SERVERLESS_MAX_BYTES))


def _serverless_cost(problem: Problem) -> float:
    """Busy time on the cheapest CPU type at the premium; models it cannot run cost a single endpoint."""
    busy = _serverless_busy(problem)
    runnable = _serverless_runnable(problem)
    single = np.where(problem.eligible, problem.prices[None, :], np.inf).min(axis=1)
    busy_cost = (busy[runnable] * problem.replicas[runnable]).sum() * SERVERLESS_PREMIUM
    return float(busy_cost + (single[~runnable] * problem.replicas[~runnable]).sum())


def _cold_shares(problem: Problem) -> dict[str, float]:
    traffic = problem.traffic_rps
    total = float(traffic.sum()) or 1.0
    hot = _hot_set(problem)
    runnable = _serverless_runnable(problem)
    serverless = float((traffic * np.exp(-traffic * IDLE_TIMEOUT_S))[runnable].sum()) / total
    return {"single": 0.0, "packed": 0.0, "lru": float(traffic[~hot].sum()) / total, "serverless": serverless}


# --- scores --------------------------------------------------------------------------------------

_TITLES = {
    "single": "one endpoint per model",
    "lru": "multi-model server, LRU",
    "packed": "packed fleet (plan)",
    "serverless": "serverless, scale to zero",
}


def _option(
    name: str,
    problem: Problem,
    plan: Plan,
    costs: dict[str, float],
    cheapest: float,
    cold: dict[str, float],
    spread: float,
) -> Option:
    cost = costs[name]
    scores = (
        _size_score(name, problem, spread),
        _latency_score(name, problem, cold[name]),
        _isolation_score(name, problem),
        Score(
            "cost",
            5.0 * cheapest / cost if math.isfinite(cost) and cost > 0 else 0.0,
            f"${cost:,.2f}/h against the cheapest option's ${cheapest:,.2f}/h",
        ),
        _scalability_score(name, problem, plan),
    )
    return Option(name, _TITLES[name], cost, tuple(Score(s.axis, round(s.value, 2), s.why) for s in scores))


def _size_score(name: str, problem: Problem, spread: float) -> Score:
    if name in ("single", "packed"):
        return Score(
            "model size", 5.0, "every model gets a type that holds it (instances sized per model mix)"
        )
    if name == "lru":
        value = 5.0 * min(1.0, math.log(SIZE_SPREAD_LIMIT) / math.log(max(spread, 1.0 + 1e-9)))
        return Score(
            "model size",
            value,
            f"sizes spread {spread:.0f}x; loading large models evicts many small ones beyond {SIZE_SPREAD_LIMIT:.0f}x",
        )
    fits = float(_serverless_runnable(problem).mean())
    return Score(
        "model size",
        5.0 * fits,
        f"{fits:.0%} of the models run on CPU within the {SERVERLESS_MAX_BYTES / 2**30:.0f} GiB function limit "
        "(the rest stay on single endpoints)",
    )


def _latency_score(name: str, problem: Problem, cold_share: float) -> Score:
    largest_s = float(problem.memory_bytes.max()) / LOAD_BYTES_PER_S
    if cold_share <= 0:
        return Score("latency", 5.0, "every model stays loaded: no cold starts")
    return Score(
        "latency",
        5.0 * (1.0 - cold_share) ** 4,
        f"{cold_share:.1%} of requests may meet a cold start (up to {largest_s:.1f} s to load the largest model)",
    )


def _isolation_score(name: str, problem: Problem) -> Score:
    groups = len(problem.group_names)
    if name == "single":
        return Score("isolation", 5.0, "an instance per model: nothing shared")
    if name == "serverless":
        return Score(
            "isolation", 4.0, "a sandbox per function; hosts shared with the provider's other tenants"
        )
    if name == "packed":
        if groups > 1:
            return Score(
                "isolation", 3.0, f"{groups} isolation groups never share an instance; models within one do"
            )
        return Score("isolation", 2.0, "models share instances and worker processes")
    return Score("isolation", 1.0, "all models share the servers' processes and memory")


def _scalability_score(name: str, problem: Problem, plan: Plan) -> Score:
    units = {
        "single": problem.n_models,
        "serverless": problem.n_models,
        "packed": max(1, len(plan.by_type) * len(problem.group_names)),
        "lru": max(1, len(problem.group_names)),
    }[name]
    per_model = 1.0 if name in ("single", "serverless") else 0.5
    value = 2.5 * per_model + 2.5 / (1.0 + math.log10(units))
    scaling = "each model scales alone" if per_model == 1.0 else "scaling is per server group"
    return Score("scalability", value, f"{units:,} deployments to run; {scaling}")


# --- grouping ------------------------------------------------------------------------------------


def grouping(problem: Problem) -> list[Group]:
    """Seed 001's check: models of similar size on the same hardware go together; a group never
    spans more than SIZE_SPREAD_LIMIT in size."""
    families = [
        tuple(sorted({problem.types[t].family for t in np.flatnonzero(row)})) for row in problem.eligible
    ]
    groups: list[Group] = []
    for hardware in sorted(set(families)):
        members = [m for m in range(problem.n_models) if families[m] == hardware]
        members.sort(key=lambda m: problem.memory_bytes[m])
        start = 0
        for k in range(1, len(members) + 1):
            if k == len(members) or problem.memory_bytes[members[k]] > SIZE_SPREAD_LIMIT * max(
                problem.memory_bytes[members[start]], 1.0
            ):
                chunk = members[start:k]
                groups.append(
                    Group(
                        members=len(chunk),
                        smallest_bytes=float(problem.memory_bytes[chunk[0]]),
                        largest_bytes=float(problem.memory_bytes[chunk[-1]]),
                        families=hardware,
                        first=problem.model_names[chunk[0]],
                        last=problem.model_names[chunk[-1]],
                    )
                )
                start = k
    return groups


# --- output --------------------------------------------------------------------------------------


def advice_document(advice: Advice) -> dict[str, Any]:
    return {
        "recommended": advice.recommended,
        "options": [
            {
                "name": o.name,
                "title": o.title,
                "cost_per_hour": round(o.cost_per_hour, 6) if math.isfinite(o.cost_per_hour) else None,
                "total": round(o.total, 2),
                "scores": {s.axis: {"score": s.value, "why": s.why} for s in o.scores},
            }
            for o in advice.options
        ],
        "size_spread": round(advice.size_spread, 3),
        "groups": [dataclasses.asdict(g) | {"families": list(g.families)} for g in advice.groups],
        "plan": {
            "cost_per_hour": advice.plan.cost_per_hour,
            "gap": advice.plan.gap,
            "by_type": advice.plan.by_type,
        },
    }


def print_advice(advice: Advice, console: Console) -> None:
    table = Table(
        title="Hosting options on seed 001's fitness functions (0-5, higher is better)", title_justify="left"
    )
    table.add_column("option")
    for axis in AXES:
        table.add_column(axis, justify="right")
    table.add_column("total", justify="right")
    table.add_column("$/h", justify="right")
    for o in advice.options:
        mark = " *" if o.name == advice.recommended else ""
        cost = f"{o.cost_per_hour:,.2f}" if math.isfinite(o.cost_per_hour) else "-"
        table.add_row(o.title + mark, *(f"{s.value:.1f}" for s in o.scores), f"{o.total:.1f}", cost)
    console.print(table)
    for o in advice.options:
        console.print(f"[bold]{o.title}[/bold]", highlight=False)
        for s in o.scores:
            console.print(f"  {s.axis:<12} {s.value:.1f}  {s.why}", highlight=False)
    console.print(
        f"recommended: {_TITLES[advice.recommended]} (highest total, equal weights)", highlight=False
    )
    verdict = (
        f"sizes spread {advice.size_spread:.0f}x: split into {len(advice.groups)} groups of at most {SIZE_SPREAD_LIMIT:.0f}x"
        if advice.size_spread > SIZE_SPREAD_LIMIT
        else f"sizes spread {advice.size_spread:.1f}x: one group per hardware family set is fine"
    )
    console.print(f"grouping: {verdict}", highlight=False)
    for g in advice.groups:
        console.print(
            f"  {g.members:>6} models  {g.smallest_bytes / 1e6:,.0f}-{g.largest_bytes / 1e6:,.0f} MB  on {', '.join(g.families)}"
            f"  ({g.first} .. {g.last})",
            highlight=False,
        )


def spider_chart(advice: Advice, path: Path) -> None:
    """The options as polygons on the five axes, each normalised 0..5."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    angles = np.linspace(0, 2 * np.pi, len(AXES), endpoint=False).tolist()
    fig, ax = plt.subplots(figsize=(7, 7), subplot_kw={"projection": "polar"})
    for o in advice.options:
        values = [s.value for s in o.scores]
        ax.plot(angles + angles[:1], values + values[:1], label=f"{o.title} ({o.total:.1f})")
        ax.fill(angles + angles[:1], values + values[:1], alpha=0.08)
    ax.set_xticks(angles)
    ax.set_xticklabels(list(AXES))
    ax.set_ylim(0, 5)
    ax.set_title("Fitness functions (0..5)")
    ax.legend(loc="upper right", bbox_to_anchor=(1.35, 1.1), fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
