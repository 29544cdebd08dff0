"""The two seams between the server and the models: `ModelHost` (where models live: this process's
`ModelManager` or the workers' `Fleet`) and `ServedModel` (one ready version a request runs on)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Protocol

from modelfleet.engine.records import ModelRecord
from modelfleet.engine.signature import Signature
from modelfleet.engine.stats import ModelStats
from modelfleet.protocol.documents import IndexEntry, Memory, ModelMetadata, Statistics, Workers
from modelfleet.protocol.v2 import InferRequest, InferResponse, TensorSpec
from modelfleet.repository.config import ModelConfig


class ServedModel(Protocol):
    """A ready model version: its signature, its counts, and `infer`."""

    signature: Signature
    name: str
    version: int
    version_str: str
    config: ModelConfig
    inputs: dict[str, TensorSpec]
    outputs: dict[str, TensorSpec]
    max_batch_size: int
    nbytes: int  # resident bytes (shared blobs not included)
    load_s: float
    in_flight: int
    stats: ModelStats

    @property
    def platform(self) -> str: ...

    def metadata(self, versions: list[str]) -> ModelMetadata: ...

    async def infer(self, request: InferRequest, started_ns: int) -> InferResponse:
        """Run one request; `started_ns` (perf_counter) is when the transport began on it."""
        ...

    def expected_wait_ns(self) -> int:
        """Roughly how long a request queued now would wait (0: not known here)."""
        ...


class ModelHost(Protocol):
    """The models of the repository and their lifecycle, behind one surface for the data plane,
    the metrics and the app. Per-model calls raise 400 for a bad name or version, 404 for a model
    the repository does not have."""

    started: bool  # the models the settings load at start are loaded

    # the request path
    def resident(self, name: str, version: str | None = None) -> ServedModel | None:
        """The ready model a request goes to, or None when it must be loaded first (a use: LRU)."""
        ...

    def peek(self, name: str, version: str | None = None) -> ServedModel | None:
        """Like resident(), without counting as a use (readiness probes, statistics)."""
        ...

    async def acquire(self, name: str, version: str | None = None) -> ServedModel:
        """The ready model, loading it first if it is not resident (single flight)."""
        ...

    def served_versions(self, name: str) -> list[str]: ...

    def known(self, name: str) -> bool: ...

    def record(self, name: str) -> ModelRecord[Any] | None: ...

    def loaded(self, name: str | None = None) -> Sequence[ServedModel]:
        """Ready model versions, of one model or of all."""
        ...

    # control
    async def start(self) -> None: ...

    async def close(self) -> None: ...

    async def refresh(self) -> None:
        """Pick up models added to or removed from the repository."""
        ...

    async def load(self, name: str) -> None:
        """Load (or reload) on request; lifts an unload's hold."""
        ...

    async def unload(self, name: str) -> None:
        """Unload on request; the model stays out until loaded again."""
        ...

    async def unload_from(self, worker: int, name: str) -> None:
        """Remove one worker's copy of a model (it loads again on demand)."""
        ...

    # documents
    def index(self, ready_only: bool = False) -> list[IndexEntry]: ...

    def statistics(self, name: str | None, version: str | None) -> Statistics: ...

    def memory(self) -> Memory: ...

    async def workers(self) -> Workers:
        """The /v2/workers document."""
        ...
