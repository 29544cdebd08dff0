"""One model's load, under its record's lock: fetch, version selection, base, room, build, swap in,
and the back-off after a failure that is the model's fault."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor

from modelfleet.config import ServerSettings
from modelfleet.engine import building, loading
from modelfleet.engine.blobs import BlobCache
from modelfleet.engine.building import Builder
from modelfleet.engine.cache import ResponseCache
from modelfleet.engine.eviction import Evictions, Records
from modelfleet.engine.model import LoadedModel
from modelfleet.engine.records import NOT_SERVED, ModelRecord, State, Status, check_routing
from modelfleet.engine.residency import Residency
from modelfleet.errors import InsufficientMemory, ModelfleetError, ModelLoadError, NotFound, Unavailable
from modelfleet.repository.config import ModelConfig
from modelfleet.repository.folder import ModelSource, Repository

log = logging.getLogger(__name__)

RETRY_FIRST_S, RETRY_MAX_S = 1.0, 60.0
_TRANSIENT = (InsufficientMemory, NotFound, Unavailable)  # not the model's fault: no back-off


class Loader:
    """Loads and reloads models into their records; `acquire` gets an adapter's base."""

    def __init__(
        self,
        repository: Repository,
        settings: ServerSettings,
        pool: ThreadPoolExecutor,
        records: Records,
        residency: Residency,
        blobs: BlobCache,
        cache: ResponseCache,
        builder: Builder,
        evictions: Evictions,
        acquire: Callable[[str], Awaitable[LoadedModel]],
    ) -> None:
        self._repository = repository
        self._settings = settings
        self._pool = pool
        self._records = records
        self._residency = residency
        self._blobs = blobs
        self._cache = cache
        self._builder = builder
        self._evictions = evictions
        self._acquire = acquire

    async def load(self, record: ModelRecord[LoadedModel], only_if_missing: bool = False) -> None:
        async with record.lock:
            if only_if_missing and record.ready:  # an explicit load got there first
                return
            started = time.perf_counter()
            try:
                await self._load_locked(record)
            except ModelLoadError as exc:  # the model itself is at fault: back off before trying again
                record.counters.load_failures += 1
                record.failures += 1
                backoff = min(RETRY_MAX_S, RETRY_FIRST_S * 2 ** (record.failures - 1))
                record.retry_at = time.monotonic() + backoff
                log.warning("model '%s' failed to load: %s", record.name, exc)
                raise
            record.failures = 0
            record.retry_at = 0.0
            c = record.counters
            c.loads += 1
            c.last_load_s = time.perf_counter() - started
            c.load_s_total += c.last_load_s

    async def _load_locked(self, record: ModelRecord[LoadedModel]) -> None:
        loop = asyncio.get_running_loop()
        before = dict(record.versions), record.status
        record.status = Status(State.LOADING)
        try:
            try:
                source: ModelSource = await asyncio.wait_for(
                    loop.run_in_executor(self._pool, self._repository.fetch, record.name),
                    self._settings.load_timeout_s,
                )
            except TimeoutError:
                raise ModelLoadError(
                    f"fetching took longer than {self._settings.load_timeout_s:g} s"
                ) from None
            selected = source.config.version_policy.select(source.versions)
            if not selected:
                raise ModelLoadError(f"the version policy selects none of the versions {source.versions}")
            check_routing(source.config, selected)
            record.pinned = source.config.pinned
            record.base = source.config.base
            base = await self._base_of(record, source.config)
            for number in selected:
                record.versions[number] = Status(State.LOADING)
            built = await self._build_versions(record, source, selected, base)
        except (*_TRANSIENT, asyncio.CancelledError):
            record.versions, record.status = before
            raise
        except ModelLoadError as exc:
            record.mark_failed(exc.message)
            raise
        except Exception as exc:  # a bug, not the model: say so without internals, and back off
            log.exception("loading model '%s' failed unexpectedly", record.name)
            reason = f"unexpected error while loading ({type(exc).__name__})"
            record.mark_failed(reason)
            raise ModelLoadError(reason) from exc
        await self._builder.retire_all(self._swap_in(record, built, selected))
        log.info("model '%s' ready: versions %s", record.name, sorted(record.ready))

    async def _base_of(self, record: ModelRecord[LoadedModel], config: ModelConfig) -> LoadedModel | None:
        if config.base is None:
            return None
        if config.base == record.name:
            raise ModelLoadError("an adapter cannot be its own base")
        try:
            base = await self._acquire(config.base)
        except InsufficientMemory:
            raise
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
        self,
        record: ModelRecord[LoadedModel],
        source: ModelSource,
        selected: list[int],
        base: LoadedModel | None,
    ) -> dict[int, LoadedModel]:
        """Make room, load every selected version, account for what they take."""
        loop = asyncio.get_running_loop()
        residency, evictions = self._residency, self._evictions
        blob_sizes = building.blob_sizes(source, selected)
        deps = set(blob_sizes) | ({base.name} if base is not None else set())
        estimate = building.estimate(source, selected)
        held = {record.name, *deps}
        evictions.reserve(held)  # nothing this load stands on can be evicted meanwhile
        try:
            new_bytes = sum(n for key, n in blob_sizes.items() if key not in residency)
            await evictions.make_room(estimate + new_bytes, record.name, held)
            if base is not None:
                self._check_live(base, record.name)
            for key, nbytes in blob_sizes.items():
                if key not in residency:
                    residency.add(key, nbytes)
            old = residency.get(record.name)
            residency.add(record.name, estimate + (old.nbytes if old else 0), record.pinned, deps)
            built: dict[int, LoadedModel] = {}
            try:
                for number in selected:
                    shared = await loop.run_in_executor(
                        self._pool, loading.shared_tensors, source, number, self._blobs
                    )
                    built[number] = await self._builder.build(
                        source, number, shared, base, estimate // len(selected)
                    )
                if base is not None:
                    self._check_live(base, record.name)
                kept = sum(m.nbytes for n, m in record.ready.items() if n not in built)
                residency.resize(record.name, sum(m.nbytes for m in built.values()) + kept)
                if residency.free_bytes < 0:  # measured larger than estimated: evict what is idle now
                    await evictions.make_room(0, record.name, held, wait=False)
            except BaseException:
                await self._builder.retire_all(list(built.values()))
                evictions.account(record)
                raise
        finally:
            evictions.release(held)
        return built

    def _check_live(self, base: LoadedModel, for_name: str) -> None:
        record = self._records.get(base.name)
        if record is None or record.ready.get(base.version) is not base:
            raise Unavailable(f"base model '{base.name}' changed while '{for_name}' was loading; try again")

    def _swap_in(
        self, record: ModelRecord[LoadedModel], built: dict[int, LoadedModel], selected: list[int]
    ) -> list[LoadedModel]:
        """Make the new copies the ones requests get; return what they replace (to retire)."""
        old = record.ready
        ready = {n: m for n, m in old.items() if n in selected} | built
        replaced = [m for n, m in old.items() if ready.get(n) is not m]
        # Adapters bound to a replaced copy of this base go too: they come back over the new one.
        gone = {id(m.executor) for m in replaced}
        adapters = [
            r for r in self._records.values()
            if r.base == record.name and any(id(m.executor) in gone for m in r.ready.values())
        ]  # fmt: skip
        replaced += self._evictions.detach(
            adapters, State.EVICTED, f"base model '{record.name}' was reloaded"
        )
        record.set_ready(ready)
        self._cache.drop_model(record.name)  # answers of the copies being replaced must not be served
        record.route(next(iter(built.values())).config)
        for number in selected:
            record.versions[number] = Status(State.READY)
        for number in [n for n in record.versions if n not in selected]:
            record.versions[number] = Status(State.UNAVAILABLE, NOT_SERVED, served=False)
        record.status = Status(State.READY)
        return replaced
