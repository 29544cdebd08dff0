"""The in-process manager's documents, made from records and the residency (no loads, no threads)."""

import time
from types import SimpleNamespace
from typing import Any

from modelfleet.engine import reports
from modelfleet.engine.records import NOT_SERVED, ModelRecord, State, Status
from modelfleet.engine.residency import Residency
from modelfleet.engine.stats import ModelStats
from modelfleet.protocol.documents import Memory


def copy(name: str, version: int, nbytes: int) -> Any:
    return SimpleNamespace(
        name=name, version=version, version_str=str(version), nbytes=nbytes, load_s=0.5, in_flight=1,
        stats=ModelStats(),
    )  # fmt: skip


def records() -> tuple[dict[str, ModelRecord[Any]], Residency]:
    residency = Residency(1000, time.monotonic)
    ready: ModelRecord[Any] = ModelRecord("ready")
    ready.set_ready({1: copy("ready", 1, 100), 2: copy("ready", 2, 150)})
    ready.versions = {
        1: Status(State.READY),
        2: Status(State.READY),
        3: Status(State.UNAVAILABLE, NOT_SERVED),
    }
    ready.counters.loads = 2
    ready.counters.evictions = 1
    residency.add("ready", 250, pinned=True)
    never: ModelRecord[Any] = ModelRecord("never")
    never.counters.load_failures = 3
    return {"ready": ready, "never": never}, residency


def test_the_index_has_one_entry_per_version_and_one_per_model_without_versions() -> None:
    recs, residency = records()
    entries = reports.index(recs, residency)
    assert [(e.name, e.version, e.state) for e in entries] == [
        ("never", None, "UNAVAILABLE"),
        ("ready", "1", "READY"),
        ("ready", "2", "READY"),
        ("ready", "3", "UNAVAILABLE"),
    ]
    assert entries[1].resident_bytes == 250 and entries[1].loads == 2
    assert entries[1].last_used is not None and entries[1].last_used > 0
    assert entries[0].resident_bytes is None  # no version known: no residency counts
    assert [e.version for e in reports.index(recs, residency, ready_only=True)] == ["1", "2"]


def test_memory_sums_the_counters_of_every_record() -> None:
    recs, residency = records()
    memory = reports.memory(recs, residency, blob_bytes=7)
    assert memory == Memory(
        budget_bytes=1000,
        used_bytes=250,
        resident_models=1,
        known_models=2,
        blob_bytes=7,
        loads=2,
        load_failures=3,
        cold_starts=0,
        evictions=1,
    )


def test_statistics_entries_carry_each_copys_residency() -> None:
    recs, residency = records()
    entries = reports.model_stats(recs["ready"].ready.values(), recs, residency)
    assert [(e.name, e.version) for e in entries] == [("ready", "1"), ("ready", "2")]
    residency = entries[1].residency
    assert residency is not None
    assert residency.resident_bytes == 150
    assert residency.accounted_bytes == 250
    assert residency.state == "UNAVAILABLE"  # the record's own status, never set here
    assert residency.load_s == 0.5 and residency.workers is None


def test_the_in_process_worker_is_worker_0_with_its_models() -> None:
    recs, residency = records()
    loaded = list(recs["ready"].ready.values())
    doc = reports.in_process_worker(False, reports.memory(recs, residency, 0), loaded)
    assert doc.id == 0 and doc.state == "starting" and doc.rss_bytes > 0
    assert doc.in_flight == 2
    assert [m.version for m in doc.models] == ["1", "2"]
