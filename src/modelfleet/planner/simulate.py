"""A discrete-event simulation of a plan under Zipf traffic: latency percentiles and per-instance use.

Requests arrive as a Poisson process at `rate_rps`, spread over the models by a Zipf law (rank by the
spec's traffic, ties in a seeded random order) and over each model's replicas evenly. An instance
serves from executors: on a type with accelerators each core is one executor serving only the
models placed on it (the plan's `cores`), on a CPU type its vCPUs are a pool of executors serving
all its models. An executor that comes free takes the oldest waiting request and, up to the model's
`max_batch_size`, the others of that model already waiting (dynamic batching without a delay);
models with the same `shared_base` (adapters over one base) batch together, as the server does.

A batch's time is the capacity's `batch_ms` for its size where measured sizes are given (straight
lines between them); else s1 plus per_item for each request after the first: s1 is the capacity's
`service_ms` (a profile's P50 at concurrency 1), else cores / rps (the declared throughput at the
SLO, spread over the executors); per_item is the capacity's `batch_item_ms`, else what makes full
batches sustain the declared throughput. The first request's model sets a mixed batch's time. With a
capacity's `service_cv`, each batch's time varies about that mean (a gamma law with that coefficient
of variation), as measured service times do; its `overhead_ms` (network, front proxy, the server
reading and answering) adds to each request's latency and not to the core's work. Pure numpy and
heapq; the random generator is seeded, so a run is reproducible.
"""

from __future__ import annotations

import heapq
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from modelfleet.planner.catalog import Catalog, InstanceType
from modelfleet.planner.errors import PlanInputError
from modelfleet.planner.problem import capacity_for
from modelfleet.planner.spec import FleetSpec, ModelSpec

PlannedInstance = tuple[str, Sequence[str], Sequence[Sequence[str]]]
"""An instance of a plan: its type, its models, and its models per accelerator core (or none)."""


@dataclass(frozen=True, slots=True)
class Service:
    """How one executor serves one model: a batch of k takes times_s[k - 1]."""

    times_s: tuple[float, ...]  # one per batch size, 1 .. max_batch
    cv: float = 0.0  # coefficient of variation of a batch's time (0: always the same)
    overhead_s: float = 0.0  # each request's time outside its batch (network, proxy, reading, answering)

    @property
    def max_batch(self) -> int:
        return len(self.times_s)

    @property
    def first_s(self) -> float:
        return self.times_s[0]


def batch_times(points: dict[int, float], max_batch: int) -> tuple[float, ...]:
    """Seconds for batches of 1 .. max_batch from measured (size -> seconds) points: straight lines
    between them, the nearest segment's slope beyond them (one point: time in proportion to size),
    never below zero or shorter than a smaller batch."""
    sizes = sorted(points)
    if len(sizes) == 1:
        k0 = sizes[0]
        return tuple(points[k0] * k / k0 for k in range(1, max_batch + 1))
    out: list[float] = []
    for k in range(1, max_batch + 1):
        j = min(max(1, sum(1 for x in sizes if x < k)), len(sizes) - 1)  # the segment [j-1, j]
        a, b = sizes[j - 1], sizes[j]
        t = points[a] + (points[b] - points[a]) * (k - a) / (b - a)
        out.append(max(t, out[-1] if out else 0.0, 0.0))
    return tuple(out)


@dataclass(frozen=True, slots=True)
class Pool:
    """Executors that serve the same models (one accelerator core, or a CPU instance's vCPUs)."""

    instance: int
    executors: int
    models: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class InstanceStats:
    type: str
    models: int
    requests: int
    utilisation: float  # busy executor-seconds within the run / (executors x duration)
    offered: float  # its busiest pool's (core's) work that arrived / its capacity: over 1, a queue only grows
    p90_ms: float | None
    mean_batch: float = 0.0  # the mean size of the batch a request ran in (as server statistics count it)


@dataclass(frozen=True, slots=True)
class Simulation:
    rate_rps: float
    duration_s: float
    zipf_s: float
    seed: int
    requests: int  # measured (arrived after the warm-up)
    p50_ms: float
    p90_ms: float
    p99_ms: float
    mean_ms: float
    instances: list[InstanceStats]
    latencies_ms: np.ndarray  # the measured requests', for charts

    @property
    def max_utilisation(self) -> float:
        return max((i.utilisation for i in self.instances), default=0.0)

    @property
    def overloaded(self) -> list[int]:
        """Instances offered more work than they do (their queues grow without end)."""
        return [k for k, i in enumerate(self.instances) if i.offered > 1.0]


def zipf_rates(
    spec: FleetSpec,
    rate_rps: float,
    zipf_s: float,
    rng: np.random.Generator,
    ranking: Sequence[str] | None = None,
) -> dict[str, float]:
    """Requests/s per model name: Zipf(zipf_s) over the models ranked by their declared traffic, ties
    in a random order; or ranked as `ranking` lists them (all the spec's models, each once), as
    `modelfleet bench --popularity zipf` ranks its list of models."""
    names: list[str] = []
    traffic: list[float] = []
    for entry in spec.models:
        for name in entry.names():
            names.append(name)
            traffic.append(entry.traffic_rps)
    weights = 1.0 / np.arange(1, len(names) + 1, dtype=np.float64) ** zipf_s
    weights = weights / weights.sum() * rate_rps
    if ranking is not None:
        if len(ranking) != len(names) or set(ranking) != set(names):
            raise PlanInputError(
                f"the Zipf ranking must list each of the fleet's {len(names):,} models once "
                f"(it lists {len(ranking):,} names, {len(set(ranking) - set(names)):,} not in the fleet)"
            )
        return dict(zip(ranking, weights.tolist(), strict=True))
    ties = rng.random(len(names))
    order = np.lexsort((ties, -np.asarray(traffic)))  # highest traffic first, ties shuffled
    rates = np.empty(len(names))
    rates[order] = weights
    return dict(zip(names, rates.tolist(), strict=True))


def listed_ranking(spec: FleetSpec) -> list[str]:
    """The spec's models in its order: highest declared traffic first, ties as listed."""
    named = [(-entry.traffic_rps, k, name) for k, entry in enumerate(spec.models) for name in entry.names()]
    return [name for *_, name in sorted(named)]


def service_for(entry: ModelSpec, t: InstanceType) -> Service:
    cap = capacity_for(entry, t)
    label = entry.name or entry.pattern
    if cap is None:
        raise PlanInputError(f"model '{label}' has no capacity on {t.name}, where the plan puts it")
    executors = t.cores
    if cap.batch_ms:
        points = {k: ms / 1e3 for k, ms in cap.batch_ms.items()}
        return Service(batch_times(points, cap.max_batch_size), cap.service_cv, cap.overhead_ms / 1e3)
    rps = cap.rps if cap.rps is not None else (cap.rps_per_core * t.cores if cap.rps_per_core else None)
    if cap.service_ms is None and rps is None:
        raise PlanInputError(
            f"model '{label}' on {t.name}: no service time to simulate with: give capacity.service_ms "
            "(or rps, or a profile)"
        )
    first = cap.service_ms / 1e3 if cap.service_ms is not None else executors / float(rps or 1.0)
    per_item = first
    if cap.batch_item_ms is not None:
        per_item = cap.batch_item_ms / 1e3
    elif cap.max_batch_size > 1 and rps is not None:
        full = executors * cap.max_batch_size / rps  # a full batch's time at the declared throughput
        per_item = max(0.0, (full - first) / (cap.max_batch_size - 1))
    times = tuple(first + k * per_item for k in range(cap.max_batch_size))
    return Service(times, cap.service_cv, cap.overhead_ms / 1e3)


def pools(instances: Sequence[PlannedInstance], catalog: Catalog) -> list[Pool]:
    """Executors per instance: (type, models, models per core) -> one pool per core, or per CPU instance."""
    types = catalog.by_name()
    out: list[Pool] = []
    for k, (type_name, models, cores) in enumerate(instances):
        t = types.get(type_name)
        if t is None:
            raise PlanInputError(f"the plan's instance type '{type_name}' is not in the catalogue")
        if t.accelerators is None:
            out.append(Pool(k, t.vcpus, tuple(models)))
            continue
        layout = [list(c) for c in cores] if cores else [list(models[i :: t.cores]) for i in range(t.cores)]
        out.extend(Pool(k, 1, tuple(core)) for core in layout if core)
    return out


def plan_instances(document: dict[str, Any]) -> list[PlannedInstance]:
    """(type, models, models per core) of each instance of a plan.yaml / --json document."""
    return [
        (i["type"], list(i["models"]), [list(c) for c in i.get("cores", [])]) for i in document["instances"]
    ]


def simulate(
    spec: FleetSpec,
    catalog: Catalog,
    instances: Sequence[PlannedInstance],
    rate_rps: float,
    *,
    duration_s: float = 20.0,
    warmup_s: float | None = None,
    zipf_s: float = 1.1,
    seed: int = 0,
    ranking: Sequence[str] | None = None,
) -> Simulation:
    """Simulate `instances` (type, models, models per core or ()) at `rate_rps` for `duration_s`.
    `ranking`: the models from most to least requested (default: by declared traffic, ties shuffled)."""
    if rate_rps <= 0 or duration_s <= 0:
        raise PlanInputError(
            f"--simulate needs a positive rate and duration (got {rate_rps:g}, {duration_s:g})"
        )
    rng = np.random.default_rng(seed)
    warm = 0.1 * duration_s if warmup_s is None else warmup_s
    rates = zipf_rates(spec, rate_rps, zipf_s, rng, ranking)
    entries = {name: entry for entry in spec.models for name in entry.names()}
    replicas: dict[str, int] = {}
    for _, models, _ in instances:
        for name in models:
            replicas[name] = replicas.get(name, 0) + 1
    unknown = sorted(set(replicas) - set(entries))
    if unknown:
        raise PlanInputError(f"the plan holds models the fleet spec lacks: {', '.join(unknown[:5])}")
    types = catalog.by_name()
    latencies: list[np.ndarray] = []
    busy = np.zeros(len(instances))  # executor-seconds within the run
    offered = np.zeros(len(instances))  # the busiest pool's
    per_instance: list[list[np.ndarray]] = [[] for _ in instances]
    batched: list[list[np.ndarray]] = [[] for _ in instances]  # the batch size each request ran in
    for pool in pools(instances, catalog):
        t = types[instances[pool.instance][0]]
        services = [service_for(entries[name], t) for name in pool.models]
        lam = np.array([rates[name] / replicas[name] for name in pool.models])
        groups = _batch_groups([entries[name].shared_base or name for name in pool.models])
        lat, arrivals, sizes, work = _run_pool(pool.executors, services, groups, lam, duration_s, rng)
        kept = lat[arrivals >= warm]
        latencies.append(kept)
        per_instance[pool.instance].append(kept)
        batched[pool.instance].append(sizes[arrivals >= warm])
        busy[pool.instance] += work[0]
        offered[pool.instance] = max(offered[pool.instance], work[1] / (pool.executors * duration_s))
    measured = np.concatenate(latencies) * 1e3 if latencies else np.zeros(0)
    if measured.size == 0:
        raise PlanInputError(
            f"no request arrived after the warm-up at {rate_rps:g} req/s in {duration_s:g} s"
        )
    stats = []
    for k, (type_name, models, _) in enumerate(instances):
        t = types[type_name]
        executors = t.cores if t.accelerators is not None else t.vcpus
        mine = np.concatenate(per_instance[k]) * 1e3 if per_instance[k] else np.zeros(0)
        sizes = np.concatenate(batched[k]) if batched[k] else np.zeros(0)
        stats.append(
            InstanceStats(
                type=type_name,
                models=len(models),
                requests=int(mine.size),
                utilisation=float(busy[k] / (executors * duration_s)),
                offered=float(offered[k]),
                p90_ms=float(np.percentile(mine, 90)) if mine.size else None,
                mean_batch=float(sizes.mean()) if sizes.size else 0.0,
            )
        )
    p50, p90, p99 = np.percentile(measured, [50, 90, 99]).tolist()
    return Simulation(
        rate_rps=rate_rps,
        duration_s=duration_s,
        zipf_s=zipf_s,
        seed=seed,
        requests=int(measured.size),
        p50_ms=p50,
        p90_ms=p90,
        p99_ms=p99,
        mean_ms=float(measured.mean()),
        instances=stats,
        latencies_ms=measured,
    )


def _batch_groups(keys: list[str]) -> np.ndarray:
    """Per model, the index of its batching group (models with the same key batch together)."""
    index: dict[str, int] = {}
    return np.array([index.setdefault(key, len(index)) for key in keys], dtype=np.int64)


def _run_pool(
    executors: int,
    services: list[Service],
    groups: np.ndarray,
    lam: np.ndarray,
    duration_s: float,
    rng: np.random.Generator,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Latency, arrival time and batch size of each request to one pool; its busy executor-seconds
    within the run and in all (an overloaded pool works on after the run's end). `groups`: each
    model's batching group."""
    total = float(lam.sum())
    n = int(rng.poisson(total * duration_s)) if total > 0 else 0
    if n == 0:
        return np.zeros(0), np.zeros(0), np.zeros(0), np.zeros(2)
    arrive = np.sort(rng.uniform(0.0, duration_s, n))
    model = rng.choice(len(services), size=n, p=lam / total) if len(services) > 1 else np.zeros(n, np.int64)
    group = groups[model]
    by_group = np.argsort(group, kind="stable")  # per group, its requests in arrival order
    ends = np.cumsum(np.bincount(group, minlength=int(groups.max()) + 1)).tolist()
    ptr = [0, *ends[:-1]]
    arrive_l = arrive.tolist()
    model_l = model.tolist()
    group_l = group.tolist()
    order = by_group.tolist()
    times = [sv.times_s for sv in services]
    cv = [sv.cv for sv in services]
    # a batch's time varies as a gamma law of mean 1 and the model's CV (drawn once, used in turn)
    jitter = {c: iter(rng.gamma(1 / c**2, c**2, n).tolist()) for c in set(cv) if c > 0}
    done = [math.nan] * n
    size = [0] * n
    free = [0.0] * executors
    busy = 0.0
    within = 0.0
    head = 0
    while True:
        while head < n and done[head] == done[head]:  # skip requests served (not NaN)
            head += 1
        if head >= n:
            break
        start = max(heapq.heappop(free), arrive_l[head])
        g = group_l[head]
        first = ptr[g]
        stop = min(first + services[model_l[head]].max_batch, ends[g])
        k = first + 1
        while k < stop and arrive_l[order[k]] <= start:
            k += 1
        took = times[model_l[head]][k - first - 1]  # the first request's model sets the batch's time
        if cv[model_l[head]] > 0:
            took *= next(jitter[cv[model_l[head]]])
        finish = start + took
        for j in order[first:k]:
            done[j] = finish
            size[j] = k - first
        ptr[g] = k
        busy += took
        within += max(0.0, min(finish, duration_s) - start)
        heapq.heappush(free, finish)
    outside = np.array([sv.overhead_s for sv in services])[model]
    return np.asarray(done) - arrive + outside, arrive, np.asarray(size), np.array([within, busy])
