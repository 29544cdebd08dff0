"""The per-model counts behind /metrics: a flat vector of every monotonic count of a model,
kept across its copies, evictions and reloads, with per-model labels for the busiest models only
(the rules that keep counters from ever going down: docs/architecture.md, "Metrics")."""

from __future__ import annotations

import heapq
import time
import weakref
from bisect import bisect_left
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field

from modelfleet.engine.ports import ModelHost, ServedModel
from modelfleet.engine.records import Counters
from modelfleet.engine.stats import BATCH_BOUNDS, DURATION_BOUNDS_NS, ModelStats
from modelfleet.protocol.documents import Memory

OTHER = "_other"
HALF_LIFE_S = 300.0  # how fast past traffic stops counting towards a model's label
KEEP_BONUS = 1.25  # a labelled model keeps its label until another has this much more traffic
STATUS_CLASSES = ("2xx", "4xx", "5xx")

# -- one flat vector of every monotonic count of a model: cheap to add, subtract and compare -------

_S2, _S4, _S5 = 0, 1, 2  # answers by status class
_HITS, _MISSES = 3, 4
_LOADS, _LOAD_FAILURES, _COLD_STARTS, _EVICTIONS, _LOAD_S = 5, 6, 7, 8, 9
_DURATION_BUCKETS = len(DURATION_BOUNDS_NS) + 1
_HIST = _DURATION_BUCKETS + 1  # buckets, then the sum (ns)
_REQUEST, _QUEUE, _COMPUTE, _OVERHEAD = (10 + i * _HIST for i in range(4))
_BATCH = 10 + 4 * _HIST
_BATCH_BUCKETS = len(BATCH_BOUNDS) + 1
_SIZE = _BATCH + _BATCH_BUCKETS + 1  # batch buckets, then the sum (rows)

Vector = list[float]


def _zeros() -> Vector:
    return [0.0] * _SIZE


def _add_stats(vec: Vector, s: ModelStats) -> None:
    vec[_HITS] += s.cache_hit_count
    vec[_MISSES] += s.cache_miss_count
    compute_ns = s.compute_ns
    for offset, buckets, sum_ns in (
        (_REQUEST, s.request_buckets, s.success_ns),
        (_QUEUE, s.queue_buckets, s.queue_ns),
        (_COMPUTE, s.compute_buckets, compute_ns),
        (_OVERHEAD, s.overhead_buckets, s.success_ns - s.queue_ns - compute_ns),
    ):
        for i, n in enumerate(buckets):
            vec[offset + i] += n
        vec[offset + _DURATION_BUCKETS] += sum_ns
    for size, batch in s.batches.items():
        vec[_BATCH + bisect_left(BATCH_BOUNDS, size)] += batch.count
        vec[_BATCH + _BATCH_BUCKETS] += size * batch.count


def _lifecycle(c: Counters) -> list[float]:
    """A lifecycle record's counters, in the vector's order from _LOADS."""
    return [c.loads, c.load_failures, c.cold_starts, c.evictions, c.load_s_total]


def _plus(a: Vector, b: Vector) -> Vector:
    return [x + y for x, y in zip(a, b, strict=True)]


def _minus(a: Vector, b: Vector) -> Vector:
    return [x - y for x, y in zip(a, b, strict=True)]


# -- per model name ------------------------------------------------------------------------------------


class _Model:
    """What the metrics keep of one model name, across all its copies and labels."""

    __slots__ = (
        "copies",
        "counters",
        "exposed",
        "gone",
        "last_stats",
        "name",
        "offset",
        "own",
        "retired",
        "score",
        "status",
        "traffic_seen",
    )

    def __init__(self, name: str) -> None:
        self.name = name
        self.status = [0] * 6  # answers by status // 100
        self.copies: list[tuple[weakref.ref[ServedModel], ModelStats]] = []
        self.last_stats: ModelStats | None = None  # the request path's shortcut past `adopt`
        self.counters: Counters | None = None  # the lifecycle record's counters, while it has one
        self.gone = [0.0] * 5  # lifecycle counts of records replaced or removed since
        self.traffic_seen = 0
        self.score = 0.0  # decayed traffic, in the units of FleetMetrics._growth
        self.offset: Vector | None = None  # while labelled: its own series = total - offset
        self.retired: ModelStats | None = None  # while labelled: its copies that are gone
        self.own: Vector | None = None  # while not labelled: where its own series stopped
        self.exposed = False  # some of its counts have been shown under _other

    @property
    def labelled(self) -> bool:
        return self.offset is not None

    def has_counts(self) -> bool:
        c = self.counters
        return bool(
            self.traffic_seen
            or self.copies
            or any(self.gone)
            or (c is not None and (c.loads or c.load_failures or c.cold_starts or c.evictions))
        )

    def adopt(self, model: ServedModel) -> None:
        stats = model.stats
        self.last_stats = stats
        if all(s is not stats for _, s in self.copies):
            self._merge_gone()
            self.copies.append((weakref.ref(model), stats))

    def _merge_gone(self) -> None:
        """Merge the statistics of the copies that are gone into one of them: load/unload churn
        between two scrapes holds one gone copy per name, not one per load. The scrape folds it
        where the name then counts, as it would have folded them all."""
        gone = [(ref, stats) for ref, stats in self.copies if ref() is None]
        if len(gone) < 2:
            return
        ref, keep = gone[0]
        for _, stats in gone[1:]:
            keep.absorb(stats)
            if self.last_stats is stats:
                self.last_stats = None
        self.copies = [(r, s) for r, s in self.copies if r() is not None] + [(ref, keep)]

    def current(self) -> Vector:
        """Answers, lifecycle counts and the statistics of the copies not yet folded away."""
        vec = _zeros()
        self.add_current(vec)
        return vec

    def add_current(self, vec: Vector) -> None:
        status = self.status
        vec[_S2] += status[2]
        vec[_S4] += status[4]
        vec[_S5] += status[5]
        # spelled out: this runs for every model at every scrape
        loads, failures, cold_starts, evictions, load_s = self.gone
        c = self.counters
        if c is not None:
            loads += c.loads
            failures += c.load_failures
            cold_starts += c.cold_starts
            evictions += c.evictions
            load_s += c.load_s_total
        vec[_LOADS] += loads
        vec[_LOAD_FAILURES] += failures
        vec[_COLD_STARTS] += cold_starts
        vec[_EVICTIONS] += evictions
        vec[_LOAD_S] += load_s
        for _, stats in self.copies:
            _add_stats(vec, stats)


@dataclass
class Sample:
    """One scrape's numbers: counter vectors and gauges by label, and the server's gauges."""

    memory: Memory
    counts: dict[str, Vector] = field(default_factory=dict)
    queue_depth: dict[str, int] = field(default_factory=dict)
    resident_bytes: dict[str, int] = field(default_factory=dict)


class FleetMetrics:
    """Per-model counters that survive eviction, with labels bounded to the busiest models."""

    def __init__(
        self,
        manager: ModelHost,
        top_k: int,
        always: Iterable[str] = (),
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._manager = manager
        self._top_k = top_k
        self._always = frozenset(always)
        self._clock = clock
        self._models: dict[str, _Model] = {}
        self._unknown_status = [0] * 6  # answers for names the server does not know
        self._other_retired = ModelStats()  # gone copies of models without a label
        self._other_fixed = _zeros()  # counts left in `_other` by models that moved in or out
        self._emitted: dict[str, Vector] = {}  # last counts per label: no series ever goes down
        self._epoch = clock()  # scores are kept in units that grow from here (see _choose_labels)

    # -- the request path ----------------------------------------------------------------------------------

    def answered(self, name: str, status: int, model: ServedModel | None) -> None:
        """One answer to an inference request for `name`, with the copy that ran it if any."""
        entry = self._models.get(name)
        if entry is None:
            entry = self._track(name)
            if entry is None:
                self._unknown_status[status // 100] += 1
                return
        entry.status[status // 100] += 1
        if model is not None and model.stats is not entry.last_stats:
            entry.adopt(model)

    def _track(self, name: str) -> _Model | None:
        """The entry for a name the server knows; None for others (no entries for made-up names)."""
        if not self._manager.known(name):
            return None
        entry = self._models[name] = _Model(name)
        return entry

    # -- the scrape -------------------------------------------------------------------------------------------

    def sample(self) -> Sample:
        memory = self._manager.memory()
        loaded = self._manager.loaded()
        for model in loaded:
            entry = self._models.get(model.name) or self._track(model.name)
            if entry is not None and model.stats is not entry.last_stats:
                entry.adopt(model)
        self._sync_records(memory.known_models)
        labelled = self._choose_labels()
        for entry in list(self._models.values()):
            if entry.labelled and entry.name not in labelled:
                self._unlabel(entry)
        for name in labelled:
            chosen = self._models[name]
            if not chosen.labelled:
                self._label(chosen)
        self._fold_retired()  # after the label changes: a copy gone is folded where its name now counts
        return self._assemble(loaded, memory)

    def _sync_records(self, known: int) -> None:
        """Follow each name's lifecycle record: keep the counts of a record that went away, forget
        names the repository no longer has, and find names that nothing has shown us yet."""
        with_record = 0
        for entry in list(self._models.values()):
            record = self._manager.record(entry.name)
            counters = record.counters if record is not None else None
            if counters is not entry.counters:  # a record removed, or removed and made again
                if entry.counters is not None:
                    entry.gone = _plus(entry.gone, _lifecycle(entry.counters))
                entry.counters = counters
            if counters is not None:
                with_record += 1
            elif not entry.copies:
                self._forget(entry)
        if known > with_record:  # models the server knows that we have not seen: look them up
            for doc in self._manager.index():
                name = doc.name
                record = self._manager.record(name)
                if name not in self._models and record is not None:
                    self._models[name] = _Model(name)
                    self._models[name].counters = record.counters

    def _forget(self, entry: _Model) -> None:
        """A name gone from the repository: `_other` keeps what it counted there; a labelled one's
        own series ends where it was last shown, and `_other` takes what came after."""
        if entry.labelled:
            own = self._own(entry)
            self._other_fixed = _plus(self._other_fixed, _minus(own, self._emitted.pop(entry.name, own)))
        else:
            self._other_fixed = _plus(self._other_fixed, entry.current())
        del self._models[entry.name]

    def _fold_retired(self) -> None:
        for entry in self._models.values():
            if not entry.copies or all(ref() is not None for ref, _ in entry.copies):
                continue
            keep = []
            for ref, stats in entry.copies:
                if ref() is not None:
                    keep.append((ref, stats))
                    continue
                if entry.retired is not None:
                    entry.retired.absorb(stats)
                else:
                    self._other_retired.absorb(stats)
                if entry.last_stats is stats:
                    entry.last_stats = None
            entry.copies = keep

    def _choose_labels(self) -> set[str]:
        """The opted-in names and the top_k by decayed traffic. Rather than decaying every score at
        every scrape, new traffic is added scaled up by how much scores should have decayed since
        the epoch: the order is the same, and idle models cost nothing."""
        now = self._clock()
        growth = 2.0 ** ((now - self._epoch) / HALF_LIFE_S)
        if growth > 1e100:  # start the scale again before floats run out
            for entry in self._models.values():
                entry.score /= growth
            self._epoch, growth = now, 1.0
        candidates = []
        for entry in self._models.values():
            traffic = sum(entry.status)
            if traffic != entry.traffic_seen:
                entry.score += (traffic - entry.traffic_seen) * growth
                entry.traffic_seen = traffic
            if entry.score > 0:
                candidates.append(entry)
        top = heapq.nlargest(
            self._top_k,
            candidates,
            key=lambda e: (e.score * (KEEP_BONUS if e.labelled else 1.0), e.labelled, e.name),
        )
        return {e.name for e in top} | (self._always & self._models.keys())

    def _label(self, entry: _Model) -> None:
        entry.retired = ModelStats()
        if entry.own is None and not entry.exposed:  # nothing of it shown anywhere yet: all its own
            entry.offset = _zeros()
            return
        now = entry.current()
        self._other_fixed = _plus(self._other_fixed, now)  # what it counted so far stays in _other
        entry.offset = _minus(now, entry.own) if entry.own is not None else now
        entry.own = None

    def _unlabel(self, entry: _Model) -> None:
        """Its own series stops at what was last shown; `_other` takes the counts since then, and
        from here on everything it counts."""
        own = self._own(entry)
        shown = self._emitted.pop(entry.name, own)
        self._other_fixed = _plus(_minus(self._other_fixed, entry.current()), _minus(own, shown))
        entry.own = shown
        entry.offset = entry.retired = None

    @staticmethod
    def _own(entry: _Model) -> Vector:
        """A labelled model's own counts: everything it counted, less what stays in `_other`."""
        assert entry.retired is not None and entry.offset is not None
        own = entry.current()
        _add_stats(own, entry.retired)
        return _minus(own, entry.offset)

    def _assemble(self, loaded: Sequence[ServedModel], memory: Memory) -> Sample:
        sample = Sample(memory=memory)
        other = self._other_fixed[:]
        _add_stats(other, self._other_retired)
        status = self._unknown_status
        other[_S2] += status[2]
        other[_S4] += status[4]
        other[_S5] += status[5]
        for entry in self._models.values():
            if entry.offset is None:
                entry.add_current(other)
                if not entry.exposed and entry.own is None:
                    entry.exposed = entry.has_counts()
                continue
            sample.counts[entry.name] = self._own(entry)
        sample.counts[OTHER] = other
        for label, vec in sample.counts.items():  # a last guard against rounding: never go down
            last = self._emitted.get(label)
            if last is not None:
                sample.counts[label] = vec = [max(a, b) for a, b in zip(vec, last, strict=True)]
            self._emitted[label] = vec
        sample.queue_depth = dict.fromkeys(sample.counts, 0)
        sample.resident_bytes = dict.fromkeys(sample.counts, 0)
        for model in loaded:
            label = model.name if model.name in sample.counts else OTHER
            sample.queue_depth[label] += model.in_flight
            sample.resident_bytes[label] += model.nbytes
        return sample
