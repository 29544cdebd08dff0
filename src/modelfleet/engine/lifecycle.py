"""The in-process model host: models loaded on demand under a memory budget, evicted when idle,
unloaded on request. `resident()` is the request path's call: dictionary lookups, no await."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import msgspec

from modelfleet.config import ServerSettings, StartupLoad
from modelfleet.engine import loading, reports
from modelfleet.engine.blobs import BlobCache
from modelfleet.engine.building import Builder
from modelfleet.engine.cache import ResponseCache
from modelfleet.engine.catalog import Catalog
from modelfleet.engine.eviction import Evictions
from modelfleet.engine.executor import ComputeShare
from modelfleet.engine.loads import Loader
from modelfleet.engine.memory import format_bytes, tune_allocator
from modelfleet.engine.model import LoadedModel
from modelfleet.engine.records import UNLOADED, ModelRecord, State
from modelfleet.engine.residency import Residency
from modelfleet.errors import ModelfleetError, ModelLoadError, NotFound, Unavailable
from modelfleet.protocol.documents import IndexEntry, Memory, Statistics, Workers
from modelfleet.repository.config import ModelConfig
from modelfleet.repository.folder import Repository
from modelfleet.repository.names import check_model_name

log = logging.getLogger(__name__)


class ModelManager:
    """A `ModelHost` over this process's models: lookup and single flight here, one load in
    `Loader`, building in `Builder`, eviction and unloading in `Evictions`, documents in reports."""

    def __init__(self, repository: Repository, settings: ServerSettings) -> None:
        self._repository = repository
        self._settings = settings
        self.catalog: Catalog[LoadedModel] = Catalog()
        self.records = self.catalog.records
        self._pool = ThreadPoolExecutor(max_workers=settings.load_concurrency, thread_name_prefix="load")
        tune_allocator()
        self.residency = Residency(settings.memory_budget_bytes(), time.monotonic)
        self.blobs = BlobCache()
        self.cache = ResponseCache(settings.response_cache_bytes)
        self.share = ComputeShare(settings.compute_slots) if settings.compute_slots else None
        self.builder = Builder(settings, self._pool, self.cache, self.share, self.known, self._step_model)
        self.evictions = Evictions(self.records, self.residency, self.blobs, self.builder, settings)
        self.loader = Loader(
            repository, settings, self._pool, self.records, self.residency, self.blobs, self.cache,
            self.builder, self.evictions, self.acquire,
        )  # fmt: skip
        self.started = False
        self._tasks: set[asyncio.Future[None]] = set()  # on-demand loads, cancelled at close

    # -- request path ---------------------------------------------------------------------------

    def resident(self, name: str, version: str | None = None) -> LoadedModel | None:
        """The ready model a request goes to, or None when it must be loaded first (a use: LRU)."""
        model = self.catalog.find(name, version)
        if model is not None:
            self.residency.touch(name)
        return model

    def peek(self, name: str, version: str | None = None) -> LoadedModel | None:
        """Like resident(), without counting as a use (readiness probes, statistics)."""
        return self.catalog.find(name, version)

    async def acquire(self, name: str, version: str | None = None) -> LoadedModel:
        """The ready model, loading it first if it is not resident (single flight)."""
        model = self.resident(name, version)
        if model is not None:
            return model
        record = self.records[name]
        if record.loading is None:
            now = time.monotonic()
            if now < record.retry_at:
                raise Unavailable(
                    f"model '{name}' failed to load: {record.status.reason}; "
                    f"next attempt in {record.retry_at - now:.1f} s"
                )
            record.counters.cold_starts += 1
            task = record.loading = asyncio.ensure_future(self._load_on_demand(record))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
        record.waiting += 1  # waiting requests keep the fresh model from being evicted under them
        try:  # a waiter that gives up (timeout, client gone) does not cancel the load
            await asyncio.wait_for(asyncio.shield(record.loading), self._settings.load_timeout_s)
        except TimeoutError:
            raise Unavailable(f"model '{name}' is still loading; try again shortly") from None
        except ModelLoadError as exc:
            raise Unavailable(f"model '{name}' failed to load: {exc.message}") from None
        finally:
            record.waiting -= 1
        model = self.resident(name, version)
        if model is None:
            raise record.not_ready(version)
        return model

    def served_versions(self, name: str) -> list[str]:
        return self.catalog.served_versions(name)

    def known(self, name: str) -> bool:
        return name in self.records

    def record(self, name: str) -> ModelRecord[LoadedModel] | None:
        return self.records.get(name)

    def loaded(self, name: str | None = None) -> list[LoadedModel]:
        """Ready model versions, of one model or of all."""
        return self.catalog.loaded(name)

    # -- control ----------------------------------------------------------------------------------

    async def start(self) -> None:
        """Find the repository's models and load those the settings say to load at start."""
        await asyncio.get_running_loop().run_in_executor(self._pool, loading.initialize_runtime)
        names = await asyncio.to_thread(self._repository.list_models)
        for name in names:
            self.catalog.add(name)
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
        log.info(
            "repository %s: %d models, %d loaded, budget %s",
            self._repository.describe(),
            len(self.records),
            sum(1 for r in self.records.values() if r.ready),
            format_bytes(self.residency.budget_bytes),
        )

    async def refresh(self) -> None:
        """Pick up models added to or removed from the repository (loaded ones keep serving)."""
        self.catalog.sync(await asyncio.to_thread(self._repository.list_models))

    async def load(self, name: str) -> None:
        """Load (or reload) on request: ignores the back-off and lifts a hold."""
        check_model_name(name)
        record = self.catalog.add(name)
        record.held = False
        try:
            await self.loader.load(record)
        except NotFound:
            if not record.ready and self.records.get(name) is record:
                del self.records[name]
            raise

    async def unload(self, name: str) -> None:
        """Unload on request, with the adapters over it; it stays out until loaded again."""
        record = self.catalog.hold(name)
        async with record.lock:  # a load under way finishes first
            await self.evictions.unload(record)

    async def unload_from(self, worker: int, name: str) -> None:
        """Without workers, this process is worker 0: the same as unload()."""
        if worker != 0:
            raise NotFound(f"no worker {worker}; this server runs its models in process (worker 0)")
        await self.unload(name)

    async def close(self) -> None:
        """Stop loads under way, drain and unload everything; used at shutdown."""
        for task in list(self._tasks):
            task.cancel()
        for task in list(self._tasks):
            with contextlib.suppress(BaseException):
                await task
        for record in sorted(self.records.values(), key=lambda r: r.base is None):  # adapters first
            if record.ready:
                await self.builder.retire_all(self.evictions.detach([record], State.UNLOADING, UNLOADED))
                record.unloaded(UNLOADED)
        self._pool.shutdown(wait=False, cancel_futures=True)
        self.builder.close()

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

    async def _load_on_demand(self, record: ModelRecord[LoadedModel]) -> None:
        try:
            await self.loader.load(record, only_if_missing=True)
        finally:
            record.loading = None

    async def _step_model(self, name: str, version: str | None) -> LoadedModel:
        return self.resident(name, version) or await self.acquire(name, version)

    # -- documents --------------------------------------------------------------------------------

    def index(self, ready_only: bool = False) -> list[IndexEntry]:
        return reports.index(self.records, self.residency, ready_only)

    def residency_of(self, name: str) -> dict[str, Any]:
        """A model's state, reason and load / eviction counters as plain data, for a worker's report."""
        doc: dict[str, Any] = msgspec.to_builtins(reports.residency_of(self.records[name], self.residency))
        return doc

    def memory(self) -> Memory:
        """Budget, use and totals, for the statistics views and the monitor."""
        return reports.memory(self.records, self.residency, self.blobs.nbytes())

    def statistics(self, name: str | None, version: str | None) -> Statistics:
        """The statistics extension: each ready version's counts and residency, and the memory
        totals; 400 / 404 like every other per-model call, without loading anything."""
        if name is None:
            models = self.loaded()
        else:
            model = self.peek(name, version)
            if model is None and version is not None:
                raise self.records[name].not_ready(version)
            models = [model] if version is not None and model is not None else self.loaded(name)
        return Statistics(
            model_stats=reports.model_stats(models, self.records, self.residency), memory=self.memory()
        )

    async def workers(self) -> Workers:
        """The /v2/workers document: this process, as worker 0."""
        worker = reports.in_process_worker(self.started, self.memory(), self.loaded())
        return Workers(workers=[worker], in_process=True)
