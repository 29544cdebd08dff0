"""The front's documents in worker mode, from the workers' reports: statistics of a model's copies
summed into one V2 entry, counts, memory, the index and /v2/workers (plain data, no processes)."""

from __future__ import annotations

from typing import Any

from modelfleet.engine.records import ModelRecord, State, Status
from modelfleet.engine.stats import ModelStats
from modelfleet.workers import messages as m
from modelfleet.workers import reports
from modelfleet.workers.plan import WorkerSpec
from modelfleet.workers.reports import merge_statistics
from modelfleet.workers.router import WorkerLoad
from modelfleet.workers.supervisor import Backoff, Slot, WorkerState


def entry(successes: int, ns: int, batch: int, last: int) -> dict[str, Any]:
    stats = ModelStats()
    for _ in range(successes):
        stats.record_success(batch, batch, total_ns=ns, queue_ns=1, input_ns=2, infer_ns=3, output_ns=4)
    doc = stats.as_dict("bert", "1")
    doc["last_inference"] = last
    return doc


def test_copies_are_summed_per_phase_and_per_batch_size() -> None:
    merged = entry(2, 10, 1, last=5)
    merge_statistics(merged, entry(3, 20, 4, last=9))
    assert (merged["name"], merged["version"], merged["last_inference"]) == ("bert", "1", 9)
    assert merged["inference_stats"]["success"] == {"count": 5, "ns": 80}
    assert merged["inference_stats"]["queue"] == {"count": 5, "ns": 5}
    assert [b["batch_size"] for b in merged["batch_stats"]] == [1, 4]
    assert merged["inference_count"] == 2 * 1 + 3 * 4


def test_the_same_batch_size_in_two_copies_is_one_row() -> None:
    merged = entry(1, 10, 2, last=1)
    merge_statistics(merged, entry(1, 10, 2, last=1))
    (row,) = merged["batch_stats"]
    assert row["batch_size"] == 2
    assert row["compute_infer"]["count"] == 2


def use(name: str, version: str, successes: int, resident_bytes: int = 100) -> m.ModelUse:
    stats = ModelStats()
    for _ in range(successes):
        stats.record_success(1, 1, total_ns=10, queue_ns=1, input_ns=2, infer_ns=3, output_ns=4)
    return m.ModelUse(
        name, version, resident_bytes, 0, stats.as_dict(name, version), {"resident_bytes": resident_bytes},
        stats.wire(),
    )  # fmt: skip


def report(*uses: m.ModelUse, used: int = 0) -> m.StatsReply:
    return m.StatsReply(0, 1000, 1.5, {"used_bytes": used, "loads": 2, "evictions": 1}, list(uses))


def test_counts_and_statistics_are_summed_over_the_copies_in_the_reports() -> None:
    got = {0: report(use("a", "1", 2), use("b", "1", 1)), 1: report(use("a", "1", 3))}
    totals = reports.summed_counts(got)
    assert {key: t.success_count for key, t in totals.items()} == {("a", "1"): 5, ("b", "1"): 1}
    entries = reports.model_stats(got, "a", None)
    assert [(e["name"], e["residency"]["workers"]) for e in entries] == [("a", [0, 1])]
    assert entries[0]["inference_stats"]["success"]["count"] == 5
    assert entries[0]["residency"]["resident_bytes"] == 200
    assert [e["name"] for e in reports.model_stats(got, None, None)] == ["a", "b"]


def test_memory_sums_the_workers_documents() -> None:
    memory = reports.memory({0: report(used=10), 1: report(used=5)}, 300, 1, 4)
    assert memory["used_bytes"] == 15 and memory["loads"] == 4 and memory["evictions"] == 2
    assert (memory["budget_bytes"], memory["resident_models"], memory["known_models"]) == (300, 1, 4)


def test_the_index_says_where_each_version_is_resident() -> None:
    placed: ModelRecord[Any] = ModelRecord("placed")
    placed.set_ready({1: object()})
    cold: ModelRecord[Any] = ModelRecord("cold")
    cold.set_ready({1: object()})
    held: ModelRecord[Any] = ModelRecord("held", status=Status(State.UNAVAILABLE, "unloaded"), held=True)
    recs = {"placed": placed, "cold": cold, "held": held}
    where = {"placed": [0, 1]}
    entries = reports.index(recs, lambda n: where.get(n, []), ready_only=False)
    assert [(e["name"], e["state"], e.get("workers")) for e in entries] == [
        ("cold", "EVICTED", []),
        ("held", "UNAVAILABLE", None),
        ("placed", "READY", [0, 1]),
    ]
    assert [e["name"] for e in reports.index(recs, lambda n: where.get(n, []), ready_only=True)] == ["placed"]


def test_a_worker_entry_reads_its_last_report_only_while_ready() -> None:
    slots = [Slot(WorkerSpec(i, f"cpu:{i}", (i,), 500), Backoff(lambda: 0.0)) for i in range(2)]
    slots[0].state = WorkerState.READY
    slots[1].state = WorkerState.RESTARTING
    slots[1].restarts = 2
    loads = {0: WorkerLoad(0, 500, in_flight=3, alive=True), 1: WorkerLoad(1, 500, in_flight=9, alive=False)}
    got = {0: report(use("a", "1", 1), used=120), 1: report(used=999)}
    first, second = reports.workers(slots, got, loads)
    assert (first["state"], first["used_bytes"], first["in_flight"], first["rss_bytes"]) == (
        "ready",
        120,
        3,
        1000,
    )
    assert first["models"] == [{"name": "a", "version": "1", "resident_bytes": 100, "in_flight": 0}]
    assert (second["state"], second["restarts"], second["used_bytes"], second["in_flight"]) == (
        "restarting",
        2,
        0,
        0,
    )
    assert second["models"] == []
