from modelfleet.engine.stats import ModelStats


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
