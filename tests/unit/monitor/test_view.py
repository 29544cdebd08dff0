"""The strings `modelfleet top` shows: numbers, bars, the header and the sorted table rows."""

from __future__ import annotations

import pytest

from modelfleet.monitor.sources import ModelRow, Rates, Snapshot, Totals, Worker
from modelfleet.monitor.view import (
    DASH,
    MODEL_COLUMNS,
    WORKER_COLUMNS,
    SortKey,
    bar,
    fmt_age,
    fmt_bytes,
    fmt_rate,
    fmt_uptime,
    header,
    model_rows,
    worker_rows,
)


@pytest.mark.parametrize(
    ("n", "text"),
    [
        (None, DASH),
        (0, "0 B"),
        (1023, "1023 B"),
        (1536, "1.50 KiB"),
        (20 << 20, "20.0 MiB"),
        (3 << 40, "3072.0 GiB"),
    ],
)
def test_bytes(n: int | None, text: str) -> None:
    assert fmt_bytes(n) == text


@pytest.mark.parametrize(
    ("x", "text"), [(None, DASH), (0.0, "0"), (0.123, "0.12"), (42.26, "42.3"), (12345.6, "12346")]
)
def test_rates(x: float | None, text: str) -> None:
    assert fmt_rate(x) == text


@pytest.mark.parametrize(
    ("s", "text"),
    [(None, DASH), (-3, "now"), (0.5, "now"), (42, "42s ago"), (125, "2m ago"), (7300, "2h ago")],
)
def test_ages(s: float | None, text: str) -> None:
    assert fmt_age(s) == text


def test_uptime() -> None:
    assert fmt_uptime(3725) == "01:02:05"
    assert fmt_uptime(2 * 86400 + 5) == "2d 00:00:05"
    assert fmt_uptime(None) == fmt_uptime(-1) == DASH


def test_memory_bar() -> None:
    assert bar(256 << 20, 1 << 30, width=4) == "\u2588\u2591\u2591\u2591 256.0 MiB / 1.00 GiB"
    assert bar(2 << 30, 1 << 30, width=4).startswith("\u2588" * 4)  # over budget stays within the bar
    assert bar(5, None) == "5 B"
    assert bar(None, 10) == DASH


def test_sort_keys_cycle() -> None:
    assert SortKey.REQUESTS.next() is SortKey.SIZE
    assert SortKey.SIZE.next() is SortKey.NAME
    assert SortKey.NAME.next() is SortKey.REQUESTS


SNAP = Snapshot(
    taken_at=5.0,
    wall_time=1000.0,
    server="modelfleet",
    version="0.1.0",
    started_at=1000.0 - 3661,
    worker_processes=True,
    workers=(
        Worker(
            "0", pid=7, device="cuda:0", state="ready", budget_bytes=4 << 30, used_bytes=1 << 30, restarts=2
        ),
        Worker("front", device="front"),
    ),
    models=(
        ModelRow("small", "1", workers=("0",), resident_bytes=1 << 20, last_used=990.0, pinned=True),
        ModelRow("big", "1", workers=("0", "1"), resident_bytes=1 << 30, in_flight=4, loads=2, evictions=1),
        ModelRow("busy", "3", resident_bytes=5 << 20),
    ),
    totals=Totals(
        requests=1234, loads=5, evictions=1, resident_models=3, known_models=10, used_bytes=1 << 30
    ),
)
RATES = Rates(
    interval_s=1.0,
    requests_per_s={("small", "1"): 1.0, ("busy", "3"): 50.0, ("big", "1"): 0.0},
    cpu_percent={"0": 152.4},
    total_requests_per_s=51.0,
    loads_per_s=0.0,
)


def test_model_rows_sorted_by_each_key() -> None:
    names = {key: [cells[0] for _, cells in model_rows(SNAP, RATES, key)] for key in SortKey}
    assert names == {
        SortKey.REQUESTS: ["busy", "small", "big"],
        SortKey.SIZE: ["big", "busy", "small"],
        SortKey.NAME: ["big", "busy", "small"],
    }
    rows = dict(model_rows(SNAP, RATES, SortKey.NAME))
    assert dict(zip(MODEL_COLUMNS, rows["big\x001"], strict=True)) == {
        "Model": "big",
        "Version": "1",
        "Worker": "0,1",
        "State": DASH,
        "Resident": "1.00 GiB",
        "Req/s": "0",
        "In flight": "4",
        "Last use": DASH,
        "Pinned": DASH,
        "Loads": "2",
        "Evictions": "1",
    }
    small = dict(zip(MODEL_COLUMNS, rows["small\x001"], strict=True))
    assert (small["Last use"], small["Pinned"], small["Req/s"]) == ("10s ago", "yes", "1.00")


def test_worker_rows() -> None:
    (_, gpu), (_, front) = worker_rows(SNAP, RATES)
    cells = dict(zip(WORKER_COLUMNS, gpu, strict=True))
    assert cells["CPU %"] == "152"
    assert cells["Memory (used / budget)"].endswith("1.00 GiB / 4.00 GiB")
    assert (cells["Device"], cells["PID"], cells["Restarts"]) == ("cuda:0", "7", "2")
    assert front == ["front", "front", DASH, DASH, DASH, DASH, DASH, DASH, DASH, DASH]


def test_header() -> None:
    first, second = header("http://h:8000", SNAP, RATES)
    assert first == "modelfleet 0.1.0 at http://h:8000 · up 01:01:01 · 1 worker · 51.0 req/s (1234 answered)"
    assert "models 3 resident / 10 known" in second
    assert "loads 5 (0/s)" in second and f"evictions 1 ({DASH}/s)" in second
    assert f"cold starts {DASH}" in second
    assert second.startswith("memory 1.00 GiB ·")  # no budget known: no bar
