"""The fast planner: pick a type per model, first-fit decreasing per type, then local improvement.

Type choice comes first from the guides (the relaxation with whole instances: planner.benders), then
the volume-balanced greedy, the lower bound's dual prices (the type where a model is cheapest to
charge), the plain cost-per-fraction ratio and every single type. Improvement (planner.improve)
empties the least used instances into the others, merges pairs into one cheaper instance, and moves
each instance to the cheapest type that holds its models; planner.repack then empties the least
filled instances by repacking them with their neighbours exactly. Scales to 100,000 models: fits
are checked with numpy over a window of recently opened instances.
"""

from __future__ import annotations

import functools
import time
from collections.abc import Callable, Sequence

import numpy as np

from modelfleet.planner import completion, fill
from modelfleet.planner.bins import Bin, pad, within_limits
from modelfleet.planner.bound import bound_fractions
from modelfleet.planner.cores import assign_cores, place_on_cores
from modelfleet.planner.improve import Improver
from modelfleet.planner.problem import FloatArray, Int64Array, Problem
from modelfleet.planner.repack import eliminate, retype
from modelfleet.planner.result import OPTIMAL_TOLERANCE, Packing, Status

_WINDOW = 256  # open instances first-fit looks at (earlier ones are nearly full)
DOT_PRODUCT_LIMIT = 5_000  # items per (group, type) up to which the quadratic dot-product packing runs
KNAPSACK_ITEMS_PER_BIN = 24  # knapsack fills when instances hold at most this many items on average
COMPLETION_ITEMS_PER_BIN = 8  # bin completion (planner.completion) where instances hold at most this many
ONE_DIMENSION = 1.05  # ... when the items' sizes add up to at most this times the volume
KNAPSACK_LIMIT = 3_000  # ... and the (group, type) has at most this many items
KNAPSACK_TIME_S = 0.05  # per instance
KNAPSACK_FLEET_LIMIT = (
    10_000  # replicas in the fleet beyond which the knapsack is too slow (0.05 s per instance)
)
Progress = Callable[[str], None]
Guide = tuple[str, Callable[[], Int64Array | None]]  # a label, and a type per model (None: no guide)


class Packer:
    """Packings of one problem; holds the per-model data the passes share."""

    def __init__(self, problem: Problem) -> None:
        self.p = problem
        self.frac = problem.fractions()
        self.prices = problem.prices
        self.deadline: float | None = None  # the knapsack fill falls back to greedy past it
        self.total_items = int(problem.replicas.sum())
        self.special = np.zeros(problem.n_models, dtype=bool)  # replicas or never-with: check members
        self.special[problem.replicas > 1] = True
        for m in problem.conflicts:
            self.special[m] = True

    # --- type choice -----------------------------------------------------------------------------

    def choice_ratio(self) -> Int64Array:
        """Per model, the type where its largest fraction costs least."""
        score = self.prices[None, :] * self.frac.max(axis=2)
        score[~self.p.eligible] = np.inf
        return np.asarray(score.argmin(axis=1), dtype=np.int64)

    def choice_dual(self, pi: FloatArray) -> Int64Array:
        """Per model, the type where the bound's prices charge it least (ties: the ratio)."""
        charge = np.einsum("mtd,td->mt", bound_fractions(self.p), pi)
        ratio = self.prices[None, :] * self.frac.max(axis=2)
        score = charge + 1e-6 * ratio
        score[~self.p.eligible] = np.inf
        return np.asarray(score.argmin(axis=1), dtype=np.int64)

    def choice_balanced(self, deadline: float, passes: int = 2) -> Int64Array:
        """Per model, the type where it adds least to its (group, type)'s cost in volume: price x the
        largest dimension's total (the bound's dimensions, so whole-GPU replicas count as whole),
        largest models first, then `passes` rounds moving each model to its best type given all
        the others. Fills memory-heavy types' spare compute with compute-heavy models, as the LP does."""
        p = self.p
        w = bound_fractions(p) * p.replicas[:, None, None]
        w[~p.eligible] = np.inf
        ratio = self.prices[None, :] * w.max(axis=2)
        order = np.argsort(-ratio.min(axis=1), kind="stable").tolist()
        totals = np.zeros((len(p.group_names), p.n_types, w.shape[2]))
        choice = np.full(p.n_models, -1, dtype=np.int64)
        for rnd in range(passes + 1):
            if rnd and time.monotonic() > deadline:
                break
            for m in order:
                g = p.group[m]
                if choice[m] >= 0:
                    totals[g, choice[m]] -= w[m, choice[m]]
                now = totals[g]
                extra = self.prices * ((now + w[m]).max(axis=1) - now.max(axis=1)) + 1e-9 * ratio[m]
                t = int(np.argmin(extra))
                choice[m] = t
                totals[g, t] += w[m, t]
        return choice

    def choice_single(self, t: int) -> Int64Array:
        choice = self.choice_ratio()
        choice[self.p.eligible[:, t]] = t
        return choice

    # --- first-fit decreasing --------------------------------------------------------------------

    def pack(self, choice: Int64Array, plain_ffd: bool = False) -> list[Bin]:
        """Per (isolation group, type): dot-product packing (first-fit decreasing for very many items,
        or always with `plain_ffd`); over a type's limit, items move on to their next type."""
        p = self.p
        bins: list[Bin] = []
        counts = np.zeros(p.n_types, dtype=np.int64)
        pending = choice.copy()
        for _ in range(p.n_types):
            left: list[int] = []
            for g in range(len(p.group_names)):
                for t in range(p.n_types):
                    models = np.flatnonzero((pending == t) & (p.group == g))
                    if models.size and plain_ffd:
                        left.extend(self._ffd(models, t, g, bins, counts))
                    elif models.size:
                        left.extend(self._fill(models, t, g, bins, counts))
            if not left:
                return bins
            self._reroute(pending, left, counts)
        raise _NoRoom(sorted(set(int(m) for m in np.flatnonzero(pending >= 0))))

    def _room(self, t: int, counts: Int64Array) -> int | None:
        """Instances of type t the type's limit still allows, or None."""
        limit = self.p.type_limit(t)
        return None if limit is None else max(0, limit - int(counts[t]))

    def _reroute(self, pending: Int64Array, left: list[int], counts: Int64Array) -> None:
        pending[:] = -1
        for m in set(left):
            room = [int(t) for t in np.flatnonzero(self.p.eligible[m]) if self._room(int(t), counts) != 0]
            if not room:
                raise _NoRoom([m])
            score = [self.prices[t] * self.frac[m, t].max() for t in room]
            pending[m] = room[int(np.argmin(score))]

    def _fill(self, models: Int64Array, t: int, g: int, bins: list[Bin], counts: Int64Array) -> list[int]:
        n_items = int(self.p.replicas[models].sum())
        volume = float((self.frac[models, t, :] * self.p.replicas[models, None]).sum(axis=0).max())
        few_per_bin = (
            n_items <= KNAPSACK_LIMIT
            and n_items <= KNAPSACK_ITEMS_PER_BIN * max(volume, 1.0)
            and self.total_items <= KNAPSACK_FLEET_LIMIT
        )
        if few_per_bin and (self.deadline is None or time.monotonic() < self.deadline):
            return self._knapsack(models, t, g, bins, counts)
        # bin completion packs by each item's largest fraction: where one dimension binds for all
        # (sizes add up to about the volume), not where memory-heavy and compute-heavy items mix
        sizes = float((self.frac[models, t, :].max(axis=1) * self.p.replicas[models]).sum())
        if n_items <= COMPLETION_ITEMS_PER_BIN * max(volume, 1.0) and sizes <= ONE_DIMENSION * volume:
            return self._completion(models, t, g, bins, counts)
        if n_items <= DOT_PRODUCT_LIMIT:
            return self._dot_product(models, t, g, bins, counts)
        return self._ffd(models, t, g, bins, counts)

    def _knapsack(self, models: Int64Array, t: int, g: int, bins: list[Bin], counts: Int64Array) -> list[int]:
        """Each instance filled by fill.best_subset over candidates of the remaining items."""
        p = self.p
        items = np.repeat(models, p.replicas[models])
        need = p.demand[items, t, :]
        frac = self.frac[items, t, :]
        cap = p.capacity[t]
        left = np.ones(len(items), dtype=bool)
        while left.any():
            if self._room(t, counts) == 0:
                break
            rest = np.flatnonzero(left)
            total = frac[rest].sum(axis=0)
            weight = frac @ (total / max(float(total.sum()), 1e-12))
            volume = float(frac[rest].sum(axis=0).max())
            pool = fill.candidates(weight, rest, len(rest) / max(volume, 1.0))
            greedy = self._greedy(items[pool], need[pool], frac[pool], cap)
            if self.deadline is not None and time.monotonic() > self.deadline:
                picked = greedy
            else:
                picked = fill.best_subset(
                    need[pool], weight[pool], cap, self._exclusive(items[pool]), greedy, KNAPSACK_TIME_S
                )
            picked = _keep_on_cores(p, t, picked, items[pool])  # what fits no core waits
            if not picked:
                break
            counts[t] += 1
            chosen = pool[picked]
            bins.append(Bin(t, g, [int(m) for m in items[chosen]], need[chosen].sum(axis=0)))
            left[chosen] = False
        return [int(m) for m in items[left]]

    def _completion(
        self, models: Int64Array, t: int, g: int, bins: list[Bin], counts: Int64Array
    ) -> list[int]:
        """Large items by bin completion (planner.completion); replicas and never-with models, which
        must be kept apart, by first-fit decreasing after them."""
        p = self.p
        plain = models[~self.special[models]]
        packed, left = completion.pack_large(self.frac[plain, t, :], self._room(t, counts))
        for positions in packed:
            members = [int(m) for m in plain[positions]]
            bins.append(Bin(t, g, members, p.demand[members, t, :].sum(axis=0)))
        counts[t] += len(packed)
        overflow = [int(m) for m in plain[left]]
        special = models[self.special[models]]
        if special.size:
            overflow += self._ffd(special, t, g, bins, counts)
        return overflow

    def _greedy(self, models: Int64Array, need: Int64Array, frac: FloatArray, cap: Int64Array) -> list[int]:
        """Dot-product fill of one instance from these candidates (positions into them)."""
        residual = cap.copy()
        scale = np.where(cap > 0, cap, 1).astype(np.float64)
        taken: list[int] = []
        members: list[int] = []
        free = np.ones(len(models), dtype=bool)
        norms = np.sqrt(np.linalg.norm(frac, axis=1)) + 1e-12
        while True:
            ok = free & (need <= residual).all(axis=1)
            if not ok.any():
                return taken
            score = np.where(ok, _alignment(frac, residual / scale, norms), -np.inf)
            pick = -1
            for k in np.argsort(-score)[: int(ok.sum())].tolist():
                m = int(models[k])
                if not self.special[m] or self.compatible(m, members):
                    pick = k
                    break
            if pick < 0:
                return taken
            taken.append(pick)
            members.append(int(models[pick]))
            residual -= need[pick]
            free[pick] = False

    def _exclusive(self, models: Int64Array) -> list[tuple[int, int]]:
        """Pairs of positions that may not share an instance: replicas of one model, never-with."""
        pairs: list[tuple[int, int]] = []
        special = [k for k, m in enumerate(models.tolist()) if self.special[m]]
        for x, a in enumerate(special):
            for b in special[x + 1 :]:
                ma, mb = int(models[a]), int(models[b])
                if ma == mb or mb in self.p.conflicts.get(ma, ()):
                    pairs.append((a, b))
        return pairs

    def _dot_product(
        self, models: Int64Array, t: int, g: int, bins: list[Bin], counts: Int64Array
    ) -> list[int]:
        """Fill one instance at a time with the item best aligned with its free room (vector packing's
        dot-product rule: balances memory against compute better than decreasing size)."""
        p = self.p
        items = np.repeat(models, p.replicas[models])
        need = p.demand[items, t, :]
        frac = self.frac[items, t, :]
        cap = p.capacity[t]
        scale = np.where(cap > 0, cap, 1).astype(np.float64)
        left = np.ones(len(items), dtype=bool)
        norms = np.sqrt(np.linalg.norm(frac, axis=1)) + 1e-12
        while left.any():
            if self._room(t, counts) == 0:
                break
            counts[t] += 1
            current = Bin(t, g, [], np.zeros_like(cap))
            residual = cap.copy()
            while True:
                ok = left & (need <= residual).all(axis=1)
                if not ok.any():
                    break
                score = np.where(ok, _alignment(frac, residual / scale, norms), -np.inf)
                pick = -1
                for k in np.argsort(-score)[: int(ok.sum())].tolist():
                    m = int(items[k])
                    if not self.special[m] or self.compatible(m, current.members):
                        pick = k
                        break
                if pick < 0:
                    break
                current.members.append(int(items[pick]))
                current.load += need[pick]
                residual -= need[pick]
                left[pick] = False
            bins.append(current)
        return [int(m) for m in items[left]]

    def _ffd(self, models: Int64Array, t: int, g: int, bins: list[Bin], counts: Int64Array) -> list[int]:
        p = self.p
        dem = p.demand[:, t, :]
        items = np.repeat(models, p.replicas[models])
        key = self.frac[items, t, :].max(axis=1)
        items = items[np.argsort(-key, kind="stable")]
        cap = p.capacity[t]
        residual = np.empty((len(items), cap.size), dtype=np.int64)
        mine: list[Bin] = []
        overflow: list[int] = []
        for m in items.tolist():
            need = dem[m]
            lo = max(0, len(mine) - _WINDOW)
            fits = np.flatnonzero((residual[lo : len(mine)] >= need).all(axis=1)) + lo
            target = -1
            for b in fits.tolist():
                if not self.special[m] or self.compatible(m, mine[b].members):
                    target = b
                    break
            if target < 0:
                if self._room(t, counts) == 0:
                    overflow.append(m)
                    continue
                counts[t] += 1
                mine.append(Bin(t, g, [], np.zeros_like(cap)))
                residual[len(mine) - 1] = cap
                target = len(mine) - 1
            mine[target].members.append(m)
            mine[target].load += need
            residual[target] -= need
        bins.extend(mine)
        return overflow

    def compatible(self, m: int, members: list[int]) -> bool:
        if m in members:
            return False
        bad = self.p.conflicts.get(m)
        return not bad or bad.isdisjoint(members)


class _NoRoom(Exception):
    def __init__(self, models: list[int]) -> None:
        super().__init__(models)
        self.models = models


def heuristic(
    problem: Problem,
    pi: FloatArray,
    deadline: float,
    progress: Progress | None = None,
    guides: Sequence[Guide] = (),
    bound: float = 0.0,
) -> list[Bin] | None:
    """The cheapest packing found before `deadline`, or None when the limits leave no room. `guides`
    (type mixes computed on demand, from the relaxation with whole instances) are tried first; then
    the volume-balanced types, the dual prices' choice, the cost ratio's and each single type."""
    packer = Packer(problem)
    packer.deadline = deadline
    improver = Improver(packer)
    candidates: list[Guide] = list(guides)
    candidates += [
        ("volume-balanced types", lambda: packer.choice_balanced(deadline)),
        ("dual prices", lambda: packer.choice_dual(pi)),
        ("cost ratio", packer.choice_ratio),
    ]
    for t in np.argsort(problem.prices).tolist():
        candidates.append((problem.types[t].name, functools.partial(packer.choice_single, t)))
    best: list[Bin] | None = None
    fallback: list[Bin] | None = None
    best_cost = np.inf
    longest = 0.0  # the slowest candidate's packing so far: one that would end past the deadline is not begun
    for label, choose in candidates:
        began = time.monotonic()
        if best is not None and (began + longest > deadline or best_cost <= bound * (1 + OPTIMAL_TOLERANCE)):
            break  # out of time, or proven optimal already
        choice = choose()
        if choice is None:
            continue
        try:
            bins = packer.pack(choice)
        except _NoRoom:
            continue
        longest = max(longest, time.monotonic() - began)
        packed = pad(problem, polish(problem, improver, bins, deadline))
        bins = pad(problem, _on_cores(problem, packed))
        cost = improver.cost(bins)
        if cost < best_cost - 1e-9 and within_limits(problem, bins):
            best, best_cost = bins, cost
            if progress is not None:
                progress(f"heuristic ({label}): ${cost:,.3f}/h")
        elif fallback is None and within_limits(problem, packed):
            fallback = packed  # within the limits until copies go onto cores: solve says so
    return best if best is not None else fallback


def polish(problem: Problem, improver: Improver, bins: list[Bin], deadline: float) -> list[Bin]:
    """Local improvement, then the least filled instances emptied or retyped (planner.repack), then
    improvement again."""
    bins = eliminate(problem, improver.improve(bins, deadline), deadline)
    return improver.improve(retype(problem, bins, deadline), deadline)


def _keep_on_cores(problem: Problem, t: int, picked: list[int], models: Int64Array) -> list[int]:
    """The picked positions less the copies that fit no accelerator core of a type-t instance."""
    if not problem.accel_cores[t]:
        return picked
    _, spill = assign_cores(problem, t, [int(models[k]) for k in picked])
    kept = []
    for k in picked:
        if int(models[k]) in spill:
            spill.remove(int(models[k]))
        else:
            kept.append(k)
    return kept


def _on_cores(problem: Problem, bins: list[Bin]) -> list[Bin]:
    """The packing as the plan will be: copies that fit no accelerator core of their instance moved
    (planner.cores), so that candidates are compared at their real cost."""
    packing = Packing([(b.type, b.members) for b in bins], 0.0, "", Status.FEASIBLE)
    placed, _ = place_on_cores(problem, packing)
    if placed is packing:
        return bins
    return [
        Bin(
            t,
            int(problem.group[members[0]]) if members else 0,
            members,
            problem.demand[members, t, :].sum(axis=0),
        )
        for t, members in placed.bins
    ]


def _alignment(frac: FloatArray, free: FloatArray, norms: FloatArray) -> FloatArray:
    """How well each item suits an instance with `free` room left (fractions): the dot product with
    the free room to the 4th power, which favours items heavy where the instance is emptiest and so
    keeps memory and compute filling together; divided by the root of the item's norm, which
    favours large items a little less than a plain dot product (measured on the 3,000-model bench:
    17 instances for 16.2 instances' worth of memory, against 21 with the plain rule)."""
    return np.asarray((frac @ free**4) / norms, dtype=np.float64)


def first_fit_decreasing(problem: Problem) -> list[Bin] | None:
    """The textbook baseline: each model on its cheapest type per fraction, first-fit decreasing, no
    improvement (what exact and heuristic plans are compared with in docs/benchmarks.md)."""
    packer = Packer(problem)
    try:
        return pad(problem, packer.pack(packer.choice_ratio(), plain_ffd=True))
    except _NoRoom:
        return None
