"""A lower bound on the cost of any fleet: the LP relaxation, solved through its dual.

Give each type t and dimension d a price pi[t, d] >= 0 with sum_d pi[t, d] <= cost[t]. An instance
of type t holds items whose fractions add up to at most 1 per dimension, so the items it holds are
"charged" at most cost[t]. Each item is charged at least its cheapest charge over the types it may
use; hence, for any such pi,

    LB(pi) = sum_m replicas[m] * min_t sum_d pi[t, d] * fraction[m, t, d]   <=   cost of any fleet.

LB is concave and piecewise linear; Kelley's cutting planes (a small LP in pi, solved with GLOP)
find its maximum, which equals the LP relaxation of the packing. Every evaluated pi gives a valid
bound, so stopping early is safe. Isolation, replicas on distinct instances and never-with are
relaxed (ignored), which keeps the bound valid.

Both relaxations see each dimension twice more, through the dual feasible functions of Fekete and
Schepers, u(x) = 1 above 1 - e, x between e and 1 - e, 0 below e, for e = 1/2 and 1/3: items whose
fractions fit one instance still fit after u, so the transformed dimensions are valid constraints,
and they count what volume cannot see (two replicas each using 70 % of a GPU need two GPUs, not 1.4).
"""

from __future__ import annotations

import math
import time
from typing import Any

import numpy as np

from modelfleet.planner.problem import FloatArray, Int64Array, Problem

_REL_TOL = 1e-5


def lower_bound(problem: Problem, time_limit_s: float = 10.0, max_iterations: int = 400) -> float:
    """The best LP lower bound found within the limits, and the fleet's fixed minimums."""
    return dual_bound(problem, time_limit_s, max_iterations)[0]


def dual_bound(
    problem: Problem, time_limit_s: float = 10.0, max_iterations: int = 400
) -> tuple[float, FloatArray]:
    """The bound and the prices pi [T, D] that give it (the heuristic picks types with them)."""
    floors = _floors(problem)
    if problem.n_models == 0:
        return floors, np.zeros(problem.capacity.shape)
    frac = bound_fractions(problem)
    frac[~problem.eligible] = np.inf
    weights = problem.replicas.astype(np.float64)
    costs = problem.prices
    n_types, n_dims = frac.shape[1], frac.shape[2]
    deadline = time.monotonic() + time_limit_s
    cuts: list[FloatArray] = []
    best, best_pi = -1.0, np.zeros((n_types, n_dims))
    for start in _starts(costs, n_dims):
        value, cut = _evaluate(frac, weights, start)
        if value > best:
            best, best_pi = value, start
        cuts.append(cut)
    for _ in range(max_iterations):
        if time.monotonic() > deadline:
            break
        master, pi = _master(cuts, costs, n_types, n_dims)
        if master - best <= _REL_TOL * max(best, 1e-12):
            break
        value, cut = _evaluate(frac, weights, pi)
        if value > best:
            best, best_pi = value, pi
        cuts.append(cut)
    return max(best * (1.0 - 1e-9), floors), best_pi


DFF_EPSILONS = (1 / 2, 1 / 3)


def bound_fractions(problem: Problem) -> FloatArray:
    """[M, T, D x 3] the fractions, then each dimension through u for each of DFF_EPSILONS."""
    frac = problem.fractions()
    parts = [frac]
    for eps in DFF_EPSILONS:
        parts.append(np.where(frac > 1 - eps + 1e-12, 1.0, np.where(frac < eps - 1e-12, 0.0, frac)))
    return np.concatenate(parts, axis=2)


def _floors(problem: Problem) -> float:
    prices = problem.prices
    per_type = float((problem.min_per_type * prices).sum())
    extra = max(0, problem.min_total - int(problem.min_per_type.sum()))
    return per_type + extra * float(prices.min())


def _starts(costs: FloatArray, n_dims: int) -> list[FloatArray]:
    starts = []
    for d in range(n_dims):
        pi = np.zeros((len(costs), n_dims))
        pi[:, d] = costs
        starts.append(pi)
    starts.append(np.repeat(costs[:, None] / n_dims, n_dims, axis=1))
    return starts


def _evaluate(frac: FloatArray, weights: FloatArray, pi: FloatArray) -> tuple[float, FloatArray]:
    """LB(pi) and its supergradient (per type and dimension, the fractions of the items charged there)."""
    with np.errstate(invalid="ignore"):
        charge = np.einsum("mtd,td->mt", np.where(np.isinf(frac), 0.0, frac), pi)
    charge[np.isinf(frac[:, :, 0])] = np.inf
    choice = charge.argmin(axis=1)
    rows = np.arange(len(choice))
    value = float((weights * charge[rows, choice]).sum())
    cut = np.zeros_like(pi)
    chosen = frac[rows, choice, :] * weights[:, None]
    np.add.at(cut, choice, chosen)
    return value, cut


def _master(cuts: list[FloatArray], costs: FloatArray, n_types: int, n_dims: int) -> tuple[float, FloatArray]:
    from ortools.linear_solver import pywraplp

    solver = pywraplp.Solver.CreateSolver("GLOP")
    pi = [[solver.NumVar(0.0, float(costs[t]), f"pi_{t}_{d}") for d in range(n_dims)] for t in range(n_types)]
    z = solver.NumVar(0.0, solver.infinity(), "z")
    for t in range(n_types):
        solver.Add(sum(pi[t]) <= float(costs[t]))
    for cut in cuts:
        solver.Add(z <= sum(float(cut[t, d]) * pi[t][d] for t in range(n_types) for d in range(n_dims)))
    solver.Maximize(z)
    solver.Solve()
    values = np.maximum(
        np.array([[pi[t][d].solution_value() for d in range(n_dims)] for t in range(n_types)]), 0.0
    )
    # LP tolerances may overshoot sum_d pi[t, d] <= cost[t] a little; scale back so LB(pi) stays valid
    totals = values.sum(axis=1)
    scale = np.where(totals > costs, costs / np.maximum(totals, 1e-300), 1.0)
    return float(z.solution_value()), values * scale[:, None]


PRIMAL_LIMIT = 300_000  # (model, type) pairs up to which the counting relaxation is solved
MIP_SOLVER = "SCIP"  # HiGHS through pywraplp found no solution within 20 s on the 3,000-model bench


def counting_relaxation(
    problem: Problem, time_limit_s: float, whole: bool = True
) -> tuple[float, Int64Array | None] | None:
    """A stronger bound for fleets of moderate size: the LP above with whole instances per
    (isolation group, type) and the fleet's count limits, a MIP solved with SCIP. Models stay
    fractional, so it is still a relaxation; the count of instances of each type in each group is
    an integer in every real fleet, so it is valid. Identical models are one variable per type.
    Returns the MIP's proven bound and, per model, a type from its best solution (None without
    one); None when the problem is too large or the solver found nothing. With `whole` false the
    counts are fractional too: the plain LP, solved quickly for its types when the MIP finds nothing.
    """
    from ortools.linear_solver import pywraplp

    classes, members = _classes(problem)
    if len(classes) * problem.n_types > PRIMAL_LIMIT or problem.n_models == 0:
        return None
    solver = pywraplp.Solver.CreateSolver(MIP_SOLVER if whole else "GLOP")
    if solver is None:
        return None
    solver.SetTimeLimit(int(max(0.5, time_limit_s) * 1000))
    frac = bound_fractions(problem) * problem.replicas[:, None, None]
    share: dict[tuple[int, int], pywraplp.Variable] = {}
    for c, m in enumerate(classes):
        types = np.flatnonzero(problem.eligible[m]).tolist()
        for t in types:
            share[c, t] = solver.NumVar(0.0, float(len(members[c])), f"a{c}_{t}")
        solver.Add(sum(share[c, t] for t in types) == len(members[c]))
    count: dict[tuple[int, int], pywraplp.Variable] = {}
    for g in range(len(problem.group_names)):
        for t in range(problem.n_types):
            users = [c for c, m in enumerate(classes) if problem.group[m] == g and problem.eligible[m, t]]
            if not users:
                continue
            if whole:
                count[g, t] = solver.IntVar(0.0, solver.infinity(), f"y{g}_{t}")
            else:
                count[g, t] = solver.NumVar(0.0, solver.infinity(), f"y{g}_{t}")
            for d in range(frac.shape[2]):
                terms = [
                    float(frac[classes[c], t, d]) * share[c, t] for c in users if frac[classes[c], t, d] > 0
                ]
                if terms:
                    solver.Add(sum(terms) <= count[g, t])
    _count_limits(solver, problem, count)
    solver.Minimize(sum(float(problem.prices[t]) * y for (_, t), y in count.items()))
    status = solver.Solve()
    if status == pywraplp.Solver.INFEASIBLE:
        return math.inf, None  # even fractional models on whole instances cannot meet the limits
    if status not in (pywraplp.Solver.OPTIMAL, pywraplp.Solver.FEASIBLE):
        return None
    bound = float(solver.Objective().BestBound() if whole else solver.Objective().Value())
    if not np.isfinite(bound) or bound <= 0:
        return None
    guide = np.full(problem.n_models, -1, dtype=np.int64)
    for c, group in enumerate(members):
        amounts = [(share[c, t].solution_value(), t) for t in range(problem.n_types) if (c, t) in share]
        start = 0
        for amount, t in sorted(amounts, reverse=True):
            take = min(len(group) - start, round(amount))
            guide[group[start : start + take]] = t
            start += take
        guide[group[start:]] = max(amounts)[1]
    return bound * (1.0 - 1e-7), guide


def _classes(problem: Problem) -> tuple[list[int], list[Int64Array]]:
    """Identical models (demand, eligibility, replicas, group): a representative and the members."""
    key = np.concatenate(
        [
            problem.demand.reshape(problem.n_models, -1),
            problem.eligible.astype(np.int64),
            problem.replicas[:, None],
            problem.group[:, None],
        ],
        axis=1,
    )
    _, first, inverse = np.unique(key, axis=0, return_index=True, return_inverse=True)
    inverse = inverse.reshape(-1)
    order = np.argsort(inverse, kind="stable")
    members = np.split(order, np.cumsum(np.bincount(inverse, minlength=len(first)))[:-1])
    return [int(m[0]) for m in members], members


def _count_limits(solver: Any, problem: Problem, count: dict[tuple[int, int], Any]) -> None:
    total = list(count.values())
    if problem.max_total is not None:
        solver.Add(sum(total) <= problem.max_total)
    if problem.min_total:
        solver.Add(sum(total) >= problem.min_total)
    for t in range(problem.n_types):
        of_type = [y for (_, tt), y in count.items() if tt == t]
        limit = problem.type_limit(t)
        if of_type and limit is not None:
            solver.Add(sum(of_type) <= limit)
        if of_type and problem.min_per_type[t]:
            solver.Add(sum(of_type) >= int(problem.min_per_type[t]))
