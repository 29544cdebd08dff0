"""Model lifecycle under a memory budget: loading on demand, single flight, eviction, unloading.

The manager keeps one record per model name of the repository. A request for a model that is not
resident loads it (one load however many requests wait; loads of different models run side by
side on a small pool); room is made first by evicting the least recently used idle, unpinned
models (residency.py chooses, this module unloads). A load that fails is retried on a later request
after a back-off; an explicit unload holds the model out until it is loaded again. A reload builds
the new versions before swapping them in and drains the old ones.

`resident()` is the request path's call: dictionary lookups, no await.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from modelfleet.config import ServerSettings, StartupLoad
from modelfleet.engine import loading
from modelfleet.engine.blobs import BlobCache
from modelfleet.engine.executor import Batching, ModelExecutor
from modelfleet.engine.memory import format_bytes, tune_allocator
from modelfleet.engine.model import LoadedModel
from modelfleet.engine.residency import Residency
from modelfleet.errors import (
    InsufficientMemory,
    ModelfleetError,
    ModelLoadError,
    NotFound,
    Unavailable,
    model_not_found,
)
from modelfleet.repository.config import ModelConfig
from modelfleet.repository.folder import ModelSource, Repository
from modelfleet.repository.names import check_model_name, check_version, is_alias
from modelfleet.runtimes.adapter import Head

log = logging.getLogger(__name__)

BLOB = "blob:"  # residency keys of weight blobs; model names can't contain ':'
_RETRY_FIRST_S, _RETRY_MAX_S = 1.0, 60.0


class State(StrEnum):
    READY = "READY"
    LOADING = "LOADING"
    UNLOADING = "UNLOADING"
    EVICTED = "EVICTED"  # unloaded to make room; loads again on the next request
    UNAVAILABLE = "UNAVAILABLE"


NOT_LOADED = "not loaded"
UNLOADED = "unloaded"
NOT_SERVED = "not served by the version policy"


@dataclass(slots=True)
class Status:
    state: State
    reason: str = ""
    failed: bool = False  # unavailable because loading failed (503), not because never loaded (404)
    served: bool = True  # False: a version the version policy does not serve (404)


@dataclass(slots=True)
class Counters:
    loads: int = 0
    load_failures: int = 0
    cold_starts: int = 0  # loads caused by a request that found the model not resident
    evictions: int = 0
    load_s_total: float = 0.0
    last_load_s: float = 0.0
    last_used: float = 0.0  # wall clock


@dataclass(slots=True)
class ModelRecord:
    name: str
    status: Status = field(default_factory=lambda: Status(State.UNAVAILABLE, NOT_LOADED))
    versions: dict[int, Status] = field(default_factory=dict)
    ready: dict[int, LoadedModel] = field(default_factory=dict)
    latest: LoadedModel | None = None  # the highest ready version: where unversioned requests go
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    loading: asyncio.Future[None] | None = None  # the load requests are waiting for (single flight)
    waiting: int = 0  # requests waiting for that load
    held: bool = False  # unloaded on request: not loaded on demand until loaded again
    pinned: bool = False
    base: str | None = None  # adapters: the base model they run through
    aliases: dict[str, int] = field(default_factory=dict)
    traffic: list[tuple[float, int]] = field(default_factory=list)  # (cumulative weight, version)
    failures: int = 0
    retry_at: float = 0.0  # monotonic
    counters: Counters = field(default_factory=Counters)

    def set_ready(self, ready: dict[int, LoadedModel]) -> None:
        self.ready = ready
        self.latest = ready[max(ready)] if ready else None

    def pick(self, version: str | None, draw: float = 0.0) -> LoadedModel | None:
        """The ready copy a request goes to: the named version or alias, else the traffic split's
        choice for `draw` in [0, 1) (the highest version without a split)."""
        if version is not None:
            return self.ready.get(self.number(version))
        if self.traffic:
            total = self.traffic[-1][0]
            for bound, number in self.traffic:
                if draw * total < bound:
                    return self.ready.get(number) or self.latest
        return self.latest

    def number(self, version: str) -> int:
        """A version number from its digits or its alias (400 for neither, 404 for an unknown alias)."""
        number = self.aliases.get(version)
        if number is not None:
            return number
        if is_alias(version):
            raise NotFound(f"model '{self.name}' has no version alias '{version}'")
        return int(check_version(version))

    def not_ready(self, version: str | None) -> ModelfleetError:
        """The error for a request that found no ready version to run on."""
        number = None if version is None else self.number(version)
        if number is not None and self.versions and number not in self.versions:
            return model_not_found(self.name, version)
        status = self.versions[number] if number is not None and number in self.versions else self.status
        label = f"model '{self.name}'" + ("" if number is None else f" version {number}")
        if status.state == State.LOADING:
            return Unavailable(f"{label} is loading; try again shortly")
        if status.state == State.UNLOADING:
            return NotFound(f"{label} is being unloaded")
        if status.failed:
            return Unavailable(f"{label} is unavailable: {status.reason}")
        if not status.served:
            return NotFound(f"{label} is {NOT_SERVED}")
        if self.held:
            return NotFound(f"{label} is not loaded (it was unloaded; load it to serve it again)")
        return Unavailable(f"{label} is not resident; it is loaded by its first inference request")


class ModelManager:
    def __init__(self, repository: Repository, settings: ServerSettings) -> None:
        self._repository = repository
        self._settings = settings
        self._records: dict[str, ModelRecord] = {}
        self._pool = ThreadPoolExecutor(max_workers=settings.load_concurrency, thread_name_prefix="load")
        tune_allocator()
        self.residency = Residency(settings.memory_budget_bytes(), time.monotonic)
        self.blobs = BlobCache()
        self.started = False
        self._random = random.Random()

    # -- request path ---------------------------------------------------------------------------

    def resident(self, name: str, version: str | None = None) -> LoadedModel | None:
        """The ready model a request goes to, or None when it must be loaded first.

        400 for a bad name or version, 404 for a model the repository does not have or one
        unloaded on request, 503 while its last load failure is within its back-off.
        """
        record = self._records.get(name)
        if record is None:
            check_model_name(name)
            if version is not None:
                check_version(version)
            raise model_not_found(name, version)
        model = record.pick(version, self._random.random() if record.traffic else 0.0)
        if model is not None:
            self.residency.touch(name)
            record.counters.last_used = time.time()
            return model
        if record.held or (
            version is not None and record.versions and not _servable(record, record.number(version))
        ):
            raise record.not_ready(version)
        return None

    async def acquire(self, name: str, version: str | None = None) -> LoadedModel:
        """The ready model, loading it first if it is not resident (single flight)."""
        model = self.resident(name, version)
        if model is not None:
            return model
        record = self._records[name]
        if record.loading is None:
            now = time.monotonic()
            if now < record.retry_at:
                raise Unavailable(
                    f"model '{name}' failed to load: {record.status.reason}; "
                    f"next attempt in {record.retry_at - now:.1f} s"
                )
            record.counters.cold_starts += 1
            record.loading = asyncio.ensure_future(self._load_on_demand(record))
        record.waiting += 1  # waiting requests keep the fresh model from being evicted under them
        try:
            await asyncio.shield(record.loading)  # a waiter that gives up does not cancel the load
        except ModelLoadError as exc:
            raise Unavailable(f"model '{name}' failed to load: {exc.message}") from None
        finally:
            record.waiting -= 1
        model = record.pick(version, self._random.random())
        if model is None:
            raise record.not_ready(version)
        self.residency.touch(name)
        return model

    def served_versions(self, name: str) -> list[str]:
        record = self._records.get(name)
        return [str(v) for v in sorted(record.ready)] if record else []

    # -- control ----------------------------------------------------------------------------------

    async def start(self) -> None:
        """Find the repository's models and load those the settings say to load at start."""
        names = await asyncio.to_thread(self._repository.list_models)
        for name in names:
            self._records.setdefault(name, ModelRecord(name))
        mode = self._settings.startup_load
        if mode == StartupLoad.ALL:
            chosen = names
        elif mode == StartupLoad.PINNED:
            configs = await asyncio.gather(*(self._config_or_none(n) for n in names))
            chosen = [n for n, c in zip(names, configs, strict=True) if c is not None and c.pinned]
        else:
            chosen = []
        await asyncio.gather(*(self._load_quietly(name) for name in chosen))
        self.started = True
        ready = sum(1 for r in self._records.values() if r.ready)
        log.info(
            "repository %s: %d models, %d loaded, budget %s",
            self._repository.describe(),
            len(self._records),
            ready,
            format_bytes(self.residency.budget_bytes),
        )

    async def refresh(self) -> None:
        """Pick up models added to or removed from the repository (loaded ones keep serving)."""
        names = set(await asyncio.to_thread(self._repository.list_models))
        for name in names:
            self._records.setdefault(name, ModelRecord(name))
        for name, record in list(self._records.items()):
            if name not in names and not record.ready and not record.lock.locked() and record.loading is None:
                del self._records[name]

    async def load(self, name: str) -> None:
        """Load (or reload) on request: ignores the back-off and lifts a hold."""
        check_model_name(name)
        record = self._records.setdefault(name, ModelRecord(name))
        record.held = False
        if record.loading is not None:
            await asyncio.shield(record.loading)
        try:
            await self._load(record)
        except NotFound:
            if not record.ready and self._records.get(name) is record:
                del self._records[name]
            raise

    async def unload(self, name: str) -> None:
        """Unload on request (adapters over it too); it stays out until loaded again."""
        check_model_name(name)
        record = self._records.get(name)
        if record is None:
            raise model_not_found(name)
        record.held = True
        for other in list(self._records.values()):
            if other.base == name and other.ready:
                await self.unload(other.name)
        await self._drop(record, Status(State.UNAVAILABLE, UNLOADED), unloading=True)

    async def close(self) -> None:
        """Drain and unload everything; used at shutdown."""
        adapters_first = sorted(self._records.values(), key=lambda r: r.base is None)
        for record in adapters_first:
            if record.ready:
                await self._drop(record, Status(State.UNAVAILABLE, UNLOADED), unloading=True)
        self._pool.shutdown(wait=False, cancel_futures=True)

    # -- views --------------------------------------------------------------------------------------

    def index(self, ready_only: bool = False) -> list[dict[str, Any]]:
        entries: list[dict[str, Any]] = []
        for name in sorted(self._records):
            record = self._records[name]
            extra = self._memory_fields(record)
            if record.versions:
                for number in sorted(record.versions):
                    status = record.versions[number]
                    entries.append(
                        {
                            "name": name,
                            "version": str(number),
                            "state": status.state.value,
                            "reason": status.reason,
                        }
                        | extra
                    )
            else:
                entries.append(
                    {"name": name, "state": record.status.state.value, "reason": record.status.reason}
                )
        if ready_only:
            entries = [e for e in entries if e["state"] == State.READY]
        return entries

    def _memory_fields(self, record: ModelRecord) -> dict[str, Any]:
        c = record.counters
        return {
            "resident_bytes": sum(m.nbytes for m in record.ready.values()),
            "pinned": record.pinned,
            "last_load_s": round(c.last_load_s, 6),
            "last_used": round(c.last_used, 3),
            "loads": c.loads,
            "load_failures": c.load_failures,
            "cold_starts": c.cold_starts,
            "evictions": c.evictions,
        }

    def residency_of(self, name: str) -> dict[str, Any]:
        """A model's state, reason and load / eviction counters (for the statistics extension)."""
        record = self._records[name]
        entry = self.residency.get(name)
        return self._memory_fields(record) | {
            "state": record.status.state.value,
            "reason": record.status.reason,
            "load_s_total": round(record.counters.load_s_total, 6),
            "last_used": round(record.counters.last_used, 3),
            "accounted_bytes": entry.nbytes if entry else 0,
        }

    def memory(self) -> dict[str, Any]:
        """Budget, use and totals, for the statistics views and the monitor."""
        records = self._records.values()
        return {
            "budget_bytes": self.residency.budget_bytes,
            "used_bytes": self.residency.used_bytes,
            "resident_models": sum(1 for r in records if r.ready),
            "known_models": len(self._records),
            "blob_bytes": self.blobs.nbytes(),
            "loads": sum(r.counters.loads for r in records),
            "load_failures": sum(r.counters.load_failures for r in records),
            "cold_starts": sum(r.counters.cold_starts for r in records),
            "evictions": sum(r.counters.evictions for r in records),
        }

    def loaded(self, name: str | None = None) -> list[LoadedModel]:
        """Ready model versions, of one model or of all."""
        records = [self._records[name]] if name is not None and name in self._records else []
        if name is None:
            records = [self._records[n] for n in sorted(self._records)]
        return [r.ready[v] for r in records for v in sorted(r.ready)]

    def known(self, name: str) -> bool:
        return name in self._records

    def record(self, name: str) -> ModelRecord | None:
        return self._records.get(name)

    # -- loading ------------------------------------------------------------------------------------

    async def _config_or_none(self, name: str) -> ModelConfig | None:
        try:
            return await asyncio.get_running_loop().run_in_executor(self._pool, self._repository.config, name)
        except ModelfleetError:
            return None

    async def _load_quietly(self, name: str) -> None:
        try:
            await self.load(name)
        except ModelfleetError as exc:
            log.warning("model '%s' is unavailable: %s", name, exc)

    async def _load_on_demand(self, record: ModelRecord) -> None:
        try:
            await self._load(record)
        finally:
            record.loading = None

    async def _load(self, record: ModelRecord) -> None:
        async with record.lock:
            started = time.perf_counter()
            try:
                await self._load_locked(record)
            except ModelLoadError as exc:  # the model itself is at fault: back off before trying again
                record.counters.load_failures += 1
                record.failures += 1
                backoff = min(_RETRY_MAX_S, _RETRY_FIRST_S * 2 ** (record.failures - 1))
                record.retry_at = time.monotonic() + backoff
                log.warning("model '%s' failed to load: %s", record.name, exc)
                raise
            record.failures = 0
            record.retry_at = 0.0
            c = record.counters
            c.loads += 1
            c.last_load_s = time.perf_counter() - started
            c.load_s_total += c.last_load_s

    async def _load_locked(self, record: ModelRecord) -> None:
        loop = asyncio.get_running_loop()
        before = dict(record.versions), record.status
        record.status = Status(State.LOADING)
        try:
            source: ModelSource = await loop.run_in_executor(self._pool, self._repository.fetch, record.name)
            selected = source.config.version_policy.select(source.versions)
            if not selected:
                raise ModelLoadError(f"the version policy selects none of the versions {source.versions}")
            _check_routing(source.config, selected)
            record.pinned = source.config.pinned
            record.base = source.config.base
            base = await self._base_of(record, source.config)
            for number in selected:
                record.versions[number] = Status(State.LOADING)
            built = await self._build_versions(record, source, selected, base)
        except (InsufficientMemory, NotFound):  # not the model's fault: it stays as it was
            record.versions, record.status = before
            raise
        except ModelfleetError as exc:
            self._mark_failed(record, exc.message)
            raise
        await self._retire_all(self._swap_in(record, built, selected))
        log.info("model '%s' ready: versions %s", record.name, sorted(record.ready))

    def _mark_failed(self, record: ModelRecord, reason: str) -> None:
        for number, status in record.versions.items():
            if number in record.ready:
                record.versions[number] = Status(
                    State.READY, f"reload failed, previous copy serving: {reason}"
                )
            elif status.state == State.LOADING:
                record.versions[number] = Status(State.UNAVAILABLE, reason, failed=True)
        record.status = (
            Status(State.READY) if record.ready else Status(State.UNAVAILABLE, reason, failed=True)
        )

    async def _base_of(self, record: ModelRecord, config: ModelConfig) -> LoadedModel | None:
        if config.base is None:
            return None
        if config.base == record.name:
            raise ModelLoadError("an adapter cannot be its own base")
        try:
            base = await self.acquire(config.base)
        except NotFound:
            raise ModelLoadError(
                f"base model '{config.base}' is not in the repository or not loaded"
            ) from None
        except ModelfleetError as exc:
            raise ModelLoadError(f"base model '{config.base}': {exc.message}") from None
        if base.post is not None:
            raise ModelLoadError(f"base model '{config.base}' is itself an adapter")
        return base

    async def _build_versions(
        self, record: ModelRecord, source: ModelSource, selected: list[int], base: LoadedModel | None
    ) -> dict[int, LoadedModel]:
        """Make room, load every selected version, account for what they take."""
        loop = asyncio.get_running_loop()
        new_blobs = {
            ref.blob: ref.nbytes
            for v in selected
            if v in source.weights
            for ref in source.weights[v].tensors.values()
            if BLOB + ref.blob not in self.residency
        }
        estimate = self._estimate(source, selected)
        protect = {base.name} if base is not None else set()
        await self._make_room(estimate + sum(new_blobs.values()), record.name, protect)
        for digest, nbytes in new_blobs.items():
            if BLOB + digest not in self.residency:
                self.residency.add(BLOB + digest, nbytes)
        built: dict[int, LoadedModel] = {}
        old = self.residency.get(record.name)
        self.residency.add(
            record.name,
            estimate + (old.nbytes if old else 0),
            record.pinned,
            self._deps(source, selected, base),
        )
        try:
            for number in selected:
                shared = await loop.run_in_executor(
                    self._pool, loading.shared_tensors, source, number, self.blobs
                )
                built[number] = await self._build_one(source, number, shared, base)
            self.residency.resize(
                record.name,
                sum(m.nbytes for m in built.values())
                + sum(m.nbytes for n, m in record.ready.items() if n not in built),
            )
            if self.residency.free_bytes < 0:  # measured larger than estimated: evict what is idle now
                await self._make_room(0, record.name, protect | {record.name}, wait=False)
        except BaseException:
            await asyncio.gather(*(self._retire(m) for m in built.values()))
            self._account(record)
            raise
        return built

    async def _build_one(
        self, source: ModelSource, number: int, shared: dict[str, Any], base: LoadedModel | None
    ) -> LoadedModel:
        loop = asyncio.get_running_loop()
        settings = self._settings
        if base is not None:
            future = loop.run_in_executor(
                self._pool, loading.build_adapter, source, number, shared, base.config
            )
        else:
            future = loop.run_in_executor(
                self._pool,
                loading.build,
                source,
                number,
                shared,
                settings.intra_op_threads,
                settings.default_max_batch_size,
            )
        try:
            built = await asyncio.wait_for(asyncio.shield(future), settings.load_timeout_s)
        except TimeoutError:
            future.add_done_callback(self._discard_late_load)
            raise ModelLoadError(f"loading took longer than {settings.load_timeout_s:g} s") from None
        nbytes = max(built.nbytes, source.config.memory_bytes or 0)  # a declared size is a floor
        if base is not None:
            assert isinstance(built.runtime, Head)
            return LoadedModel(
                source.name, number, built.config, built.runtime, base.executor, built.runtime.apply,
                nbytes, built.load_s,
            )  # fmt: skip
        executor = ModelExecutor(
            built.runtime, f"{source.name}/{number}", settings.max_queue_size, _batching(built.config)
        )
        return LoadedModel(
            source.name, number, built.config, built.runtime, executor, None, nbytes, built.load_s
        )

    def _swap_in(
        self, record: ModelRecord, built: dict[int, LoadedModel], selected: list[int]
    ) -> list[LoadedModel]:
        """Make the new versions the ones requests get; return the copies they replace."""
        old = record.ready
        ready = {n: m for n, m in old.items() if n in selected} | built
        for number in selected:
            record.versions[number] = Status(State.READY)
        record.set_ready(ready)
        config = next(iter(built.values())).config
        record.aliases = dict(config.aliases)
        cumulative, record.traffic = 0.0, []
        for number, weight in sorted((config.traffic or {}).items()):
            if weight > 0:
                cumulative += weight
                record.traffic.append((cumulative, number))
        for number in [n for n in record.versions if n not in selected]:
            record.versions[number] = Status(State.UNAVAILABLE, NOT_SERVED, served=False)
        record.status = Status(State.READY)
        record.counters.last_used = time.time()
        return [m for n, m in old.items() if ready.get(n) is not m]

    def _estimate(self, source: ModelSource, selected: list[int]) -> int:
        """Bytes a load is expected to take before it is measured (shared blobs not included)."""
        if source.config.memory_bytes is not None:
            return source.config.memory_bytes
        total = 0
        for number in selected:
            path = source.model_file(number)
            size = path.stat().st_size if path.is_file() else 0
            total += int(size * 1.3) + (1 << 20 if source.config.base is None else 4096)
        return total

    def _deps(self, source: ModelSource, selected: list[int], base: LoadedModel | None) -> set[str]:
        deps = {
            BLOB + ref.blob
            for v in selected
            if v in source.weights
            for ref in source.weights[v].tensors.values()
        }
        if base is not None:
            deps.add(base.name)
        return deps

    def _account(self, record: ModelRecord) -> None:
        """Residency after a failed or partial load: what is actually ready, or nothing."""
        if record.ready:
            self.residency.resize(record.name, sum(m.nbytes for m in record.ready.values()))
        else:
            self.residency.remove(record.name)

    def _discard_late_load(self, future: Any) -> None:
        if not future.cancelled() and future.exception() is None:
            self._pool.submit(loading.unload, future.result().runtime)

    # -- eviction and unloading ------------------------------------------------------------------------

    def _busy(self, key: str) -> bool:
        if key.startswith(BLOB):
            return False
        record = self._records.get(key)
        if record is None:
            return False
        if record.loading is not None or record.lock.locked() or record.waiting:
            return True
        return any(m.in_flight or (m.post is None and m.executor.pending) for m in record.ready.values())

    async def _make_room(self, needed: int, for_name: str, protect: set[str], wait: bool = True) -> None:
        """Evict idle models until `needed` more bytes fit. When only busy models (requests in
        flight, loads under way) stand in the way, wait for them a while; 507 when nothing could
        ever make room, or when the wait runs out. Without `wait`, evict what is idle and accept
        being over the budget for now (a measured size a little above its estimate)."""
        busy = lambda key: key in protect or self._busy(key)  # noqa: E731
        deadline = time.monotonic() + min(self._settings.load_timeout_s, self._settings.room_wait_s)
        while True:
            try:
                victims = self.residency.victims(needed, busy, f"model '{for_name}'")
                break
            except InsufficientMemory:
                if not wait:
                    victims = self.residency.idle_victims(busy)
                    break
                self.residency.victims(needed, protect.__contains__, f"model '{for_name}'")  # never fits: 507
                if time.monotonic() > deadline:
                    raise
                await asyncio.sleep(0.005)  # busy models free up as their requests finish
        retiring: list[LoadedModel] = []
        # Detach every victim before the first await: no request can pick one after this loop, and
        # no other load can choose the same victims again while these are being unloaded.
        for key in victims:
            self.residency.remove(key)
            if key.startswith(BLOB):
                self.blobs.drop(key.removeprefix(BLOB))
                continue
            record = self._records[key]
            retiring.extend(record.ready.values())
            record.set_ready({})
            evicted = Status(State.EVICTED, f"evicted to make room for '{for_name}'")
            for number in record.versions:
                record.versions[number] = evicted
            record.status = evicted
            record.counters.evictions += 1
        if victims:
            log.info("evicted %d to make room for '%s': %s", len(victims), for_name, ", ".join(victims[:10]))
            await self._retire_all(retiring)

    async def _drop(self, record: ModelRecord, final: Status, unloading: bool) -> None:
        async with record.lock:
            old = record.ready
            record.set_ready({})
            for number in old:
                record.versions[number] = Status(State.UNLOADING if unloading else State.EVICTED)
            self.residency.remove(record.name)
            await self._retire_all(list(old.values()))
            for number in old:
                record.versions[number] = final
            record.status = final

    async def _retire_all(self, models: list[LoadedModel]) -> None:
        await asyncio.gather(*(self._retire(m) for m in models))

    async def _retire(self, model: LoadedModel) -> None:
        if model.post is None:  # adapters share their base's executor
            await model.executor.close()
        await asyncio.get_running_loop().run_in_executor(self._pool, loading.unload, model.runtime)


def _check_routing(config: ModelConfig, selected: list[int]) -> None:
    for what, versions in (
        ("traffic", list(config.traffic or {})),
        ("aliases", list(config.aliases.values())),
    ):
        unserved = sorted(set(versions) - set(selected))
        if unserved:
            raise ModelLoadError(
                f"{what} names version(s) {unserved}, which the version policy does not serve "
                f"(it serves {sorted(selected)})"
            )


def _servable(record: ModelRecord, number: int) -> bool:
    status = record.versions.get(number)
    return status is not None and status.served


def _batching(config: ModelConfig) -> Batching | None:
    policy = config.dynamic_batching
    if not policy.enabled or not config.max_batch_size:
        return None
    rows = policy.max_batch_size or min(config.max_batch_size, 64)
    return Batching(max_rows=rows, max_queue_delay_ns=policy.max_queue_delay_us * 1000)
