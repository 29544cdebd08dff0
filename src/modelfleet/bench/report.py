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

from modelfleet.bench.openstats import REFUSED, OpenLoopFigures, Outcomes
from modelfleet.bench.series import ClosedLoopFigures, cost_per_million
from modelfleet.bench.spec import BenchSpec
from modelfleet.bench.stats import BenchResult, LatencySummary
from modelfleet.host import cpu_model

REPORT_VERSION = 1


def options(spec: BenchSpec) -> dict[str, Any]:
    """The options as given (a model pattern stays a pattern, not thousands of names); never the key."""
    doc = asdict(spec)
    doc["target"] = spec.target.url
    doc["protocol"] = str(spec.target.protocol)
    doc["api_key"] = None if spec.api_key is None else "(given)"
    doc["shapes"] = {k: list(v) for k, v in spec.shapes.items()}
    doc["input_file"] = str(spec.input_file) if spec.input_file else None
    doc["same_signature"] = spec.shares_signature
    doc["arrivals"] = str(spec.arrivals)
    return doc


def _latency(summary: LatencySummary) -> dict[str, float | None]:
    fields = asdict(summary)
    fields.pop("count")
    return {k.removesuffix("_ms"): _number(v) for k, v in fields.items()}


def _number(value: float, digits: int = 4) -> float | None:
    return None if math.isnan(value) else round(value, digits)


def _outcomes(o: Outcomes) -> dict[str, Any]:
    return {
        "start_s": o.start_s,
        "duration_s": o.duration_s,
        "rate_per_s": round(o.rate_per_s, 3),
        "scheduled": o.scheduled,
        "sent": o.sent,
        "send_rate_per_s": round(o.send_rate_per_s, 2),
        "ok": o.ok,
        "goodput_per_s": round(o.goodput_per_s, 2),
        "status_counts": o.statuses,
        "client_failures": o.failures,
        "latency_ms": {"ok": _latency(o.ok_latency), "refused": _latency(o.refused_latency)},
    }


def _open_loop(figures: OpenLoopFigures) -> dict[str, Any]:
    """Per status, phase and second; latency runs from each request's scheduled send time."""
    return {
        "arrivals": figures.arrivals,
        "max_connections": figures.max_connections,
        "peak_connections": figures.peak_connections,
        "send_lag_ms": _latency(figures.send_lag),
        "total": _outcomes(figures.total),
        "phases": [_outcomes(p) for p in figures.phases],
        "series": [
            {
                "t_s": s.t_s,
                "sent": s.sent,
                "ok": s.ok,
                "refused": s.refused,
                "failed": s.failed,
                "saturated": s.saturated,
                "ok_p99_ms": _number(s.ok_p99_ms),
            }
            for s in figures.series
        ],
    }


def _closed_loop(figures: ClosedLoopFigures) -> dict[str, Any]:
    """Per user phase and per second; which threshold stopped the run, if one did."""
    stopped = figures.stopped
    return {
        "recorded_s": figures.recorded_s,
        "stopped": None
        if stopped is None
        else {
            "reason": stopped.reason,
            "value": round(stopped.value, 4),
            "limit": stopped.limit,
            "at_s": round(stopped.at_s, 3),
        },
        "phases": [
            {
                "start_s": p.start_s,
                "duration_s": p.duration_s,
                "users_from": p.users_from,
                "users_to": p.users_to,
                "ok": p.ok,
                "errors": p.errors,
                "throughput_per_s": _number(p.throughput_per_s, 2),
                "latency_ms": _latency(p.latency),
            }
            for p in figures.phases
        ],
        "series": [
            {
                "t_s": s.t_s,
                "length_s": s.length_s,
                "users": s.users,
                "ok": s.ok,
                "errors": s.errors,
                "p50_ms": _number(s.p50_ms),
                "p90_ms": _number(s.p90_ms),
                "p99_ms": _number(s.p99_ms),
            }
            for s in figures.series
        ],
    }


def cost(spec: BenchSpec, result: BenchResult) -> dict[str, Any] | None:
    """$ per million inferences at the measured throughput, for the price given (None: no price)."""
    if spec.usd_per_hour is None:
        return None
    rate = result.requests_per_s * spec.batch_size  # a request of batch B is B inferences
    per_million = cost_per_million(spec.usd_per_hour, rate)
    return {
        "instance_type": spec.instance_type,
        "usd_per_hour": spec.usd_per_hour,
        "inferences_per_s": round(rate, 2),
        "usd_per_million": None if math.isinf(per_million) else float(f"{per_million:.6g}"),
    }


def report_document(spec: BenchSpec, result: BenchResult, started_at: datetime) -> dict[str, Any]:
    doc: dict[str, Any] = {
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
        "host": {"cpus": os.cpu_count(), "cpu_model": cpu_model(), "python": platform.python_version()},
    }
    if result.open_loop is not None:
        doc["open_loop"] = _open_loop(result.open_loop)
    if result.closed_loop is not None:
        doc["closed_loop"] = _closed_loop(result.closed_loop)
    doc["cost"] = cost(spec, result)
    return doc


def write_report(path: Path, document: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(orjson.dumps(document, option=orjson.OPT_INDENT_2) + b"\n")


def _ms(value: float) -> str:
    return "-" if math.isnan(value) else f"{value:.2f}"


def _closed_rows(spec: BenchSpec, result: BenchResult) -> list[tuple[str, str]]:
    lat = result.latency
    return [
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
            f"{result.client_processes} process(es), {'up to ' * bool(spec.user_phases)}{spec.concurrency} "
            f"{'user(s)' if spec.user_phases else 'connection(s)'}, "
            f"{_ms(result.client_cpu_us_per_request)} µs CPU/request",
        ),
    ]


def _extra_rows(spec: BenchSpec, result: BenchResult) -> list[tuple[str, str]]:
    """The rows every report has when they apply: the stop threshold, the cost."""
    rows = []
    figures = result.closed_loop
    if figures is not None and figures.stopped is not None:
        stop = figures.stopped
        rows.append(
            (
                "stopped by",
                f"{stop.reason} {stop.value:,.4g} > {stop.limit:,.4g} after {stop.at_s:.1f} s",
            )
        )
    priced = cost(spec, result)
    if priced is not None:
        per_million = priced["usd_per_million"]
        where = f" ({priced['instance_type']})" if priced["instance_type"] else ""
        rows.append(
            (
                "$ per million inferences",
                "-" if per_million is None else f"{per_million:,.4f} at ${priced['usd_per_hour']:g}/h{where}",
            )
        )
    return rows


def _counts(counts: dict[str, int]) -> str:
    return ", ".join(f"{k}: {v:,}" for k, v in counts.items()) or "none"


def _open_rows(spec: BenchSpec, result: BenchResult, figures: OpenLoopFigures) -> list[tuple[str, str]]:
    total, ok, refused, lag = (
        figures.total,
        figures.total.ok_latency,
        figures.total.refused_latency,
        figures.send_lag,
    )
    return [
        ("asked", f"{total.rate_per_s:,.1f} req/s ({figures.arrivals}) for {total.duration_s:g} s"),
        ("sent", f"{total.sent:,} = {total.send_rate_per_s:,.1f} req/s"),
        ("answers (HTTP status)", _counts(total.statuses)),
        ("goodput (2xx answers / s)", f"{total.goodput_per_s:,.1f}"),
        (
            "ok latency p50 / p90 / p99 / max ms",
            f"{_ms(ok.p50_ms)} / {_ms(ok.p90_ms)} / {_ms(ok.p99_ms)} / {_ms(ok.max_ms)}",
        ),
        (
            "429 latency p50 / p99 / max ms",
            f"{_ms(refused.p50_ms)} / {_ms(refused.p99_ms)} / {_ms(refused.max_ms)}",
        ),
        (
            "client failures",
            _counts(total.failures)
            + (f" (+{result.warmup_errors:,} errors in warm-up)" * bool(result.warmup_errors)),
        ),
        ("send lag p50 / p99 / max ms", f"{_ms(lag.p50_ms)} / {_ms(lag.p99_ms)} / {_ms(lag.max_ms)}"),
        ("models hit", f"{result.models_hit:,} of {len(spec.models.expand()):,}"),
        (
            "client",
            f"{result.client_processes} process(es), {figures.peak_connections} of {figures.max_connections} "
            f"connection(s) opened, {_ms(result.client_cpu_us_per_request)} µs CPU/request sent",
        ),
    ]


def _phase_table(figures: OpenLoopFigures) -> Table:
    table = Table(
        title="Phases (2xx/s by answer time; the rest by scheduled time; latency in ms from it)",
        title_justify="left",
    )
    for name in ("from s", "asked/s", "sent/s", "2xx/s", "429", "other", "ok p50 / p99", "429 p50 / p99"):
        table.add_column(name, justify="right")
    for p in figures.phases:
        refused = p.statuses.get(str(REFUSED), 0)
        ok, no = p.ok_latency, p.refused_latency
        table.add_row(
            f"{p.start_s:g}",
            f"{p.rate_per_s:,.1f}",
            f"{p.send_rate_per_s:,.1f}",
            f"{p.goodput_per_s:,.1f}",
            f"{refused:,}",
            f"{p.scheduled - p.ok - refused:,}",
            f"{_ms(ok.p50_ms)} / {_ms(ok.p99_ms)}",
            f"{_ms(no.p50_ms)} / {_ms(no.p99_ms)}",
        )
    return table


def _user_phase_table(figures: ClosedLoopFigures) -> Table:
    table = Table(title="User phases", title_justify="left")
    for name in ("from s", "users", "req/s", "errors", "p50 / p90 / p99 ms"):
        table.add_column(name, justify="right")
    for p in figures.phases:
        lat = p.latency
        table.add_row(
            f"{p.start_s:g}",
            f"{p.users_from} → {p.users_to}",
            f"{p.throughput_per_s:,.1f}",
            f"{p.errors:,}",
            f"{_ms(lat.p50_ms)} / {_ms(lat.p90_ms)} / {_ms(lat.p99_ms)}",
        )
    return table


def print_result(console: Console, spec: BenchSpec, result: BenchResult) -> None:
    summary = Table(title=f"modelfleet bench → {spec.target.url}", show_header=False, title_justify="left")
    summary.add_column(style="bold")
    summary.add_column(justify="right")
    figures = result.open_loop
    rows = _closed_rows(spec, result) if figures is None else _open_rows(spec, result, figures)
    for name, value in [*rows, *_extra_rows(spec, result)]:
        summary.add_row(name, value)
    console.print(summary)
    if figures is not None and len(figures.phases) > 1:
        console.print(_phase_table(figures))
    if result.closed_loop is not None and spec.user_phases:
        console.print(_user_phase_table(result.closed_loop))
    if result.errors and figures is None:
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
