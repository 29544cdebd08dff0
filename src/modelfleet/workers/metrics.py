"""Per-worker gauges on /metrics in worker mode, from the workers' last reports (plain data)."""

from __future__ import annotations

from collections.abc import Iterator

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.metrics_core import Metric
from prometheus_client.registry import Collector

from modelfleet.workers.fleet import Fleet


class WorkerCollector(Collector):
    def __init__(self, fleet: Fleet) -> None:
        self._fleet = fleet

    def describe(self) -> list[Metric]:
        return []

    def collect(self) -> Iterator[Metric]:
        labels = ["worker"]
        budget = GaugeMetricFamily(
            "modelfleet_worker_memory_budget_bytes", "Worker's share of the budget.", labels=labels
        )
        used = GaugeMetricFamily(
            "modelfleet_worker_memory_used_bytes", "Memory accounted to the worker's models.", labels=labels
        )
        rss = GaugeMetricFamily(
            "modelfleet_worker_resident_bytes", "Worker process resident memory.", labels=labels
        )
        cpu = CounterMetricFamily("modelfleet_worker_cpu_seconds", "Worker process CPU time.", labels=labels)
        restarts = CounterMetricFamily(
            "modelfleet_worker_restarts", "Times the worker was restarted.", labels=labels
        )
        reports = dict(self._fleet.reports())
        for slot in list(self._fleet.slots):
            label = [str(slot.spec.id)]
            budget.add_metric(label, slot.spec.budget_bytes)
            restarts.add_metric(label, slot.restarts)
            report = reports.get(slot.spec.id)
            if report is not None:
                used.add_metric(label, int(report.memory.get("used_bytes", 0)))
                rss.add_metric(label, report.rss_bytes)
                cpu.add_metric(label, report.cpu_seconds)
        yield from (budget, used, rss, cpu, restarts)
