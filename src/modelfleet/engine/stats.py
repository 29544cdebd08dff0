"""Per-model-version inference statistics, in the shape of the V2 statistics extension, plus the
fixed-bucket histograms that /metrics exposes (server/metrics.py reads them at scrape time)."""

from __future__ import annotations

import time
from bisect import bisect_left
from typing import Any

import msgspec

from modelfleet.protocol.documents import BatchStats, Duration, InferenceStats, ModelStatistics

# Upper bounds (inclusive, like Prometheus' `le`) of the duration histograms, in ns: from 25 µs
# (the server's own overhead on a tiny model) to a minute (a long queue), about 2.5x apart.
DURATION_BOUNDS_NS: tuple[int, ...] = tuple(
    us * 1000
    for us in (25, 50, 100, 250, 500, 1_000, 2_500, 5_000, 10_000, 25_000, 50_000, 100_000, 250_000,
               500_000, 1_000_000, 2_500_000, 5_000_000, 10_000_000, 30_000_000, 60_000_000)
)  # fmt: skip
# Upper bounds of the batch size histogram (rows of an execution).
BATCH_BOUNDS: tuple[int, ...] = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024)
_BUCKETS = len(DURATION_BOUNDS_NS) + 1
# The request path finds a duration's bucket from its bit length: values of bit length n lie in
# [2**(n-1), 2**n), where bounds at least 2x apart leave at most one bound, so the first bucket
# that can hold them is right or one short (about twice as fast as bisect). Bucket i holds
# bounds[i-1] < ns <= bounds[i], like Prometheus' `le`; the sentinel closes the last one.
_FIRST_BUCKET = tuple(bisect_left(DURATION_BOUNDS_NS, (1 << n) >> 1) for n in range(64))
_UPPER = (*DURATION_BOUNDS_NS, 1 << 64)


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
        "compute_buckets",
        "compute_infer_ns",
        "compute_input_ns",
        "compute_output_ns",
        "execution_count",
        "fail_count",
        "fail_ns",
        "inference_count",
        "last_inference_ms",
        "overhead_buckets",
        "queue_buckets",
        "queue_ns",
        "request_buckets",
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
        # Per successful request: end to end, queue, compute (input + infer + output) and the rest.
        self.request_buckets = [0] * _BUCKETS
        self.queue_buckets = [0] * _BUCKETS
        self.compute_buckets = [0] * _BUCKETS
        self.overhead_buckets = [0] * _BUCKETS

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
        compute_ns = input_ns + infer_ns + output_ns
        overhead_ns = total_ns - queue_ns - compute_ns
        if overhead_ns < 0:  # (not with one monotonic clock; bit lengths need it non-negative)
            overhead_ns = 0
        # Spelled out four times, with `if` rather than a call or max(): about 40 ns each.
        first, upper = _FIRST_BUCKET, _UPPER
        i = first[total_ns.bit_length()]
        if total_ns > upper[i]:
            i += 1
        self.request_buckets[i] += 1
        i = first[queue_ns.bit_length()]
        if queue_ns > upper[i]:
            i += 1
        self.queue_buckets[i] += 1
        i = first[compute_ns.bit_length()]
        if compute_ns > upper[i]:
            i += 1
        self.compute_buckets[i] += 1
        i = first[overhead_ns.bit_length()]
        if overhead_ns > upper[i]:
            i += 1
        self.overhead_buckets[i] += 1

    def record_failure(self, total_ns: int) -> None:
        self.fail_count += 1
        self.fail_ns += total_ns
        self.last_inference_ms = time.time_ns() // 1_000_000

    @property
    def compute_ns(self) -> int:
        return self.compute_input_ns + self.compute_infer_ns + self.compute_output_ns

    def absorb(self, other: ModelStats) -> None:
        """Add another copy's counts to these (a retired copy folded into what outlives it)."""
        for field in _SUMMED:
            setattr(self, field, getattr(self, field) + getattr(other, field))
        self.last_inference_ms = max(self.last_inference_ms, other.last_inference_ms)
        for size, b in other.batches.items():
            mine = self.batches.get(size)
            if mine is None:
                mine = self.batches[size] = _BatchStats()
            mine.count += b.count
            mine.input_ns += b.input_ns
            mine.infer_ns += b.infer_ns
            mine.output_ns += b.output_ns
        for field in _HISTOGRAMS:
            mine_buckets, theirs = getattr(self, field), getattr(other, field)
            for i, n in enumerate(theirs):
                mine_buckets[i] += n

    def wire(self) -> dict[str, Any]:
        """Every count, as plain data for another process (a worker reporting to the front)."""
        doc: dict[str, Any] = {f: getattr(self, f) for f in _SUMMED}
        doc["last_inference_ms"] = self.last_inference_ms
        doc["batches"] = [
            [size, b.count, b.input_ns, b.infer_ns, b.output_ns] for size, b in self.batches.items()
        ]
        for field in _HISTOGRAMS:
            doc[field] = list(getattr(self, field))
        return doc

    @classmethod
    def from_wire(cls, doc: dict[str, Any]) -> ModelStats:
        """The inverse of `wire`; missing or malformed fields count as zero."""
        stats = cls()
        for field in _SUMMED:
            value = doc.get(field)
            if isinstance(value, int):
                setattr(stats, field, value)
        if isinstance(doc.get("last_inference_ms"), int):
            stats.last_inference_ms = doc["last_inference_ms"]
        for row in doc.get("batches") or []:
            if isinstance(row, list) and len(row) == 5 and all(isinstance(v, int) for v in row):
                batch = stats.batches[row[0]] = _BatchStats()
                batch.count, batch.input_ns, batch.infer_ns, batch.output_ns = row[1:]
        for field in _HISTOGRAMS:
            buckets = doc.get(field)
            if (
                isinstance(buckets, list)
                and len(buckets) == _BUCKETS
                and all(isinstance(n, int) for n in buckets)
            ):
                setattr(stats, field, list(buckets))
        return stats

    def replace_with(self, other: ModelStats) -> None:
        """Take another object's counts in place (readers keep a reference to this one)."""
        for field in ModelStats.__slots__:
            value = getattr(other, field)
            setattr(self, field, list(value) if isinstance(value, list) else value)

    def statistics(self, name: str, version: str) -> ModelStatistics:
        """These counts as the V2 statistics extension's entry for one model version."""

        def batch(size: int, b: _BatchStats) -> BatchStats:
            return BatchStats(
                batch_size=size,
                compute_input=Duration(count=b.count, ns=b.input_ns),
                compute_infer=Duration(count=b.count, ns=b.infer_ns),
                compute_output=Duration(count=b.count, ns=b.output_ns),
            )

        done = self.success_count
        return ModelStatistics(
            name=name,
            version=version,
            last_inference=self.last_inference_ms,
            inference_count=self.inference_count,
            execution_count=self.execution_count,
            inference_stats=InferenceStats(
                success=Duration(count=done, ns=self.success_ns),
                queue=Duration(count=done, ns=self.queue_ns),
                compute_input=Duration(count=done, ns=self.compute_input_ns),
                compute_infer=Duration(count=done, ns=self.compute_infer_ns),
                compute_output=Duration(count=done, ns=self.compute_output_ns),
                fail=Duration(count=self.fail_count, ns=self.fail_ns),
                cache_hit=Duration(count=self.cache_hit_count, ns=self.cache_hit_ns),
                cache_miss=Duration(count=self.cache_miss_count, ns=self.cache_miss_ns),
            ),
            batch_stats=[batch(size, b) for size, b in sorted(self.batches.items())],
        )

    def as_dict(self, name: str, version: str) -> dict[str, Any]:
        """`statistics()` as plain data, for a worker's report to the front."""
        doc: dict[str, Any] = msgspec.to_builtins(self.statistics(name, version))
        return doc


_HISTOGRAMS = ("request_buckets", "queue_buckets", "compute_buckets", "overhead_buckets")
_SUMMED = tuple(f for f in ModelStats.__slots__ if f not in (*_HISTOGRAMS, "batches", "last_inference_ms"))
