"""The /metrics collector over a fake model manager: names and types, bounded labels, counters that
never go down while models are evicted, reloaded, relabelled and removed."""

from __future__ import annotations

import gc
import random
from collections import Counter

import pytest
from prometheus_client.parser import text_string_to_metric_families

from modelfleet.engine.records import Counters
from modelfleet.engine.stats import ModelStats
from modelfleet.protocol.documents import IndexEntry, Memory
from modelfleet.server.metric_counts import HALF_LIFE_S, OTHER
from modelfleet.server.metrics import Metrics

Series = dict[tuple[str, tuple[tuple[str, str], ...]], float]


class FakeModel:
    """What the collector reads of a LoadedModel."""

    def __init__(self, name: str, nbytes: int = 1000) -> None:
        self.name = name
        self.stats = ModelStats()
        self.in_flight = 0
        self.nbytes = nbytes

    def run(self, total_ns: int = 300_000, rows: int = 1) -> None:
        self.stats.record_success(
            rows,
            rows,
            total_ns=total_ns,
            queue_ns=50_000,
            input_ns=10_000,
            infer_ns=100_000,
            output_ns=10_000,
        )


class FakeRecord:
    def __init__(self, name: str) -> None:
        self.name = name
        self.counters = Counters()
        self.ready: dict[int, FakeModel] = {}


class FakeManager:
    """The ModelManager calls the collector makes: known, record, loaded, memory, index."""

    def __init__(self, names: list[str] | tuple[str, ...] = ()) -> None:
        self.records = {name: FakeRecord(name) for name in names}

    def known(self, name: str) -> bool:
        return name in self.records

    def record(self, name: str) -> FakeRecord | None:
        return self.records.get(name)

    def loaded(self, name: str | None = None) -> list[FakeModel]:
        return [m for r in self.records.values() for m in r.ready.values()]

    def index(self, ready_only: bool = False) -> list[IndexEntry]:
        return [IndexEntry(name=name, state="READY", reason="") for name in sorted(self.records)]

    def memory(self) -> Memory:
        loaded = self.loaded()
        loads = sum(r.counters.loads for r in self.records.values())
        return Memory(
            budget_bytes=1 << 30,
            used_bytes=sum(m.nbytes for m in loaded),
            resident_models=sum(1 for r in self.records.values() if r.ready),
            known_models=len(self.records),
            blob_bytes=0,
            loads=loads,
            load_failures=0,
            cold_starts=0,
            evictions=0,
        )

    def load(self, name: str) -> FakeModel:
        record = self.records[name]
        model = record.ready[1] = FakeModel(name)
        record.counters.loads += 1
        record.counters.load_s_total += 0.5
        return model

    def evict(self, name: str) -> None:
        record = self.records[name]
        record.ready = {}
        record.counters.evictions += 1  # the copy is gone once nothing else refers to it


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def new_metrics(manager: FakeManager, top_k: int = 50, always: tuple[str, ...] = ()) -> Metrics:
    return Metrics(manager, top_k, always, clock=Clock(), process=False)  # type: ignore[arg-type]


async def scrape(metrics: Metrics) -> tuple[dict[str, str], Series]:
    """(type by family name, value by (sample name, labels)) of one exposition."""
    types: dict[str, str] = {}
    series: Series = {}
    for family in text_string_to_metric_families((await metrics.render()).decode()):
        types[family.name] = family.type
        for s in family.samples:
            series[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return types, series


def value(series: Series, name: str, **labels: str) -> float:
    return series[(name, tuple(sorted(labels.items())))]


def labels_of(series: Series) -> set[str]:
    return {dict(labels)["model"] for _, labels in series if "model" in dict(labels)}


def answer(metrics: Metrics, model: FakeModel, status: int = 200) -> None:
    if status == 200:
        model.run()
    metrics.answered(model.name, status, model)


async def test_exposition_parses_with_the_names_and_types_asked_for() -> None:
    manager = FakeManager(["bert", "resnet"])
    bert = manager.load("bert")
    metrics = new_metrics(manager)
    for _ in range(3):
        answer(metrics, bert)
    answer(metrics, bert, 400)
    metrics.answered("bert", 503, None)
    metrics.answered("resnet", 404, None)
    bert.in_flight = 2
    types, series = await scrape(metrics)
    assert types == {
        "modelfleet_requests": "counter",
        "modelfleet_request_duration_seconds": "histogram",
        "modelfleet_queue_duration_seconds": "histogram",
        "modelfleet_compute_duration_seconds": "histogram",
        "modelfleet_overhead_duration_seconds": "histogram",
        "modelfleet_batch_size": "histogram",
        "modelfleet_cache_hits": "counter",
        "modelfleet_cache_misses": "counter",
        "modelfleet_model_loads": "counter",
        "modelfleet_model_load_failures": "counter",
        "modelfleet_model_cold_starts": "counter",
        "modelfleet_model_evictions": "counter",
        "modelfleet_model_load_duration_seconds": "summary",
        "modelfleet_queue_depth": "gauge",
        "modelfleet_model_resident_bytes": "gauge",
        "modelfleet_memory_budget_bytes": "gauge",
        "modelfleet_memory_used_bytes": "gauge",
        "modelfleet_models_resident": "gauge",
        "modelfleet_models_known": "gauge",
    }
    assert value(series, "modelfleet_requests_total", model="bert", status_class="2xx") == 3
    assert value(series, "modelfleet_requests_total", model="bert", status_class="4xx") == 1
    assert value(series, "modelfleet_requests_total", model="bert", status_class="5xx") == 1
    assert value(series, "modelfleet_requests_total", model="resnet", status_class="4xx") == 1
    assert value(series, "modelfleet_request_duration_seconds_count", model="bert") == 3
    assert value(series, "modelfleet_request_duration_seconds_sum", model="bert") == pytest.approx(9e-4)
    assert value(series, "modelfleet_request_duration_seconds_bucket", model="bert", le="0.00025") == 0
    assert value(series, "modelfleet_request_duration_seconds_bucket", model="bert", le="0.0005") == 3
    assert value(series, "modelfleet_request_duration_seconds_bucket", model="bert", le="+Inf") == 3
    assert value(series, "modelfleet_queue_duration_seconds_sum", model="bert") == pytest.approx(1.5e-4)
    assert value(series, "modelfleet_compute_duration_seconds_sum", model="bert") == pytest.approx(3.6e-4)
    assert value(series, "modelfleet_overhead_duration_seconds_sum", model="bert") == pytest.approx(3.9e-4)
    assert value(series, "modelfleet_batch_size_bucket", model="bert", le="1.0") == 3
    assert value(series, "modelfleet_model_loads_total", model="bert") == 1
    assert value(series, "modelfleet_model_load_duration_seconds_sum", model="bert") == 0.5
    assert value(series, "modelfleet_queue_depth", model="bert") == 2
    assert value(series, "modelfleet_model_resident_bytes", model="bert") == 1000
    assert value(series, "modelfleet_models_known") == 2
    assert value(series, "modelfleet_models_resident") == 1
    assert value(series, "modelfleet_memory_used_bytes") == 1000
    assert labels_of(series) == {"bert", "resnet", OTHER}


async def test_process_metrics_come_from_the_same_registry() -> None:
    metrics = Metrics(FakeManager(), 5)  # type: ignore[arg-type]
    types, series = await scrape(metrics)
    assert types["modelfleet_process_cpu_seconds"] == "counter"
    assert value(series, "modelfleet_process_resident_memory_bytes") > 0


async def test_cache_counts_come_from_the_statistics() -> None:
    manager = FakeManager(["m"])
    model = manager.load("m")
    model.stats.cache_hit_count, model.stats.cache_miss_count = 4, 2
    metrics = new_metrics(manager)
    answer(metrics, model)
    _, series = await scrape(metrics)
    assert value(series, "modelfleet_cache_hits_total", model="m") == 4
    assert value(series, "modelfleet_cache_misses_total", model="m") == 2


async def test_thousands_of_models_make_top_k_plus_opted_in_plus_other_series() -> None:
    names = [f"m{i:04}" for i in range(5000)]
    manager = FakeManager(names)
    metrics = new_metrics(manager, top_k=10, always=("m4999",))
    total = 0
    for i, name in enumerate(names):
        model = manager.load(name) if i % 10 == 0 else None
        for _ in range(100 - i if i < 20 else 1 + i % 3):  # m0000 the busiest
            if model is not None:
                model.run()
            metrics.answered(name, 200, model)
            total += 1
    for i in range(1000):  # made-up names: counted, but never a label or an entry of their own
        metrics.answered(f"ghost{i}", 404, None)
    _, series = await scrape(metrics)
    assert labels_of(series) == {*names[:10], "m4999", OTHER}
    assert len([k for k in series if k[0] == "modelfleet_request_duration_seconds_bucket"]) == 12 * 21
    requests = sum(v for (n, labels), v in series.items() if n == "modelfleet_requests_total")
    assert requests == total + 1000
    assert value(series, "modelfleet_requests_total", model=OTHER, status_class="4xx") == 1000
    assert value(series, "modelfleet_model_loads_total", model=OTHER) == 500 - 1  # m0000 has its own
    assert value(series, "modelfleet_models_known") == 5000
    assert len(metrics.fleet._models) == 5000  # no entries for made-up names


async def test_idle_models_found_only_in_the_repository_count_under_other() -> None:
    manager = FakeManager(["a", "b"])
    manager.records["b"].counters.loads = 3  # loaded and evicted before any scrape, never asked for
    metrics = new_metrics(manager)
    _, series = await scrape(metrics)
    assert value(series, "modelfleet_model_loads_total", model=OTHER) == 3
    assert labels_of(series) == {OTHER}


async def test_counters_survive_eviction_and_reload() -> None:
    manager = FakeManager(["a"])
    metrics = new_metrics(manager)
    first = manager.load("a")
    for _ in range(5):
        answer(metrics, first)
    _, before = await scrape(metrics)
    answer(metrics, first)  # after the scrape, before eviction: must not be lost
    del first
    manager.evict("a")
    _, evicted = await scrape(metrics)
    assert value(evicted, "modelfleet_requests_total", model="a", status_class="2xx") == 6
    assert value(evicted, "modelfleet_request_duration_seconds_count", model="a") == 6
    assert value(evicted, "modelfleet_model_evictions_total", model="a") == 1
    assert value(evicted, "modelfleet_model_resident_bytes", model="a") == 0
    second = manager.load("a")
    for _ in range(2):
        answer(metrics, second)
    _, after = await scrape(metrics)
    assert value(after, "modelfleet_request_duration_seconds_count", model="a") == 8
    assert value(after, "modelfleet_model_loads_total", model="a") == 2
    assert_never_down(before, evicted)
    assert_never_down(evicted, after)


async def test_a_copy_evicted_between_scrapes_is_still_counted() -> None:
    manager = FakeManager(["a"])
    metrics = new_metrics(manager)
    model = manager.load("a")
    answer(metrics, model)  # seen only by the request path, never at a scrape
    del model
    manager.evict("a")
    _, series = await scrape(metrics)
    assert value(series, "modelfleet_request_duration_seconds_count", model="a") == 1


async def test_opted_in_models_have_their_label_without_traffic() -> None:
    manager = FakeManager(["quiet", "busy"])
    metrics = new_metrics(manager, top_k=0, always=("quiet", "not-in-repository"))
    metrics.answered("busy", 200, manager.load("busy"))
    _, series = await scrape(metrics)
    assert labels_of(series) == {"quiet", OTHER}
    assert value(series, "modelfleet_requests_total", model=OTHER, status_class="2xx") == 1


async def test_labels_follow_recent_traffic_and_keep_a_margin() -> None:
    manager = FakeManager(["old", "new"])
    metrics = new_metrics(manager, top_k=1)
    clock = metrics.fleet._clock
    assert isinstance(clock, Clock)
    for _ in range(100):
        metrics.answered("old", 200, None)
    _, series = await scrape(metrics)
    assert labels_of(series) == {"old", OTHER}
    for _ in range(110):  # a little more, but not 25 % more: no flapping
        metrics.answered("new", 200, None)
    _, series = await scrape(metrics)
    assert labels_of(series) == {"old", OTHER}
    clock.now += 12 * HALF_LIFE_S  # an hour later, "old"'s traffic counts for 1/4096 of what it did
    metrics.answered("new", 200, None)
    _, series = await scrape(metrics)
    assert labels_of(series) == {"new", OTHER}


async def test_moving_in_and_out_of_the_labels_moves_no_past_counts() -> None:
    manager = FakeManager(["a", "b"])
    metrics = new_metrics(manager, top_k=1)
    clock = metrics.fleet._clock
    assert isinstance(clock, Clock)
    a, b = manager.load("a"), manager.load("b")
    for _ in range(10):
        answer(metrics, a)
    answer(metrics, b)
    _, s1 = await scrape(metrics)  # "a" labelled with all it counted: nothing had been shown yet
    assert value(s1, "modelfleet_requests_total", model="a", status_class="2xx") == 10
    assert value(s1, "modelfleet_requests_total", model=OTHER, status_class="2xx") == 1
    clock.now += 10 * HALF_LIFE_S
    for _ in range(50):
        answer(metrics, b)
    answer(metrics, a)  # after a's last scrape as a label: goes to _other with b's past
    _, s2 = await scrape(metrics)  # "b" takes the label; what it counted so far stays in _other
    assert labels_of(s2) == {"b", OTHER}
    assert value(s2, "modelfleet_requests_total", model="b", status_class="2xx") == 0
    assert value(s2, "modelfleet_requests_total", model=OTHER, status_class="2xx") == 1 + 50 + 1
    assert_never_down(s1, s2)
    for _ in range(5):
        answer(metrics, b)
    _, s3 = await scrape(metrics)
    assert value(s3, "modelfleet_requests_total", model="b", status_class="2xx") == 5
    assert value(s3, "modelfleet_request_duration_seconds_count", model="b") == 5
    clock.now += 10 * HALF_LIFE_S
    for _ in range(500):
        answer(metrics, a)
    _, s4 = await scrape(metrics)  # "a" is back: its series carries on from 10
    assert labels_of(s4) == {"a", OTHER}
    assert value(s4, "modelfleet_requests_total", model="a", status_class="2xx") == 10
    assert value(s4, "modelfleet_requests_total", model=OTHER, status_class="2xx") == 1 + 50 + 1 + 500
    for _ in range(7):
        answer(metrics, a)
    _, s5 = await scrape(metrics)
    assert value(s5, "modelfleet_requests_total", model="a", status_class="2xx") == 17
    assert value(s5, "modelfleet_request_duration_seconds_count", model="a") == 17
    assert_never_down(s1, s5)
    assert_never_down(s3, s5)


async def test_a_model_removed_from_the_repository_leaves_its_counts_in_place() -> None:
    manager = FakeManager(["a", "b"])
    metrics = new_metrics(manager, top_k=1)
    a = manager.load("a")
    for _ in range(3):
        answer(metrics, a)
    metrics.answered("b", 200, None)
    _, s1 = await scrape(metrics)
    answer(metrics, a)
    del a
    del manager.records["a"]
    del manager.records["b"]
    gc.collect()
    _, s2 = await scrape(metrics)  # a's copy is folded: its series still shows it all
    assert value(s2, "modelfleet_requests_total", model="a", status_class="2xx") == 4
    assert value(s2, "modelfleet_request_duration_seconds_count", model="a") == 4
    assert value(s2, "modelfleet_requests_total", model=OTHER, status_class="2xx") == 1
    assert_never_down(s1, s2)
    metrics.answered("a", 200, None)  # no longer known
    _, s3 = await scrape(metrics)  # a's series ends at 4; b's count stays in _other
    assert labels_of(s3) == {OTHER}
    assert value(s3, "modelfleet_requests_total", model=OTHER, status_class="2xx") == 2
    assert_never_down(s2, s3)


@pytest.mark.parametrize("seed", range(3))
async def test_churn_never_takes_a_counter_down_and_loses_no_answer(seed: int) -> None:
    """Random traffic, evictions, reloads, removals, new models and label changes; after every
    scrape each counter is at least what it was, and the last values of all series add up to
    every answer."""
    rng = random.Random(seed)
    names = [f"m{i}" for i in range(40)]
    manager = FakeManager(names)
    metrics = new_metrics(manager, top_k=5, always=("m39",))
    clock = metrics.fleet._clock
    assert isinstance(clock, Clock)
    answers: Counter[str] = Counter()
    last: Series = {}
    model: FakeModel | None = None
    for _ in range(40):
        for _ in range(rng.randrange(200)):
            name = names[min(int(rng.expovariate(0.15)), len(names) - 1)]
            record = manager.records.get(name)
            if record is None:
                metrics.answered(name, 404, None)
                answers["4xx"] += 1
                continue
            model = record.ready.get(1) or manager.load(name)
            status = rng.choice((200, 200, 200, 400, 500))
            if status == 200:
                model.run(total_ns=rng.randrange(10**8))
            metrics.answered(name, status, model)
            answers[f"{status // 100}xx"] += 1
        model = None
        for name in rng.sample(names, 3):
            if name in manager.records and manager.records[name].ready:
                manager.evict(name)
        if rng.random() < 0.2:
            gone = rng.choice(names)
            manager.records.pop(gone, None)
        if rng.random() < 0.2:  # (a name removed and added again would start its series anew)
            new = f"new{len(names)}"
            names.append(new)
            manager.records[new] = FakeRecord(new)
        rng.shuffle(names)  # another popularity order
        clock.now += rng.choice((15.0, 15.0, HALF_LIFE_S * 3))
        _, series = await scrape(metrics)
        assert_never_down(last, series)
        last |= series
        assert len(labels_of(series)) <= 5 + 1 + 1
        for status_class, count in answers.items():
            shown = sum(
                v
                for (n, labels), v in last.items()
                if n == "modelfleet_requests_total" and dict(labels)["status_class"] == status_class
            )
            assert shown == count
        durations = sum(v for (n, _), v in last.items() if n == "modelfleet_request_duration_seconds_count")
        assert durations == answers["2xx"]  # the statistics of every copy, evicted or not


def assert_never_down(before: Series, after: Series) -> None:
    """Every counter, histogram and summary series present in both is at least what it was."""
    for key, old in before.items():
        name = key[0]
        if key in after and not name.endswith(("_depth", "_bytes", "_resident", "_known")):
            assert after[key] >= old - 1e-9, (key, old, after[key])
