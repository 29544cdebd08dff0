"""The mirror's sidecar index and the cache eviction plan (pure)."""

from pathlib import Path

from modelfleet.repository.objectstore import (
    CachedModel,
    CacheIndex,
    IndexEntry,
    plan_eviction,
    read_index,
    write_index,
)


def test_index_round_trip_and_damage(tmp_path: Path) -> None:
    assert read_index(tmp_path) == CacheIndex()
    index = CacheIndex(
        fetched_at=12.5, files={"1/model.onnx": IndexEntry(size=3, etag='"abc"')}, blobs=["a" * 64]
    )
    write_index(tmp_path, index)
    assert read_index(tmp_path) == index
    assert [p.name for p in tmp_path.iterdir()] == [".modelfleet-index.json"]
    (tmp_path / ".modelfleet-index.json").write_text('{"format": 2}')
    assert read_index(tmp_path) == CacheIndex()


def model(name: str, fetched_at: float, nbytes: int, *blobs: str) -> CachedModel:
    return CachedModel(name, fetched_at, nbytes, frozenset(blobs))


def test_nothing_is_evicted_under_the_limit() -> None:
    plan = plan_eviction(
        [model("a", 1, 10, "x")], {"x": 5, "orphan": 5}, 20, set(), set(), now=100, grace_s=0
    )
    assert (plan.models, plan.blobs, plan.bytes_after) == ([], [], 20)


def test_least_recently_fetched_first_with_their_own_blobs() -> None:
    models = [model("new", 30, 10, "shared"), model("old", 10, 10, "shared", "own"), model("mid", 20, 10)]
    plan = plan_eviction(models, {"shared": 100, "own": 50}, 160, {"new"}, set(), now=100, grace_s=0)
    assert plan.models == ["old"]  # 180 -> 120: under the limit, mid stays
    assert plan.blobs == ["own"]  # shared is still used by new
    assert (plan.bytes_before, plan.bytes_after) == (180, 120)


def test_unreferenced_blobs_go_before_any_model() -> None:
    plan = plan_eviction(
        [model("a", 1, 10, "x")], {"x": 5, "orphan": 50}, 20, set(), set(), now=100, grace_s=0
    )
    assert (plan.models, plan.blobs, plan.bytes_after) == ([], ["orphan"], 15)


def test_models_being_fetched_or_fetched_recently_stay() -> None:
    models = [model("a", 10, 100, "pinned"), model("b", 95, 100), model("c", 20, 100)]
    blobs = {"pinned": 10, "orphan-in-use": 10}
    plan = plan_eviction(models, blobs, 0, {"c"}, {"orphan-in-use"}, now=100, grace_s=10)
    assert plan.models == ["a"]  # b: fetched 5 s ago; c: being fetched
    assert plan.blobs == ["pinned"]  # dropped with a; orphan-in-use is kept by a fetch in progress
    assert plan.bytes_after == 210  # still over: the rest is in use


def test_ties_are_broken_by_name() -> None:
    models = [model("b", 1, 10), model("a", 1, 10)]
    assert plan_eviction(models, {}, 10, set(), set(), now=5, grace_s=0).models == ["a"]
