"""A lower bound on the cost of any fleet: the LP relaxation, solved through its dual (at any size;
planner.benders adds whole instances per type where the fleet is small enough).

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

import time

import numpy as np

from modelfleet.planner.problem import FloatArray, Problem

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
