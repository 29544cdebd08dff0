"""The front's documents in worker mode, from the workers' reports: statistics of a model's copies
summed into one V2 entry, counts, memory, the index and /v2/workers (plain data, no processes)."""

from __future__ import annotations

from typing import Any

from modelfleet.engine.records import ModelRecord, State, Status
from modelfleet.engine.stats import ModelStats
from modelfleet.protocol.documents import Duration, ModelStatistics, WorkerModel
from modelfleet.workers import messages as m
from modelfleet.workers import reports
from modelfleet.workers.plan import WorkerSpec
from modelfleet.workers.reports import merge_statistics
from modelfleet.workers.router import WorkerLoad
from modelfleet.workers.supervisor import Backoff, Slot, WorkerState


def entry(successes: int, ns: int, batch: int, last: int) -> ModelStatistics:
    stats = ModelStats()
    for _ in range(successes):
        stats.record_success(batch, batch, total_ns=ns, queue_ns=1, input_ns=2, infer_ns=3, output_ns=4)
    stats.record_failure(ns)
    stats.last_inference_ms = last
    return stats.statistics("bert", "1")


def test_copies_are_summed_per_phase_and_per_batch_size() -> None:
    merged = merge_statistics(entry(2, 10, 1, last=5), entry(3, 20, 4, last=9))
    assert (merged.name, merged.version, merged.last_inference) == ("bert", "1", 9)
    assert merged.inference_stats.success == Duration(count=5, ns=80)
    assert merged.inference_stats.queue == Duration(count=5, ns=5)
    assert merged.inference_stats.fail == Duration(count=2, ns=30)
    assert [b.batch_size for b in merged.batch_stats] == [1, 4]
    assert merged.inference_count == 2 * 1 + 3 * 4
    assert merged.execution_count == 5


def test_the_same_batch_size_in_two_copies_is_one_row() -> None:
    merged = merge_statistics(entry(1, 10, 2, last=1), entry(1, 10, 2, last=1))
    (row,) = merged.batch_stats
    assert row.batch_size == 2
    assert row.compute_infer == Duration(count=2, ns=6)


def use(name: str, version: str, successes: int, resident_bytes: int = 100) -> m.ModelUse:
    stats = ModelStats()
    for _ in range(successes):
        stats.record_success(1, 1, total_ns=10, queue_ns=1, input_ns=2, infer_ns=3, output_ns=4)
    residency = {
        "resident_bytes": resident_bytes, "pinned": False, "last_load_s": 0.5, "last_used": 0.0, "loads": 1,
        "load_failures": 0, "cold_starts": 0, "evictions": 0, "state": "READY", "reason": "",
        "load_s_total": 0.5, "accounted_bytes": resident_bytes,
    }  # fmt: skip
    return m.ModelUse(
        name, version, resident_bytes, 0, stats.as_dict(name, version), residency, stats.wire()
    )  # what a worker sends: plain data


def report(*uses: m.ModelUse, used: int = 0) -> m.StatsReply:
    return m.StatsReply(0, 1000, 1.5, {"used_bytes": used, "loads": 2, "evictions": 1}, list(uses))


def test_counts_and_statistics_are_summed_over_the_copies_in_the_reports() -> None:
    got = {0: report(use("a", "1", 2), use("b", "1", 1)), 1: report(use("a", "1", 3))}
    totals = reports.summed_counts(got)
    assert {key: t.success_count for key, t in totals.items()} == {("a", "1"): 5, ("b", "1"): 1}
    entries = reports.model_stats(got, "a", None)
    residencies = [e.residency for e in entries]
    assert [(e.name, r.workers if r else None) for e, r in zip(entries, residencies, strict=True)] == [
        ("a", [0, 1])
    ]
    assert entries[0].inference_stats.success.count == 5
    assert residencies[0] is not None and residencies[0].resident_bytes == 200
    assert [e.name for e in reports.model_stats(got, None, None)] == ["a", "b"]
    doc = reports.statistics(got, None, None, reports.memory(got, 300, 2, 2))
    assert doc.memory is not None and doc.memory.loads == 4 and len(doc.model_stats) == 2


def test_memory_sums_the_workers_documents() -> None:
    memory = reports.memory({0: report(used=10), 1: report(used=5)}, 300, 1, 4)
    assert memory.used_bytes == 15 and memory.loads == 4 and memory.evictions == 2
    assert (memory.budget_bytes, memory.resident_models, memory.known_models) == (300, 1, 4)


def test_the_index_says_where_each_version_is_resident() -> None:
    placed: ModelRecord[Any] = ModelRecord("placed")
    placed.set_ready({1: object()})
    cold: ModelRecord[Any] = ModelRecord("cold")
    cold.set_ready({1: object()})
    held: ModelRecord[Any] = ModelRecord("held", status=Status(State.UNAVAILABLE, "unloaded"), held=True)
    recs = {"placed": placed, "cold": cold, "held": held}
    where = {"placed": [0, 1]}
    entries = reports.index(recs, lambda n: where.get(n, []), ready_only=False)
    assert [(e.name, e.state, e.workers) for e in entries] == [
        ("cold", "EVICTED", []),
        ("held", "UNAVAILABLE", None),
        ("placed", "READY", [0, 1]),
    ]
    assert [e.name for e in reports.index(recs, lambda n: where.get(n, []), ready_only=True)] == ["placed"]


def test_a_worker_entry_reads_its_last_report_only_while_ready() -> None:
    slots = [Slot(WorkerSpec(i, f"cpu:{i}", (i,), 500), Backoff(lambda: 0.0)) for i in range(2)]
    slots[0].state = WorkerState.READY
    slots[1].state = WorkerState.RESTARTING
    slots[1].restarts = 2
    loads = {0: WorkerLoad(0, 500, in_flight=3, alive=True), 1: WorkerLoad(1, 500, in_flight=9, alive=False)}
    got = {0: report(use("a", "1", 1), used=120), 1: report(used=999)}
    doc = reports.workers(slots, got, loads)
    assert not doc.in_process
    first, second = doc.workers
    assert (first.state, first.used_bytes, first.in_flight, first.rss_bytes) == (
        "ready",
        120,
        3,
        1000,
    )
    assert first.models == [WorkerModel(name="a", version="1", resident_bytes=100, in_flight=0)]
    assert (second.state, second.restarts, second.used_bytes, second.in_flight) == (
        "restarting",
        2,
        0,
        0,
    )
    assert second.models == []
