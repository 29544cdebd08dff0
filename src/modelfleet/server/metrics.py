"""Prometheus text on GET /metrics: per-model counters and histograms, read from the engine's own
statistics at scrape time (metric_counts.py), and the process's own collectors.

Nothing here runs per request but `FleetMetrics.answered` (a dict lookup and an increment); the
sample is taken on the event-loop thread, the text written in a worker thread.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Iterable, Iterator

from prometheus_client import CollectorRegistry, ProcessCollector, generate_latest
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    SummaryMetricFamily,
)
from prometheus_client.metrics_core import Metric
from prometheus_client.registry import Collector

from modelfleet.engine.ports import ModelHost
from modelfleet.engine.stats import BATCH_BOUNDS, DURATION_BOUNDS_NS
from modelfleet.server.metric_counts import (
    _BATCH,
    _BATCH_BUCKETS,
    _COLD_STARTS,
    _COMPUTE,
    _DURATION_BUCKETS,
    _EVICTIONS,
    _HITS,
    _LOAD_FAILURES,
    _LOAD_S,
    _LOADS,
    _MISSES,
    _OVERHEAD,
    _QUEUE,
    _REQUEST,
    _S2,
    _S4,
    _S5,
    STATUS_CLASSES,
    FleetMetrics,
    Sample,
    Vector,
)

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"

# -- exposition ----------------------------------------------------------------------------------------------

_DURATION_LE = [repr(ns / 1e9) for ns in DURATION_BOUNDS_NS] + ["+Inf"]
_BATCH_LE = [repr(float(b)) for b in BATCH_BOUNDS] + ["+Inf"]
_HISTOGRAMS = (
    ("request", _REQUEST, "End-to-end time of successful inferences, as the server measures it."),
    ("queue", _QUEUE, "Time successful inferences waited in their model's queue."),
    ("compute", _COMPUTE, "Time successful inferences spent in input checks, execution and output."),
    ("overhead", _OVERHEAD, "End-to-end time minus queue and compute: the server's own share."),
)
_LIFECYCLE = (
    ("model_loads", _LOADS, "Completed loads of the model."),
    ("model_load_failures", _LOAD_FAILURES, "Failed loads of the model."),
    ("model_cold_starts", _COLD_STARTS, "Loads started by a request that found the model not resident."),
    ("model_evictions", _EVICTIONS, "Times the model was evicted to make room for another."),
)
_MODEL = ["model"]


def _buckets(vec: Vector, offset: int, le: list[str]) -> list[tuple[str, float]]:
    out, total = [], 0.0
    for i, bound in enumerate(le):
        total += vec[offset + i]
        out.append((bound, total))
    return out


def families(sample: Sample) -> Iterator[Metric]:
    """The metric families of one sample (plain data: safe to build in any thread)."""
    counts = sample.counts
    requests = CounterMetricFamily(
        "modelfleet_requests", "Inference answers by status class.", labels=["model", "status_class"]
    )
    for label, vec in counts.items():
        for status_class, i in zip(STATUS_CLASSES, (_S2, _S4, _S5), strict=True):
            requests.add_metric([label, status_class], vec[i])
    yield requests
    for subject, offset, doc in _HISTOGRAMS:
        family = HistogramMetricFamily(f"modelfleet_{subject}_duration_seconds", doc, labels=_MODEL)
        for label, vec in counts.items():
            sum_s = max(0.0, vec[offset + _DURATION_BUCKETS] / 1e9)
            family.add_metric([label], _buckets(vec, offset, _DURATION_LE), sum_s)
        yield family
    batch = HistogramMetricFamily(
        "modelfleet_batch_size", "Rows of the execution each successful inference ran in.", labels=_MODEL
    )
    for label, vec in counts.items():
        batch.add_metric([label], _buckets(vec, _BATCH, _BATCH_LE), vec[_BATCH + _BATCH_BUCKETS])
    yield batch
    yield _counter("cache_hits", "Answers served from the response cache.", counts, _HITS)
    yield _counter("cache_misses", "Cacheable requests that had to run.", counts, _MISSES)
    for subject, index, doc in _LIFECYCLE:
        yield _counter(subject, doc, counts, index)
    loads = SummaryMetricFamily(
        "modelfleet_model_load_duration_seconds", "Time taken by completed loads.", labels=_MODEL
    )
    for label, vec in counts.items():
        loads.add_metric([label], count_value=int(vec[_LOADS]), sum_value=vec[_LOAD_S])
    yield loads
    yield _gauge("queue_depth", "Requests waiting for or in execution.", sample.queue_depth)
    yield _gauge("model_resident_bytes", "Memory of the model's ready copies.", sample.resident_bytes)
    for subject, key, doc in _SERVER_GAUGES:
        yield GaugeMetricFamily(f"modelfleet_{subject}", doc, value=getattr(sample.memory, key))


_SERVER_GAUGES = (
    ("memory_budget_bytes", "budget_bytes", "Memory budget for resident models."),
    ("memory_used_bytes", "used_bytes", "Memory accounted to resident models and weight blobs."),
    ("models_resident", "resident_models", "Models with a ready copy."),
    ("models_known", "known_models", "Models the repository has."),
)


def _counter(subject: str, doc: str, counts: dict[str, Vector], index: int) -> Metric:
    family = CounterMetricFamily(f"modelfleet_{subject}", doc, labels=_MODEL)
    for label, vec in counts.items():
        family.add_metric([label], vec[index])
    return family


def _gauge(subject: str, doc: str, values: dict[str, int]) -> Metric:
    family = GaugeMetricFamily(f"modelfleet_{subject}", doc, labels=_MODEL)
    for label, value in values.items():
        family.add_metric([label], value)
    return family


class FleetCollector(Collector):
    """The fleet's families, from a sample taken at collection (call on the event-loop thread)."""

    def __init__(self, fleet: FleetMetrics) -> None:
        self._fleet = fleet

    def describe(self) -> list[Metric]:
        return []  # registering must not take a sample (a sample moves labels)

    def collect(self) -> Iterator[Metric]:
        return families(self._fleet.sample())


class _Taken(Collector):
    """One sample already taken, with the process's metrics: what a worker thread formats."""

    def __init__(self, sample: Sample, process: Collector | None, extra: Iterable[Collector] = ()) -> None:
        self._sample = sample
        self._process = process
        self._extra = extra

    def collect(self) -> Iterator[Metric]:
        yield from families(self._sample)
        if self._process is not None:
            yield from self._process.collect()
        for collector in self._extra:
            yield from collector.collect()


class Metrics:
    """What GET /metrics serves: the fleet's counters and the process's, on a registry of our own
    (never prometheus_client's global one, which anything imported could add to)."""

    def __init__(
        self,
        manager: ModelHost,
        top_k: int,
        always: Iterable[str] = (),
        clock: Callable[[], float] = time.monotonic,
        process: bool = True,
        extra: Iterable[Collector] = (),
    ) -> None:
        """`extra`: more collectors of plain data, read in the formatting thread (worker gauges)."""
        self.fleet = FleetMetrics(manager, top_k, always, clock)
        self._extra = tuple(extra)
        self.registry = CollectorRegistry()
        self.registry.register(FleetCollector(self.fleet))
        # CPU seconds, resident memory, open files: read from /proc when collected (Linux only)
        self._process = ProcessCollector(namespace="modelfleet", registry=self.registry) if process else None
        self.answered = self.fleet.answered  # the request path's one call

    async def render(self) -> bytes:
        """The exposition, text format 0.0.4 (CONTENT_TYPE). The sample is taken here on the event
        loop, the only thread that touches the counters; the text (tens of ms for thousands of
        lines) is written in a worker thread, so inference keeps going meanwhile."""
        sample = self.fleet.sample()
        return await asyncio.to_thread(generate_latest, _Taken(sample, self._process, self._extra))
