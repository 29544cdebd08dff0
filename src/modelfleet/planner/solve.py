"""Choose and run the planners for one problem, and return the cheapest plan with its bound.

auto        identical models per isolation group -> exact counts (CP-SAT, proven at any size);
            otherwise the LP bound, the relaxation with whole instances (planner.benders: a
            stronger bound, and type mixes for the heuristic) where it is small enough to build,
            the heuristic, then the CP-SAT assignment model (hinted with the heuristic) while it
            stays under ASSIGNMENT_LIMIT booleans
exact       the CP-SAT models whatever the size (the time limit still applies)
heuristic   the heuristic and the LP bound only
"""

from __future__ import annotations

import enum
import functools
import time
from collections import Counter
from collections.abc import Callable

import numpy as np

from modelfleet.planner import exact
from modelfleet.planner.benders import BUILD_S_PER_PAIR, CountRelaxation, pairs
from modelfleet.planner.bound import dual_bound
from modelfleet.planner.cores import place_on_cores
from modelfleet.planner.errors import InfeasiblePlan, NoPlanFound
from modelfleet.planner.heuristic import Guide, heuristic
from modelfleet.planner.problem import Int64Array, Problem
from modelfleet.planner.result import OPTIMAL_TOLERANCE, Packing, Plan, Status, make_plan

ASSIGNMENT_LIMIT = 400_000
FINISH_S_PER_REPLICA = (
    4e-5  # time kept for placing models on cores and building the plan (2x measured, for a loaded machine)
)
DEFAULT_TIME_LIMIT_S = 10.0
RELAXATION_SHARE = 0.25  # of the time limit, for the relaxation with whole instances (the bound)
RELAXATION_BUILD_SHARE = 0.05  # it is built only where that takes at most this share (BUILD_S_PER_PAIR)
HEURISTIC_MODELS = 20_000  # with method heuristic, the relaxation only up to this many models
# (accelerator types, CPU types): the share of raw capacity the type mixes that guide the heuristic
# keep free for the packing's waste, in the order tried (on the 3,000-model bench, seeds 0 and 1,
# the first two did best; which one wins varies from fleet to fleet)
RESERVES = ((0.002, 0.01), (0.0, 0.0), (0.002, 0.02), (0.01, 0.01), (0.005, 0.03), (0.005, 0.02))
RESERVE_S = 5.0  # at most, per reserved type mix ...
GUIDE_SHARE = 0.5  # ... and at most this share of the heuristic's time left
REBOUND_S = 1.0  # at most, for the bound from every cut found (the master alone: ~30 ms at 3,000 models)
Progress = Callable[[str], None]


class Method(enum.StrEnum):
    AUTO = "auto"
    EXACT = "exact"
    HEURISTIC = "heuristic"


def solve(
    problem: Problem,
    method: Method = Method.AUTO,
    time_limit_s: float = DEFAULT_TIME_LIMIT_S,
    workers: int = 2,
    progress: Progress | None = None,
) -> Plan:
    """The cheapest plan found within `time_limit_s`; InfeasiblePlan if none meets the limits."""
    started = time.monotonic()
    deadline = started + time_limit_s
    groups = exact.uniform_groups(problem)
    if groups is not None and method is not Method.HEURISTIC:
        _say(progress, "exact: counts of identical models")
        try:
            packing = exact.solve_uniform(problem, groups, time_limit_s, workers, progress)
        except InfeasiblePlan:
            raise InfeasiblePlan(_infeasible_message(problem)) from None
        if packing is None:
            raise NoPlanFound(_not_found_message(problem, time_limit_s))
        return _finish(problem, packing, started)
    _say(progress, "lower bound (LP)")
    bound, pi = dual_bound(problem, time_limit_s=min(10.0, 0.25 * time_limit_s))
    guides: list[Guide] = []
    bound_by = "bound: LP"
    relaxation: CountRelaxation | None = None
    plain_guide: Int64Array | None = None  # the relaxation's own type mix
    small = method is not Method.HEURISTIC or problem.n_models <= HEURISTIC_MODELS
    if small and pairs(problem) * BUILD_S_PER_PAIR <= RELAXATION_BUILD_SHARE * time_limit_s:
        _say(progress, "lower bound (whole instances per type and isolation group: Benders)")
        relaxation = CountRelaxation(problem)
        relaxed = relaxation.solve(min(deadline, time.monotonic() + RELAXATION_SHARE * time_limit_s))
        if relaxed.infeasible:
            raise InfeasiblePlan(_infeasible_message(problem))
        if relaxed.bound > bound:
            bound, bound_by = relaxed.bound, "bound: whole instances per type"
        plain_guide = relaxed.guide
    _say(progress, "heuristic: packing + local improvement")
    # the exact assignment model gets the rest of the time only where it is small enough to help
    exact_next = method is Method.EXACT or (
        method is Method.AUTO and exact.assignment_size(problem, 1.2 * bound) <= ASSIGNMENT_LIMIT
    )
    heuristic_share = 0.6 * time_limit_s if exact_next else time_limit_s
    # placing models on accelerator cores and building the plan took ~12 us per replica (100,000 models)
    finishing = FINISH_S_PER_REPLICA * int(problem.replicas.sum())
    until = min(deadline - finishing, time.monotonic() + heuristic_share)
    if relaxation is not None:
        guides = _guides(problem, relaxation, plain_guide, until)
    bins = heuristic(problem, pi, until, progress, guides, bound)
    if relaxation is not None:  # the reserved mixes added cuts, valid for every reserve: a better bound?
        again = relaxation.bound(min(deadline, time.monotonic() + REBOUND_S))
        if again is not None and again > bound:
            bound, bound_by = again, "bound: whole instances per type"
    best: Packing | None = None
    if bins is not None:
        best = Packing(
            [(b.type, b.members) for b in bins],
            bound,
            f"heuristic (packing + local search), {bound_by}",
            Status.FEASIBLE,
        )
        cost = sum(problem.types[b.type].usd_per_hour for b in bins)
        if cost - bound <= OPTIMAL_TOLERANCE * cost:
            return _finish(problem, best, started)
    left = deadline - time.monotonic()
    if method is not Method.HEURISTIC and bins is not None and left > 0.5:
        size = exact.assignment_size(problem, sum(problem.types[b.type].usd_per_hour for b in bins))
        if method is Method.EXACT or size <= ASSIGNMENT_LIMIT:
            _say(progress, f"exact: CP-SAT assignment ({size:,} booleans)")
            try:
                found = exact.solve_assignment(problem, bins, left, workers, progress)
            except InfeasiblePlan:  # cannot happen with a feasible start; kept for clarity
                found = None
            if found is not None:
                best = _better(problem, best, found, bound)
    if best is None:
        raise NoPlanFound(_not_found_message(problem, time_limit_s))
    return _finish(problem, best, started)


def _guides(
    problem: Problem, relaxation: CountRelaxation, plain: Int64Array | None, deadline: float
) -> list[Guide]:
    """Type mixes for the heuristic, each computed when its turn comes: the relaxation's with room kept
    free for the packing's waste (RESERVES), and its own. Once a reserved mix is not found in its time
    (a loaded machine, a short limit), the others are not tried: the plainer candidates get the time."""
    out_of_time = False

    def reserved(accelerated: float, cpu: float) -> Int64Array | None:
        nonlocal out_of_time
        if out_of_time:
            return None
        share = np.where(problem.accel_cores > 0, accelerated, cpu)
        now = time.monotonic()  # at most half the time left: the packing needs the rest
        until = min(now + RESERVE_S, now + GUIDE_SHARE * (deadline - now))
        found = relaxation.solve(until, np.broadcast_to(share, (len(problem.group_names), problem.n_types)))
        out_of_time = not found.converged
        return found.guide

    found: list[Guide] = []
    for accelerated, cpu in RESERVES:
        if accelerated or cpu:
            label = f"relaxation's types, {accelerated:.1%} / {cpu:.1%} free"
            found.append((label, functools.partial(reserved, accelerated, cpu)))
        elif plain is not None:
            found.append(("relaxation's types", functools.partial(np.copy, plain)))
    return found


def _finish(problem: Problem, packing: Packing, started: float) -> Plan:
    """The plan, with each accelerator instance's models placed on its cores."""
    placed, cores = place_on_cores(problem, packing)
    if len(placed.bins) > len(packing.bins):
        counts = Counter(t for t, _ in placed.bins)
        over = problem.max_total is not None and len(placed.bins) > problem.max_total
        over = over or any(
            problem.type_limit(t) is not None and n > (problem.type_limit(t) or 0) for t, n in counts.items()
        )
        if over:
            raise NoPlanFound(
                f"the plan needs {len(placed.bins)} instances once every model copy is on an accelerator "
                f"core, more than {_limits(problem)} allow: raise the limits"
            )
    return make_plan(problem, placed, time.monotonic() - started, cores)


def _better(problem: Problem, current: Packing | None, found: Packing, bound: float) -> Packing:
    """The cheaper of the two, carrying the best bound of both."""
    lower = max(bound, found.lower_bound)

    def cost(p: Packing) -> float:
        return sum(problem.types[t].usd_per_hour for t, _ in p.bins)

    if current is None or cost(found) < cost(current) - 1e-9:
        return Packing(found.bins, lower, found.solver, found.status, found.notes)
    return Packing(current.bins, lower, f"{current.solver}, bound by cp-sat", found.status, current.notes)


def _limits(problem: Problem) -> str:
    limits = []
    if problem.max_total is not None:
        limits.append(f"max_instances {problem.max_total}")
    limits += [
        f"max_per_type[{t.name}] {problem.type_limit(i)}"
        for i, t in enumerate(problem.types)
        if problem.type_limit(i) is not None
    ]
    return ", ".join(limits) or "the isolation and never-with constraints"


def _infeasible_message(problem: Problem) -> str:
    return (
        f"no fleet hosts all {problem.n_models} models ({int(problem.replicas.sum())} replicas) within "
        f"{_limits(problem)} (proven); raise the limits or relax the constraints"
    )


def _not_found_message(problem: Problem, time_limit_s: float) -> str:
    return (
        f"found no fleet for all {problem.n_models} models within {_limits(problem)} in {time_limit_s:g} s, "
        "and did not prove that none exists: raise --time-limit-s, try --solver exact, or relax the limits"
    )


def _say(progress: Progress | None, text: str) -> None:
    if progress is not None:
        progress(text)
