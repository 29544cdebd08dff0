"""GET /metrics on the real app: counts after inferences, status classes, eviction, the cache,
and log lines that carry the request."""

from __future__ import annotations

import io
import json
import logging
from pathlib import Path
from typing import Any

import httpx
from prometheus_client.parser import text_string_to_metric_families

from modelfleet.config import ServerSettings, StartupLoad
from modelfleet.server.logs import JsonFormatter, RequestFilter
from tests.integration.conftest import client_for
from tests.models import identity, write_config

MiB = 1 << 20
ROW = [i / 16 for i in range(16)]


def body(rows: int = 1, **top: Any) -> dict[str, Any]:
    return {"inputs": [{"name": "input", "shape": [rows, 16], "datatype": "FP32", "data": ROW * rows}], **top}


async def scrape(client: httpx.AsyncClient) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    r = await client.get("/metrics")
    assert r.status_code == 200
    assert r.headers["content-type"] == "text/plain; version=0.0.4; charset=utf-8"
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(r.text)
        for s in family.samples
    }


def value(series: dict[tuple[str, tuple[tuple[str, str], ...]], float], name: str, **labels: str) -> float:
    return series[(name, tuple(sorted(labels.items())))]


async def test_metrics_count_inferences_by_status_class(settings: ServerSettings) -> None:
    async with client_for(settings) as client:
        for rows in (1, 1, 2):
            assert (await client.post("/v2/models/identity/infer", json=body(rows))).status_code == 200
        bad = {"inputs": [{"name": "input", "shape": [1, 3], "datatype": "FP32", "data": [1, 2, 3]}]}
        assert (await client.post("/v2/models/identity/infer", json=bad)).status_code == 400
        assert (await client.post("/v2/models/nope/infer", json=body())).status_code == 404
        assert (await client.post("/v2/models/broken/infer", json=body())).status_code == 503
        series = await scrape(client)
        assert value(series, "modelfleet_requests_total", model="identity", status_class="2xx") == 3
        assert value(series, "modelfleet_requests_total", model="identity", status_class="4xx") == 1
        assert value(series, "modelfleet_requests_total", model="identity", status_class="5xx") == 0
        assert value(series, "modelfleet_requests_total", model="broken", status_class="5xx") == 1
        assert value(series, "modelfleet_requests_total", model="_other", status_class="4xx") == 1
        assert value(series, "modelfleet_request_duration_seconds_count", model="identity") == 3
        assert value(series, "modelfleet_request_duration_seconds_sum", model="identity") > 0
        assert value(series, "modelfleet_compute_duration_seconds_count", model="identity") == 3
        assert value(series, "modelfleet_batch_size_bucket", model="identity", le="1.0") == 2
        assert value(series, "modelfleet_batch_size_bucket", model="identity", le="2.0") == 3
        assert value(series, "modelfleet_model_loads_total", model="identity") == 1
        assert value(series, "modelfleet_model_resident_bytes", model="identity") > 0
        assert value(series, "modelfleet_models_known") == 8
        assert value(series, "modelfleet_process_cpu_seconds_total") > 0
        stats = (await client.get("/v2/models/identity/stats")).json()["model_stats"][0]
        assert stats["inference_stats"]["success"]["count"] == 3  # the same counts, the V2 way
        assert {"cache_hit", "cache_miss"} <= set(stats["inference_stats"])


async def test_counts_survive_eviction_and_cold_starts_are_counted(tmp_path: Path) -> None:
    for name in ("a", "b", "c"):
        identity(tmp_path / name / "1" / "model.onnx")
        write_config(tmp_path / name, {"memory_bytes": 10 * MiB})
    settings = ServerSettings(
        repository=tmp_path, startup_load=StartupLoad.NONE, memory_budget="25MiB", intra_op_threads=1
    )
    async with client_for(settings) as client:
        for _ in range(2):
            assert (await client.post("/v2/models/a/infer", json=body())).status_code == 200
        before = await scrape(client)
        for name in ("b", "c"):  # c evicts a
            assert (await client.post(f"/v2/models/{name}/infer", json=body())).status_code == 200
        evicted = await scrape(client)
        assert value(evicted, "modelfleet_requests_total", model="a", status_class="2xx") == 2
        assert value(evicted, "modelfleet_request_duration_seconds_count", model="a") == 2
        assert value(evicted, "modelfleet_model_evictions_total", model="a") == 1
        assert value(evicted, "modelfleet_model_resident_bytes", model="a") == 0
        assert value(evicted, "modelfleet_models_resident") == 2
        assert (await client.post("/v2/models/a/infer", json=body())).status_code == 200  # back
        after = await scrape(client)
        assert value(after, "modelfleet_request_duration_seconds_count", model="a") == 3
        assert value(after, "modelfleet_model_loads_total", model="a") == 2
        assert value(after, "modelfleet_model_cold_starts_total", model="a") == 2
        for key, old in before.items():
            if key[0].endswith(("_total", "_count", "_sum", "_bucket")) and "process" not in key[0]:
                assert after[key] >= old, key


async def test_cache_hits_and_misses(tmp_path: Path) -> None:
    identity(tmp_path / "cached" / "1" / "model.onnx")
    write_config(tmp_path / "cached", {"response_cache": True})
    settings = ServerSettings(repository=tmp_path, startup_load=StartupLoad.ALL, intra_op_threads=1)
    async with client_for(settings) as client:
        for _ in range(3):
            assert (await client.post("/v2/models/cached/infer", json=body())).status_code == 200
        series = await scrape(client)
        assert value(series, "modelfleet_cache_misses_total", model="cached") == 1
        assert value(series, "modelfleet_cache_hits_total", model="cached") == 2
        assert value(series, "modelfleet_requests_total", model="cached", status_class="2xx") == 3


async def test_log_lines_while_a_request_is_handled_carry_it(tmp_path: Path) -> None:
    identity(tmp_path / "m" / "1" / "model.onnx")
    settings = ServerSettings(repository=tmp_path, startup_load=StartupLoad.NONE, intra_op_threads=1)
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(JsonFormatter())
    handler.addFilter(RequestFilter())
    logger = logging.getLogger("modelfleet.engine")
    logger.addHandler(handler)
    level = logger.level
    logger.setLevel(logging.INFO)
    try:
        async with client_for(settings) as client:
            r = await client.post("/v2/models/m/infer", json=body(id="my-request"))
            assert r.status_code == 200
    finally:
        logger.removeHandler(handler)
        logger.setLevel(level)
    lines = [json.loads(line) for line in stream.getvalue().splitlines()]
    assert "request_id" not in lines[0]  # start-up: no request in play
    ready = next(doc for doc in lines if doc["message"].startswith("model 'm' ready"))
    # The load this request started logs on its behalf; the body (and its V2 id) is read after
    # the model is found, so the line has the id generated for the request.
    assert ready["model"] == "m"
    assert len(ready["request_id"]) == 32
    assert "0.0625" not in stream.getvalue()  # no tensor data


async def test_load_unload_churn_between_scrapes_holds_no_dead_copies(tmp_path: Path) -> None:
    """benchmarks/soak.py found ~2 KiB kept per load + first inference when nothing scraped /metrics:
    the statistics of every copy ever loaded, folded only at a scrape. Now they are folded when
    the next copy answers, and the counts are the same."""
    import gc

    from modelfleet.engine.stats import ModelStats

    identity(tmp_path / "m" / "1" / "model.onnx")
    settings = ServerSettings(repository=tmp_path, intra_op_threads=1, startup_load=StartupLoad.NONE)
    async with client_for(settings) as client:
        for _ in range(30):
            assert (await client.post("/v2/repository/models/m/load")).status_code == 200
            assert (await client.post("/v2/models/m/infer", json=body(2))).status_code == 200
            assert (await client.post("/v2/repository/models/m/unload")).status_code == 200
        gc.collect()
        # type(), not isinstance(): that reads __class__, which some of torch's module proxies warn on
        assert sum(type(o) is ModelStats for o in gc.get_objects()) <= 3  # not one per copy
        series = await scrape(client)
        assert value(series, "modelfleet_requests_total", model="m", status_class="2xx") == 30
        assert value(series, "modelfleet_batch_size_bucket", model="m", le="2.0") == 30
        assert value(series, "modelfleet_model_loads_total", model="m") == 30
