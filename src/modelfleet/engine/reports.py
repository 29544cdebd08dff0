"""The in-process manager's documents: the repository index, memory totals and the statistics
extension, made from the model records and the residency (no locks, no awaits)."""

from __future__ import annotations

import os
import time
from collections.abc import Iterable, Mapping
from typing import Any

from modelfleet.engine.model import LoadedModel
from modelfleet.engine.records import ModelRecord, State
from modelfleet.engine.residency import Residency

Records = Mapping[str, ModelRecord[LoadedModel]]


def index(records: Records, residency: Residency, ready_only: bool = False) -> list[dict[str, Any]]:
    """One entry per version (per model before any version is known), sorted by name."""
    entries: list[dict[str, Any]] = []
    for name in sorted(records):
        record = records[name]
        if not record.versions:
            entries.append({"name": name, "state": record.status.state.value, "reason": record.status.reason})
            continue
        extra = memory_fields(record, residency)
        for number in sorted(record.versions):
            status = record.versions[number]
            entry = {
                "name": name,
                "version": str(number),
                "state": status.state.value,
                "reason": status.reason,
            }
            entries.append(entry | extra)
    if ready_only:
        entries = [e for e in entries if e["state"] == State.READY]
    return entries


def memory_fields(record: ModelRecord[LoadedModel], residency: Residency) -> dict[str, Any]:
    c = record.counters
    entry = residency.get(record.name)
    last_used = time.time() - (time.monotonic() - entry.last_used) if entry else 0.0
    return {
        "resident_bytes": sum(m.nbytes for m in record.ready.values()),
        "pinned": record.pinned,
        "last_load_s": round(c.last_load_s, 6),
        "last_used": round(last_used, 3),
        "loads": c.loads,
        "load_failures": c.load_failures,
        "cold_starts": c.cold_starts,
        "evictions": c.evictions,
    }


def residency_of(record: ModelRecord[LoadedModel], residency: Residency) -> dict[str, Any]:
    """A model's state, reason and load / eviction counters (for the statistics extension)."""
    entry = residency.get(record.name)
    return memory_fields(record, residency) | {
        "state": record.status.state.value,
        "reason": record.status.reason,
        "load_s_total": round(record.counters.load_s_total, 6),
        "accounted_bytes": entry.nbytes if entry else 0,
    }


def memory(records: Records, residency: Residency, blob_bytes: int) -> dict[str, Any]:
    """Budget, use and totals, for the statistics views and the monitor."""
    values = records.values()
    return {
        "budget_bytes": residency.budget_bytes,
        "used_bytes": residency.used_bytes,
        "resident_models": sum(1 for r in values if r.ready),
        "known_models": len(records),
        "blob_bytes": blob_bytes,
        "loads": sum(r.counters.loads for r in values),
        "load_failures": sum(r.counters.load_failures for r in values),
        "cold_starts": sum(r.counters.cold_starts for r in values),
        "evictions": sum(r.counters.evictions for r in values),
    }


def model_stats(
    models: Iterable[LoadedModel], records: Records, residency: Residency
) -> list[dict[str, Any]]:
    """The statistics extension's entries: each version's counts and its model's residency."""
    entries = []
    for m in models:
        entry = m.stats.as_dict(m.name, m.version_str)
        entry["residency"] = residency_of(records[m.name], residency) | {
            "resident_bytes": m.nbytes,
            "load_s": m.load_s,
        }
        entries.append(entry)
    return entries


def own_process() -> tuple[int, float]:
    """This process's resident bytes and CPU seconds."""
    import resource

    from modelfleet.engine.memory import process_rss

    usage = resource.getrusage(resource.RUSAGE_SELF)
    return process_rss().total, usage.ru_utime + usage.ru_stime


def cpu_span() -> str:
    cores = sorted(os.sched_getaffinity(0))
    return f"cpu:{cores[0]}-{cores[-1]}" if len(cores) > 1 else f"cpu:{cores[0]}"


def in_process_worker(started: bool, memory: Mapping[str, Any], loaded: list[LoadedModel]) -> dict[str, Any]:
    """The /v2/workers entry of a server without workers: itself, as worker 0 (states as the
    workers' own: "ready", "starting")."""
    rss, cpu = own_process()
    return {
        "id": 0,
        "pid": os.getpid(),
        "device": cpu_span(),
        "state": "ready" if started else "starting",
        "restarts": 0,
        "budget_bytes": memory["budget_bytes"],
        "used_bytes": memory["used_bytes"],
        "rss_bytes": rss,
        "cpu_seconds": round(cpu, 3),
        "in_flight": sum(c.in_flight for c in loaded),
        "models": [
            {"name": c.name, "version": c.version_str, "resident_bytes": c.nbytes, "in_flight": c.in_flight}
            for c in loaded
        ],
    }
