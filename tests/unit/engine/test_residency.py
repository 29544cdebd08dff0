import pytest

from modelfleet.engine.residency import Residency
from modelfleet.errors import InsufficientMemory


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        self.now += 1.0
        return self.now


def never_busy(key: str) -> bool:
    return False


def test_victims_are_least_recently_used_first_and_only_as_many_as_needed() -> None:
    r = Residency(100, Clock())
    for key in "abcd":
        r.add(key, 25)
    r.touch("a")
    assert r.free_bytes == 0
    assert r.victims(20, never_busy) == ["b"]
    assert r.victims(30, never_busy) == ["b", "c"]
    assert r.victims(0, never_busy) == []


def test_pinned_busy_and_depended_on_entries_are_kept() -> None:
    r = Residency(100, Clock())
    r.add("pinned", 30, pinned=True)
    r.add("busy", 30)
    r.add("base", 20)
    r.add("adapter", 10, depends_on=["base"])
    busy = {"busy"}.__contains__
    # the adapter goes first, which frees its base
    assert r.victims(30, busy) == ["adapter", "base"]
    with pytest.raises(
        InsufficientMemory,
        match="needs 70 B but the memory budget is 100 B, 90 B of it in use \\(30 B pinned",
    ):
        r.victims(70, busy)


def test_using_an_adapter_keeps_its_base_recent() -> None:
    r = Residency(100, Clock())
    r.add("base", 40)
    r.add("other", 40)
    r.add("adapter", 10, depends_on=["base"])
    r.touch("other")
    r.touch("adapter")  # also touches base
    r.remove("adapter")
    assert r.victims(40, never_busy) == ["other"]


def test_accounting_follows_add_resize_remove() -> None:
    r = Residency(100, Clock())
    r.add("a", 10)
    r.add("b", 20, depends_on=["a"])
    r.resize("b", 5)
    assert r.used_bytes == 15
    r.add("b", 30, depends_on=["a"])  # replaced
    assert r.used_bytes == 40
    entry = r.remove("b")
    assert entry is not None
    assert r.get("a").dependents == set()  # type: ignore[union-attr]
    assert r.used_bytes == 10
    assert r.remove("absent") is None
    with pytest.raises(KeyError, match="not resident"):
        r.add("c", 1, depends_on=["ghost"])
