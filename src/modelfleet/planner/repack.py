"""Empty the least used instances by repacking a small neighbourhood exactly (CP-SAT), or retype them.

Packing whole models leaves, per (isolation group, type), a last instance or two that is mostly empty;
their models often fit nowhere by a single move (planner.improve's drain) because every other
instance is full in some dimension. Here such a "victim" and a few instances beside it (its group; its
type first, then the others with the most room where its models may go) are repacked together by a
small CP-SAT model into the neighbours alone: when that is feasible the victim is gone. Every model
copy in the neighbourhood is one boolean per neighbour, so the model stays small (NEIGHBOUR_ITEMS).
"""

from __future__ import annotations

import dataclasses
import time

import numpy as np
from ortools.sat.python import cp_model

from modelfleet.planner.bins import Bin
from modelfleet.planner.cores import fits_cores
from modelfleet.planner.exact import solve_assignment
from modelfleet.planner.fill import WALL_GUARD, WORK_PER_S
from modelfleet.planner.problem import Problem

NEIGHBOURS = 8  # instances repacked with a victim
NEIGHBOUR_ITEMS = 600  # ... holding at most this many model copies in all
VICTIM_FILL = 0.85  # victims: instances filled at most this much (largest dimension)
TRY_S = 0.3  # CP-SAT's nominal time per victim (deterministic work: planner.fill.WORK_PER_S)
RETYPE_FILL = 0.95  # retype: instances filled less than this, per group ...
RETYPE_BINS = 6  # ... at most this many
RETYPE_S = 1.0


def eliminate(problem: Problem, bins: list[Bin], deadline: float) -> list[Bin]:
    """`bins` with every victim that its neighbours could absorb removed (least filled first)."""
    cap = np.where(problem.capacity > 0, problem.capacity, 1).astype(np.float64)
    fill = [float((b.load / cap[b.type]).max()) for b in bins]
    gone: set[int] = set()
    for victim in np.argsort(fill, kind="stable").tolist():
        if fill[victim] > VICTIM_FILL or time.monotonic() > deadline:
            break
        if not bins[victim].members or len(bins) - len(gone) - 1 < problem.min_total:
            continue
        if _repack(problem, bins, victim, gone, cap, min(deadline, time.monotonic() + WALL_GUARD * TRY_S)):
            gone.add(victim)
    return [b for k, b in enumerate(bins) if k not in gone]


def _neighbours(problem: Problem, bins: list[Bin], victim: int, gone: set[int], cap: np.ndarray) -> list[int]:
    """Instances of the victim's group that may take some of its models: its own type first, then the
    others by their room (1 - largest dimension's fill), up to NEIGHBOURS and NEIGHBOUR_ITEMS."""
    v = bins[victim]
    usable = np.asarray(problem.eligible[v.members].any(axis=0), dtype=bool)
    scored = []
    for k, b in enumerate(bins):
        if k == victim or k in gone or b.group != v.group or not usable[b.type]:
            continue
        room = 1.0 - float((b.load / cap[b.type]).max())
        scored.append((b.type != v.type, -room, k))
    chosen: list[int] = []
    items = len(v.members)
    for _, _, k in sorted(scored):
        if len(chosen) >= NEIGHBOURS or items + len(bins[k].members) > NEIGHBOUR_ITEMS:
            continue
        chosen.append(k)
        items += len(bins[k].members)
    return chosen


def _repack(
    problem: Problem,
    bins: list[Bin],
    victim: int,
    gone: set[int],
    cap: np.ndarray,
    deadline: float,
) -> bool:
    """Repack the victim's and its neighbours' models into the neighbours; True (bins updated) if done."""
    around = _neighbours(problem, bins, victim, gone, cap)
    if not around:
        return False
    items = [(m, k) for k in [victim, *around] for m in bins[k].members]  # (model, where it is now)
    model = cp_model.CpModel()
    x: dict[tuple[int, int], cp_model.IntVar] = {}
    for i, (m, _) in enumerate(items):
        places = [k for k in around if problem.eligible[m, bins[k].type]]
        if not places:
            return False
        for k in places:
            x[i, k] = model.new_bool_var("")
        model.add_exactly_one(x[i, k] for k in places)
    for k in around:
        t = bins[k].type
        mine = [i for i in range(len(items)) if (i, k) in x]
        for d in range(problem.capacity.shape[1]):
            need = [int(problem.demand[items[i][0], t, d]) for i in mine]
            if sum(need) > problem.capacity[t, d]:
                model.add(
                    sum(w * x[i, k] for w, i in zip(need, mine, strict=True)) <= int(problem.capacity[t, d])
                )
        _apart(problem, model, x, items, mine, k)
    for (i, k), var in x.items():
        model.add_hint(var, items[i][1] == k)
    solver = cp_model.CpSolver()
    solver.parameters.max_deterministic_time = WORK_PER_S * TRY_S  # the same plan whatever the load
    solver.parameters.max_time_in_seconds = max(0.01, deadline - time.monotonic())
    solver.parameters.num_workers = 1
    if solver.solve(model) not in (cp_model.OPTIMAL, cp_model.FEASIBLE):
        return False
    packed = {
        k: [items[i][0] for i in range(len(items)) if (i, k) in x and solver.value(x[i, k])] for k in around
    }
    if not all(fits_cores(problem, bins[k].type, members) for k, members in packed.items()):
        return False  # an accelerator instance whose models no longer fit its cores one by one
    for k, members in packed.items():
        t = bins[k].type
        bins[k] = Bin(t, bins[k].group, members, problem.demand[members, t, :].sum(axis=0))
    return True


def _apart(
    problem: Problem,
    model: cp_model.CpModel,
    x: dict[tuple[int, int], cp_model.IntVar],
    items: list[tuple[int, int]],
    mine: list[int],
    k: int,
) -> None:
    """Copies of one model, and never-with pairs, on different instances."""
    by_model: dict[int, list[int]] = {}
    for i in mine:
        by_model.setdefault(items[i][0], []).append(i)
    for copies in by_model.values():
        if len(copies) > 1:
            model.add_at_most_one(x[i, k] for i in copies)
    if not problem.conflicts:
        return
    for m, copies in by_model.items():
        for other in problem.conflicts.get(m, ()):
            if other > m and other in by_model:
                for a in copies:
                    for b in by_model[other]:
                        model.add_bool_or([x[a, k].negated(), x[b, k].negated()])


def retype(problem: Problem, bins: list[Bin], deadline: float) -> list[Bin]:
    """Per isolation group, the instances filled less than RETYPE_FILL (at most RETYPE_BINS, least
    filled first) repacked from scratch by CP-SAT's assignment model over every type (planner.exact),
    where that is cheaper: a half-empty accelerator instance of small models becomes a CPU one."""
    if problem.max_total is not None or problem.min_total or problem.min_per_type.any():
        return bins  # counts are tied to the fleet's limits: leave them to the full model
    if any(problem.type_limit(t) is not None for t in range(problem.n_types)):
        return bins
    cap = np.where(problem.capacity > 0, problem.capacity, 1).astype(np.float64)
    fill = np.array([float((b.load / cap[b.type]).max()) for b in bins])
    for g in sorted({b.group for b in bins}):
        if time.monotonic() > deadline:
            break
        low = [
            k
            for k in np.argsort(fill, kind="stable").tolist()
            if bins[k].group == g and fill[k] < RETYPE_FILL
        ]
        low = low[:RETYPE_BINS]
        if not low or sum(len(bins[k].members) for k in low) > NEIGHBOUR_ITEMS:
            continue
        sub, models = _subproblem(problem, [bins[k] for k in low])
        start = [Bin(b.type, 0, [models.index(m) for m in b.members], b.load) for b in (bins[k] for k in low)]
        found = solve_assignment(sub, start, min(RETYPE_S, deadline - time.monotonic()), 1, None)
        if found is None:
            continue
        before = sum(problem.types[bins[k].type].usd_per_hour for k in low)
        after = sum(problem.types[t].usd_per_hour for t, members in found.bins if members)
        fits = all(fits_cores(problem, t, [models[i] for i in members]) for t, members in found.bins)
        if after >= before - 1e-9 or not fits:
            continue
        for k in sorted(low, reverse=True):
            del bins[k]
            fill = np.delete(fill, k)
        for t, members in found.bins:
            if members:
                real = [models[i] for i in members]
                bins.append(Bin(t, g, real, problem.demand[real, t, :].sum(axis=0)))
                fill = np.append(fill, float((bins[-1].load / cap[t]).max()))
    return bins


def _subproblem(problem: Problem, chosen: list[Bin]) -> tuple[Problem, list[int]]:
    """The problem restricted to the copies in `chosen` (one group, no fleet limits), and its models."""
    copies: dict[int, int] = {}
    for b in chosen:
        for m in b.members:
            copies[m] = copies.get(m, 0) + 1
    models = sorted(copies)
    index = {m: i for i, m in enumerate(models)}
    conflicts = {
        index[m]: {index[o] for o in problem.conflicts.get(m, ()) if o in index}
        for m in models
        if problem.conflicts.get(m)
    }
    sub = dataclasses.replace(
        problem,
        model_names=[problem.model_names[m] for m in models],
        demand=problem.demand[models],
        eligible=problem.eligible[models],
        replicas=np.array([copies[m] for m in models], dtype=np.int64),
        group=np.zeros(len(models), dtype=np.int64),
        group_names=[""],
        traffic_rps=problem.traffic_rps[models],
        memory_bytes=problem.memory_bytes[models],
        conflicts={k: v for k, v in conflicts.items() if v},
    )
    return sub, models
