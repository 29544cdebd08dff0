"""Model lifecycle: which models exist, which versions are loaded, and loading / unloading them.

The manager owns one record per model name found in the repository. Loads run on a small thread
pool (bounded concurrency, timeout); a reload builds the new versions before it swaps them in and
drains the old ones, so requests never see a half-loaded model. `resolve` is the request path's
only call here: plain dictionary lookups.
"""

from __future__ import annotations

import asyncio
import logging
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from modelfleet.config import ServerSettings, StartupLoad
from modelfleet.engine.executor import ModelExecutor
from modelfleet.engine.model import LoadedModel
from modelfleet.errors import ModelfleetError, ModelLoadError, NotFound, Unavailable, model_not_found
from modelfleet.repository.config import ModelConfig, complete_config
from modelfleet.repository.folder import ModelSource, Repository
from modelfleet.repository.names import check_model_name, check_version
from modelfleet.runtimes.base import LoadSpec, Runtime, load_runtime

log = logging.getLogger(__name__)


class State(StrEnum):
    READY = "READY"
    LOADING = "LOADING"
    UNLOADING = "UNLOADING"
    UNAVAILABLE = "UNAVAILABLE"


NOT_LOADED = "not loaded"
UNLOADED = "unloaded"


@dataclass(slots=True)
class Status:
    state: State
    reason: str = ""
    failed: bool = False  # unavailable because loading failed (503), not because never loaded (404)


@dataclass(slots=True)
class ModelRecord:
    name: str
    status: Status = field(default_factory=lambda: Status(State.UNAVAILABLE, NOT_LOADED))
    versions: dict[int, Status] = field(default_factory=dict)
    ready: dict[int, LoadedModel] = field(default_factory=dict)
    latest: LoadedModel | None = None  # the highest ready version: where unversioned requests go
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)

    def set_ready(self, ready: dict[int, LoadedModel]) -> None:
        self.ready = ready
        self.latest = ready[max(ready)] if ready else None

    def not_ready(self, version: int | None) -> ModelfleetError:
        """The error for a request that found no ready version to run on."""
        status = self.status if version is None else self.versions.get(version)
        if status is None:
            return model_not_found(self.name, str(version))
        label = f"model '{self.name}'" + ("" if version is None else f" version {version}")
        if status.state == State.LOADING:
            return Unavailable(f"{label} is loading; try again shortly")
        if status.state == State.UNLOADING:
            return NotFound(f"{label} is being unloaded")
        if status.failed:
            return Unavailable(f"{label} is unavailable: {status.reason}")
        return NotFound(f"{label} is not loaded")


class ModelManager:
    def __init__(self, repository: Repository, settings: ServerSettings) -> None:
        self._repository = repository
        self._settings = settings
        self._records: dict[str, ModelRecord] = {}
        self._pool = ThreadPoolExecutor(max_workers=settings.load_concurrency, thread_name_prefix="load")
        self.started = False

    # -- request path ---------------------------------------------------------------------------

    def resolve(self, name: str, version: str | None = None) -> LoadedModel:
        """The ready model a request goes to: 400 bad name, 404 unknown / not loaded, 503 loading or failed."""
        record = self._records.get(name)
        if record is None:
            check_model_name(name)
            if version is not None:
                check_version(version)
            raise model_not_found(name, version)
        if version is None:
            if record.latest is None:
                raise record.not_ready(None)
            return record.latest
        number = int(check_version(version))
        model = record.ready.get(number)
        if model is None:
            raise record.not_ready(number)
        return model

    def served_versions(self, name: str) -> list[str]:
        record = self._records.get(name)
        return [str(v) for v in sorted(record.ready)] if record else []

    # -- control ----------------------------------------------------------------------------------

    async def start(self) -> None:
        """Find the repository's models and load them as the settings say."""
        names = await asyncio.to_thread(self._repository.list_models)
        for name in names:
            self._records.setdefault(name, ModelRecord(name))
        if self._settings.startup_load == StartupLoad.ALL:
            await asyncio.gather(*(self._load_quietly(name) for name in names))
        self.started = True
        ready = sum(1 for r in self._records.values() if r.ready)
        log.info("repository %s: %d models, %d ready", self._repository.describe(), len(self._records), ready)

    async def refresh(self) -> None:
        """Pick up models added to or removed from the repository (loaded ones keep serving)."""
        names = set(await asyncio.to_thread(self._repository.list_models))
        for name in names:
            self._records.setdefault(name, ModelRecord(name))
        for name in [
            n for n, r in self._records.items() if n not in names and not r.ready and not r.lock.locked()
        ]:
            del self._records[name]

    async def load(self, name: str) -> None:
        """Load (or reload) every version the model's policy selects; ModelLoadError if none loads."""
        check_model_name(name)
        record = self._records.setdefault(name, ModelRecord(name))
        async with record.lock:
            try:
                await self._load_locked(record)
            except NotFound:
                if not record.ready and self._records.get(name) is record:
                    del self._records[name]
                raise

    async def unload(self, name: str) -> None:
        check_model_name(name)
        record = self._records.get(name)
        if record is None:
            raise model_not_found(name)
        async with record.lock:
            old = record.ready
            record.set_ready({})
            for number in old:
                record.versions[number] = Status(State.UNLOADING)
            await asyncio.gather(*(self._retire(model) for model in old.values()))
            for number in old:
                record.versions[number] = Status(State.UNAVAILABLE, UNLOADED)
            record.status = Status(State.UNAVAILABLE, UNLOADED)

    async def close(self) -> None:
        """Drain and unload everything; used at shutdown."""
        await asyncio.gather(*(self.unload(name) for name, r in list(self._records.items()) if r.ready))
        self._pool.shutdown(wait=False, cancel_futures=True)

    # -- views --------------------------------------------------------------------------------------

    def index(self, ready_only: bool = False) -> list[dict[str, Any]]:
        entries: list[dict[str, Any]] = []
        for name in sorted(self._records):
            record = self._records[name]
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
                    )
            else:
                entries.append(
                    {"name": name, "state": record.status.state.value, "reason": record.status.reason}
                )
        if ready_only:
            entries = [e for e in entries if e["state"] == State.READY]
        return entries

    def loaded(self, name: str | None = None) -> list[LoadedModel]:
        """Ready model versions, of one model or of all."""
        if name is not None:
            record = self._records.get(name)
            return [record.ready[v] for v in sorted(record.ready)] if record else []
        return [
            r.ready[v] for n in sorted(self._records) for r in [self._records[n]] for v in sorted(r.ready)
        ]

    def known(self, name: str) -> bool:
        return name in self._records

    # -- internals ----------------------------------------------------------------------------------

    async def _load_quietly(self, name: str) -> None:
        try:
            await self.load(name)
        except ModelfleetError as exc:
            log.warning("model '%s' is unavailable: %s", name, exc)

    async def _load_locked(self, record: ModelRecord) -> None:
        loop = asyncio.get_running_loop()
        record.status = Status(State.LOADING)
        try:
            source: ModelSource = await loop.run_in_executor(self._pool, self._repository.fetch, record.name)
            selected = source.config.version_policy.select(source.versions)
            if not selected:
                raise ModelLoadError(
                    f"the version policy selects none of the versions {sorted(source.versions)}"
                )
        except ModelLoadError as exc:
            record.status = Status(State.UNAVAILABLE, exc.message, failed=True)
            raise
        except NotFound:
            record.status = Status(State.UNAVAILABLE, NOT_LOADED)
            raise
        for number in selected:
            record.versions[number] = Status(State.LOADING)
        results = await asyncio.gather(
            *(self._load_version(source, n) for n in selected), return_exceptions=True
        )
        ready = {n: m for n, m in record.ready.items() if n in selected}  # kept if their reload fails
        errors = []
        for number, result in zip(selected, results, strict=True):
            if isinstance(result, LoadedModel):
                ready[number] = result
                record.versions[number] = Status(State.READY)
                continue
            reason = (
                result.message
                if isinstance(result, ModelLoadError)
                else f"unexpected {type(result).__name__}"
            )
            if not isinstance(result, ModelLoadError):
                log.error("loading %s version %d failed", record.name, number, exc_info=result)
            errors.append(f"version {number}: {reason}")
            if number in ready:
                record.versions[number] = Status(
                    State.READY, f"reload failed, previous copy serving: {reason}"
                )
            else:
                record.versions[number] = Status(State.UNAVAILABLE, reason, failed=True)
        old = record.ready
        record.set_ready(ready)
        for number in [n for n in record.versions if n not in selected]:
            record.versions[number] = Status(State.UNAVAILABLE, UNLOADED)
        await asyncio.gather(*(self._retire(m) for n, m in old.items() if ready.get(n) is not m))
        if not ready:
            record.status = Status(State.UNAVAILABLE, "; ".join(errors), failed=True)
            raise ModelLoadError(record.status.reason)
        record.status = Status(State.READY)
        log.info("model '%s' ready: versions %s", record.name, sorted(ready))

    async def _load_version(self, source: ModelSource, number: int) -> LoadedModel:
        spec = LoadSpec(
            name=source.name,
            version=number,
            path=source.model_file(number),
            config=source.config,
            default_intra_op_threads=self._settings.intra_op_threads,
        )
        future = asyncio.get_running_loop().run_in_executor(self._pool, self._build, spec)
        try:
            runtime, config = await asyncio.wait_for(asyncio.shield(future), self._settings.load_timeout_s)
        except TimeoutError:
            future.add_done_callback(self._discard_late_load)
            raise ModelLoadError(f"loading took longer than {self._settings.load_timeout_s:g} s") from None
        executor = ModelExecutor(runtime, f"{source.name}/{number}", self._settings.max_queue_size)
        return LoadedModel(source.name, number, config, runtime, executor)

    def _build(self, spec: LoadSpec) -> tuple[Runtime, ModelConfig]:
        """In a loader thread: create the runtime and complete the config from its signature."""
        runtime = load_runtime(spec)
        try:
            config = complete_config(
                spec.config, runtime.inputs, runtime.outputs, self._settings.default_max_batch_size
            )
        except BaseException:
            runtime.unload()
            raise
        return runtime, config

    def _discard_late_load(self, future: asyncio.Future[tuple[Runtime, ModelConfig]] | Future[Any]) -> None:
        if not future.cancelled() and future.exception() is None:
            runtime, _ = future.result()
            self._pool.submit(runtime.unload)

    async def _retire(self, model: LoadedModel) -> None:
        await model.executor.close()
        await asyncio.get_running_loop().run_in_executor(self._pool, model.runtime.unload)
