"""What the server knows about each model of the repository: state, ready copies, routing, counters."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Generic, TypeVar

from modelfleet.errors import ModelfleetError, ModelLoadError, NotFound, Unavailable, model_not_found
from modelfleet.repository.config import ModelConfig
from modelfleet.repository.names import check_version, is_alias


class State(StrEnum):
    READY = "READY"
    LOADING = "LOADING"
    UNLOADING = "UNLOADING"
    EVICTED = "EVICTED"  # unloaded to make room; loads again on the next request
    UNAVAILABLE = "UNAVAILABLE"


NOT_LOADED = "not loaded"
UNLOADED = "unloaded"
NOT_SERVED = "not served by the version policy"

M = TypeVar("M")  # the ready copies: a LoadedModel in process, a RemoteModel on the workers' front


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


@dataclass(slots=True)
class ModelRecord(Generic[M]):
    name: str
    status: Status = field(default_factory=lambda: Status(State.UNAVAILABLE, NOT_LOADED))
    versions: dict[int, Status] = field(default_factory=dict)
    ready: dict[int, M] = field(default_factory=dict)
    latest: M | None = None  # the highest ready version: where unversioned requests go
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    loading: asyncio.Future[None] | None = None  # the load requests are waiting for (single flight)
    waiting: int = 0  # requests waiting for that load: the fresh copy must not be evicted under them
    held: bool = False  # unloaded on request: not loaded on demand until loaded again
    pinned: bool = False
    base: str | None = None  # adapters: the base model they run through
    aliases: dict[str, int] = field(default_factory=dict)
    traffic: list[tuple[float, int]] = field(default_factory=list)  # (cumulative weight, version)
    failures: int = 0
    retry_at: float = 0.0  # monotonic
    counters: Counters = field(default_factory=Counters)

    def set_ready(self, ready: dict[int, M]) -> None:
        self.ready = ready
        self.latest = ready[max(ready)] if ready else None

    def route(self, config: ModelConfig) -> None:
        """Take aliases and the traffic split from the config of the copies now ready."""
        self.aliases = dict(config.aliases)
        cumulative, self.traffic = 0.0, []
        for number, weight in sorted((config.traffic or {}).items()):
            if weight > 0:
                cumulative += weight
                self.traffic.append((cumulative, number))

    def pick(self, version: str | None, draw: float = 0.0) -> M | None:
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

    def servable(self, version: str) -> bool:
        """False for a version known not to be served (404 without loading anything)."""
        if not self.versions:
            return True
        status = self.versions.get(self.number(version))
        return status is not None and status.served

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

    def mark(self, state: State, reason: str, failed: bool = False) -> None:
        """Set the state of the model and of every version that was ready."""
        status = Status(state, reason, failed)
        for number in self.ready:
            self.versions[number] = status
        self.status = status

    def unloaded(self, reason: str) -> None:
        """The end of an unload: the versions that were unloading become unavailable."""
        status = Status(State.UNAVAILABLE, reason)
        for number, current in self.versions.items():
            if current.state == State.UNLOADING:
                self.versions[number] = status
        self.status = status

    def mark_failed(self, reason: str) -> None:
        for number, status in self.versions.items():
            if number in self.ready:
                self.versions[number] = Status(State.READY, f"reload failed, previous copy serving: {reason}")
            elif status.state == State.LOADING:
                self.versions[number] = Status(State.UNAVAILABLE, reason, failed=True)
        self.status = Status(State.READY) if self.ready else Status(State.UNAVAILABLE, reason, failed=True)


def check_routing(config: ModelConfig, selected: list[int]) -> None:
    """Traffic weights and aliases may only name versions the version policy serves."""
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
