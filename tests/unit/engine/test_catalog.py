"""The records' lookup shared by the in-process manager and the workers' front (no loads, no threads)."""

import asyncio

import pytest

from modelfleet.engine.catalog import Catalog
from modelfleet.engine.records import State, Status
from modelfleet.errors import BadRequest, NotFound


def catalog_with(*names: str) -> Catalog[str]:
    catalog: Catalog[str] = Catalog()
    for name in names:
        catalog.add(name)
    return catalog


def ready(catalog: Catalog[str], name: str, versions: dict[int, str]) -> None:
    record = catalog.add(name)
    record.set_ready(versions)
    record.versions = {n: Status(State.READY) for n in versions}
    record.status = Status(State.READY)


def test_find_names_bad_names_unknown_models_and_bad_versions() -> None:
    catalog = catalog_with("a")
    with pytest.raises(BadRequest):
        catalog.find("no/such", None)
    with pytest.raises(NotFound, match="'b'"):
        catalog.find("b", None)
    with pytest.raises(BadRequest):
        catalog.find("b", "x/y")
    assert catalog.find("a", None) is None  # known, not resident: load it first


def test_find_gives_the_highest_version_or_the_named_one_or_alias() -> None:
    catalog = catalog_with("a")
    ready(catalog, "a", {1: "a1", 3: "a3"})
    catalog.records["a"].aliases = {"stable": 1}
    assert catalog.find("a", None) == "a3"
    assert catalog.find("a", "1") == "a1"
    assert catalog.find("a", "stable") == "a1"
    with pytest.raises(NotFound, match="no version alias 'canary'"):
        catalog.find("a", "canary")
    with pytest.raises(NotFound):
        catalog.find("a", "2")  # a version the model does not have


def test_an_alias_before_the_first_load_waits_for_the_config() -> None:
    catalog = catalog_with("a")
    assert catalog.find("a", "stable") is None


def test_a_held_model_is_not_loaded_on_demand() -> None:
    catalog = catalog_with("a")
    record = catalog.hold("a")
    assert record.held
    with pytest.raises(NotFound, match="unloaded"):
        catalog.find("a", None)
    with pytest.raises(NotFound):
        catalog.hold("b")


def test_a_version_the_policy_does_not_serve_is_404_a_failed_one_is_loaded_again() -> None:
    catalog = catalog_with("a")
    record = catalog.records["a"]
    record.versions = {
        1: Status(State.UNAVAILABLE, "broken", failed=True),
        2: Status(State.UNAVAILABLE, "not served", served=False),
    }
    assert catalog.find("a", "1") is None  # the caller loads it (after its back-off)
    with pytest.raises(NotFound, match="version 2"):
        catalog.find("a", "2")


def test_the_traffic_split_follows_the_draw() -> None:
    catalog = catalog_with("a")
    ready(catalog, "a", {1: "a1", 2: "a2"})
    catalog.records["a"].traffic = [(0.75, 1), (1.0, 2)]
    seen = {catalog.find("a", None) for _ in range(200)}
    assert seen == {"a1", "a2"}


async def test_sync_adds_new_models_and_forgets_removed_ones_unless_in_use() -> None:
    catalog = catalog_with("gone", "serving", "loading")
    ready(catalog, "serving", {1: "s1"})
    catalog.records["loading"].loading = asyncio.get_running_loop().create_future()
    catalog.sync(["new"])
    assert sorted(catalog.records) == ["loading", "new", "serving"]
    assert catalog.served_versions("serving") == ["1"]
    assert catalog.served_versions("new") == []


def test_loaded_lists_ready_copies_by_name_and_version_and_filters() -> None:
    catalog = catalog_with("b", "a")
    ready(catalog, "a", {2: "a2", 1: "a1"})
    ready(catalog, "b", {1: "b1"})
    assert catalog.loaded() == ["a1", "a2", "b1"]
    assert catalog.loaded("b") == ["b1"]
    assert catalog.loaded("missing") == []
    assert catalog.loaded(where=lambda name: name != "a") == ["b1"]
