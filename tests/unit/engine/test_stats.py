import bisect

import orjson

from modelfleet.engine.stats import BATCH_BOUNDS, DURATION_BOUNDS_NS, ModelStats


def test_statistics_extension_shape() -> None:
    stats = ModelStats()
    stats.record_success(2, 2, total_ns=100, queue_ns=10, input_ns=5, infer_ns=70, output_ns=15)
    stats.record_success(1, 1, total_ns=50, queue_ns=1, input_ns=2, infer_ns=40, output_ns=7)
    stats.record_failure(30)
    doc = stats.as_dict("m", "1")
    assert doc["inference_count"] == 3
    assert doc["execution_count"] == 2
    assert doc["last_inference"] > 0
    s = doc["inference_stats"]
    assert s["success"] == {"count": 2, "ns": 150}
    assert s["fail"] == {"count": 1, "ns": 30}
    assert s["queue"] == {"count": 2, "ns": 11}
    assert s["compute_infer"] == {"count": 2, "ns": 110}
    assert s["cache_hit"] == {"count": 0, "ns": 0}
    assert [b["batch_size"] for b in doc["batch_stats"]] == [1, 2]
    assert doc["batch_stats"][1]["compute_infer"] == {"count": 1, "ns": 70}


def test_duration_histograms_count_each_success_in_its_bucket() -> None:
    stats = ModelStats()
    bounds = DURATION_BOUNDS_NS
    # total, queue and compute (input + infer + output) land in their buckets; the overhead is the rest
    stats.record_success(
        1, 1, total_ns=bounds[3], queue_ns=bounds[0], input_ns=1, infer_ns=bounds[1] - 2, output_ns=1
    )
    assert stats.request_buckets[3] == 1  # a value equal to a bound counts in that bound's bucket
    assert stats.queue_buckets[0] == 1
    assert stats.compute_buckets[1] == 1
    overhead = bounds[3] - bounds[0] - bounds[1]
    assert stats.overhead_buckets[bisect.bisect_left(bounds, overhead)] == 1
    stats.record_success(1, 1, total_ns=bounds[-1] + 1, queue_ns=0, input_ns=0, infer_ns=0, output_ns=0)
    assert stats.request_buckets[-1] == 1  # above every bound: the +Inf bucket
    assert stats.queue_buckets[0] == 2  # zero: the first bucket
    for buckets in (
        stats.request_buckets,
        stats.queue_buckets,
        stats.compute_buckets,
        stats.overhead_buckets,
    ):
        assert len(buckets) == len(bounds) + 1
        assert sum(buckets) == stats.success_count == 2
    assert stats.compute_ns == bounds[1]


def test_failures_and_cache_hits_stay_out_of_the_duration_histograms() -> None:
    stats = ModelStats()
    stats.record_failure(1_000)
    stats.cache_hit_count += 1
    assert sum(stats.request_buckets) == 0


def test_absorb_adds_every_count_of_another_copy() -> None:
    kept, retired = ModelStats(), ModelStats()
    kept.record_success(1, 1, total_ns=100, queue_ns=10, input_ns=5, infer_ns=70, output_ns=15)
    retired.record_success(2, 4, total_ns=200_000, queue_ns=20, input_ns=5, infer_ns=70, output_ns=15)
    retired.record_failure(30)
    retired.cache_hit_count, retired.cache_miss_count = 3, 2
    kept.absorb(retired)
    doc = kept.as_dict("m", "1")
    assert doc["inference_count"] == 3
    assert doc["inference_stats"]["success"] == {"count": 2, "ns": 200_100}
    assert doc["inference_stats"]["fail"] == {"count": 1, "ns": 30}
    assert doc["inference_stats"]["cache_hit"]["count"] == 3
    assert doc["inference_stats"]["cache_miss"]["count"] == 2
    assert [b["batch_size"] for b in doc["batch_stats"]] == [1, 4]
    assert sum(kept.request_buckets) == 2
    assert kept.last_inference_ms == max(kept.last_inference_ms, retired.last_inference_ms)
    assert sum(retired.request_buckets) == 1  # the other copy is left as it was


def test_histogram_bounds_are_increasing() -> None:
    assert list(DURATION_BOUNDS_NS) == sorted(set(DURATION_BOUNDS_NS))
    assert list(BATCH_BOUNDS) == sorted(set(BATCH_BOUNDS))
    assert DURATION_BOUNDS_NS[0] == 25_000 and DURATION_BOUNDS_NS[-1] == 60 * 10**9


def test_buckets_found_from_bit_lengths_match_bisect() -> None:
    values = [0, 1, 2**40, 2**63 - 1]
    for bound in DURATION_BOUNDS_NS:
        values += [bound - 1, bound, bound + 1]
    values += [int(10 ** (i / 100)) for i in range(1200)]  # 1 ns to 10^12 ns, 100 per decade
    for ns in values:
        stats = ModelStats()
        stats.record_success(1, 1, total_ns=ns, queue_ns=0, input_ns=0, infer_ns=0, output_ns=0)
        assert stats.request_buckets.index(1) == bisect.bisect_left(DURATION_BOUNDS_NS, ns), ns


def test_counts_cross_a_process_as_plain_data_and_replace_in_place() -> None:
    stats = ModelStats()
    stats.record_success(2, 4, 9_000_000, 1_000_000, 100_000, 5_000_000, 200_000)
    stats.record_failure(3_000)
    copy = ModelStats.from_wire(orjson.loads(orjson.dumps(stats.wire())))
    assert copy.as_dict("m", "1") == stats.as_dict("m", "1")
    assert copy.request_buckets == stats.request_buckets and copy.batches.keys() == {4}
    held = ModelStats()
    held.replace_with(copy)
    assert held.as_dict("m", "1") == stats.as_dict("m", "1")
    assert (
        ModelStats.from_wire({"success_count": "x", "batches": [[1, 2]], "queue_buckets": [1]}).success_count
        == 0
    )
