"""Statistics of a model's copies in several workers, summed into one V2 entry."""

from __future__ import annotations

from typing import Any

from modelfleet.engine.stats import ModelStats
from modelfleet.workers.reports import merge_statistics


def entry(successes: int, ns: int, batch: int, last: int) -> dict[str, Any]:
    stats = ModelStats()
    for _ in range(successes):
        stats.record_success(batch, batch, total_ns=ns, queue_ns=1, input_ns=2, infer_ns=3, output_ns=4)
    doc = stats.as_dict("bert", "1")
    doc["last_inference"] = last
    return doc


def test_copies_are_summed_per_phase_and_per_batch_size() -> None:
    merged = entry(2, 10, 1, last=5)
    merge_statistics(merged, entry(3, 20, 4, last=9))
    assert (merged["name"], merged["version"], merged["last_inference"]) == ("bert", "1", 9)
    assert merged["inference_stats"]["success"] == {"count": 5, "ns": 80}
    assert merged["inference_stats"]["queue"] == {"count": 5, "ns": 5}
    assert [b["batch_size"] for b in merged["batch_stats"]] == [1, 4]
    assert merged["inference_count"] == 2 * 1 + 3 * 4


def test_the_same_batch_size_in_two_copies_is_one_row() -> None:
    merged = entry(1, 10, 2, last=1)
    merge_statistics(merged, entry(1, 10, 2, last=1))
    (row,) = merged["batch_stats"]
    assert row["batch_size"] == 2
    assert row["compute_infer"]["count"] == 2
