"""The front's model manager in worker mode: the same surface the data plane and metrics use as
ModelManager's, backed by worker processes instead of models in this process.

The front keeps one record per repository model (404s, holds, versions, aliases) and, once a
model has loaded somewhere, a `RemoteModel` per version: its signature, for metadata and for the
transports, and an `infer` that routes the request (router.py) and sends it over the chosen
worker's socket. Workers report their memory and models every second; that report drives the
router's view of evictions, cooling copies and the statistics and /v2/workers views.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import random
import time
from typing import Any

from modelfleet.config import ServerSettings, StartupLoad
from modelfleet.engine.executor import Job, Post
from modelfleet.engine.lifecycle import ModelManager
from modelfleet.engine.model import LoadedModel
from modelfleet.engine.records import UNLOADED, ModelRecord, State, Status
from modelfleet.engine.stats import ModelStats
from modelfleet.errors import ModelfleetError, ModelLoadError, NotFound, Unavailable, model_not_found
from modelfleet.protocol.v2 import InferOutput, InferRequest, InferResponse, TensorSpec
from modelfleet.repository.config import ModelConfig
from modelfleet.repository.folder import Repository
from modelfleet.repository.names import check_model_name, check_version
from modelfleet.workers import messages as m
from modelfleet.workers.client import Connection, error_of
from modelfleet.workers.plan import WorkerSpec
from modelfleet.workers.router import Router
from modelfleet.workers.supervisor import Backoff, Slot, WorkerState, spawn, stop

log = logging.getLogger(__name__)

POLL_S = 1.0  # how often workers report memory and models
START_TIMEOUT_S = 120.0
RETRY_FIRST_S, RETRY_MAX_S = 1.0, 60.0  # a model failing to load is tried again after this back-off
ANSWER_GRACE_S = 5.0  # past the request timeout, a worker that has not answered is taken as hung
REPORT_TIMEOUT_S = 5.0  # how long a worker may take to answer a report request
HUNG_AFTER_REPORTS = 3  # a worker missing this many reports in a row is killed


class _Elsewhere:
    """Runtime and executor of a RemoteModel: the model runs in a worker, never here."""

    inputs: list[TensorSpec] = []
    outputs: list[TensorSpec] = []
    pending = 0
    max_queue_size = 0
    may_run_inline = False

    def infer(self, inputs: Any, outputs: Any) -> list[Any]:
        raise RuntimeError("a remote model runs in its worker")

    def unload(self) -> None:
        pass

    async def run(self, *args: Any, **kwargs: Any) -> Job:
        raise RuntimeError("a remote model runs in its worker")

    async def close(self) -> None:
        pass


_ELSEWHERE = _Elsewhere()


class RemoteModel(LoadedModel):
    """A model version served by workers: the signature is known here, the work is done there."""

    def __init__(self, fleet: Fleet, version: m.Version, name: str) -> None:
        config = ModelConfig.model_validate_json(version.config_json)
        post: Post | None = None
        super().__init__(name, version.version, config, _ELSEWHERE, _ELSEWHERE, post, version.nbytes)
        self._fleet = fleet

    def expected_wait_ns(self) -> int:
        return 0  # the worker watches its own queue; the front has no disconnect watch to arm

    async def infer(self, request: InferRequest, started_ns: int) -> InferResponse:
        fleet = self._fleet
        name = self.name
        worker, grow = fleet.router.route(name)
        if grow is not None:
            fleet.add_copy(name, grow)
        if worker is None:
            await fleet.place(name)
            worker, _ = fleet.router.route(name)
            if worker is None:
                raise Unavailable(f"model '{name}' lost its worker while loading; retry")
        try:
            connection = fleet.connection(worker, name)
            tensors, buffers = m.describe([(t.name, t.datatype, t.data) for t in request.inputs])
            outputs = None if request.outputs is None else [o.name for o in request.outputs]
            message = m.Infer(
                connection.next_id(), name, self.version_str, tensors, outputs, request.id, request.parameters
            )
            self.in_flight += 1
            try:
                reply, raw = await connection.request(message, buffers, name, fleet.answer_within_s)
            finally:
                self.in_flight -= 1
        finally:
            fleet.router.end(name, worker)
        if not isinstance(reply, m.Result):
            raise error_of(reply) if isinstance(reply, m.Failed) else Unavailable("unexpected worker answer")
        arrays = m.arrays(reply.outputs, raw)
        outs = [
            InferOutput(t.name, t.datatype, t.shape, a) for t, a in zip(reply.outputs, arrays, strict=True)
        ]
        return InferResponse(reply.model_name, reply.model_version, outs, request.id, reply.parameters)


class Fleet:
    def __init__(self, repository: Repository, settings: ServerSettings, specs: list[WorkerSpec]) -> None:
        self._repository = repository
        self._settings = settings
        self.router = Router(time.monotonic)
        self.slots = [Slot(spec, Backoff(time.monotonic)) for spec in specs]
        self._connections: dict[int, Connection] = {}
        self._records: dict[str, ModelRecord] = {}
        self._placing: dict[str, asyncio.Future[int]] = {}
        self._reports: dict[int, m.StatsReply] = {}
        self._tasks: set[asyncio.Task[Any]] = set()
        self._closing = False
        self._random = random.Random()
        self._silent: dict[int, int] = {}  # reports missed in a row, per worker
        # A backstop for a hung worker (the worker itself answers 504 at the request timeout).
        self.answer_within_s = (
            settings.request_timeout_s + ANSWER_GRACE_S if settings.request_timeout_s else None
        )
        self.started = False

    # -- processes -----------------------------------------------------------------------------------------

    async def start(self) -> None:
        await asyncio.gather(*(self._start_worker(slot) for slot in self.slots))
        names = await asyncio.to_thread(self._repository.list_models)
        for name in names:
            self._records.setdefault(name, ModelRecord(name))
        self._spawn_task(self._poll(), "poll-workers")
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

    async def _start_worker(self, slot: Slot) -> None:
        spec = slot.spec
        slot.state = WorkerState.STARTING
        slot.backoff.started()
        process, sock = await spawn(spec)
        slot.process = process
        try:
            connection = await Connection.open(spec.id, sock)
            start = m.Start(
                spec.id, spec.device, list(spec.cores), spec.budget_bytes, self._settings.model_dump_json()
            )
            hello, _ = await asyncio.wait_for(connection.request(start), START_TIMEOUT_S)
            if not isinstance(hello, m.Hello):
                raise m.FrameError(f"expected Hello, got {type(hello).__name__}")
        except (OSError, TimeoutError, ModelfleetError, m.FrameError) as exc:
            log.error("worker %d (pid %d) failed to start: %s", spec.id, process.pid, exc)
            sock.close()
            await stop(process, 1.0)
            self._spawn_task(self._restart(slot), f"restart-worker-{spec.id}")
            return
        self._connections[spec.id] = connection
        self.router.worker_up(spec.id, spec.budget_bytes)
        slot.state = WorkerState.READY
        log.info("worker %d ready: pid %d on %s", spec.id, process.pid, spec.device)
        connection.on_lost = lambda: self._lost(slot, connection)
        if not connection.alive:  # lost while it said hello
            self._lost(slot, connection)

    def _lost(self, slot: Slot, connection: Connection) -> None:
        if self._connections.get(slot.spec.id) is connection:
            del self._connections[slot.spec.id]
        models = self.router.worker_lost(slot.spec.id)
        self._reports.pop(slot.spec.id, None)
        if self._closing or slot.stopping:
            return
        log.error(
            "worker %d (pid %s) died with %d requests in flight; models it held: %s",
            slot.spec.id, slot.pid, connection.failed, ", ".join(models) or "none",
        )  # fmt: skip
        slot.state = WorkerState.RESTARTING
        self._spawn_task(self._restart(slot), f"restart-worker-{slot.spec.id}")

    async def _restart(self, slot: Slot) -> None:
        if slot.process is not None:
            await stop(slot.process, 1.0)  # reap it (kill it if only its socket died)
        delay = slot.backoff.died()
        slot.state = WorkerState.RESTARTING
        if delay:
            log.warning("worker %d keeps dying; restarting it in %.1f s", slot.spec.id, delay)
            await asyncio.sleep(delay)
        if self._closing:
            return
        slot.restarts += 1
        await self._start_worker(slot)

    async def close(self) -> None:
        """Stop every worker (SIGTERM, then SIGKILL after the shutdown timeout) and reap it."""
        self._closing = True
        for task in list(self._tasks):
            task.cancel()
        for slot in self.slots:
            slot.stopping = True
        timeout = min(10.0, self._settings.shutdown_timeout_s)
        await asyncio.gather(*(stop(s.process, timeout) for s in self.slots if s.process is not None))
        for slot in self.slots:
            slot.state = WorkerState.STOPPED
        for connection in list(self._connections.values()):
            connection.close()

    def _spawn_task(self, coro: Any, name: str) -> None:
        task = asyncio.ensure_future(coro)
        task.set_name(name)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def connection(self, worker: int, model: str) -> Connection:
        connection = self._connections.get(worker)
        if connection is None or not connection.alive:
            raise Unavailable(f"worker {worker} died while running model '{model}'; retry")
        return connection

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
        worker = self.router.place(name)
        await self._load_on(name, worker)
        return worker

    def add_copy(self, name: str, worker: int) -> None:
        """A hot model's extra copy, loaded in the background (the router already counts it)."""
        self._spawn_task(self._copy(name, worker), f"copy-{name}")

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
            record.counters.load_failures += 1
            record.failures += 1
            record.retry_at = time.monotonic() + min(RETRY_MAX_S, RETRY_FIRST_S * 2 ** (record.failures - 1))
            record.mark_failed(reply.message)
            raise ModelLoadError(reply.message)
        assert isinstance(reply, m.Loaded)
        record.failures = 0
        record.retry_at = 0.0
        self.router.loaded(name, worker, sum(v.nbytes for v in reply.versions))
        record.counters.loads += 1
        if not record.ready or {v.version for v in reply.versions} != set(record.ready):
            ready: dict[int, LoadedModel] = {v.version: RemoteModel(self, v, name) for v in reply.versions}
            record.set_ready(ready)
            record.route(next(iter(ready.values())).config)
            record.versions = {n: Status(State.READY) for n in ready}
        record.status = Status(State.READY)

    # -- the request path (ModelManager's surface) ------------------------------------------------------------

    def resident(self, name: str, version: str | None = None) -> LoadedModel | None:
        record = self._records.get(name)
        if record is None:
            check_model_name(name)
            if version is not None:
                check_version(version)
            raise model_not_found(name, version)
        model = record.pick(version, self._random.random() if record.traffic else 0.0)
        if model is not None:
            return model
        if record.held or (version is not None and record.versions and not record.servable(version)):
            raise record.not_ready(version)
        return None

    peek = resident

    async def acquire(self, name: str, version: str | None = None) -> LoadedModel:
        model = self.resident(name, version)
        if model is None:
            await self.place(name)
            model = self.resident(name, version)
        if model is None:
            raise self._records[name].not_ready(version)
        return model

    def served_versions(self, name: str) -> list[str]:
        record = self._records.get(name)
        return [str(v) for v in sorted(record.ready)] if record else []

    # -- control --------------------------------------------------------------------------------------------------

    async def refresh(self) -> None:
        names = set(await asyncio.to_thread(self._repository.list_models))
        for name in names:
            self._records.setdefault(name, ModelRecord(name))
        for name in [n for n, r in self._records.items() if n not in names and not r.ready]:
            del self._records[name]

    async def load(self, name: str) -> None:
        """Load (or reload where it is resident) on request; lifts an unload's hold."""
        check_model_name(name)
        if name not in self._records:
            await self.refresh()
        record = self._records.get(name)
        if record is None:
            raise model_not_found(name)
        record.held = False
        holders = self.router.placements(name)
        if not holders:
            await self.place(name, on_request=False)
        for worker in holders:
            await self._load_on(name, worker)

    async def unload(self, name: str) -> None:
        """Unload from every worker; the model stays out until loaded again."""
        check_model_name(name)
        record = self._records.get(name)
        if record is None:
            raise model_not_found(name)
        record.held = True
        record.set_ready({})
        await asyncio.gather(*(self._unload_on(name, w) for w in self.router.placements(name)))
        record.unloaded(UNLOADED)
        record.versions = {}

    async def unload_from(self, worker: int, name: str) -> None:
        """`POST /v2/workers/{id}/models/{name}/unload`: one copy; it loads again on demand."""
        if worker not in self.router.workers:
            raise NotFound(f"no worker {worker}; workers are {sorted(self.router.workers)}")
        check_model_name(name)
        if name not in self._records:
            raise model_not_found(name)
        if worker not in self.router.placements(name):
            raise NotFound(f"model '{name}' is not loaded on worker {worker}")
        await self._unload_on(name, worker)

    async def _unload_on(self, name: str, worker: int) -> None:
        self.router.unloaded(name, worker)
        connection = self._connections.get(worker)
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
                    self._spawn_task(self._unload_on(name, worker), f"cool-{name}")
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
                    self._unresponsive(worker)
                    return
                self._silent.pop(worker, None)
                if isinstance(reply, m.StatsReply):
                    self._reports[worker] = reply
                    resident = {u.name: u.resident_bytes for u in reply.models}
                    self.router.sync(worker, resident, int(reply.memory.get("used_bytes", 0)))

        await asyncio.gather(*(one(w, c) for w, c in list(self._connections.items())))
        self._fold_counts()

    def _fold_counts(self) -> None:
        """Each RemoteModel's statistics become the sum of its copies' counts in the workers' last
        reports, updated in place (the metrics hold the object): /metrics then has the same
        histograms as in process, at most one report old. A worker that died takes its copies'
        counts with it; /metrics never shows a counter going down."""
        totals: dict[tuple[str, str], ModelStats] = {}
        for report in self._reports.values():
            for use in report.models:
                if not use.counts:
                    continue
                counts = ModelStats.from_wire(use.counts)
                total = totals.get((use.name, use.version))
                if total is None:
                    totals[(use.name, use.version)] = counts
                else:
                    total.absorb(counts)
        for (name, version), total in totals.items():
            record = self._records.get(name)
            remote = record.ready.get(int(version)) if record is not None and version.isdigit() else None
            if remote is not None:
                remote.stats.replace_with(total)

    def _unresponsive(self, worker: int) -> None:
        """A worker whose event loop does not answer (a model holding the GIL, a deadlock) is
        killed after a few missed reports; the usual restart follows."""
        self._silent[worker] = missed = self._silent.get(worker, 0) + 1
        process = self.slots[worker].process
        if missed >= HUNG_AFTER_REPORTS and process is not None and process.returncode is None:
            log.error(
                "worker %d (pid %d) has not answered for %d reports; killing it", worker, process.pid, missed
            )
            self._silent.pop(worker, None)
            process.kill()

    def reports(self) -> dict[int, m.StatsReply]:
        return self._reports

    # -- views ------------------------------------------------------------------------------------------------------

    def known(self, name: str) -> bool:
        return name in self._records

    def record(self, name: str) -> ModelRecord | None:
        return self._records.get(name)

    def loaded(self, name: str | None = None) -> list[LoadedModel]:
        names = sorted(self._records) if name is None else [name] if name in self._records else []
        return [
            r.ready[v]
            for r in (self._records[n] for n in names)
            if self.router.placements(r.name)
            for v in sorted(r.ready)
        ]

    def index(self, ready_only: bool = False) -> list[dict[str, Any]]:
        entries: list[dict[str, Any]] = []
        for name in sorted(self._records):
            record = self._records[name]
            workers = self.router.placements(name)
            if not record.ready or record.held:
                if not ready_only:
                    entries.append(
                        {"name": name, "state": record.status.state.value, "reason": record.status.reason}
                    )
                continue
            state, reason = (
                (State.READY, "") if workers else (State.EVICTED, "on no worker; loads on its next request")
            )
            if ready_only and state != State.READY:
                continue
            for number in sorted(record.ready):
                entries.append(
                    {
                        "name": name,
                        "version": str(number),
                        "state": state.value,
                        "reason": reason,
                        "workers": workers,
                    }
                )
        return entries

    def memory(self) -> dict[str, Any]:
        reports = self._reports.values()
        total = {
            key: sum(int(r.memory.get(key, 0)) for r in reports)
            for key in ("used_bytes", "blob_bytes", "loads", "load_failures", "cold_starts", "evictions")
        }
        return total | {
            "budget_bytes": sum(s.spec.budget_bytes for s in self.slots),
            "resident_models": sum(1 for n in self._records if self.router.placements(n)),
            "known_models": len(self._records),
        }

    def statistics(self, name: str | None, version: str | None) -> dict[str, Any]:
        """The statistics extension, merged over the copies in the workers' last reports."""
        if name is not None:
            self.resident(name, version)  # 400 / 404 like the other per-model calls
        merged: dict[tuple[str, str], dict[str, Any]] = {}
        for worker, report in sorted(self._reports.items()):
            for use in report.models:
                if (name is not None and use.name != name) or (
                    version is not None and use.version != version
                ):
                    continue
                key = (use.name, use.version)
                entry = merged.get(key)
                if entry is None:
                    entry = merged[key] = use.statistics | {"residency": use.residency | {"workers": []}}
                else:
                    merge_statistics(entry, use.statistics)
                    entry["residency"]["resident_bytes"] += use.resident_bytes
                entry["residency"]["workers"].append(worker)
        return {"model_stats": [merged[k] for k in sorted(merged)], "memory": self.memory()}

    async def workers(self) -> list[dict[str, Any]]:
        """The /v2/workers document (fresh reports from every live worker)."""
        await self.collect()
        docs = []
        for slot in self.slots:
            spec = slot.spec
            report = self._reports.get(spec.id) if slot.state == WorkerState.READY else None
            load = self.router.workers.get(spec.id)
            models = [
                {
                    "name": u.name,
                    "version": u.version,
                    "resident_bytes": u.resident_bytes,
                    "in_flight": u.in_flight,
                }
                for u in (report.models if report else [])
            ]
            docs.append({
                "id": spec.id,
                "pid": slot.pid,
                "device": spec.device,
                "state": slot.state.value,
                "restarts": slot.restarts,
                "budget_bytes": spec.budget_bytes,
                "used_bytes": int(report.memory.get("used_bytes", 0)) if report else 0,
                "rss_bytes": report.rss_bytes if report else 0,
                "cpu_seconds": round(report.cpu_seconds, 3) if report else 0.0,
                "in_flight": load.in_flight if load is not None and load.alive else 0,
                "models": models,
            })  # fmt: skip
        return docs


def merge_statistics(into: dict[str, Any], other: dict[str, Any]) -> None:
    """Sum one copy's V2 statistics entry into another's (last_inference: the later one)."""
    for key, value in other.items():
        if key in ("name", "version"):
            continue
        if key == "last_inference":
            into[key] = max(into.get(key, 0), value)
        elif key == "batch_stats":
            sizes = {b["batch_size"]: b for b in into.get(key, [])}
            for batch in value:
                if batch["batch_size"] in sizes:
                    merge_statistics(sizes[batch["batch_size"]], batch)
                else:
                    sizes[batch["batch_size"]] = batch
            into[key] = [sizes[s] for s in sorted(sizes)]
        elif isinstance(value, dict):
            merge_statistics(into.setdefault(key, {}), value)
        elif isinstance(value, int | float) and key != "batch_size":
            into[key] = into.get(key, 0) + value


def own_process_doc() -> tuple[int, float]:
    """This process's resident bytes and CPU seconds (the in-process mode's one worker)."""
    import resource

    from modelfleet.engine.memory import process_rss

    usage = resource.getrusage(resource.RUSAGE_SELF)
    return process_rss().total, usage.ru_utime + usage.ru_stime


def cpu_span() -> str:
    cores = sorted(os.sched_getaffinity(0))
    return f"cpu:{cores[0]}-{cores[-1]}" if len(cores) > 1 else f"cpu:{cores[0]}"


def in_process_worker(manager: ModelManager) -> dict[str, Any]:
    """The /v2/workers entry of a server without workers: itself, as worker 0."""
    rss, cpu = own_process_doc()
    memory = manager.memory()
    loaded = manager.loaded()
    return {
        "id": 0,
        "pid": os.getpid(),
        "device": cpu_span(),
        "state": WorkerState.READY.value if manager.started else WorkerState.STARTING.value,
        "restarts": 0,
        "budget_bytes": memory["budget_bytes"],
        "used_bytes": memory["used_bytes"],
        "rss_bytes": rss,
        "cpu_seconds": round(cpu, 3),
        "in_flight": sum(c.in_flight for c in loaded),
        "models": [
            {"name": c.name, "version": c.version_str, "resident_bytes": c.nbytes, "in_flight": c.in_flight}
            for c in loaded
        ],
    }
