"""Pure parsing for `modelfleet top`: the server's answers (/v2/models/stats, /metrics,
/v2/workers) into rows, one `Snapshot` from them, and the `rates` between two snapshots; tested on
text the real server produces."""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass, field, replace
from typing import Any

from prometheus_client.parser import text_string_to_metric_families

from modelfleet.monitor.snapshot import (
    FRONT,
    IN_PROCESS,
    ModelRow,
    Rates,
    Snapshot,
    SourceError,
    Totals,
    Worker,
)

# -- defensive field access ---------------------------------------------------------------------------------


def _num(doc: Any, key: str) -> float | None:
    value = doc.get(key) if isinstance(doc, dict) else None
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        return None
    return float(value)


def _int(doc: Any, key: str) -> int | None:
    value = _num(doc, key)
    return None if value is None else int(value)


def _str(doc: Any, key: str) -> str | None:
    value = doc.get(key) if isinstance(doc, dict) else None
    return value if isinstance(value, str) else None


def _list(doc: Any, key: str) -> list[Any]:
    value = doc.get(key) if isinstance(doc, dict) else None
    return value if isinstance(value, list) else []


def _sum(values: Iterable[float | int | None]) -> float | None:
    present = [v for v in values if v is not None]
    return float(sum(present)) if present else None


# -- /metrics ----------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class MetricsView:
    """The few series of GET /metrics the monitor uses."""

    cpu_seconds: float | None = None
    rss_bytes: int | None = None
    start_time: float | None = None
    requests: float | None = None
    loads: float | None = None
    evictions: float | None = None
    cold_starts: float | None = None
    queue_depth: dict[str, int] = field(default_factory=dict)  # by model label (top-K and "_other")


_COUNTERS = {
    "modelfleet_requests_total": "requests",
    "modelfleet_model_loads_total": "loads",
    "modelfleet_model_evictions_total": "evictions",
    "modelfleet_model_cold_starts_total": "cold_starts",
}


def parse_metrics(text: str) -> MetricsView:
    """The monitor's series from Prometheus text; raises SourceError on text that does not parse."""
    sums: dict[str, float] = {}
    single: dict[str, float] = {}
    queue: dict[str, int] = {}
    try:
        for family in text_string_to_metric_families(text):
            for sample in family.samples:
                if sample.name in _COUNTERS:
                    key = _COUNTERS[sample.name]
                    sums[key] = sums.get(key, 0.0) + sample.value
                elif sample.name == "modelfleet_queue_depth" and "model" in sample.labels:
                    queue[sample.labels["model"]] = int(sample.value)
                else:
                    single[sample.name] = sample.value
    except (ValueError, IndexError) as exc:
        raise SourceError(f"GET /metrics: not Prometheus text ({exc})") from None
    rss = single.get("modelfleet_process_resident_memory_bytes")
    return MetricsView(
        cpu_seconds=single.get("modelfleet_process_cpu_seconds_total"),
        rss_bytes=None if rss is None else int(rss),
        start_time=single.get("modelfleet_process_start_time_seconds"),
        queue_depth=queue,
        **sums,
    )


# -- /v2/models/stats --------------------------------------------------------------------------------------


def _requests(entry: dict[str, Any]) -> int | None:
    stats = entry.get("inference_stats")
    if not isinstance(stats, dict):
        return None
    success, fail = _int(stats.get("success"), "count"), _int(stats.get("fail"), "count")
    if success is None and fail is None:
        return None
    return (success or 0) + (fail or 0)


def _last_used(entry: dict[str, Any], residency: Any) -> float | None:
    """The later of the last inference (ms) and the last use the lifecycle saw (s); 0 means never."""
    times = [_num(entry, "last_inference"), _num(residency, "last_used")]
    if times[0] is not None:
        times[0] /= 1000
    seen = [t for t in times if t]
    return max(seen) if seen else None


def parse_stats(doc: Any) -> tuple[list[ModelRow], dict[str, Any]]:
    """Resident model versions and the `memory` document of GET /v2/models/stats."""
    rows = []
    for entry in _list(doc, "model_stats"):
        name, version = _str(entry, "name"), _str(entry, "version")
        if name is None or version is None:
            continue
        residency = entry.get("residency")
        pinned = residency.get("pinned") if isinstance(residency, dict) else None
        rows.append(
            ModelRow(
                name=name,
                version=version,
                state=_str(residency, "state"),
                resident_bytes=_int(residency, "resident_bytes"),
                requests=_requests(entry),
                last_used=_last_used(entry, residency),
                pinned=pinned if isinstance(pinned, bool) else None,
                loads=_int(residency, "loads"),
                evictions=_int(residency, "evictions"),
            )
        )
    memory = doc.get("memory") if isinstance(doc, dict) else None
    return rows, memory if isinstance(memory, dict) else {}


# -- /v2/workers -------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class WorkerModel:
    worker: str
    name: str
    version: str
    resident_bytes: int | None
    in_flight: int | None


def parse_workers(doc: Any) -> tuple[list[Worker], list[WorkerModel]]:
    """Workers and the model copies each holds, from GET /v2/workers."""
    workers, copies = [], []
    for index, entry in enumerate(_list(doc, "workers")):
        if not isinstance(entry, dict):
            continue
        wid = _int(entry, "id")
        key = str(wid) if wid is not None else f"#{index}"
        models = [m for m in _list(entry, "models") if isinstance(m, dict) and _str(m, "name")]
        workers.append(
            Worker(
                key=key,
                pid=_int(entry, "pid"),
                device=_str(entry, "device"),
                state=_str(entry, "state"),
                restarts=_int(entry, "restarts"),
                budget_bytes=_int(entry, "budget_bytes"),
                used_bytes=_int(entry, "used_bytes"),
                rss_bytes=_int(entry, "rss_bytes"),
                cpu_seconds=_num(entry, "cpu_seconds"),
                in_flight=_int(entry, "in_flight"),
                models=len(models) if "models" in entry else None,
            )
        )
        for m in models:
            copies.append(
                WorkerModel(
                    worker=key,
                    name=m["name"],
                    version=_str(m, "version") or "",
                    resident_bytes=_int(m, "resident_bytes"),
                    in_flight=_int(m, "in_flight"),
                )
            )
    return workers, copies


# -- one snapshot from the four answers ---------------------------------------------------------------------


def assemble(
    *,
    taken_at: float,
    wall_time: float,
    server: Any,
    stats: Any,
    metrics: MetricsView | None,
    workers: Any | None,
    notes: tuple[str, ...] = (),
) -> Snapshot:
    """A snapshot from the parsed answers; `workers` is None when the server has no /v2/workers."""
    rows, memory = parse_stats(stats)
    m = metrics or MetricsView()
    if workers is not None:
        worker_list, copies = parse_workers(workers)
        rows = _merge_copies(rows, copies)
        if metrics is not None:
            worker_list.append(
                Worker(key=FRONT, device="front", rss_bytes=m.rss_bytes, cpu_seconds=m.cpu_seconds)
            )
    else:
        rows = [r if r.in_flight is not None else _with_queue(r, m.queue_depth) for r in rows]
        worker_list = [
            Worker(
                key=IN_PROCESS,
                device="in-process",
                state="ready",
                budget_bytes=_int(memory, "budget_bytes"),
                used_bytes=_int(memory, "used_bytes"),
                rss_bytes=m.rss_bytes,
                cpu_seconds=m.cpu_seconds,
                in_flight=sum(m.queue_depth.values()) if metrics is not None else None,
                models=_int(memory, "resident_models"),
            )
        ]
        rows = [replace(r, workers=(IN_PROCESS,)) for r in rows]
    totals = Totals(
        requests=m.requests if m.requests is not None else _sum(r.requests for r in rows),
        loads=m.loads if m.loads is not None else _num(memory, "loads"),
        evictions=m.evictions if m.evictions is not None else _num(memory, "evictions"),
        cold_starts=m.cold_starts if m.cold_starts is not None else _num(memory, "cold_starts"),
        resident_models=_int(memory, "resident_models"),
        known_models=_int(memory, "known_models"),
        budget_bytes=_int(memory, "budget_bytes"),
        used_bytes=_int(memory, "used_bytes"),
    )
    return Snapshot(
        taken_at=taken_at,
        wall_time=wall_time,
        server=_str(server, "name"),
        version=_str(server, "version"),
        started_at=m.start_time,
        worker_processes=workers is not None,
        workers=tuple(worker_list),
        models=tuple(rows),
        totals=totals,
        notes=notes,
    )


def _with_queue(row: ModelRow, queue_depth: dict[str, int]) -> ModelRow:
    depth = queue_depth.get(row.name)
    return row if depth is None else replace(row, in_flight=depth)


def _merge_copies(rows: list[ModelRow], copies: list[WorkerModel]) -> list[ModelRow]:
    """Stats rows joined with the workers that hold each model; copies the statistics do not list
    (a worker's model the front has no numbers for yet) become rows of their own."""
    by_key: dict[tuple[str, str], list[WorkerModel]] = {}
    for c in copies:
        by_key.setdefault((c.name, c.version), []).append(c)
    merged = []
    for row in rows:
        held = by_key.pop(row.key, [])
        merged.append(_joined(row, held))
    for (name, version), held in by_key.items():
        merged.append(_joined(ModelRow(name=name, version=version, state="ready"), held))
    return merged


def _joined(row: ModelRow, held: list[WorkerModel]) -> ModelRow:
    if not held:
        return row
    # the workers hold the copies, so their figures win over the front's statistics
    resident, in_flight = _sum(c.resident_bytes for c in held), _sum(c.in_flight for c in held)
    return replace(
        row,
        workers=tuple(c.worker for c in held),
        resident_bytes=int(resident) if resident is not None else row.resident_bytes,
        in_flight=int(in_flight) if in_flight is not None else row.in_flight,
    )


# -- rates ----------------------------------------------------------------------------------------------------


def rates(prev: Snapshot | None, cur: Snapshot) -> Rates:
    """Per-second rates between two snapshots. A counter that went down started again (a model
    reloaded, a server restarted): its rate counts from zero. A worker whose pid changed restarted:
    its CPU has no rate for that interval."""
    if prev is None or cur.taken_at <= prev.taken_at:
        return Rates()
    dt = cur.taken_at - prev.taken_at

    def per_s(before: float | None, after: float | None) -> float | None:
        if before is None or after is None:
            return None
        return (after - before if after >= before else after) / dt

    before_requests = {row.key: row.requests for row in prev.models}
    requests = {}
    for row in cur.models:
        if row.requests is not None:
            requests[row.key] = per_s(before_requests.get(row.key, 0), row.requests) or 0.0
    before_workers = {w.key: w for w in prev.workers}
    cpu = {}
    for w in cur.workers:
        old = before_workers.get(w.key)
        if old is None or old.cpu_seconds is None or w.cpu_seconds is None or old.pid != w.pid:
            continue
        if w.cpu_seconds >= old.cpu_seconds:
            cpu[w.key] = 100.0 * (w.cpu_seconds - old.cpu_seconds) / dt
    p, c = prev.totals, cur.totals
    return Rates(
        interval_s=dt,
        requests_per_s=requests,
        cpu_percent=cpu,
        total_requests_per_s=per_s(p.requests, c.requests),
        loads_per_s=per_s(p.loads, c.loads),
        evictions_per_s=per_s(p.evictions, c.evictions),
        cold_starts_per_s=per_s(p.cold_starts, c.cold_starts),
    )
