"""The front's documents in worker mode, made from the workers' last reports and the router's
placements: merged statistics, memory totals, the index and the /v2/workers document."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from modelfleet.engine.records import ModelRecord, State
from modelfleet.engine.stats import ModelStats
from modelfleet.workers import messages as m
from modelfleet.workers.router import WorkerLoad
from modelfleet.workers.supervisor import Slot, WorkerState

Reports = Mapping[int, m.StatsReply]
MEMORY_TOTALS = ("used_bytes", "blob_bytes", "loads", "load_failures", "cold_starts", "evictions")


def merge_statistics(into: dict[str, Any], other: dict[str, Any]) -> None:
    """Sum one copy's V2 statistics entry into another's (last_inference: the later one)."""
    for key, value in other.items():
        if key in ("name", "version"):
            continue
        if key == "last_inference":
            into[key] = max(into.get(key, 0), value)
        elif key == "batch_stats":
            sizes = {b["batch_size"]: b for b in into.get(key, [])}
            for batch in value:
                if batch["batch_size"] in sizes:
                    merge_statistics(sizes[batch["batch_size"]], batch)
                else:
                    sizes[batch["batch_size"]] = batch
            into[key] = [sizes[s] for s in sorted(sizes)]
        elif isinstance(value, dict):
            merge_statistics(into.setdefault(key, {}), value)
        elif isinstance(value, int | float) and key != "batch_size":
            into[key] = into.get(key, 0) + value


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


def model_stats(reports: Reports, name: str | None, version: str | None) -> list[dict[str, Any]]:
    """The statistics extension's entries, merged over the copies (with the workers holding them)."""
    merged: dict[tuple[str, str], dict[str, Any]] = {}
    for worker, report in sorted(reports.items()):
        for use in report.models:
            if (name is not None and use.name != name) or (version is not None and use.version != version):
                continue
            key = (use.name, use.version)
            entry = merged.get(key)
            if entry is None:
                entry = merged[key] = use.statistics | {"residency": use.residency | {"workers": []}}
            else:
                merge_statistics(entry, use.statistics)
                entry["residency"]["resident_bytes"] += use.resident_bytes
            entry["residency"]["workers"].append(worker)
    return [merged[k] for k in sorted(merged)]


def memory(reports: Reports, budget_bytes: int, resident_models: int, known_models: int) -> dict[str, Any]:
    """The workers' memory documents summed, with the front's own counts."""
    total = {key: sum(int(r.memory.get(key, 0)) for r in reports.values()) for key in MEMORY_TOTALS}
    return total | {
        "budget_bytes": budget_bytes,
        "resident_models": resident_models,
        "known_models": known_models,
    }


def index(
    records: Mapping[str, ModelRecord[Any]], placements: Callable[[str], list[int]], ready_only: bool
) -> list[dict[str, Any]]:
    """The repository index: each model's versions and the workers they are resident on."""
    entries: list[dict[str, Any]] = []
    for name in sorted(records):
        record = records[name]
        workers = placements(name)
        if not record.ready or record.held:
            if not ready_only:
                entries.append(
                    {"name": name, "state": record.status.state.value, "reason": record.status.reason}
                )
            continue
        state, reason = (
            (State.READY, "") if workers else (State.EVICTED, "on no worker; loads on its next request")
        )
        if ready_only and state != State.READY:
            continue
        for number in sorted(record.ready):
            entries.append(
                {
                    "name": name,
                    "version": str(number),
                    "state": state.value,
                    "reason": reason,
                    "workers": workers,
                }
            )
    return entries


def worker(slot: Slot, report: m.StatsReply | None, load: WorkerLoad | None) -> dict[str, Any]:
    """One worker's /v2/workers entry (`report`: its last one, None while it is not ready)."""
    spec = slot.spec
    models = [
        {"name": u.name, "version": u.version, "resident_bytes": u.resident_bytes, "in_flight": u.in_flight}
        for u in (report.models if report else [])
    ]
    return {
        "id": spec.id,
        "pid": slot.pid,
        "device": spec.device,
        "state": slot.state.value,
        "restarts": slot.restarts,
        "budget_bytes": spec.budget_bytes,
        "used_bytes": int(report.memory.get("used_bytes", 0)) if report else 0,
        "rss_bytes": report.rss_bytes if report else 0,
        "cpu_seconds": round(report.cpu_seconds, 3) if report else 0.0,
        "in_flight": load.in_flight if load is not None and load.alive else 0,
        "models": models,
    }


def workers(slots: list[Slot], reports: Reports, loads: Mapping[int, WorkerLoad]) -> list[dict[str, Any]]:
    """The /v2/workers document's entries, one per worker slot."""
    return [
        worker(
            slot,
            reports.get(slot.spec.id) if slot.state == WorkerState.READY else None,
            loads.get(slot.spec.id),
        )
        for slot in slots
    ]
