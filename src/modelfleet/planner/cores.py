"""Models onto the accelerator cores of each planned instance (NeuronCores, GPUs).

A model copy lives on one core: its device memory and its compute must fit that core's share of the
instance (memory per core, compute / cores). The solvers pack instances by their totals; this pass
places each instance's models on its cores (first-fit decreasing onto the least loaded core), and
moves the models that fit no core to new instances, so that every plan holds per core. The plan
records the cores (plan.yaml `cores`: model names per core), the input of NEURON_RT_VISIBLE_CORES /
CUDA_VISIBLE_DEVICES pinning.
"""

from __future__ import annotations

import numpy as np

from modelfleet.planner.problem import Dim, Int64Array, Problem
from modelfleet.planner.result import Packing

_PER_CORE_DIMS = (Dim.ACCELERATOR, Dim.COMPUTE)


def per_core_capacity(problem: Problem, t: int) -> Int64Array:
    """[2] device memory and compute of one core of type t (the instance's share, headroom kept)."""
    n = max(1, int(problem.accel_cores[t]))
    return np.array([problem.capacity[t, d] // n for d in _PER_CORE_DIMS], dtype=np.int64)


def assign_cores(problem: Problem, t: int, members: list[int]) -> tuple[list[list[int]], list[int]]:
    """Members of one type-t instance per core, and those that fit no core (largest first placed)."""
    n = int(problem.accel_cores[t])
    if n == 0:
        return [], []
    cap = per_core_capacity(problem, t)
    scale = np.where(cap > 0, cap, 1).astype(np.float64)
    need = problem.demand[members][:, t, list(_PER_CORE_DIMS)] if members else np.zeros((0, 2), np.int64)
    order = np.argsort(-(need / scale).max(axis=1), kind="stable") if members else np.zeros(0, np.int64)
    load = np.zeros((n, 2), dtype=np.int64)
    cores: list[list[int]] = [[] for _ in range(n)]
    left: list[int] = []
    for k in order.tolist():
        fits = np.flatnonzero((load + need[k] <= cap).all(axis=1))
        if not fits.size:
            left.append(members[k])
            continue
        # the least loaded core; ties (models without device memory or traffic) by fewest models
        score = (load[fits] / scale).max(axis=1) + 1e-9 * np.array([len(cores[c]) for c in fits])
        core = int(fits[np.argmin(score)])
        load[core] += need[k]
        cores[core].append(members[k])
    return cores, left


def fits_cores(problem: Problem, t: int, members: list[int]) -> bool:
    """Do these models, on one type-t instance, fit its accelerator cores one by one (as
    assign_cores places them)? Always on a CPU type."""
    return not problem.accel_cores[t] or not assign_cores(problem, t, members)[1]


def place_on_cores(problem: Problem, packing: Packing) -> tuple[Packing, list[list[list[int]]]]:
    """The packing with every accelerator instance's models on its cores (new instances for the models
    that fit no core), and per bin its cores (empty for CPU types)."""
    bins = [(t, list(members)) for t, members in packing.bins]
    layouts: list[list[list[int]]] = []
    moved: list[tuple[int, int]] = []  # (model, the type it was on)
    for t, members in bins:
        cores, left = assign_cores(problem, t, members)
        for m in left:
            members.remove(m)
            moved.append((m, t))
        layouts.append(cores)
    if not moved:
        return packing, layouts
    for m, t in moved:
        _place(problem, bins, layouts, m, t)
    note = f"{len(moved)} model copies fit no accelerator core of their instance and moved to other instances"
    packing = Packing(bins, packing.lower_bound, packing.solver, packing.status, (*packing.notes, note))
    return packing, layouts


def _place(
    problem: Problem, bins: list[tuple[int, list[int]]], layouts: list[list[list[int]]], m: int, t: int
) -> None:
    """Model m onto a core with room on an instance of type t of its group, else a new instance."""
    for b, (bt, members) in enumerate(bins):
        if bt != t or m in members or not members or problem.group[members[0]] != problem.group[m]:
            continue
        if problem.conflicts.get(m, set()) & set(members):
            continue
        total = problem.demand[[*members, m], t, :].sum(axis=0)
        if not (total <= problem.capacity[t]).all():
            continue
        cap = per_core_capacity(problem, t)
        for core in layouts[b]:
            load = problem.demand[[*core, m]][:, t, list(_PER_CORE_DIMS)].sum(axis=0)
            if (load <= cap).all():
                core.append(m)
                members.append(m)
                return
    bins.append((t, [m]))
    layouts.append([[m]] + [[] for _ in range(int(problem.accel_cores[t]) - 1)])
