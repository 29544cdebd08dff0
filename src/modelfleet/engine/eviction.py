"""Taking models out of service: eviction to make room within the memory budget, unload on request."""

from __future__ import annotations

import asyncio
import logging
import time
from collections import Counter
from collections.abc import Iterable

from modelfleet.config import ServerSettings
from modelfleet.engine.blobs import BlobCache
from modelfleet.engine.building import BLOB, Builder
from modelfleet.engine.model import LoadedModel
from modelfleet.engine.records import UNLOADED, ModelRecord, State
from modelfleet.engine.residency import Residency
from modelfleet.errors import InsufficientMemory

log = logging.getLogger(__name__)

Records = dict[str, ModelRecord[LoadedModel]]


class Evictions:
    """Chooses (through the residency), detaches and retires models; knows which are busy."""

    def __init__(
        self,
        records: Records,
        residency: Residency,
        blobs: BlobCache,
        builder: Builder,
        settings: ServerSettings,
    ) -> None:
        self._records = records
        self._residency = residency
        self._blobs = blobs
        self._builder = builder
        self._settings = settings
        self._reserved: Counter[str] = Counter()  # residency keys loads under way depend on

    def reserve(self, keys: Iterable[str]) -> None:
        """Keep what a load under way stands on from being evicted (until release)."""
        self._reserved.update(keys)

    def release(self, keys: Iterable[str]) -> None:
        for key in keys:
            self._reserved[key] -= 1
            if self._reserved[key] <= 0:
                del self._reserved[key]

    def busy(self, key: str) -> bool:
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

    async def make_room(self, needed: int, for_name: str, own: set[str], wait: bool = True) -> None:
        """Evict idle models until `needed` more bytes fit. When only busy models (requests in
        flight, loads under way) stand in the way, wait for them a while; 507 when nothing could
        ever make room, or when the wait runs out. Without `wait`, evict what is idle and accept
        being over the budget for now (a measured size a little above its estimate)."""
        residency = self._residency
        deadline = time.monotonic() + min(self._settings.load_timeout_s, self._settings.room_wait_s)
        while True:
            try:
                victims = residency.victims(needed, self.busy, f"model '{for_name}'")
                break
            except InsufficientMemory:
                if not wait:
                    victims = residency.idle_victims(self.busy)
                    break
                residency.victims(needed, own.__contains__, f"model '{for_name}'")  # never fits: 507
                if time.monotonic() > deadline:
                    raise
                await asyncio.sleep(0.005)  # busy models free up as their requests finish
        # Detach every victim before the first await: no request can pick one after this, and no
        # other load can choose the same victims again while these are being unloaded.
        retiring: list[LoadedModel] = []
        for key in victims:
            if key.startswith(BLOB):
                residency.remove(key)
                self._blobs.drop(key.removeprefix(BLOB))
            else:
                retiring += self.detach(
                    [self._records[key]], State.EVICTED, f"evicted to make room for '{for_name}'"
                )
        if victims:
            log.info("evicted %d to make room for '%s': %s", len(victims), for_name, ", ".join(victims[:10]))
            await self._builder.retire_all(retiring)

    def detach(self, records: list[ModelRecord[LoadedModel]], state: State, reason: str) -> list[LoadedModel]:
        """Take models out of service at once (no await): no request gets them after this."""
        retiring: list[LoadedModel] = []
        for record in records:
            retiring.extend(record.ready.values())
            record.mark(state, reason)
            record.set_ready({})
            self._residency.remove(record.name)
            if state == State.EVICTED:
                record.counters.evictions += 1
        if state == State.UNLOADING:  # an unload returns the memory of blobs nobody uses any more
            for key in self._residency.orphans(prefix=BLOB):
                self._residency.remove(key)
                self._blobs.drop(key.removeprefix(BLOB))
        return retiring

    async def unload(self, record: ModelRecord[LoadedModel]) -> None:
        """Unload a model and the adapters over it (under the model's lock)."""
        name = record.name
        adapters = [r for r in self._records.values() if r.base == name and r.ready]
        retiring = self.detach(adapters, State.UNLOADING, f"base model '{name}' is being unloaded")
        retiring += self.detach([record], State.UNLOADING, UNLOADED)
        await self._builder.retire_all(retiring)
        for adapter in adapters:
            adapter.unloaded(f"base model '{name}' was unloaded")
        record.unloaded(UNLOADED)

    def account(self, record: ModelRecord[LoadedModel]) -> None:
        """Residency after a failed or partial load: what is actually ready, or nothing."""
        if record.ready:
            self._residency.resize(record.name, sum(m.nbytes for m in record.ready.values()))
        else:
            self._residency.remove(record.name)
