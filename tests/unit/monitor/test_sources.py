"""Parsing what the server answers (Prometheus text from the real collector, statistics from the real
data plane, the /v2/workers shape) into snapshots, and the rates between two snapshots."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Any

import orjson
import pytest
from prometheus_client import generate_latest

from modelfleet.config import ServerSettings
from modelfleet.engine.lifecycle import ModelManager
from modelfleet.monitor.sources import (
    FRONT,
    IN_PROCESS,
    MetricsView,
    ModelRow,
    Snapshot,
    SourceError,
    Totals,
    Worker,
    assemble,
    parse_metrics,
    parse_stats,
    parse_workers,
    rates,
)
from modelfleet.protocol.documents import to_json
from modelfleet.repository.folder import FolderRepository
from modelfleet.server.dataplane import DataPlane
from modelfleet.server.metrics import Metrics
from tests.unit.server.test_metrics import FakeManager

WORKERS: dict[str, Any] = {
    "workers": [
        {
            "id": 0,
            "pid": 101,
            "device": "cpu:0-1",
            "state": "ready",
            "restarts": 1,
            "budget_bytes": 1000,
            "used_bytes": 250,
            "rss_bytes": 5000,
            "cpu_seconds": 2.5,
            "in_flight": 3,
            "models": [{"name": "a", "version": "1", "resident_bytes": 200, "in_flight": 3}],
        },
        {"id": 1, "state": "starting", "models": [{"name": "b", "in_flight": "x"}, {"version": "1"}]},
        "not a worker",
    ]
}


def test_metrics_text_of_the_real_collector() -> None:
    manager = FakeManager(["a", "b", "c"])
    model = manager.load("a")
    manager.load("b").in_flight = 2
    metrics = Metrics(manager, top_k=1)  # type: ignore[arg-type]
    for status in (200, 200, 400):
        metrics.answered("a", status, model)
    metrics.answered("b", 200, None)
    view = parse_metrics(generate_latest(metrics.registry).decode())
    assert view.requests == 4  # every label and status class
    assert view.loads == 2
    assert view.evictions == view.cold_starts == 0
    assert view.queue_depth == {"a": 0, "_other": 2}
    assert view.cpu_seconds is not None and view.cpu_seconds > 0
    assert view.rss_bytes is not None and view.rss_bytes > 0
    assert view.start_time is not None and view.start_time > 0


@pytest.mark.parametrize("text", ["not { metrics", "hello world\n", "# TYPE x counter\nx_total abc\n"])
def test_metrics_that_do_not_parse_are_a_source_error(text: str) -> None:
    with pytest.raises(SourceError, match="GET /metrics: not Prometheus text"):
        parse_metrics(text)


async def test_statistics_of_the_real_data_plane(settings: ServerSettings, repo: Path) -> None:
    plane = DataPlane(ModelManager(FolderRepository(repo), settings))
    try:
        await plane.manager.start()
        rows, memory = parse_stats(orjson.loads(to_json(plane.statistics(None, None))))  # as on the wire
    finally:
        await plane.manager.close()
    by_key = {row.key: row for row in rows}
    identity = by_key[("identity", "1")]
    assert identity.state == "READY"
    assert identity.resident_bytes is not None and identity.resident_bytes > 0
    assert identity.requests == 0
    assert identity.pinned is False
    assert identity.loads == 1
    assert ("versioned", "2") in by_key
    assert memory["budget_bytes"] > 0 and memory["resident_models"] == len({r.name for r in rows})


def test_statistics_with_missing_or_odd_fields() -> None:
    doc = {
        "model_stats": [
            {"name": "a", "version": "1", "last_inference": 5000, "inference_stats": {"fail": {"count": 2}}},
            {
                "name": "b",
                "version": "2",
                "residency": {"resident_bytes": True, "pinned": "yes", "last_used": 9.5},
            },
            {"name": "no version"},
            "junk",
        ],
        "memory": [],
    }
    rows, memory = parse_stats(doc)
    assert rows == [
        ModelRow(name="a", version="1", requests=2, last_used=5.0),
        ModelRow(name="b", version="2", last_used=9.5),
    ]
    assert memory == {}
    assert parse_stats(None) == ([], {})


def test_workers_of_the_documented_shape_and_missing_fields() -> None:
    workers, copies = parse_workers(WORKERS)
    assert workers[0] == Worker(
        key="0",
        pid=101,
        device="cpu:0-1",
        state="ready",
        restarts=1,
        budget_bytes=1000,
        used_bytes=250,
        rss_bytes=5000,
        cpu_seconds=2.5,
        in_flight=3,
        models=1,
    )
    assert workers[1] == Worker(key="1", state="starting", models=1)
    assert len(workers) == 2
    assert [(c.worker, c.name, c.version, c.in_flight) for c in copies] == [
        ("0", "a", "1", 3),
        ("1", "b", "", None),
    ]


def test_in_process_server_is_one_worker_from_metrics_and_memory() -> None:
    snap = assemble(
        taken_at=1.0,
        wall_time=100.0,
        server={"name": "modelfleet", "version": "0.1.0"},
        stats={
            "model_stats": [{"name": "a", "version": "1", "inference_stats": {"success": {"count": 7}}}],
            "memory": {
                "budget_bytes": 1000,
                "used_bytes": 400,
                "resident_models": 1,
                "known_models": 3,
                "loads": 4,
            },
        },
        metrics=MetricsView(
            cpu_seconds=3.0, rss_bytes=9000, start_time=50.0, queue_depth={"a": 2, "_other": 1}
        ),
        workers=None,
    )
    assert snap.worker_processes is False
    assert snap.workers == (
        Worker(
            key=IN_PROCESS,
            device="in-process",
            state="ready",
            budget_bytes=1000,
            used_bytes=400,
            rss_bytes=9000,
            cpu_seconds=3.0,
            in_flight=3,
            models=1,
        ),
    )
    assert snap.models == (ModelRow(name="a", version="1", workers=(IN_PROCESS,), requests=7, in_flight=2),)
    # no counters in the metrics: the totals come from the statistics
    assert snap.totals == Totals(
        requests=7, loads=4, resident_models=1, known_models=3, budget_bytes=1000, used_bytes=400
    )
    assert (snap.server, snap.version, snap.started_at) == ("modelfleet", "0.1.0", 50.0)


def test_worker_processes_join_their_models_and_add_the_front() -> None:
    snap = assemble(
        taken_at=1.0,
        wall_time=100.0,
        server=None,
        stats={"model_stats": [{"name": "a", "version": "1", "residency": {"resident_bytes": 0}}]},
        metrics=MetricsView(cpu_seconds=1.0, rss_bytes=10, requests=12),
        workers=WORKERS,
    )
    assert [w.key for w in snap.workers] == ["0", "1", FRONT]
    assert snap.workers[-1] == Worker(key=FRONT, device="front", rss_bytes=10, cpu_seconds=1.0)
    a, b = snap.models
    assert (a.workers, a.resident_bytes, a.in_flight) == (("0",), 200, 3)
    assert (b.name, b.workers, b.state, b.requests) == ("b", ("1",), "ready", None)
    assert snap.totals.requests == 12


def _snap(at: float, models: list[ModelRow], workers: list[Worker], **totals: float) -> Snapshot:
    return Snapshot(
        taken_at=at, wall_time=at, models=tuple(models), workers=tuple(workers), totals=Totals(**totals)
    )


def test_rates_between_two_snapshots() -> None:
    a, b, c = ModelRow("a", "1", requests=10), ModelRow("b", "1", requests=50), ModelRow("c", "1")
    w = Worker("0", pid=1, cpu_seconds=10.0)
    before = _snap(
        10.0, [a, b, c], [w, Worker("1", pid=2, cpu_seconds=5.0), Worker("2")], requests=100, loads=3
    )
    after = _snap(
        12.0,
        [replace(a, requests=30), replace(b, requests=4), c, ModelRow("new", "1", requests=6)],
        [replace(w, cpu_seconds=11.0), Worker("1", pid=3, cpu_seconds=0.5), Worker("2")],
        requests=140,
        loads=3,
    )
    r = rates(before, after)
    assert r.interval_s == 2.0
    # b went down: reloaded, counting again from zero; "new" appeared: counted from zero
    assert r.requests_per_s == {("a", "1"): 10.0, ("b", "1"): 2.0, ("new", "1"): 3.0}
    assert r.cpu_percent == {"0": 50.0}  # worker 1 restarted (new pid): no rate this time
    assert (r.total_requests_per_s, r.loads_per_s, r.evictions_per_s) == (20.0, 0.0, None)


def test_no_rates_without_an_earlier_snapshot() -> None:
    snap = _snap(1.0, [ModelRow("a", "1", requests=3)], [], requests=3)
    assert rates(None, snap).requests_per_s == {}
    assert rates(snap, snap).total_requests_per_s is None
