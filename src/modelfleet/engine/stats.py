"""Per-model-version inference statistics, in the shape of the V2 statistics extension.

Only the event-loop thread writes these counters (executor threads hand their timings back with
the result), so no lock is needed. Successful requests share one count: success, queue and the
three compute phases are each counted once per successful request.
"""

from __future__ import annotations

import time
from typing import Any

_PHASES = ("success", "queue", "compute_input", "compute_infer", "compute_output")


class _BatchStats:
    __slots__ = ("count", "infer_ns", "input_ns", "output_ns")

    def __init__(self) -> None:
        self.count = self.input_ns = self.infer_ns = self.output_ns = 0


class ModelStats:
    __slots__ = (
        "batches",
        "cache_hit_count",
        "cache_hit_ns",
        "cache_miss_count",
        "cache_miss_ns",
        "compute_infer_ns",
        "compute_input_ns",
        "compute_output_ns",
        "execution_count",
        "fail_count",
        "fail_ns",
        "inference_count",
        "last_inference_ms",
        "queue_ns",
        "success_count",
        "success_ns",
    )

    def __init__(self) -> None:
        self.success_count = self.success_ns = 0
        self.queue_ns = self.compute_input_ns = self.compute_infer_ns = self.compute_output_ns = 0
        self.fail_count = self.fail_ns = 0
        self.cache_hit_count = self.cache_hit_ns = self.cache_miss_count = self.cache_miss_ns = 0
        self.inference_count = 0  # rows inferred (a batch of 4 counts 4)
        self.execution_count = 0  # model executions
        self.last_inference_ms = 0  # wall clock, for the V2 `last_inference` field
        self.batches: dict[int, _BatchStats] = {}

    def record_success(
        self,
        rows: int,
        batch_rows: int,
        total_ns: int,
        queue_ns: int,
        input_ns: int,
        infer_ns: int,
        output_ns: int,
    ) -> None:
        """One successful request of `rows` rows, executed in a batch of `batch_rows` rows."""
        self.success_count += 1
        self.success_ns += total_ns
        self.queue_ns += queue_ns
        self.compute_input_ns += input_ns
        self.compute_infer_ns += infer_ns
        self.compute_output_ns += output_ns
        self.inference_count += rows
        self.execution_count += 1
        self.last_inference_ms = time.time_ns() // 1_000_000
        batch = self.batches.get(batch_rows)
        if batch is None:
            batch = self.batches[batch_rows] = _BatchStats()
        batch.count += 1
        batch.input_ns += input_ns
        batch.infer_ns += infer_ns
        batch.output_ns += output_ns

    def record_failure(self, total_ns: int) -> None:
        self.fail_count += 1
        self.fail_ns += total_ns
        self.last_inference_ms = time.time_ns() // 1_000_000

    def as_dict(self, name: str, version: str) -> dict[str, Any]:
        def duration(count: int, ns: int) -> dict[str, int]:
            return {"count": count, "ns": ns}

        stats = {phase: duration(self.success_count, getattr(self, f"{phase}_ns")) for phase in _PHASES}
        stats["fail"] = duration(self.fail_count, self.fail_ns)
        stats["cache_hit"] = duration(self.cache_hit_count, self.cache_hit_ns)
        stats["cache_miss"] = duration(self.cache_miss_count, self.cache_miss_ns)
        return {
            "name": name,
            "version": version,
            "last_inference": self.last_inference_ms,
            "inference_count": self.inference_count,
            "execution_count": self.execution_count,
            "inference_stats": stats,
            "batch_stats": [
                {
                    "batch_size": size,
                    "compute_input": duration(b.count, b.input_ns),
                    "compute_infer": duration(b.count, b.infer_ns),
                    "compute_output": duration(b.count, b.output_ns),
                }
                for size, b in sorted(self.batches.items())
            ],
        }
