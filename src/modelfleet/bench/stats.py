"""The figures of a run: throughput, latency percentiles, errors, and the busiest models.

Client processes send raw latency arrays; they are concatenated here, so percentiles are exact
(nearest rank) rather than merged from per-process estimates.
"""

from __future__ import annotations

import numpy as np

from modelfleet.bench.figures import PERCENTILES, BenchResult, LatencySummary, ModelRow, percentile
from modelfleet.bench.messages import ShareResult

# the names other modules read from here (the types live in figures.py, a leaf)
__all__ = ["PERCENTILES", "BenchResult", "LatencySummary", "ModelRow", "merge", "percentile"]


def merge(results: list[ShareResult], models: list[str], duration_s: float, top: int) -> BenchResult:
    """One result from every client process's share."""
    latencies = np.concatenate([np.frombuffer(r.latencies_ns, dtype="<i8") for r in results])
    indexes = np.concatenate([np.frombuffer(r.model_indexes, dtype="<i4") for r in results])
    errors: dict[str, int] = {}
    model_errors = np.zeros(len(models), dtype=np.int64)
    for r in results:
        for kind, count in r.errors.items():
            errors[kind] = errors.get(kind, 0) + count
        for index, count in r.model_errors.items():
            model_errors[index] += count
    counts = np.bincount(indexes, minlength=len(models))
    rows = []
    if len(models) > 1:
        busiest = np.argsort(-(counts + model_errors), kind="stable")[:top]
        for index in busiest.tolist():
            if counts[index] + model_errors[index] == 0:
                break
            rows.append(
                ModelRow(
                    model=models[index],
                    requests=int(counts[index]),
                    requests_per_s=float(counts[index]) / duration_s,
                    errors=int(model_errors[index]),
                    latency=LatencySummary.of(latencies[indexes == index]),
                )
            )
    return BenchResult(
        duration_s=duration_s,
        requests=len(latencies),
        requests_per_s=len(latencies) / duration_s,
        latency=LatencySummary.of(latencies),
        errors=dict(sorted(errors.items())),
        warmup_errors=sum(r.warmup_errors for r in results),
        models_hit=int(np.count_nonzero(counts + model_errors)),
        top_models=rows,
        client_processes=len(results),
        client_cpu_s=sum(r.cpu_s for r in results),
    )
