"""The exact planners, with OR-Tools CP-SAT: they prove their lower bound.

`solve_uniform`: when each isolation group holds identical models (seed 002: 3,040 copies of one
bert), the models are interchangeable and only counts matter: y[g, t] instances of type t for group
g, each holding up to k[g, t] models (the most that fit, and no more than the group has models, so
that replicas land on distinct instances). Solved and proven in milliseconds at any fleet size.

`solve_assignment`: the general model, one boolean per (model, candidate instance), for
heterogeneous fleets of moderate size; warm-started with the heuristic's packing. Candidate
instances per type are bounded by the heuristic's cost, so the bound CP-SAT proves holds for every
fleet, not only for the candidates.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import numpy as np
from ortools.sat.python import cp_model

from modelfleet.planner.bins import Bin
from modelfleet.planner.cores import per_core_capacity
from modelfleet.planner.errors import InfeasiblePlan
from modelfleet.planner.problem import Dim, Problem
from modelfleet.planner.result import Packing, Status

MICRO = 1_000_000  # objective in micro-dollars per hour
Progress = Callable[[str], None]


class _Reporter(cp_model.CpSolverSolutionCallback):
    def __init__(self, progress: Progress | None) -> None:
        super().__init__()
        self.progress = progress

    def on_solution_callback(self) -> None:
        if self.progress is not None:
            self.progress(
                f"CP-SAT: ${self.objective_value / MICRO:,.3f}/h, bound ${self.best_objective_bound / MICRO:,.3f}/h"
            )


def _cost(problem: Problem) -> list[int]:
    return [round(t.usd_per_hour * MICRO) for t in problem.types]


def _solver(time_limit_s: float, workers: int) -> cp_model.CpSolver:
    solver = cp_model.CpSolver()
    solver.parameters.max_time_in_seconds = max(0.1, time_limit_s)
    solver.parameters.num_workers = max(1, workers)
    return solver


def _status(code: object) -> Status:
    return Status.OPTIMAL if code == cp_model.OPTIMAL else Status.FEASIBLE


# --- identical models per group: counts only -----------------------------------------------------


def uniform_groups(problem: Problem) -> list[np.ndarray] | None:
    """Per isolation group, its model indices, if every group's models are identical; else None."""
    if problem.conflicts:
        return None
    out = []
    for g in range(len(problem.group_names)):
        members = np.flatnonzero(problem.group == g)
        first = members[0]
        if not (
            (problem.demand[members] == problem.demand[first]).all()
            and (problem.eligible[members] == problem.eligible[first]).all()
            and (problem.replicas[members] == problem.replicas[first]).all()
        ):
            return None
        out.append(members)
    return out


def solve_uniform(
    problem: Problem,
    groups: Sequence[np.ndarray],
    time_limit_s: float,
    workers: int,
    progress: Progress | None,
) -> Packing | None:
    """Per-type instance counts for identical models; None when no fleet meets the limits."""
    cost = _cost(problem)
    model = cp_model.CpModel()
    y: dict[tuple[int, int], cp_model.IntVar] = {}
    per_instance: dict[tuple[int, int], int] = {}
    for g, members in enumerate(groups):
        first = int(members[0])
        items = int(problem.replicas[first]) * len(members)
        for t in np.flatnonzero(problem.eligible[first]).tolist():
            need = problem.demand[first, t, :]
            k = min(
                [len(members)]
                + [int(problem.capacity[t, d] // need[d]) for d in range(len(Dim)) if need[d] > 0]
            )
            if problem.accel_cores[t]:  # copies live on one core each: whole copies per core
                per_core = per_core_capacity(problem, t)
                dims = (Dim.ACCELERATOR, Dim.COMPUTE)
                fits = [int(per_core[i] // need[d]) for i, d in enumerate(dims) if need[d] > 0]
                k = min(k, int(problem.accel_cores[t]) * min(fits, default=k))
            limit = problem.type_limit(t)
            upper = math.ceil(items / k) + int(problem.min_per_type[t]) + problem.min_total
            if limit is not None:
                upper = min(upper, limit)
            y[g, t] = model.new_int_var(0, upper, f"y_{g}_{t}")
            per_instance[g, t] = k
        model.add(sum(per_instance[g, t] * y[g, t] for t in range(problem.n_types) if (g, t) in y) >= items)
    _fleet_limits(model, problem, y)
    model.minimize(sum(cost[t] * var for (_, t), var in y.items()))
    solver = _solver(time_limit_s, workers)
    code = solver.solve(model, _Reporter(progress))
    if code == cp_model.INFEASIBLE:
        raise InfeasiblePlan("")
    if code not in (cp_model.OPTIMAL, cp_model.FEASIBLE):
        return None
    bins: list[tuple[int, list[int]]] = []
    for g, members in enumerate(groups):
        queue = np.tile(members, int(problem.replicas[members[0]])).tolist()  # m1..mn, m1..mn: distinct runs
        for t in range(problem.n_types):
            if (g, t) not in y:
                continue
            for _ in range(solver.value(y[g, t])):
                take, queue = queue[: per_instance[g, t]], queue[per_instance[g, t] :]
                bins.append((t, take))
    bound = solver.best_objective_bound / MICRO
    return Packing(bins, bound, "cp-sat (counts of identical models)", _status(code))


def _fleet_limits(
    model: cp_model.CpModel, problem: Problem, y: dict[tuple[int, int], cp_model.IntVar]
) -> None:
    total = sum(y.values())
    if problem.max_total is not None:
        model.add(total <= problem.max_total)
    if problem.min_total:
        model.add(total >= problem.min_total)
    for t in range(problem.n_types):
        of_type = [var for (_, tt), var in y.items() if tt == t]
        if not of_type:
            continue
        limit = problem.type_limit(t)
        if limit is not None:
            model.add(sum(of_type) <= limit)
        if problem.min_per_type[t]:
            model.add(sum(of_type) >= int(problem.min_per_type[t]))


# --- the general assignment model ----------------------------------------------------------------


def assignment_size(problem: Problem, upper_cost: float) -> int:
    """Booleans the assignment model would have, given a known fleet cost."""
    candidates = _candidates(problem, upper_cost)
    return sum(len(c) * int(problem.eligible[:, t].sum()) for t, c in enumerate(candidates))


def _candidates(problem: Problem, upper_cost: float) -> list[list[int]]:
    """Per type, candidate instance slots: no fleet at most `upper_cost` uses more of that type."""
    out: list[list[int]] = []
    for t, info in enumerate(problem.types):
        users = int(problem.replicas[problem.eligible[:, t]].sum())
        n = min(users, math.floor(upper_cost / info.usd_per_hour + 1e-9))
        limit = problem.type_limit(t)
        if limit is not None:
            n = min(n, limit)
        n = max(n, int(problem.min_per_type[t]))
        out.append(list(range(n)))
    return out


def solve_assignment(
    problem: Problem,
    start: list[Bin],
    time_limit_s: float,
    workers: int,
    progress: Progress | None,
) -> Packing | None:
    """CP-SAT over (model, instance) booleans, hinted with `start`; None if it finds nothing."""
    cost = _cost(problem)
    upper = sum(problem.types[b.type].usd_per_hour for b in start)
    slots = [(t, i) for t, idx in enumerate(_candidates(problem, upper)) for i in idx]
    model = cp_model.CpModel()
    opened = [model.new_bool_var(f"open_{t}_{i}") for t, i in slots]
    x: dict[tuple[int, int], cp_model.IntVar] = {}
    for b, (t, _) in enumerate(slots):
        for m in np.flatnonzero(problem.eligible[:, t]).tolist():
            x[m, b] = model.new_bool_var(f"x_{m}_{b}")
    by_model: dict[int, list[int]] = {}
    for m, b in x:
        by_model.setdefault(m, []).append(b)
    for m in range(problem.n_models):
        model.add(sum(x[m, b] for b in by_model[m]) == int(problem.replicas[m]))
    by_bin: dict[int, list[int]] = {}
    for m, b in x:
        by_bin.setdefault(b, []).append(m)
    for b, (t, _) in enumerate(slots):
        members = by_bin.get(b, [])
        for d in range(len(Dim)):
            weights = [int(problem.demand[m, t, d]) for m in members]
            if any(weights) and sum(weights) > problem.capacity[t, d]:
                model.add(
                    sum(w * x[m, b] for w, m in zip(weights, members, strict=True))
                    <= int(problem.capacity[t, d]) * opened[b]
                )
        for m in members:
            model.add_implication(x[m, b], opened[b])
        _isolation(model, problem, x, b, members)
        for m in members:
            for other in problem.conflicts.get(m, set()):
                if other > m and (other, b) in x:
                    model.add_bool_or([x[m, b].negated(), x[other, b].negated()])
    _symmetry(model, slots, opened)
    y = {(0, t): model.new_int_var(0, len(slots), f"n_{t}") for t in range(problem.n_types)}
    for t in range(problem.n_types):
        model.add(y[0, t] == sum(o for o, (tt, _) in zip(opened, slots, strict=True) if tt == t))
    _fleet_limits(model, problem, y)
    model.minimize(sum(cost[t] * opened[b] for b, (t, _) in enumerate(slots)))
    _hint(model, start, slots, x, opened)
    solver = _solver(time_limit_s, workers)
    code = solver.solve(model, _Reporter(progress))
    if code == cp_model.INFEASIBLE:
        raise InfeasiblePlan("")
    if code not in (cp_model.OPTIMAL, cp_model.FEASIBLE):
        return None
    bins = [
        (t, [m for m in by_bin.get(b, []) if solver.value(x[m, b])])
        for b, (t, _) in enumerate(slots)
        if solver.value(opened[b])
    ]
    return Packing(bins, solver.best_objective_bound / MICRO, "cp-sat (assignment)", _status(code))


def _isolation(
    model: cp_model.CpModel,
    problem: Problem,
    x: dict[tuple[int, int], cp_model.IntVar],
    b: int,
    members: list[int],
) -> None:
    groups = sorted({int(problem.group[m]) for m in members})
    if len(groups) < 2:
        return
    uses = {g: model.new_bool_var(f"g_{b}_{g}") for g in groups}
    model.add_at_most_one(uses.values())
    for m in members:
        model.add_implication(x[m, b], uses[int(problem.group[m])])


def _symmetry(model: cp_model.CpModel, slots: list[tuple[int, int]], opened: list[cp_model.IntVar]) -> None:
    for b in range(1, len(slots)):
        if slots[b][0] == slots[b - 1][0]:
            model.add_implication(opened[b], opened[b - 1])


def _hint(
    model: cp_model.CpModel,
    start: list[Bin],
    slots: list[tuple[int, int]],
    x: dict[tuple[int, int], cp_model.IntVar],
    opened: list[cp_model.IntVar],
) -> None:
    first = {}
    for b, (t, i) in enumerate(slots):
        if i == 0:
            first[t] = b
    used: dict[int, int] = {}
    chosen: dict[int, set[int]] = {}
    for bin_ in start:
        i = used.get(bin_.type, 0)
        used[bin_.type] = i + 1
        b = first.get(bin_.type, -1) + i
        if bin_.type not in first or b >= len(slots) or slots[b][0] != bin_.type:
            return  # the start does not fit the candidates: solve without a hint
        chosen[b] = set(bin_.members)
    for b, o in enumerate(opened):
        model.add_hint(o, b in chosen)
    for (m, b), var in x.items():
        model.add_hint(var, m in chosen.get(b, ()))
