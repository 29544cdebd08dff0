import numpy as np
import pytest

from modelfleet.engine.memory import (
    format_bytes,
    machine_memory_bytes,
    parse_budget,
    process_rss,
    release_free_memory,
)


def test_budgets_in_bytes_units_and_fractions() -> None:
    assert parse_budget(1234) == 1234
    assert parse_budget("12GiB") == 12 << 30
    assert parse_budget("800MB") == 800_000_000
    assert parse_budget("1.5 GiB") == 3 << 29
    assert parse_budget("0.5", machine_bytes=1000) == 500
    assert parse_budget(0.25, machine_bytes=1000) == 250
    for bad in ("lots", "12XB", "1.5", "-1GiB"):
        with pytest.raises(ValueError, match="memory"):
            parse_budget(bad, machine_bytes=1000)


def test_readings_are_plausible() -> None:
    assert machine_memory_bytes() > 1 << 28
    before = process_rss()
    assert 0 < before.anonymous <= before.total
    block = np.ones(64 << 20, dtype=np.uint8)  # 64 MiB, touched
    grown = process_rss().anonymous - before.anonymous
    assert grown > 48 << 20
    del block
    release_free_memory()
    assert process_rss().anonymous - before.anonymous < 16 << 20


def test_format_bytes() -> None:
    assert format_bytes(512) == "512 B"
    assert format_bytes(3 << 20) == "3.0 MiB"
    assert format_bytes(5 << 30) == "5.0 GiB"
