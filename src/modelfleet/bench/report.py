"""How a run's figures are shown: rich tables on the terminal, and the `--report` JSON document."""

from __future__ import annotations

import math
import os
import platform
from dataclasses import asdict
from datetime import datetime
from pathlib import Path
from typing import Any

import orjson
from rich.console import Console
from rich.table import Table

from modelfleet.bench.spec import BenchSpec
from modelfleet.bench.stats import BenchResult, LatencySummary

REPORT_VERSION = 1


def _cpu_model() -> str | None:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or None


def options(spec: BenchSpec) -> dict[str, Any]:
    """The options as given (a model pattern stays a pattern, not thousands of names)."""
    doc = asdict(spec)
    doc["target"] = spec.target.url
    doc["shapes"] = {k: list(v) for k, v in spec.shapes.items()}
    doc["input_file"] = str(spec.input_file) if spec.input_file else None
    doc["same_signature"] = spec.shares_signature
    return doc


def _latency(summary: LatencySummary) -> dict[str, float | None]:
    fields = asdict(summary)
    fields.pop("count")
    return {k.removesuffix("_ms"): None if math.isnan(v) else round(v, 4) for k, v in fields.items()}


def report_document(spec: BenchSpec, result: BenchResult, started_at: datetime) -> dict[str, Any]:
    return {
        "report_version": REPORT_VERSION,
        "started_at": started_at.isoformat(),
        "options": options(spec),
        "duration_s": result.duration_s,
        "requests": result.requests,
        "requests_per_s": round(result.requests_per_s, 2),
        "latency_ms": _latency(result.latency),
        "errors": {"total": result.error_total, "by_kind": result.errors},
        "warmup_errors": result.warmup_errors,
        "models": {"count": len(spec.models.expand()), "hit": result.models_hit},
        "top_models": [
            {
                "model": row.model,
                "requests": row.requests,
                "requests_per_s": round(row.requests_per_s, 2),
                "errors": row.errors,
                "latency_ms": _latency(row.latency),
            }
            for row in result.top_models
        ],
        "client": {
            "processes": result.client_processes,
            "cpu_s": round(result.client_cpu_s, 3),
            "cpu_us_per_request": None
            if math.isnan(result.client_cpu_us_per_request)
            else round(result.client_cpu_us_per_request, 2),
        },
        "host": {"cpus": os.cpu_count(), "cpu_model": _cpu_model(), "python": platform.python_version()},
    }


def write_report(path: Path, document: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(orjson.dumps(document, option=orjson.OPT_INDENT_2) + b"\n")


def _ms(value: float) -> str:
    return "-" if math.isnan(value) else f"{value:.2f}"


def print_result(console: Console, spec: BenchSpec, result: BenchResult) -> None:
    summary = Table(title=f"modelfleet bench → {spec.target.url}", show_header=False, title_justify="left")
    summary.add_column(style="bold")
    summary.add_column(justify="right")
    lat = result.latency
    rows = [
        ("requests", f"{result.requests:,} in {result.duration_s:g} s"),
        ("requests/s", f"{result.requests_per_s:,.1f}"),
        ("latency p50 / p90 / p95 ms", f"{_ms(lat.p50_ms)} / {_ms(lat.p90_ms)} / {_ms(lat.p95_ms)}"),
        ("latency p99 / max ms", f"{_ms(lat.p99_ms)} / {_ms(lat.max_ms)}"),
        (
            "errors",
            f"{result.error_total:,}"
            + (f" (+{result.warmup_errors:,} in warm-up)" * bool(result.warmup_errors)),
        ),
        ("models hit", f"{result.models_hit:,} of {len(spec.models.expand()):,}"),
        (
            "client",
            f"{result.client_processes} process(es), {spec.concurrency} connection(s), "
            f"{_ms(result.client_cpu_us_per_request)} µs CPU/request",
        ),
    ]
    for name, value in rows:
        summary.add_row(name, value)
    console.print(summary)
    if result.errors:
        errors = Table(title="Errors by kind", title_justify="left")
        errors.add_column("error")
        errors.add_column("count", justify="right")
        for kind, count in result.errors.items():
            errors.add_row(kind, f"{count:,}")
        console.print(errors)
    if result.top_models:
        top = Table(title="Busiest models", title_justify="left")
        top.add_column("model")
        for name in ("requests", "req/s", "p50 ms", "p99 ms", "errors"):
            top.add_column(name, justify="right")
        for row in result.top_models:
            top.add_row(
                row.model,
                f"{row.requests:,}",
                f"{row.requests_per_s:,.1f}",
                _ms(row.latency.p50_ms),
                _ms(row.latency.p99_ms),
                f"{row.errors:,}",
            )
        console.print(top)
