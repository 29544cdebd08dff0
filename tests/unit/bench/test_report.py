"""The JSON report: open-loop figures alongside the closed loop's fields."""

from datetime import UTC, datetime

import orjson

from modelfleet.bench.openstats import merge_open
from modelfleet.bench.report import report_document
from modelfleet.bench.stats import merge
from tests.unit.bench.test_openstats import SHARE_A, SHARE_B, open_spec, share
from tests.unit.bench.test_stats import share as closed_share

STARTED = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)


def test_open_loop_report_fields() -> None:
    spec = open_spec()
    result = merge_open([share(SHARE_A, 0.5, 3), share(SHARE_B, 0.25, 2)], ["a", "b"], spec)
    doc = orjson.loads(orjson.dumps(report_document(spec, result, STARTED)))  # plain JSON, no NaN
    assert doc["requests"] == 3 and doc["errors"]["total"] == 5
    assert doc["options"]["phases"] == [
        {"duration_s": 1, "rate_per_s": 4},
        {"duration_s": 1, "rate_per_s": 2},
    ]
    assert doc["options"]["arrivals"] == "constant" and doc["options"]["max_connections"] == 512
    loop = doc["open_loop"]
    assert set(loop) == {
        "arrivals",
        "max_connections",
        "peak_connections",
        "send_lag_ms",
        "total",
        "phases",
        "series",
    }
    total = loop["total"]
    assert total["status_counts"] == {"200": 3, "429": 2, "503": 1}
    assert total["client_failures"] == {"client_saturated": 1, "timeout": 1}
    assert total["send_rate_per_s"] == 3.5 and total["goodput_per_s"] == 1.0
    assert total["latency_ms"]["refused"]["p99"] == 3 and total["latency_ms"]["ok"]["max"] == 1500
    assert [p["rate_per_s"] for p in loop["phases"]] == [4, 2]
    assert loop["series"][1] == {
        "t_s": 1,
        "sent": 3,
        "ok": 0,
        "refused": 1,
        "failed": 1,
        "saturated": 0,
        "ok_p99_ms": None,
    }


def test_closed_loop_report_has_no_open_loop_section() -> None:
    spec = open_spec()
    result = merge([closed_share([1, 2], [0, 1], {}, {})], ["a", "b"], 1.0, top=10)
    doc = report_document(spec, result, STARTED)
    assert "open_loop" not in doc and doc["requests"] == 2
