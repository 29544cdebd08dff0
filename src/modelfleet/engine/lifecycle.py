"""Model lifecycle under a memory budget: loading on demand, single flight, eviction, unloading.

The manager keeps one record per model name of the repository (records.py). A request for a model
that is not resident loads it: one load however many requests wait, loads of different models side
by side on a small pool. Room is made first by evicting the least recently used idle, unpinned
models (residency.py chooses, this module unloads). A load that fails is retried on a later request
after a back-off; an explicit unload holds the model out until it is loaded again. A reload builds
the new copies before swapping them in and drains the old ones; adapters over a reloaded base are
evicted with it and come back over the new copy on their next request.

Invariants kept here: a key is in the residency iff its model has ready copies (or a load of it is
under way); every dependency of a resident entry is resident; victims are detached before the
first await, and nothing a load under way depends on can be chosen as one.

`resident()` is the request path's call: dictionary lookups, no await.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from modelfleet.config import ServerSettings, StartupLoad
from modelfleet.engine import loading
from modelfleet.engine.blobs import BlobCache
from modelfleet.engine.cache import ResponseCache
from modelfleet.engine.executor import Batching, ComputeShare, ModelExecutor
from modelfleet.engine.memory import format_bytes, tune_allocator
from modelfleet.engine.model import LoadedModel
from modelfleet.engine.pipeline import Declared, Pipeline
from modelfleet.engine.records import (
    NOT_SERVED,
    UNLOADED,
    ModelRecord,
    State,
    Status,
    check_routing,
)
from modelfleet.engine.residency import Residency
from modelfleet.errors import (
    InsufficientMemory,
    ModelfleetError,
    ModelLoadError,
    NotFound,
    Unavailable,
    model_not_found,
)
from modelfleet.repository.config import ModelConfig, complete_config
from modelfleet.repository.folder import ModelSource, Repository
from modelfleet.repository.names import check_model_name, check_version
from modelfleet.runtimes.adapter import Head

log = logging.getLogger(__name__)

BLOB = "blob:"  # residency keys of weight blobs; model names can't contain ':'
_RETRY_FIRST_S, _RETRY_MAX_S = 1.0, 60.0
_TRANSIENT = (InsufficientMemory, NotFound, Unavailable)  # not the model's fault: no back-off


class ModelManager:
    def __init__(self, repository: Repository, settings: ServerSettings) -> None:
        self._repository = repository
        self._settings = settings
        self._records: dict[str, ModelRecord] = {}
        self._pool = ThreadPoolExecutor(max_workers=settings.load_concurrency, thread_name_prefix="load")
        self._unload_pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="unload")
        tune_allocator()
        self.residency = Residency(settings.memory_budget_bytes(), time.monotonic)
        self.blobs = BlobCache()
        self.cache = ResponseCache(settings.response_cache_bytes)
        self.share = ComputeShare(settings.compute_slots) if settings.compute_slots else None
        self.started = False
        self._random = random.Random()
        self._reserved: Counter[str] = Counter()  # residency keys loads under way depend on
        self._tasks: set[asyncio.Future[None]] = set()  # on-demand loads, cancelled at close

    # -- request path ---------------------------------------------------------------------------

    def resident(self, name: str, version: str | None = None) -> LoadedModel | None:
        """The ready model a request goes to, or None when it must be loaded first.

        400 for a bad name or version, 404 for a model the repository does not have, one unloaded
        on request or a version not served. Counts as a use of the model (LRU).
        """
        return self._lookup(name, version, touch=True)

    def peek(self, name: str, version: str | None = None) -> LoadedModel | None:
        """Like resident(), without counting as a use (readiness probes, statistics)."""
        return self._lookup(name, version, touch=False)

    def _lookup(self, name: str, version: str | None, touch: bool) -> LoadedModel | None:
        record = self._records.get(name)
        if record is None:
            check_model_name(name)
            if version is not None:
                check_version(version)
            raise model_not_found(name, version)
        if version is not None and not version.isdigit() and not record.versions and not record.held:
            return None  # an alias: the model's config says which version once it has loaded
        model = record.pick(version, self._random.random() if record.traffic else 0.0)
        if model is not None:
            if touch:
                self.residency.touch(name)
            return model
        if record.held or (version is not None and not record.servable(version)):
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
        record = self._records.get(name)
        return [str(v) for v in sorted(record.ready)] if record else []

    # -- control ----------------------------------------------------------------------------------

    async def start(self) -> None:
        """Find the repository's models and load those the settings say to load at start."""
        await asyncio.get_running_loop().run_in_executor(self._pool, loading.initialize_runtime)
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
        log.info(
            "repository %s: %d models, %d loaded, budget %s",
            self._repository.describe(),
            len(self._records),
            sum(1 for r in self._records.values() if r.ready),
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
        try:
            await self._load(record)
        except NotFound:
            if not record.ready and self._records.get(name) is record:
                del self._records[name]
            raise

    async def unload(self, name: str) -> None:
        """Unload on request, with the adapters over it; it stays out until loaded again."""
        check_model_name(name)
        record = self._records.get(name)
        if record is None:
            raise model_not_found(name)
        record.held = True
        async with record.lock:  # a load under way finishes first
            adapters = [r for r in self._records.values() if r.base == name and r.ready]
            retiring = self._detach(adapters, State.UNLOADING, f"base model '{name}' is being unloaded")
            retiring += self._detach([record], State.UNLOADING, UNLOADED)
            await self._retire_all(retiring)
            for adapter in adapters:
                adapter.unloaded(f"base model '{name}' was unloaded")
            record.unloaded(UNLOADED)

    async def close(self) -> None:
        """Stop loads under way, drain and unload everything; used at shutdown."""
        for task in list(self._tasks):
            task.cancel()
        for task in list(self._tasks):
            with contextlib.suppress(BaseException):
                await task
        for record in sorted(self._records.values(), key=lambda r: r.base is None):  # adapters first
            if record.ready:
                await self._retire_all(self._detach([record], State.UNLOADING, UNLOADED))
                record.unloaded(UNLOADED)
        self._pool.shutdown(wait=False, cancel_futures=True)
        self._unload_pool.shutdown(wait=True)

    # -- views --------------------------------------------------------------------------------------

    def index(self, ready_only: bool = False) -> list[dict[str, Any]]:
        entries: list[dict[str, Any]] = []
        for name in sorted(self._records):
            record = self._records[name]
            if not record.versions:
                entries.append(
                    {"name": name, "state": record.status.state.value, "reason": record.status.reason}
                )
                continue
            extra = self._memory_fields(record)
            for number in sorted(record.versions):
                status = record.versions[number]
                entry = {
                    "name": name,
                    "version": str(number),
                    "state": status.state.value,
                    "reason": status.reason,
                }
                entries.append(entry | extra)
        if ready_only:
            entries = [e for e in entries if e["state"] == State.READY]
        return entries

    def _memory_fields(self, record: ModelRecord) -> dict[str, Any]:
        c = record.counters
        entry = self.residency.get(record.name)
        last_used = time.time() - (time.monotonic() - entry.last_used) if entry else 0.0
        return {
            "resident_bytes": sum(m.nbytes for m in record.ready.values()),
            "pinned": record.pinned,
            "last_load_s": round(c.last_load_s, 6),
            "last_used": round(last_used, 3),
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

    def statistics(self, name: str | None, version: str | None) -> dict[str, Any]:
        """The statistics extension: each ready version's counts and residency, and the memory
        totals; 400 / 404 like every other per-model call, without loading anything."""
        if name is None:
            models = self.loaded()
        else:
            model = self.peek(name, version)
            if model is None and version is not None:
                record = self.record(name)
                assert record is not None
                raise record.not_ready(version)
            models = [model] if version is not None and model is not None else self.loaded(name)
        entries = []
        for m in models:
            entry = m.stats.as_dict(m.name, m.version_str)
            entry["residency"] = self.residency_of(m.name) | {"resident_bytes": m.nbytes, "load_s": m.load_s}
            entries.append(entry)
        return {"model_stats": entries, "memory": self.memory()}

    def loaded(self, name: str | None = None) -> list[LoadedModel]:
        """Ready model versions, of one model or of all."""
        if name is None:
            records = [self._records[n] for n in sorted(self._records)]
        else:
            records = [self._records[name]] if name in self._records else []
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
            await self._load(record, only_if_missing=True)
        finally:
            record.loading = None

    async def _load(self, record: ModelRecord, only_if_missing: bool = False) -> None:
        async with record.lock:
            if only_if_missing and record.ready:  # an explicit load got there first
                return
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
        await self._retire_all(self._swap_in(record, built, selected))
        log.info("model '%s' ready: versions %s", record.name, sorted(record.ready))

    async def _base_of(self, record: ModelRecord, config: ModelConfig) -> LoadedModel | None:
        if config.base is None:
            return None
        if config.base == record.name:
            raise ModelLoadError("an adapter cannot be its own base")
        try:
            base = await self.acquire(config.base)
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
        self, record: ModelRecord, source: ModelSource, selected: list[int], base: LoadedModel | None
    ) -> dict[int, LoadedModel]:
        """Make room, load every selected version, account for what they take."""
        loop = asyncio.get_running_loop()
        deps = self._deps(source, selected, base)
        blob_sizes = {
            BLOB + ref.blob: ref.nbytes
            for v in selected
            if v in source.weights
            for ref in source.weights[v].tensors.values()
        }
        estimate = self._estimate(source, selected)
        held = {record.name, *deps}
        self._reserved.update(held)  # nothing this load stands on can be evicted meanwhile
        try:
            new_bytes = sum(n for key, n in blob_sizes.items() if key not in self.residency)
            await self._make_room(estimate + new_bytes, record.name, held)
            if base is not None:
                self._check_live(base, record.name)
            for key, nbytes in blob_sizes.items():
                if key not in self.residency:
                    self.residency.add(key, nbytes)
            old = self.residency.get(record.name)
            self.residency.add(record.name, estimate + (old.nbytes if old else 0), record.pinned, deps)
            built: dict[int, LoadedModel] = {}
            try:
                for number in selected:
                    shared = await loop.run_in_executor(
                        self._pool, loading.shared_tensors, source, number, self.blobs
                    )
                    built[number] = await self._build_one(
                        source, number, shared, base, estimate // len(selected)
                    )
                if base is not None:
                    self._check_live(base, record.name)
                kept = sum(m.nbytes for n, m in record.ready.items() if n not in built)
                self.residency.resize(record.name, sum(m.nbytes for m in built.values()) + kept)
                if self.residency.free_bytes < 0:  # measured larger than estimated: evict what is idle now
                    await self._make_room(0, record.name, held, wait=False)
            except BaseException:
                await self._retire_all(list(built.values()))
                self._account(record)
                raise
        finally:
            self._reserved.subtract(held)
            for key in held:
                if self._reserved[key] <= 0:
                    del self._reserved[key]
        return built

    def _check_live(self, base: LoadedModel, for_name: str) -> None:
        record = self._records.get(base.name)
        if record is None or record.ready.get(base.version) is not base:
            raise Unavailable(f"base model '{base.name}' changed while '{for_name}' was loading; try again")

    async def _build_one(
        self,
        source: ModelSource,
        number: int,
        shared: dict[str, Any],
        base: LoadedModel | None,
        estimate: int,
    ) -> LoadedModel:
        loop = asyncio.get_running_loop()
        settings = self._settings
        if source.config.backend == "ensemble":
            return self._ensemble(source, number)
        if source.config.backend == "python" and not settings.python_models:
            raise ModelLoadError(
                "python models are off: start the server with --python-models to run model.py code"
            )
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
        except asyncio.CancelledError:
            future.add_done_callback(self._discard_late_load)
            raise
        # The measured size, but never less than declared or estimated: a load that reuses memory
        # freed just before it measures less than the model holds.
        floor = source.config.memory_bytes or (estimate if base is None else 0)
        nbytes = max(built.nbytes, floor)
        if base is not None:
            assert isinstance(built.runtime, Head)
            return LoadedModel(
                source.name, number, built.config, built.runtime, base.executor, built.runtime.apply,
                nbytes, built.load_s, max_in_flight=max(1, settings.max_queue_size // 4),
                cache=self.cache if built.config.response_cache else None, timeout_s=settings.request_timeout_s,
            )  # fmt: skip
        executor = ModelExecutor(
            built.runtime,
            f"{source.name}/{number}",
            settings.max_queue_size,
            _batching(built.config, built.gpu),
            instances=built.config.instances,
            max_queue_wait_ns=int(settings.max_queue_wait_s * 1e9),
            inline_ns=int(_inline_max_us(built.config, settings) * 1e3),
            share=self.share,
        )
        return LoadedModel(
            source.name, number, built.config, built.runtime, executor, None, nbytes, built.load_s,
            cache=self.cache if built.config.response_cache else None, timeout_s=settings.request_timeout_s,
        )  # fmt: skip

    def _ensemble(self, source: ModelSource, number: int) -> LoadedModel:
        config = source.config
        assert config.steps is not None
        for step in config.steps:
            if step.model == source.name:
                raise ModelLoadError(f"ensemble step '{step.model}' is the ensemble itself")
            if not self.known(step.model):
                raise ModelLoadError(f"ensemble step model '{step.model}' is not in the repository")
        declared = Declared(config)
        completed = complete_config(
            config, declared.inputs, declared.outputs, self._settings.default_max_batch_size
        )
        pipeline = Pipeline(source.name, config.steps, self._step_model, self._settings.max_queue_size)
        return LoadedModel(
            source.name, number, completed, declared, pipeline,
            cache=self.cache if completed.response_cache else None, timeout_s=self._settings.request_timeout_s,
        )  # fmt: skip

    async def _step_model(self, name: str, version: str | None) -> LoadedModel:
        return self.resident(name, version) or await self.acquire(name, version)

    def _swap_in(
        self, record: ModelRecord, built: dict[int, LoadedModel], selected: list[int]
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
        replaced += self._detach(adapters, State.EVICTED, f"base model '{record.name}' was reloaded")
        record.set_ready(ready)
        self.cache.drop_model(record.name)  # answers of the copies being replaced must not be served
        record.route(next(iter(built.values())).config)
        for number in selected:
            record.versions[number] = Status(State.READY)
        for number in [n for n in record.versions if n not in selected]:
            record.versions[number] = Status(State.UNAVAILABLE, NOT_SERVED, served=False)
        record.status = Status(State.READY)
        return replaced

    def _estimate(self, source: ModelSource, selected: list[int]) -> int:
        """Bytes a load is expected to take before it is measured (shared blobs not included)."""
        if source.config.memory_bytes is not None:
            return source.config.memory_bytes * len(selected)
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
            self._unload_pool.submit(loading.unload, future.result().runtime)

    # -- eviction and unloading ------------------------------------------------------------------------

    def _busy(self, key: str) -> bool:
        if self._reserved.get(key):
            return True
        if key.startswith(BLOB):
            return False
        record = self._records.get(key)
        if record is None:
            return False
        if record.loading is not None or record.lock.locked() or record.waiting:
            return True
        return any(m.in_flight or (m.post is None and m.executor.pending) for m in record.ready.values())

    async def _make_room(self, needed: int, for_name: str, own: set[str], wait: bool = True) -> None:
        """Evict idle models until `needed` more bytes fit. When only busy models (requests in
        flight, loads under way) stand in the way, wait for them a while; 507 when nothing could
        ever make room, or when the wait runs out. Without `wait`, evict what is idle and accept
        being over the budget for now (a measured size a little above its estimate)."""
        deadline = time.monotonic() + min(self._settings.load_timeout_s, self._settings.room_wait_s)
        while True:
            try:
                victims = self.residency.victims(needed, self._busy, f"model '{for_name}'")
                break
            except InsufficientMemory:
                if not wait:
                    victims = self.residency.idle_victims(self._busy)
                    break
                self.residency.victims(needed, own.__contains__, f"model '{for_name}'")  # never fits: 507
                if time.monotonic() > deadline:
                    raise
                await asyncio.sleep(0.005)  # busy models free up as their requests finish
        # Detach every victim before the first await: no request can pick one after this, and no
        # other load can choose the same victims again while these are being unloaded.
        retiring: list[LoadedModel] = []
        for key in victims:
            if key.startswith(BLOB):
                self.residency.remove(key)
                self.blobs.drop(key.removeprefix(BLOB))
            else:
                retiring += self._detach(
                    [self._records[key]], State.EVICTED, f"evicted to make room for '{for_name}'"
                )
        if victims:
            log.info("evicted %d to make room for '%s': %s", len(victims), for_name, ", ".join(victims[:10]))
            await self._retire_all(retiring)

    def _detach(self, records: list[ModelRecord], state: State, reason: str) -> list[LoadedModel]:
        """Take models out of service at once (no await): no request gets them after this."""
        retiring: list[LoadedModel] = []
        for record in records:
            retiring.extend(record.ready.values())
            record.mark(state, reason)
            record.set_ready({})
            self.residency.remove(record.name)
            if state == State.EVICTED:
                record.counters.evictions += 1
        if state == State.UNLOADING:  # an unload returns the memory of blobs nobody uses any more
            for key in self.residency.orphans(prefix=BLOB):
                self.residency.remove(key)
                self.blobs.drop(key.removeprefix(BLOB))
        return retiring

    async def _retire_all(self, models: list[LoadedModel]) -> None:
        await asyncio.gather(*(self._retire(m) for m in models))

    async def _retire(self, model: LoadedModel) -> None:
        if model.post is None:  # adapters share their base's executor
            await model.executor.close()
        await asyncio.get_running_loop().run_in_executor(self._unload_pool, loading.unload, model.runtime)


CPU_MAX_ROWS = 16  # measured: on CPU, batches past 8-16 rows add latency and no throughput
GPU_MAX_ROWS = 64


def _inline_max_us(config: ModelConfig, settings: ServerSettings) -> float:
    """The model's own opt-in to inline execution, else the server's (0 by default: off)."""
    return settings.inline_max_us if config.inline_max_us is None else config.inline_max_us


def _batching(config: ModelConfig, gpu: bool = False) -> Batching | None:
    policy = config.dynamic_batching
    if not policy.enabled or not config.max_batch_size:
        return None
    rows = policy.max_batch_size or min(config.max_batch_size, GPU_MAX_ROWS if gpu else CPU_MAX_ROWS)
    preferred = tuple(size for size in policy.preferred_batch_sizes if size <= rows)
    return Batching(max_rows=rows, max_queue_delay_ns=policy.max_queue_delay_us * 1000, preferred=preferred)
