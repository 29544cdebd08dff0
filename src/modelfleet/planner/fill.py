"""Choose the models of one instance by a small knapsack (CP-SAT): the subset of candidates that
fills it best in the direction of the demand still to place.

Greedy rules (first-fit decreasing, dot product) waste 5-10 % of each instance when models are
large (3-6 per instance); solving the fill of each instance as a knapsack ("minimum bin slack")
brings that close to the bound. Used per (group, type) when instances hold few models.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from ortools.sat.python import cp_model

from modelfleet.planner.problem import FloatArray, Int64Array

CANDIDATES_TOP = 40  # the heaviest remaining items are always candidates
CANDIDATES_SPREAD = 40  # and at least this many more, spread evenly over the rest by weight
CANDIDATES_MAX = 400
_SCALE = 1_000_000
WORK_PER_S = 0.17  # CP-SAT's deterministic time per second of one core (measured, bench machine)
WALL_GUARD = 5.0  # the wall-time limit, as a multiple of the nominal time


def candidates(weight: FloatArray, left: Int64Array, per_bin: float) -> Int64Array:
    """Positions (into `weight`) of the candidates among the `left` positions: the heaviest, and
    more spread over the rest, at least three instances' worth (`per_bin` items fill one)."""
    order = left[np.argsort(-weight[left], kind="stable")]
    n_spread = min(CANDIDATES_MAX, max(CANDIDATES_SPREAD, int(3 * per_bin)))
    if len(order) <= CANDIDATES_TOP + n_spread:
        return order
    rest = order[CANDIDATES_TOP:]
    spread = rest[np.linspace(0, len(rest) - 1, n_spread).astype(np.int64)]
    return np.concatenate([order[:CANDIDATES_TOP], np.unique(spread)])


def best_subset(
    need: Int64Array,
    weight: FloatArray,
    capacity: Int64Array,
    exclusive: Sequence[tuple[int, int]],
    greedy: Sequence[int],
    time_limit_s: float,
) -> list[int]:
    """Indices (into `need`) of a subset within `capacity` of the largest total weight; `exclusive`
    pairs may not both be chosen; `greedy` (a feasible subset) is the hint and the fallback.
    `time_limit_s` is nominal: the work CP-SAT does in that time on the bench machine."""
    model = cp_model.CpModel()
    x = [model.new_bool_var(f"x{i}") for i in range(len(need))]
    for d in range(need.shape[1]):
        column = need[:, d]
        if column.any() and int(column.sum()) > int(capacity[d]):
            model.add(sum(int(w) * v for w, v in zip(column, x, strict=True)) <= int(capacity[d]))
    for a, b in exclusive:
        model.add_bool_or([x[a].negated(), x[b].negated()])
    values = np.maximum(np.round(weight * _SCALE), 1).astype(np.int64)
    model.maximize(sum(int(w) * v for w, v in zip(values, x, strict=True)))
    chosen = set(greedy)
    for i, v in enumerate(x):
        model.add_hint(v, i in chosen)
    solver = cp_model.CpSolver()
    # deterministic work, not wall time, so that a plan does not depend on the machine's load; the
    # wall-time limit is only a guard (measured: 0.17 units per second on the 2-core bench machine)
    solver.parameters.max_deterministic_time = WORK_PER_S * time_limit_s
    solver.parameters.max_time_in_seconds = WALL_GUARD * time_limit_s
    solver.parameters.num_workers = 1
    status = solver.solve(model)
    if status not in (cp_model.OPTIMAL, cp_model.FEASIBLE):
        return list(greedy)
    picked = [i for i, v in enumerate(x) if solver.value(v)]
    if float(values[picked].sum()) < float(values[list(greedy)].sum()):
        return list(greedy)
    return picked
