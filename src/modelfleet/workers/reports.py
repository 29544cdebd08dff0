"""The front's documents in worker mode, made from the workers' last reports and the router's
placements: merged statistics, memory totals, the index and the /v2/workers document."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import msgspec

from modelfleet.engine.records import ModelRecord, State
from modelfleet.engine.stats import ModelStats
from modelfleet.protocol.documents import (
    BatchStats,
    Duration,
    IndexEntry,
    InferenceStats,
    Memory,
    ModelResidency,
    ModelStatistics,
    Statistics,
    Worker,
    WorkerModel,
    Workers,
)
from modelfleet.workers import messages as m
from modelfleet.workers.router import WorkerLoad
from modelfleet.workers.supervisor import Slot, WorkerState

Reports = Mapping[int, m.StatsReply]
MEMORY_TOTALS = ("used_bytes", "blob_bytes", "loads", "load_failures", "cold_starts", "evictions")


def _plus(a: Duration, b: Duration) -> Duration:
    return Duration(count=a.count + b.count, ns=a.ns + b.ns)


def _batch_plus(a: BatchStats, b: BatchStats) -> BatchStats:
    return BatchStats(
        batch_size=a.batch_size,
        compute_input=_plus(a.compute_input, b.compute_input),
        compute_infer=_plus(a.compute_infer, b.compute_infer),
        compute_output=_plus(a.compute_output, b.compute_output),
    )


def merge_statistics(into: ModelStatistics, other: ModelStatistics) -> ModelStatistics:
    """Two copies' V2 statistics entries summed into one (last_inference: the later one;
    `into`'s name, version and residency)."""
    a, b = into.inference_stats, other.inference_stats
    phases = {f: _plus(getattr(a, f), getattr(b, f)) for f in InferenceStats.__struct_fields__}
    sizes = {s.batch_size: s for s in into.batch_stats}
    for batch in other.batch_stats:
        mine = sizes.get(batch.batch_size)
        sizes[batch.batch_size] = batch if mine is None else _batch_plus(mine, batch)
    return msgspec.structs.replace(
        into,
        last_inference=max(into.last_inference, other.last_inference),
        inference_count=into.inference_count + other.inference_count,
        execution_count=into.execution_count + other.execution_count,
        inference_stats=InferenceStats(**phases),
        batch_stats=[sizes[s] for s in sorted(sizes)],
    )


def summed_counts(reports: Reports) -> dict[tuple[str, str], ModelStats]:
    """Each (model, version)'s counts summed over its copies in the reports."""
    totals: dict[tuple[str, str], ModelStats] = {}
    for report in reports.values():
        for use in report.models:
            if not use.counts:
                continue
            counts = ModelStats.from_wire(use.counts)
            total = totals.get((use.name, use.version))
            if total is None:
                totals[(use.name, use.version)] = counts
            else:
                total.absorb(counts)
    return totals


def model_stats(reports: Reports, name: str | None, version: str | None) -> list[ModelStatistics]:
    """The statistics extension's entries, merged over the copies (with the workers holding them)."""
    merged: dict[tuple[str, str], tuple[ModelStatistics, ModelResidency]] = {}
    for worker, report in sorted(reports.items()):
        for use in report.models:
            if (name is not None and use.name != name) or (version is not None and use.version != version):
                continue
            key = (use.name, use.version)
            statistics = msgspec.convert(use.statistics, ModelStatistics)
            if key not in merged:
                residency = msgspec.convert(use.residency, ModelResidency)
                merged[key] = statistics, msgspec.structs.replace(residency, workers=[worker])
                continue
            entry, residency = merged[key]
            merged[key] = (
                merge_statistics(entry, statistics),
                msgspec.structs.replace(
                    residency,
                    resident_bytes=residency.resident_bytes + use.resident_bytes,
                    workers=[*(residency.workers or ()), worker],
                ),
            )
    return [msgspec.structs.replace(merged[k][0], residency=merged[k][1]) for k in sorted(merged)]


def memory(reports: Reports, budget_bytes: int, resident_models: int, known_models: int) -> Memory:
    """The workers' memory documents summed, with the front's own counts."""
    total = {key: sum(int(r.memory.get(key, 0)) for r in reports.values()) for key in MEMORY_TOTALS}
    return Memory(
        budget_bytes=budget_bytes, resident_models=resident_models, known_models=known_models, **total
    )


def statistics(reports: Reports, name: str | None, version: str | None, memory: Memory) -> Statistics:
    """The statistics extension over the workers' last reports."""
    return Statistics(model_stats=model_stats(reports, name, version), memory=memory)


def index(
    records: Mapping[str, ModelRecord[Any]], placements: Callable[[str], list[int]], ready_only: bool
) -> list[IndexEntry]:
    """The repository index: each model's versions and the workers they are resident on."""
    entries: list[IndexEntry] = []
    for name in sorted(records):
        record = records[name]
        workers = placements(name)
        if not record.ready or record.held:
            if not ready_only:
                entries.append(
                    IndexEntry(name=name, state=record.status.state.value, reason=record.status.reason)
                )
            continue
        state, reason = (
            (State.READY, "") if workers else (State.EVICTED, "on no worker; loads on its next request")
        )
        if ready_only and state != State.READY:
            continue
        for number in sorted(record.ready):
            entries.append(
                IndexEntry(name=name, version=str(number), state=state.value, reason=reason, workers=workers)
            )
    return entries


def worker(slot: Slot, report: m.StatsReply | None, load: WorkerLoad | None) -> Worker:
    """One worker's /v2/workers entry (`report`: its last one, None while it is not ready)."""
    spec = slot.spec
    models = [
        WorkerModel(name=u.name, version=u.version, resident_bytes=u.resident_bytes, in_flight=u.in_flight)
        for u in (report.models if report else [])
    ]
    return Worker(
        id=spec.id,
        pid=slot.pid,
        device=spec.device,
        state=slot.state.value,
        restarts=slot.restarts,
        budget_bytes=spec.budget_bytes,
        used_bytes=int(report.memory.get("used_bytes", 0)) if report else 0,
        rss_bytes=report.rss_bytes if report else 0,
        cpu_seconds=round(report.cpu_seconds, 3) if report else 0.0,
        in_flight=load.in_flight if load is not None and load.alive else 0,
        models=models,
    )


def workers(slots: list[Slot], reports: Reports, loads: Mapping[int, WorkerLoad]) -> Workers:
    """The /v2/workers document, one entry per worker slot."""
    return Workers(
        workers=[
            worker(
                slot,
                reports.get(slot.spec.id) if slot.state == WorkerState.READY else None,
                loads.get(slot.spec.id),
            )
            for slot in slots
        ]
    )
