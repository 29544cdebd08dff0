"""The model host in worker mode: the repository's models served by worker processes."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time

from modelfleet.config import ServerSettings, StartupLoad
from modelfleet.engine.catalog import Catalog
from modelfleet.engine.records import UNLOADED, ModelRecord, State, Status
from modelfleet.errors import ModelfleetError, ModelLoadError, NotFound, Unavailable
from modelfleet.protocol.documents import IndexEntry, Memory, Statistics, Workers
from modelfleet.protocol.v2 import InferRequest, InferResponse
from modelfleet.repository.folder import Repository
from modelfleet.repository.names import check_model_name
from modelfleet.workers import messages as m
from modelfleet.workers import reports
from modelfleet.workers.client import Connection, error_of
from modelfleet.workers.plan import WorkerSpec, neuron_cores_needed
from modelfleet.workers.remote import RemoteModel, infer_message, response_of
from modelfleet.workers.router import Router
from modelfleet.workers.supervisor import Supervisor, Tasks

log = logging.getLogger(__name__)

POLL_S = 1.0  # how often workers report memory and models
RETRY_FIRST_S, RETRY_MAX_S = 1.0, 60.0  # a model failing to load is tried again after this back-off
ANSWER_GRACE_S = 5.0  # past the request timeout, a worker that has not answered is taken as hung
REPORT_TIMEOUT_S = 5.0  # how long a worker may take to answer a report request


class Fleet:
    """A `ModelHost` over worker processes: placement and remote loads here, the processes in
    `Supervisor`, the documents in reports.py."""

    def __init__(self, repository: Repository, settings: ServerSettings, specs: list[WorkerSpec]) -> None:
        self._repository = repository
        self._settings = settings
        self.router = Router(time.monotonic)
        self.catalog: Catalog[RemoteModel] = Catalog()
        self._records = self.catalog.records
        self._placing: dict[str, asyncio.Future[int]] = {}
        self._reports: dict[int, m.StatsReply] = {}
        self._tasks = Tasks()
        self.supervisor = Supervisor(
            specs, settings.model_dump_json(), self.router, self._tasks, lambda w: self._reports.pop(w, None)
        )
        self.slots = self.supervisor.slots
        # A backstop for a hung worker (the worker itself answers 504 at the request timeout).
        self.answer_within_s = (
            settings.request_timeout_s + ANSWER_GRACE_S if settings.request_timeout_s else None
        )
        self.started = False

    async def start(self) -> None:
        await self.supervisor.start()
        names = await asyncio.to_thread(self._repository.list_models)
        for name in names:
            self.catalog.add(name)
        self._tasks.spawn(self._poll(), "poll-workers")
        mode = self._settings.startup_load
        chosen = names if mode == StartupLoad.ALL else []
        if mode == StartupLoad.PINNED:
            for name in names:
                with contextlib.suppress(ModelfleetError):
                    if (await asyncio.to_thread(self._repository.config, name)).pinned:
                        chosen.append(name)
        for name in chosen:  # one by one: each placement sees the memory the previous one took
            try:
                await self.load(name)
            except ModelfleetError as exc:
                log.warning("model '%s' is unavailable: %s", name, exc)
        self.started = True
        log.info("%d workers serving %d models", len(self.slots), len(self._records))

    async def close(self) -> None:
        """Stop every worker (SIGTERM, then SIGKILL after the shutdown timeout) and reap it."""
        self.supervisor.closing = True
        self._tasks.cancel_all()
        await self.supervisor.close(min(10.0, self._settings.shutdown_timeout_s))

    def connection(self, worker: int, model: str) -> Connection:
        return self.supervisor.connection(worker, model)

    # -- placement ----------------------------------------------------------------------------------------------

    async def place(self, name: str, on_request: bool = True) -> None:
        """Load a model resident nowhere on the worker the router chooses (single flight). For a
        request: 503 while a failed load backs off; for the load API: ModelLoadError (400)."""
        placing = self._placing.get(name)
        if placing is None:
            record = self._records[name]
            wait = record.retry_at - time.monotonic()
            if on_request and wait > 0:
                raise Unavailable(
                    f"model '{name}' failed to load: {record.status.reason}; next attempt in {wait:.1f} s"
                )
            record.counters.cold_starts += on_request
            placing = asyncio.ensure_future(self._place(name))
            self._placing[name] = placing
            placing.add_done_callback(lambda _: self._placing.pop(name, None))
        try:
            await asyncio.shield(placing)
        except ModelLoadError as exc:
            if not on_request:
                raise
            raise Unavailable(f"model '{name}' failed to load: {exc.message}") from None

    async def _place(self, name: str) -> int:
        try:
            cores = await self._neuron_cores(name)
        except ModelLoadError as exc:
            _failed(self._records[name], exc.message)
            raise
        worker = self.router.place(name, neuron_cores=cores)
        await self._load_on(name, worker)
        return worker

    async def _neuron_cores(self, name: str) -> int:
        """The NeuronCores a copy of the model needs; its config is read only where workers hold some."""
        if not any(slot.spec.neuron_cores for slot in self.slots):
            return 0
        config = await asyncio.to_thread(self._repository.config, name)
        return neuron_cores_needed(config, [slot.spec for slot in self.slots])

    def add_copy(self, name: str, worker: int) -> None:
        """A hot model's extra copy, loaded in the background (the router already counts it)."""
        self._tasks.spawn(self._copy(name, worker), f"copy-{name}")

    async def _copy(self, name: str, worker: int) -> None:
        try:
            await self._load_on(name, worker)
            log.info("model '%s' is hot: copy added on worker %d", name, worker)
        except ModelfleetError as exc:
            log.warning("extra copy of model '%s' on worker %d failed: %s", name, worker, exc)

    async def _load_on(self, name: str, worker: int) -> None:
        record = self._records[name]
        try:
            connection = self.connection(worker, name)
            reply, _ = await asyncio.wait_for(
                connection.request(m.Load(connection.next_id(), name), (), name),
                self._settings.load_timeout_s,
            )
        except BaseException:
            self.router.load_failed(name, worker)
            raise
        if isinstance(reply, m.Failed):
            self.router.load_failed(name, worker)
            error = error_of(reply)
            if not isinstance(error, Unavailable):
                raise error  # 404 (gone from the repository), 507 (no room): not the model's fault
            _failed(record, reply.message)
            raise ModelLoadError(reply.message)
        assert isinstance(reply, m.Loaded)
        record.failures = 0
        record.retry_at = 0.0
        self.router.loaded(name, worker, sum(v.nbytes for v in reply.versions))
        record.counters.loads += 1
        if not record.ready or {v.version for v in reply.versions} != set(record.ready):
            ready = {v.version: RemoteModel(self, v, name) for v in reply.versions}
            record.set_ready(ready)
            record.route(next(iter(ready.values())).config)
            record.versions = {n: Status(State.READY) for n in ready}
        record.status = Status(State.READY)

    # -- the request path ---------------------------------------------------------------------------------

    def resident(self, name: str, version: str | None = None) -> RemoteModel | None:
        return self.catalog.find(name, version)

    peek = resident

    async def acquire(self, name: str, version: str | None = None) -> RemoteModel:
        model = self.resident(name, version)
        if model is None:
            await self.place(name)
            model = self.resident(name, version)
        if model is None:
            raise self._records[name].not_ready(version)
        return model

    async def dispatch(self, name: str, version: str, request: InferRequest) -> InferResponse:
        """Route a request to a worker holding the model (placing it first if none does) and send it."""
        worker, grow = self.router.route(name)
        if grow is not None:
            self.add_copy(name, grow)
        if worker is None:
            await self.place(name)
            worker, _ = self.router.route(name)
            if worker is None:
                raise Unavailable(f"model '{name}' lost its worker while loading; retry")
        try:
            connection = self.connection(worker, name)
            message, buffers = infer_message(connection.next_id(), name, version, request)
            reply, raw = await connection.request(message, buffers, name, self.answer_within_s)
        finally:
            self.router.end(name, worker)
        return response_of(reply, raw, request)

    def served_versions(self, name: str) -> list[str]:
        return self.catalog.served_versions(name)

    def known(self, name: str) -> bool:
        return name in self._records

    def record(self, name: str) -> ModelRecord[RemoteModel] | None:
        return self._records.get(name)

    def loaded(self, name: str | None = None) -> list[RemoteModel]:
        return self.catalog.loaded(name, where=lambda n: bool(self.router.placements(n)))

    # -- control --------------------------------------------------------------------------------------------------

    async def refresh(self) -> None:
        self.catalog.sync(await asyncio.to_thread(self._repository.list_models))

    async def load(self, name: str) -> None:
        """Load (or reload where it is resident) on request; lifts an unload's hold."""
        check_model_name(name)
        if name not in self._records:
            await self.refresh()
        record = self.catalog.existing(name)
        record.held = False
        holders = self.router.placements(name)
        if not holders:
            await self.place(name, on_request=False)
        for worker in holders:
            await self._load_on(name, worker)

    async def unload(self, name: str) -> None:
        """Unload from every worker; the model stays out until loaded again."""
        record = self.catalog.hold(name)
        record.set_ready({})
        await asyncio.gather(*(self._unload_on(name, w) for w in self.router.placements(name)))
        record.unloaded(UNLOADED)
        record.versions = {}

    async def unload_from(self, worker: int, name: str) -> None:
        """`POST /v2/workers/{id}/models/{name}/unload`: one copy; it loads again on demand."""
        if worker not in self.router.workers:
            raise NotFound(f"no worker {worker}; workers are {sorted(self.router.workers)}")
        self.catalog.existing(name)
        if worker not in self.router.placements(name):
            raise NotFound(f"model '{name}' is not loaded on worker {worker}")
        await self._unload_on(name, worker)

    async def _unload_on(self, name: str, worker: int) -> None:
        self.router.unloaded(name, worker)
        connection = self.supervisor.connections.get(worker)
        if connection is None:
            return
        reply, _ = await connection.request(m.Unload(connection.next_id(), name), (), name)
        if isinstance(reply, m.Failed):
            raise error_of(reply)
        self._records[name].counters.evictions += 1

    # -- reports --------------------------------------------------------------------------------------------------

    async def _poll(self) -> None:
        while True:
            await asyncio.sleep(POLL_S)
            try:
                await self.collect()
                for name, worker in self.router.cooled():
                    log.info("model '%s' cooled down: unloading its copy on worker %d", name, worker)
                    self._tasks.spawn(self._unload_on(name, worker), f"cool-{name}")
            except Exception:
                log.exception("collecting worker reports failed")

    async def collect(self) -> None:
        """Ask every live worker for its report (memory, models, statistics); update the router."""

        async def one(worker: int, connection: Connection) -> None:
            with contextlib.suppress(ModelfleetError):
                try:
                    reply, _ = await asyncio.wait_for(
                        connection.request(m.Stats(connection.next_id())), REPORT_TIMEOUT_S
                    )
                except TimeoutError:
                    self.supervisor.unresponsive(worker)
                    return
                self.supervisor.answered(worker)
                if isinstance(reply, m.StatsReply):
                    self._reports[worker] = reply
                    resident = {u.name: u.resident_bytes for u in reply.models}
                    self.router.sync(worker, resident, int(reply.memory.get("used_bytes", 0)))

        await asyncio.gather(*(one(w, c) for w, c in list(self.supervisor.connections.items())))
        self._fold_counts()

    def _fold_counts(self) -> None:
        """Each RemoteModel's statistics become the sum of its copies' counts in the workers' last
        reports, updated in place (the metrics hold the object): /metrics then has the same
        histograms as in process, at most one report old. A worker that died takes its copies'
        counts with it; /metrics never shows a counter going down."""
        for (name, version), total in reports.summed_counts(self._reports).items():
            record = self._records.get(name)
            remote = record.ready.get(int(version)) if record is not None and version.isdigit() else None
            if remote is not None:
                remote.stats.replace_with(total)

    def reports(self) -> dict[int, m.StatsReply]:
        return self._reports

    # -- documents ------------------------------------------------------------------------------------------------

    def index(self, ready_only: bool = False) -> list[IndexEntry]:
        return reports.index(self._records, self.router.placements, ready_only)

    def memory(self) -> Memory:
        return reports.memory(
            self._reports,
            sum(s.spec.budget_bytes for s in self.slots),
            sum(1 for n in self._records if self.router.placements(n)),
            len(self._records),
        )

    def statistics(self, name: str | None, version: str | None) -> Statistics:
        """The statistics extension, merged over the copies in the workers' last reports."""
        if name is not None:
            self.resident(name, version)  # 400 / 404 like the other per-model calls
        return reports.statistics(self._reports, name, version, self.memory())

    async def workers(self) -> Workers:
        """The /v2/workers document (fresh reports from every live worker)."""
        await self.collect()
        return reports.workers(self.slots, self._reports, self.router.workers)


def _failed(record: ModelRecord[RemoteModel], reason: str) -> None:
    """A failed load: counted, shown with its reason, and not tried again for a growing while."""
    record.counters.load_failures += 1
    record.failures += 1
    record.retry_at = time.monotonic() + min(RETRY_MAX_S, RETRY_FIRST_S * 2 ** (record.failures - 1))
    record.mark_failed(reason)
