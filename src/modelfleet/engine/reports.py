"""The in-process manager's documents: the repository index, memory totals and the statistics
extension, made from the model records and the residency (no locks, no awaits)."""

from __future__ import annotations

import os
import time
from collections.abc import Iterable, Mapping

import msgspec

from modelfleet.engine.model import LoadedModel
from modelfleet.engine.records import ModelRecord, State
from modelfleet.engine.residency import Residency
from modelfleet.protocol.documents import (
    IndexEntry,
    Memory,
    ModelResidency,
    ModelStatistics,
    Worker,
    WorkerModel,
)

Records = Mapping[str, ModelRecord[LoadedModel]]


def index(records: Records, residency: Residency, ready_only: bool = False) -> list[IndexEntry]:
    """One entry per version (per model before any version is known), sorted by name."""
    entries: list[IndexEntry] = []
    for name in sorted(records):
        record = records[name]
        if not record.versions:
            entries.append(
                IndexEntry(name=name, state=record.status.state.value, reason=record.status.reason)
            )
            continue
        counts = residency_of(record, residency)
        for number in sorted(record.versions):
            status = record.versions[number]
            entries.append(
                IndexEntry(
                    name=name,
                    version=str(number),
                    state=status.state.value,
                    reason=status.reason,
                    resident_bytes=counts.resident_bytes,
                    pinned=counts.pinned,
                    last_load_s=counts.last_load_s,
                    last_used=counts.last_used,
                    loads=counts.loads,
                    load_failures=counts.load_failures,
                    cold_starts=counts.cold_starts,
                    evictions=counts.evictions,
                )
            )
    if ready_only:
        entries = [e for e in entries if e.state == State.READY]
    return entries


def residency_of(record: ModelRecord[LoadedModel], residency: Residency) -> ModelResidency:
    """A model's state, reason, memory and load / eviction counters (for the index and the
    statistics extension)."""
    c = record.counters
    entry = residency.get(record.name)
    last_used = time.time() - (time.monotonic() - entry.last_used) if entry else 0.0
    return ModelResidency(
        resident_bytes=sum(m.nbytes for m in record.ready.values()),
        pinned=record.pinned,
        last_load_s=round(c.last_load_s, 6),
        last_used=round(last_used, 3),
        loads=c.loads,
        load_failures=c.load_failures,
        cold_starts=c.cold_starts,
        evictions=c.evictions,
        state=record.status.state.value,
        reason=record.status.reason,
        load_s_total=round(c.load_s_total, 6),
        accounted_bytes=entry.nbytes if entry else 0,
    )


def memory(records: Records, residency: Residency, blob_bytes: int) -> Memory:
    """Budget, use and totals, for the statistics views and the monitor."""
    values = records.values()
    return Memory(
        budget_bytes=residency.budget_bytes,
        used_bytes=residency.used_bytes,
        resident_models=sum(1 for r in values if r.ready),
        known_models=len(records),
        blob_bytes=blob_bytes,
        loads=sum(r.counters.loads for r in values),
        load_failures=sum(r.counters.load_failures for r in values),
        cold_starts=sum(r.counters.cold_starts for r in values),
        evictions=sum(r.counters.evictions for r in values),
    )


def model_stats(
    models: Iterable[LoadedModel], records: Records, residency: Residency
) -> list[ModelStatistics]:
    """The statistics extension's entries: each version's counts and its model's residency."""
    return [
        msgspec.structs.replace(
            m.stats.statistics(m.name, m.version_str),
            residency=msgspec.structs.replace(
                residency_of(records[m.name], residency), resident_bytes=m.nbytes, load_s=m.load_s
            ),
        )
        for m in models
    ]


def own_process() -> tuple[int, float]:
    """This process's resident bytes and CPU seconds."""
    import resource

    from modelfleet.engine.memory import process_rss

    usage = resource.getrusage(resource.RUSAGE_SELF)
    return process_rss().total, usage.ru_utime + usage.ru_stime


def cpu_span() -> str:
    cores = sorted(os.sched_getaffinity(0))
    return f"cpu:{cores[0]}-{cores[-1]}" if len(cores) > 1 else f"cpu:{cores[0]}"


def in_process_worker(started: bool, memory: Memory, loaded: list[LoadedModel]) -> Worker:
    """The /v2/workers entry of a server without workers: itself, as worker 0 (states as the
    workers' own: "ready", "starting")."""
    rss, cpu = own_process()
    return Worker(
        id=0,
        pid=os.getpid(),
        device=cpu_span(),
        state="ready" if started else "starting",
        restarts=0,
        budget_bytes=memory.budget_bytes,
        used_bytes=memory.used_bytes,
        rss_bytes=rss,
        cpu_seconds=round(cpu, 3),
        in_flight=sum(c.in_flight for c in loaded),
        models=[
            WorkerModel(name=c.name, version=c.version_str, resident_bytes=c.nbytes, in_flight=c.in_flight)
            for c in loaded
        ],
    )
