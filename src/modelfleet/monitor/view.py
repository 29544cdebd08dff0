"""What `modelfleet top` shows, as strings: the header lines and the rows of the worker and model
tables, from a snapshot and its rates. Pure (no textual), so the layout is tested without a terminal."""

from __future__ import annotations

import enum
from collections.abc import Sequence

from modelfleet.monitor.sources import FRONT, ModelRow, Rates, Snapshot, Worker

DASH = "\u2013"  # a missing value
BAR_WIDTH = 12

WORKER_COLUMNS: tuple[str, ...] = (
    "Worker",
    "Device",
    "State",
    "PID",
    "CPU %",
    "Memory (used / budget)",
    "RSS",
    "Models",
    "In flight",
    "Restarts",
)
MODEL_COLUMNS: tuple[str, ...] = (
    "Model",
    "Version",
    "Worker",
    "State",
    "Resident",
    "Req/s",
    "In flight",
    "Last use",
    "Pinned",
    "Loads",
    "Evictions",
)


class SortKey(enum.Enum):
    """The model table's order; `s` moves to the next."""

    REQUESTS = "requests/s"
    SIZE = "size"
    NAME = "name"

    def next(self) -> SortKey:
        members = list(SortKey)
        return members[(members.index(self) + 1) % len(members)]


# -- numbers ----------------------------------------------------------------------------------------------


def fmt_bytes(n: float | None) -> str:
    if n is None:
        return DASH
    for unit in ("B", "KiB", "MiB", "GiB"):
        if abs(n) < 1024 or unit == "GiB":
            break
        n /= 1024
    if unit == "B":
        return f"{int(n)} B"
    return f"{n:.2f} {unit}" if abs(n) < 10 else f"{n:.1f} {unit}"


def fmt_rate(x: float | None) -> str:
    if x is None:
        return DASH
    if x == 0:
        return "0"
    return f"{x:.2f}" if x < 10 else f"{x:.1f}" if x < 1000 else f"{x:.0f}"


def fmt_count(x: float | None) -> str:
    return DASH if x is None else f"{int(x)}"


def fmt_age(seconds: float | None) -> str:
    """How long ago, in the largest whole unit (a clock skew below zero reads as "now")."""
    if seconds is None:
        return DASH
    if seconds < 1:
        return "now"
    for size, unit in ((86400, "d"), (3600, "h"), (60, "m")):
        if seconds >= size:
            return f"{int(seconds // size)}{unit} ago"
    return f"{int(seconds)}s ago"


def fmt_uptime(seconds: float | None) -> str:
    if seconds is None or seconds < 0:
        return DASH
    s = int(seconds)
    days, s = divmod(s, 86400)
    clock = f"{s // 3600:02d}:{s % 3600 // 60:02d}:{s % 60:02d}"
    return f"{days}d {clock}" if days else clock


def bar(used: int | None, budget: int | None, width: int = BAR_WIDTH) -> str:
    """`████░░░░ 1.20 GiB / 4.00 GiB`; without a budget, just what is used."""
    if used is None:
        return DASH
    if not budget:
        return fmt_bytes(used)
    filled = round(width * min(max(used / budget, 0.0), 1.0))
    return "\u2588" * filled + "\u2591" * (width - filled) + f" {fmt_bytes(used)} / {fmt_bytes(budget)}"


# -- header -------------------------------------------------------------------------------------------------


def header(url: str, snap: Snapshot, rates: Rates) -> list[str]:
    """Two lines: who and how busy; then memory and the load / eviction churn."""
    t = snap.totals
    name = " ".join(x for x in (snap.server or "server", snap.version) if x)
    uptime = fmt_uptime(snap.wall_time - snap.started_at) if snap.started_at else DASH
    processes = sum(1 for w in snap.workers if w.key != FRONT)
    mode = f"{processes} worker{'' if processes == 1 else 's'}" if snap.worker_processes else "in-process"
    first = (
        f"{name} at {url} · up {uptime} · {mode} · "
        f"{fmt_rate(rates.total_requests_per_s)} req/s ({fmt_count(t.requests)} answered)"
    )
    second = (
        f"memory {bar(t.used_bytes, t.budget_bytes)} · "
        f"models {fmt_count(t.resident_models)} resident / {fmt_count(t.known_models)} known · "
        f"loads {fmt_count(t.loads)} ({fmt_rate(rates.loads_per_s)}/s) · "
        f"evictions {fmt_count(t.evictions)} ({fmt_rate(rates.evictions_per_s)}/s) · "
        f"cold starts {fmt_count(t.cold_starts)} ({fmt_rate(rates.cold_starts_per_s)}/s)"
    )
    return [first, second]


# -- tables ----------------------------------------------------------------------------------------------------


def worker_rows(snap: Snapshot, rates: Rates) -> list[tuple[str, list[str]]]:
    """(row key, cells) per worker, in WORKER_COLUMNS order."""
    return [(w.key, _worker_cells(w, rates)) for w in snap.workers]


def _worker_cells(w: Worker, rates: Rates) -> list[str]:
    cpu = rates.cpu_percent.get(w.key)
    return [
        w.key,
        w.device or DASH,
        w.state or DASH,
        fmt_count(w.pid),
        DASH if cpu is None else f"{cpu:.0f}",
        bar(w.used_bytes, w.budget_bytes),
        fmt_bytes(w.rss_bytes),
        fmt_count(w.models),
        fmt_count(w.in_flight),
        fmt_count(w.restarts),
    ]


def sort_models(models: Sequence[ModelRow], rates: Rates, key: SortKey) -> list[ModelRow]:
    """Busiest or largest first (name breaks ties); by name A to Z."""
    if key is SortKey.NAME:
        return sorted(models, key=lambda m: m.key)
    if key is SortKey.SIZE:
        return sorted(models, key=lambda m: (-(m.resident_bytes or 0), m.key))
    return sorted(models, key=lambda m: (-rates.requests_per_s.get(m.key, 0.0), m.key))


def model_rows(snap: Snapshot, rates: Rates, key: SortKey) -> list[tuple[str, list[str]]]:
    """(row key, cells) per resident model version, in MODEL_COLUMNS order, sorted by `key`."""
    rows = []
    for m in sort_models(snap.models, rates, key):
        age = None if m.last_used is None else snap.wall_time - m.last_used
        pinned = DASH if m.pinned is None else ("yes" if m.pinned else "no")
        cells = [
            m.name,
            m.version or DASH,
            ",".join(m.workers) or DASH,
            m.state or DASH,
            fmt_bytes(m.resident_bytes),
            fmt_rate(rates.requests_per_s.get(m.key)),
            fmt_count(m.in_flight),
            fmt_age(age),
            pinned,
            fmt_count(m.loads),
            fmt_count(m.evictions),
        ]
        rows.append((f"{m.name}\0{m.version}", cells))
    return rows
