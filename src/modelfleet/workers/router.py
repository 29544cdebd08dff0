"""Which worker a request for a model goes to: a small, pure component with an injected clock.

Models needing NeuronCores go only to workers holding a core group at least that large (the
smallest such group first); every other model goes to workers without cores while there are any.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

from modelfleet.errors import Unavailable


@dataclass(slots=True)
class Copy:
    worker: int
    last_used: float
    in_flight: int = 0
    loading: bool = True  # placed, its load not yet confirmed: routed to only by its own load


@dataclass(slots=True)
class WorkerLoad:
    id: int
    budget_bytes: int
    used_bytes: int = 0
    in_flight: int = 0
    alive: bool = False
    models: set[str] = field(default_factory=set)
    neuron_cores: int = 0  # the size of its NeuronCore group; 0: none

    @property
    def free_bytes(self) -> int:
        return self.budget_bytes - self.used_bytes


@dataclass(slots=True)
class _Model:
    copies: dict[int, Copy] = field(default_factory=dict)
    hot_since: float | None = None  # since when every copy keeps reaching hot_in_flight
    hot_seen: float = 0.0  # the last time it did
    neuron_cores: int = 0  # NeuronCores a copy needs; 0: none


class Router:
    def __init__(
        self,
        clock: Callable[[], float],
        hot_in_flight: int = 8,
        hot_for_s: float = 1.0,
        cool_after_s: float = 30.0,
    ) -> None:
        self._clock = clock
        self.hot_in_flight = hot_in_flight
        self.hot_for_s = hot_for_s
        self.cool_after_s = cool_after_s
        self.workers: dict[int, WorkerLoad] = {}
        self._models: dict[str, _Model] = {}

    # -- workers -----------------------------------------------------------------------------------------

    def worker_up(self, worker: int, budget_bytes: int, neuron_cores: int = 0) -> None:
        self.workers[worker] = WorkerLoad(worker, budget_bytes, alive=True, neuron_cores=neuron_cores)

    def worker_lost(self, worker: int) -> list[str]:
        """A worker gone: nothing is routed or placed there any more; the models it held."""
        load = self.workers.get(worker)
        if load is None:
            return []
        load.alive = False
        lost = sorted(load.models)
        for name in lost:
            self._drop(name, worker)
        load.used_bytes = load.in_flight = 0
        return lost

    # -- the request path -----------------------------------------------------------------------------------

    def route(self, name: str) -> tuple[int | None, int | None]:
        """(worker to send to or None when the model must be placed first, worker that should get
        an extra copy now or None). Counts the request in flight on the chosen worker."""
        model = self._models.get(name)
        if model is None:
            return None, None
        best: Copy | None = None
        for copy in model.copies.values():
            if not copy.loading and (best is None or copy.in_flight < best.in_flight):
                best = copy
        if best is None:
            return None, None
        grow = self._heat(name, model, best.in_flight + 1)  # counting this request
        self.begin(name, best.worker)
        return best.worker, grow

    def begin(self, name: str, worker: int) -> None:
        copy = self._models[name].copies[worker]
        copy.in_flight += 1
        copy.last_used = self._clock()
        self.workers[worker].in_flight += 1

    def end(self, name: str, worker: int) -> None:
        model = self._models.get(name)
        copy = model.copies.get(worker) if model is not None else None
        if copy is not None:
            copy.in_flight -= 1
            copy.last_used = self._clock()
        load = self.workers.get(worker)
        if load is not None and load.alive and load.in_flight > 0:
            load.in_flight -= 1

    def _heat(self, name: str, model: _Model, least: int) -> int | None:
        """Hot: the least busy copy reaches hot_in_flight again and again for hot_for_s. Dips in
        between do not reset it unless they last half that long: a batching worker answers a whole
        batch at once, so in-flight counts saw-tooth between 0 and the concurrency."""
        now = self._clock()
        if least < self.hot_in_flight:
            if model.hot_since is not None and now - model.hot_seen > self.hot_for_s / 2:
                model.hot_since = None
            return None
        model.hot_seen = now
        if model.hot_since is None:
            model.hot_since = now
            return None
        if now - model.hot_since < self.hot_for_s or any(c.loading for c in model.copies.values()):
            return None
        spare = [w for w in self._eligible(model.neuron_cores) if w.id not in model.copies]
        if not spare:
            return None
        model.hot_since = None
        target = self._best(spare, model.neuron_cores)
        self._add(name, target.id)
        return target.id

    # -- placement ---------------------------------------------------------------------------------------------

    def place(self, name: str, needed_bytes: int = 0, neuron_cores: int = 0) -> int:
        """The worker a model resident nowhere is loaded on (recorded as loading there); a model
        needing `neuron_cores` only on a worker holding that many."""
        held = self._models[name].copies if name in self._models else {}
        alive = [w for w in self._eligible(neuron_cores) if w.id not in held]
        if not alive:
            kind = f"holding {neuron_cores} NeuronCore(s) " if neuron_cores else ""
            raise Unavailable(f"no worker {kind}is running to load model '{name}'; try again shortly")
        target = self._best(alive, neuron_cores)
        self._add(name, target.id)
        self._models[name].neuron_cores = neuron_cores
        target.used_bytes += needed_bytes
        return target.id

    def _eligible(self, neuron_cores: int) -> list[WorkerLoad]:
        """Live workers that may hold a model needing `neuron_cores`: those with a group that
        large; for other models those without cores, or every worker where all hold cores."""
        alive = [w for w in self.workers.values() if w.alive]
        if neuron_cores:
            return [w for w in alive if w.neuron_cores >= neuron_cores]
        if any(w.neuron_cores == 0 for w in self.workers.values()):
            return [w for w in alive if w.neuron_cores == 0]
        return alive

    @staticmethod
    def _best(candidates: Iterable[WorkerLoad], neuron_cores: int = 0) -> WorkerLoad:
        return min(
            candidates,
            key=lambda w: (w.neuron_cores - neuron_cores, -w.free_bytes, w.in_flight, len(w.models), w.id),
        )

    def _add(self, name: str, worker: int) -> None:
        model = self._models.setdefault(name, _Model())
        model.copies[worker] = Copy(worker, self._clock())
        self.workers[worker].models.add(name)

    def loaded(self, name: str, worker: int, nbytes: int, estimated_bytes: int = 0) -> None:
        """The load placed on `worker` is done: route there from now on."""
        copy = self._copy(name, worker)
        load = self.workers[worker]
        load.used_bytes += nbytes - estimated_bytes
        if copy is not None:
            copy.loading = False
            copy.last_used = self._clock()

    def load_failed(self, name: str, worker: int, estimated_bytes: int = 0) -> None:
        load = self.workers.get(worker)
        if load is not None:
            load.used_bytes -= estimated_bytes
        self._drop(name, worker)

    def unloaded(self, name: str, worker: int) -> None:
        self._drop(name, worker)

    def cooled(self) -> list[tuple[str, int]]:
        """Copies idle for cool_after_s while their model has another: taken out of routing now,
        to be unloaded by the caller."""
        now = self._clock()
        out = []
        for name, model in self._models.items():
            ready = [c for c in model.copies.values() if not c.loading]
            if len(ready) < 2:
                continue
            for copy in sorted(ready, key=lambda c: c.last_used)[: len(ready) - 1]:
                if copy.in_flight == 0 and now - copy.last_used >= self.cool_after_s:
                    out.append((name, copy.worker))
        for name, worker in out:
            self._drop(name, worker)
        return out

    def sync(self, worker: int, resident: dict[str, int], used_bytes: int) -> None:
        """A worker's own account (its LRU may have evicted models, or loaded pipeline steps):
        copies it no longer holds are forgotten, models it holds become routable there."""
        load = self.workers.get(worker)
        if load is None or not load.alive:
            return
        load.used_bytes = used_bytes
        for name in list(load.models):
            copy = self._copy(name, worker)
            if name not in resident and copy is not None and not copy.loading and copy.in_flight == 0:
                self._drop(name, worker)
        for name in resident:
            if self._copy(name, worker) is None:
                self._add(name, worker)
                self.loaded(name, worker, 0)

    def _copy(self, name: str, worker: int) -> Copy | None:
        model = self._models.get(name)
        return model.copies.get(worker) if model is not None else None

    def _drop(self, name: str, worker: int) -> None:
        model = self._models.get(name)
        if model is not None:
            model.copies.pop(worker, None)
            if not model.copies:
                del self._models[name]
        load = self.workers.get(worker)
        if load is not None:
            load.models.discard(name)

    # -- views -------------------------------------------------------------------------------------------------

    def placements(self, name: str) -> list[int]:
        """Workers with a ready copy of the model."""
        model = self._models.get(name)
        return sorted(w for w, c in model.copies.items() if not c.loading) if model is not None else []

    def in_flight(self, name: str, worker: int) -> int:
        copy = self._copy(name, worker)
        return copy.in_flight if copy is not None else 0
