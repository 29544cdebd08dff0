"""What is resident under the memory budget, and what to evict to make room: a small, pure component."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

from modelfleet.engine.memory import format_bytes
from modelfleet.errors import InsufficientMemory


@dataclass(slots=True)
class Entry:
    key: str
    nbytes: int
    pinned: bool = False
    depends_on: frozenset[str] = frozenset()
    last_used: float = 0.0
    dependents: set[str] = field(default_factory=set)


class Residency:
    def __init__(self, budget_bytes: int, clock: Callable[[], float]) -> None:
        self.budget_bytes = budget_bytes
        self._clock = clock
        self._entries: dict[str, Entry] = {}
        self.used_bytes = 0

    def __contains__(self, key: str) -> bool:
        return key in self._entries

    def __len__(self) -> int:
        return len(self._entries)

    @property
    def free_bytes(self) -> int:
        return self.budget_bytes - self.used_bytes

    def get(self, key: str) -> Entry | None:
        return self._entries.get(key)

    def add(self, key: str, nbytes: int, pinned: bool = False, depends_on: Iterable[str] = ()) -> None:
        """Record a resident entry; its dependencies must be resident. Replacing an entry (a reload)
        keeps what depends on it."""
        deps = frozenset(depends_on)
        missing = [d for d in deps if d not in self._entries]
        if missing:
            raise KeyError(f"{key} depends on {missing}, which are not resident")
        old = self.remove(key)
        entry = Entry(key, max(0, nbytes), pinned, deps, self._clock())
        if old is not None:
            entry.dependents = {d for d in old.dependents if d in self._entries}
        self._entries[key] = entry
        self.used_bytes += entry.nbytes
        for d in deps:
            self._entries[d].dependents.add(key)

    def resize(self, key: str, nbytes: int) -> None:
        entry = self._entries[key]
        self.used_bytes += max(0, nbytes) - entry.nbytes
        entry.nbytes = max(0, nbytes)

    def touch(self, key: str) -> None:
        """A use. What an entry depends on can't be evicted while it is resident, so only the entry
        itself is touched (cheap on the request path); its dependencies inherit its last use when
        it leaves."""
        entry = self._entries.get(key)
        if entry is not None:
            entry.last_used = self._clock()

    def remove(self, key: str) -> Entry | None:
        entry = self._entries.pop(key, None)
        if entry is None:
            return None
        self.used_bytes -= entry.nbytes
        for d in entry.depends_on:
            dep = self._entries.get(d)
            if dep is not None:
                dep.dependents.discard(key)
                dep.last_used = max(dep.last_used, entry.last_used)
        return entry

    def orphans(self, prefix: str) -> list[str]:
        """Entries with this key prefix that nothing depends on any more."""
        return [k for k, e in self._entries.items() if k.startswith(prefix) and not e.dependents]

    def victims(self, needed: int, busy: Callable[[str], bool], what: str = "the model") -> list[str]:
        """Keys to evict, least recently used first, so that `needed` more bytes fit the budget.

        Evicting an entry can free what it depended on (a blob no other model uses), which then
        joins the candidates. InsufficientMemory (507) when even evicting everything evictable
        would not make room; nothing is chosen then.
        """
        chosen, enough = self._select(needed, busy)
        if not enough:
            raise InsufficientMemory(self._no_room(needed, what))
        return chosen

    def idle_victims(self, busy: Callable[[str], bool]) -> list[str]:
        """What is evictable now, least recently used first, as far as needed to be within budget."""
        return self._select(0, busy)[0]

    def _select(self, needed: int, busy: Callable[[str], bool]) -> tuple[list[str], bool]:
        chosen: list[str] = []
        gone: set[str] = set()
        freed = 0
        while needed > self.free_bytes + freed:
            candidates = [
                e
                for e in self._entries.values()
                if e.key not in gone and not e.pinned and not (e.dependents - gone) and not busy(e.key)
            ]
            if not candidates:
                return chosen, False
            victim = min(candidates, key=lambda e: (e.last_used, e.key))
            chosen.append(victim.key)
            gone.add(victim.key)
            freed += victim.nbytes
        return chosen, True

    def _no_room(self, needed: int, what: str) -> str:
        pinned = sum(e.nbytes for e in self._entries.values() if e.pinned)
        return (
            f"{what} needs {format_bytes(needed)} but the memory budget is {format_bytes(self.budget_bytes)}, "
            f"{format_bytes(self.used_bytes)} of it in use ({format_bytes(pinned)} pinned, the rest busy "
            "or needed by other models); raise --memory-budget or unpin models"
        )

    def names(self) -> list[str]:
        return list(self._entries)
