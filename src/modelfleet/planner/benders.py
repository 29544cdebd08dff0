"""The relaxation with whole instances, solved by Benders decomposition: a lower bound, and type mixes.

R: choose y[g, t], the whole instances of type t for isolation group g, within the fleet's count limits;
the models may be split over their eligible types, and per (g, t) their demand in every bound dimension
(bound.bound_fractions: the fractions and their dual feasible transforms) must fit y[g, t] instances.
Every real fleet gives such a y (its models whole), so R's optimum is at most the fleet's cost.

For a fixed y the rest of R is an LP, and by LP duality y is feasible if and only if, for every
pi >= 0 (a price per type and dimension) and every group g,

    sum_t y[g, t] * sum_d pi[t, d]  >=  Phi_g(pi) = sum_{m in g} min_{t eligible for m} sum_d pi[t, d] F[m, t, d]

("the cut of pi": charge each model its cheapest type; whatever the split, the instances pay for it).
The master problem (SCIP, a few dozen integer variables) minimises the cost over integer y subject to
the cuts found so far. It relaxes R, so its proven optimum is a valid bound at every iteration. The
separation LP (GLOP, one per group, warm-started between iterations) finds at the master's y the pi
of largest violation; Phi is then recomputed exactly with numpy, so a cut is valid whatever the LP's
tolerances. When no cut is violated, the master's y is feasible for R and its optimum is R's.

A `reserve` w asks for the cheapest mix that leaves a fraction w of each instance's raw capacity free
(whole models never fill instances exactly): the same cuts, with y scaled by 1 - w in the raw
dimensions. Such mixes guide the heuristic; a reserve's optimum is never reported as a bound.
"""

from __future__ import annotations

import math
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from modelfleet.planner.bound import bound_fractions
from modelfleet.planner.problem import BoolArray, Dim, FloatArray, Int64Array, Problem

BUILD_S_PER_PAIR = 3e-5  # building the separation LPs, per (model class, type) pair (measured: 26k in 0.75 s)
_TOL = 1e-9  # relative violation below which a cut is not added
MASTER_GAP = 1e-3  # the master stops within this of its optimum (its proven bound is what counts) ...
FINAL_GAP = 1e-6  # ... and once its counts are feasible, is solved again to this, for at most FINAL_S
FINAL_S = 2.0
IN_OUT = 0.5  # the separation point: this much of the master's counts, the rest of the core point
_SAFETY = 1e-7  # the reported bound is lowered by this fraction (the master's floating point)


@dataclass(frozen=True, slots=True)
class Relaxed:
    """What one solve of R (or of a reserve's version) found."""

    bound: float  # the master's proven optimum: a lower bound on every fleet when reserve is 0
    guide: Int64Array | None  # per model, a type: the LP's split at the last counts, rounded (guide_into)
    counts: dict[tuple[int, int], int] | None  # the last counts: instances per (group, type)
    converged: bool  # the last counts are feasible: `bound` is the relaxation's optimum (within the gap)
    infeasible: bool = False  # no counts within the fleet's limits can hold the models


@dataclass(frozen=True, slots=True)
class _Cut:
    group: int
    pi: FloatArray  # [T, D]
    phi: float  # Phi_g(pi), exact, lowered by the safety margin


def pairs(problem: Problem) -> int:
    """(model class, eligible type) pairs, identical models one class: the size of the separation LPs."""
    key = np.concatenate(
        [
            problem.demand.reshape(problem.n_models, -1),
            problem.eligible.astype(np.int64),
            problem.replicas[:, None],
            problem.group[:, None],
        ],
        axis=1,
    )
    rows = np.unique(key, axis=0)
    return int(rows[:, -problem.n_types - 2 : -2].sum())


class CountRelaxation:
    """R for one problem; cuts are kept between solves (they hold for every reserve)."""

    def __init__(self, problem: Problem) -> None:
        self.p = problem
        self.frac = bound_fractions(problem) * problem.replicas[:, None, None]  # [M, T, D]
        self.n_dims = self.frac.shape[2]
        self.groups = [np.flatnonzero(problem.group == g) for g in range(len(problem.group_names))]
        self.keys: list[tuple[int, int]] = []
        self.upper: dict[tuple[int, int], int] = {}
        for g, members in enumerate(self.groups):
            for t in np.flatnonzero(problem.eligible[members].any(axis=0)).tolist():
                users = members[problem.eligible[members, t]]
                # no optimal y has more than all the group's eligible models need on their own
                self.upper[g, t] = max(1, math.ceil(float(self.frac[users, t, :].sum(axis=0).max()) - 1e-9))
                self.keys.append((g, t))
        self.cuts: list[_Cut] = []
        self._separators: list[_Separator] = []

    # --- cuts ----------------------------------------------------------------------------------

    def phi(self, g: int, pi: FloatArray) -> float:
        """Phi_g(pi): each of the group's models charged at its cheapest eligible type."""
        members = self.groups[g]
        charge = np.einsum("mtd,td->mt", self.frac[members], pi)
        charge[~self.p.eligible[members]] = np.inf
        return float(charge.min(axis=1).sum())

    def add_cut(self, g: int, pi: FloatArray) -> _Cut:
        pi = np.maximum(pi, 0.0)
        value = self.phi(g, pi)
        cut = _Cut(g, pi, value - _SAFETY * abs(value) - 1e-12)
        self.cuts.append(cut)
        return cut

    def _coefficients(self, cut: _Cut, keep: FloatArray) -> FloatArray:
        """[T] what one instance of each type pays towards the cut (its raw capacity scaled by `keep`,
        [G, T]: 1 - the reserve)."""
        raw = cut.pi[:, : len(Dim)].sum(axis=1)
        rest = cut.pi[:, len(Dim) :].sum(axis=1)
        return np.asarray(raw * keep[cut.group] + rest, dtype=np.float64)

    def _violation(self, cut: _Cut, counts: dict[tuple[int, int], int], keep: FloatArray) -> float:
        coef = self._coefficients(cut, keep)
        paid = sum(coef[t] * counts.get((cut.group, t), 0) for t in range(self.p.n_types))
        return cut.phi - float(paid)

    # --- the loop ------------------------------------------------------------------------------

    def solve(self, deadline: float, reserve: float | FloatArray = 0.0) -> Relaxed:
        """Master and separation in turn, per block of groups (one master per group unless fleet-wide
        limits link them), until no cut is violated or the deadline passes.

        Separation first tries a point between the master's counts and a feasible "core" point (the
        in-out stabilisation of Ben-Ameur and Neto: deeper cuts, fewer iterations); only when that
        cuts nothing off is it run at the counts themselves, which proves them feasible."""
        if not self._separators:
            self._start(deadline)
        keep = 1.0 - np.broadcast_to(
            np.asarray(reserve, dtype=np.float64), (len(self.groups), self.p.n_types)
        )
        core = {k: v / keep[k] for k, v in self._lp_counts.items()}
        blocks = self._blocks()
        bounds = [0.0] * len(blocks)
        done = [False] * len(blocks)
        guide = np.full(self.p.n_models, -1, dtype=np.int64)
        last: dict[tuple[int, int], int] = {}
        while not all(done) and time.monotonic() < deadline:
            for b, block in enumerate(blocks):
                if done[b] or time.monotonic() >= deadline:
                    continue
                found = self._master(block, keep, deadline, MASTER_GAP)
                if found is None:
                    return Relaxed(sum(bounds), None, None, converged=False)
                if isinstance(found, str):  # "infeasible"
                    return Relaxed(math.inf, None, None, converged=True, infeasible=True)
                bound, counts = found
                bounds[b] = max(bounds[b], bound)
                last.update(counts)
                if self._separate_between(block, counts, core, keep, deadline):
                    continue
                done[b] = not self._separate(block, counts, keep, deadline, guide)
                if done[b]:  # the counts are feasible: close the master's own gap, time allowing
                    final = self._master(block, keep, min(deadline, time.monotonic() + FINAL_S), FINAL_GAP)
                    if isinstance(final, tuple):
                        bounds[b] = max(bounds[b], final[0])
        if (guide < 0).any():
            return Relaxed(sum(bounds), None, last or None, converged=False)
        return Relaxed(sum(bounds), guide, last, converged=all(done))

    def bound(self, deadline: float) -> float | None:
        """The master's proven optimum at reserve 0 over every cut found so far (those of reserved
        solves included: a cut holds for every reserve), or None when a master found nothing in time."""
        if not self._separators:
            return None
        keep = np.ones((len(self.groups), self.p.n_types))
        blocks = self._blocks()
        total = 0.0
        for block in blocks:
            found = self._master(block, keep, deadline, FINAL_GAP)
            if not isinstance(found, tuple):
                return None
            total += found[0]
        return total

    def _start(self, deadline: float) -> None:
        self._separators = [_Separator(self, g) for g in range(len(self.groups))]
        self._lp_counts: dict[tuple[int, int], float] = {}
        for g, sep in enumerate(self._separators):  # at y = 0 the separation LP is the plain LP
            _, pi, _, lp_counts = sep.run({}, np.ones(self.p.n_types), deadline)
            self._lp_counts.update(lp_counts)
            self.add_cut(g, pi)
            for d in range(self.n_dims):  # and each dimension alone, priced at the type's cost
                single = np.zeros((self.p.n_types, self.n_dims))
                single[:, d] = self.p.prices
                self.add_cut(g, single)

    def _separate_between(
        self,
        block: list[int],
        counts: dict[tuple[int, int], int],
        core: dict[tuple[int, int], float],
        keep: FloatArray,
        deadline: float,
    ) -> bool:
        """Cuts from the point halfway to the core that `counts` violate; any added? A feasible
        halfway point becomes the new core."""
        added = False
        for g in block:
            keys = [k for k in self.keys if k[0] == g]
            point = {k: IN_OUT * counts[k] + (1.0 - IN_OUT) * core.get(k, 0.0) for k in keys}
            extra, pi, _, _ = self._separators[g].run(point, keep[g], deadline)
            if extra <= _TOL * self._scale:
                core.update(point)
                continue
            added |= self._keep_if_violated(g, pi, counts, keep)
        return added

    def _separate(
        self,
        block: list[int],
        counts: dict[tuple[int, int], int],
        keep: FloatArray,
        deadline: float,
        guide: Int64Array,
    ) -> bool:
        """Cuts violated at `counts` added for the block's groups (the guide filled in); any added?"""
        added = False
        for g in block:
            sep = self._separators[g]
            extra, pi, shares, _ = sep.run(counts, keep[g], deadline)
            sep.guide_into(guide, shares, counts, keep[g])
            if extra > _TOL * self._scale:
                added |= self._keep_if_violated(g, pi, counts, keep)
        return added

    def _keep_if_violated(
        self, g: int, pi: FloatArray, counts: dict[tuple[int, int], int], keep: FloatArray
    ) -> bool:
        cut = self.add_cut(g, pi)
        if self._violation(cut, counts, keep) > _TOL * self._scale:
            return True
        self.cuts.pop()  # no progress from these prices (the LP's tolerances against the exact Phi)
        return False

    @property
    def _scale(self) -> float:
        return max(float(self.p.prices.max()), 1e-9)

    def _blocks(self) -> list[list[int]]:
        """The groups solved together: all at once where fleet-wide limits link them, else one by one."""
        every = range(len(self.groups))
        return [list(every)] if self.linked else [[g] for g in every]

    @property
    def linked(self) -> bool:
        """Do fleet-wide count limits tie the groups' counts together?"""
        p = self.p
        limited = any(p.type_limit(t) is not None for t in range(p.n_types))
        return p.max_total is not None or p.min_total > 0 or bool(p.min_per_type.any()) or limited

    def _master(
        self, block: list[int], keep: FloatArray, deadline: float, gap: float
    ) -> tuple[float, dict[tuple[int, int], int]] | str | None:
        """The cheapest integer counts for the block's groups within the cuts: (proven bound, counts),
        "infeasible", or None when the solver found nothing in time."""
        from ortools.linear_solver import pywraplp

        solver = pywraplp.Solver.CreateSolver("SCIP")
        if solver is None:
            return None
        p = self.p
        y = {
            (g, t): solver.IntVar(0.0, float(math.ceil(self.upper[g, t] / keep[g, t]) + 1), "")
            for g, t in self.keys
            if g in block
        }
        for cut in self.cuts:
            if cut.group not in block or cut.phi <= 0:
                continue
            coef = self._coefficients(cut, keep)
            terms = [float(coef[t]) * y[cut.group, t] for t in range(p.n_types) if (cut.group, t) in y]
            if not terms:
                return "infeasible"
            solver.Add(sum(terms) >= cut.phi)
        empty = _count_limits(solver, p, y) if self.linked else {}
        solver.Minimize(
            sum(float(p.prices[t]) * v for (_, t), v in y.items())
            + sum(float(p.prices[t]) * v for t, v in empty.items())
        )
        solver.SetTimeLimit(max(1, int(1000 * (deadline - time.monotonic()))))
        params = pywraplp.MPSolverParameters()
        params.SetDoubleParam(params.RELATIVE_MIP_GAP, gap)
        status = solver.Solve(params)
        if status == pywraplp.Solver.INFEASIBLE:
            return "infeasible"
        if status not in (pywraplp.Solver.OPTIMAL, pywraplp.Solver.FEASIBLE):
            return None
        bound = max(0.0, float(solver.Objective().BestBound())) * (1.0 - _SAFETY)
        return bound, {k: round(v.solution_value()) for k, v in y.items()}


def _count_limits(solver: Any, problem: Problem, y: dict[tuple[int, int], Any]) -> dict[int, Any]:
    """The fleet's limits on the counts; empty instances (per type) where minimums ask for them."""
    empty: dict[int, Any] = {}
    if problem.min_total or problem.min_per_type.any():
        for t in range(problem.n_types):
            limit = problem.type_limit(t)
            empty[t] = solver.IntVar(0.0, solver.infinity() if limit is None else float(limit), "")
    every = list(y.values()) + list(empty.values())
    if problem.max_total is not None:
        solver.Add(sum(every) <= problem.max_total)
    if problem.min_total:
        solver.Add(sum(every) >= problem.min_total)
    for t in range(problem.n_types):
        of_type = [v for (_, tt), v in y.items() if tt == t] + ([empty[t]] if t in empty else [])
        limit = problem.type_limit(t)
        if of_type and limit is not None:
            solver.Add(sum(of_type) <= limit)
        if of_type and problem.min_per_type[t]:
            solver.Add(sum(of_type) >= int(problem.min_per_type[t]))
    return empty


class _Separator:
    """One group's LP at fixed counts: the least extra (fractional) instance cost its models need,
    min sum_t price[t] * s[t] subject to sum_m share[m, t] F[m, t, d] <= y[t] (x (1 - reserve)) + s[t].
    Identical models are one variable per type. Its row duals are the prices pi of the deepest cut."""

    def __init__(self, owner: CountRelaxation, g: int) -> None:
        from ortools.linear_solver import pywraplp

        self.owner = owner
        self.g = g
        p = owner.p
        frac = owner.frac
        self.classes = _classes(frac[owner.groups[g]], p.eligible[owner.groups[g]], owner.groups[g])
        solver = pywraplp.Solver.CreateSolver("GLOP")
        self.solver = solver
        self.share: list[list[tuple[int, Any]]] = []  # per class: (type, its share variable)
        terms: dict[tuple[int, int], list[Any]] = {}  # (type, dimension) -> demand terms
        for group in self.classes:
            m = int(group[0])
            mine = [
                (t, solver.NumVar(0.0, float(len(group)), "")) for t in np.flatnonzero(p.eligible[m]).tolist()
            ]
            solver.Add(sum(v for _, v in mine) == len(group))
            self.share.append(mine)
            for t, v in mine:
                for d in np.flatnonzero(frac[m, t] > 0).tolist():
                    terms.setdefault((t, d), []).append(float(frac[m, t, d]) * v)
        types = sorted({t for t, _ in terms})
        self.extra = {t: solver.NumVar(0.0, solver.infinity(), "") for t in types}
        self.rows = {(t, d): solver.Add(sum(row) - self.extra[t] <= 0.0) for (t, d), row in terms.items()}
        solver.Minimize(sum(float(p.prices[t]) * self.extra[t] for t in types))

    def run(
        self, counts: Mapping[tuple[int, int], float], keep: FloatArray, deadline: float
    ) -> tuple[float, FloatArray, list[list[tuple[float, int]]], dict[tuple[int, int], float]]:
        """(extra cost, pi [T, D], per class its (share, type), the counts plus the extra instances)
        at these counts; pi scaled so that sum_d pi[t, d] <= price[t] (the cut's coefficients at most
        the prices). Counts may be fractional."""
        p = self.owner.p
        for (t, d), row in self.rows.items():
            row.SetUb(float(counts.get((self.g, t), 0)) * (float(keep[t]) if d < len(Dim) else 1.0))
        self.solver.SetTimeLimit(max(1, int(1000 * max(0.5, deadline - time.monotonic()))))
        self.solver.Solve()
        pi = np.zeros((p.n_types, self.owner.n_dims))
        for (t, d), row in self.rows.items():
            pi[t, d] = max(0.0, -row.dual_value())
        totals = pi.sum(axis=1)
        prices = p.prices
        pi *= np.where(totals > prices, prices / np.maximum(totals, 1e-300), 1.0)[:, None]
        shares = [[(v.solution_value(), t) for t, v in mine] for mine in self.share]
        used = {
            (self.g, t): float(counts.get((self.g, t), 0)) + v.solution_value() for t, v in self.extra.items()
        }
        return float(self.solver.Objective().Value()), pi, shares, used

    def guide_into(
        self,
        guide: Int64Array,
        shares: list[list[tuple[float, int]]],
        counts: dict[tuple[int, int], int],
        keep: FloatArray,
    ) -> None:
        """The LP's split rounded to whole models: each class's whole shares first; the models left
        split (a handful: at most one per binding row) then largest first onto the type of their
        split whose instances have the most room left, so that rounding overflows few instances."""
        frac = self.owner.frac
        raw = slice(0, len(Dim))
        used = np.zeros((self.owner.p.n_types, len(Dim)))
        split: list[tuple[int, list[int]]] = []
        for group, amounts in zip(self.classes, shares, strict=True):
            start = 0
            for amount, t in sorted(amounts, reverse=True):
                take = min(len(group) - start, math.floor(amount + 1e-6))
                guide[group[start : start + take]] = t
                used[t] += frac[group[0], t, raw] * take
                start += take
            types = [t for amount, t in amounts if amount > 1e-6]
            split += [(int(m), types) for m in group[start:]]
        split.sort(key=lambda item: -float(frac[item[0], item[1], raw].max()))
        room = np.array([counts.get((self.g, t), 0) * keep[t] for t in range(len(keep))], dtype=np.float64)
        for m, types in split:
            after = [float(((used[t] + frac[m, t, raw]) - room[t]).max()) for t in types]
            t = types[int(np.argmin(after))]
            guide[m] = t
            used[t] += frac[m, t, raw]


def _classes(frac: FloatArray, eligible: BoolArray, members: Int64Array) -> list[Int64Array]:
    """Identical models (their bound fractions and eligibility) among `members`: model indices per class."""
    key = np.concatenate([frac.reshape(len(members), -1), eligible.astype(np.float64)], axis=1)
    _, inverse = np.unique(key, axis=0, return_inverse=True)
    inverse = inverse.reshape(-1)
    order = np.argsort(inverse, kind="stable")
    split = np.cumsum(np.bincount(inverse))[:-1]
    return [members[part] for part in np.split(order, split)]
