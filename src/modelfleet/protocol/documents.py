"""What the data plane answers besides inference, as typed values: field names as the V2 (Open
Inference) protocol and Triton's extensions name them, modelfleet's additions (residency, memory,
workers) beside them. Each transport encodes one value: `to_json` here, protobuf in grpc/codec.py.

Absent means absent: an optional field left at its default (None, False) is not written, so a
tenant's statistics carry no `memory`, a version-less index entry no `version`.
"""

from __future__ import annotations

from typing import Any

import msgspec
import numpy as np


class Document(msgspec.Struct, frozen=True, omit_defaults=True, kw_only=True):
    """The base of every document: immutable, built with keywords, defaults left out on the wire.
    Each subclass repeats `frozen=True, kw_only=True` for the type checker (msgspec inherits them)."""


# -- health, server and model metadata (V2 core) -----------------------------------------------------


class Liveness(Document, frozen=True, kw_only=True):
    live: bool


class Readiness(Document, frozen=True, kw_only=True):
    ready: bool


class ServerMetadata(Document, frozen=True, kw_only=True):
    name: str
    version: str
    extensions: list[str]


class TensorMetadata(Document, frozen=True, kw_only=True):
    name: str
    datatype: str
    shape: list[int]  # -1 for a variable dimension


class ModelMetadata(Document, frozen=True, kw_only=True):
    name: str
    versions: list[str]
    platform: str
    inputs: list[TensorMetadata]
    outputs: list[TensorMetadata]


class ModelReady(Document, frozen=True, kw_only=True):
    name: str
    version: str
    ready: bool


class ErrorDocument(Document, frozen=True, kw_only=True):
    """Every error answer's body, on every HTTP route: `{"error": "..."}`."""

    error: str


# -- model configuration extension (Triton's JSON shape) ----------------------------------------------


class ConfigTensor(Document, frozen=True, kw_only=True):
    name: str
    data_type: str  # TYPE_FP32, TYPE_STRING, ...
    dims: list[int]  # without the batch dimension


class LatestVersions(Document, frozen=True, kw_only=True):
    num_versions: int


class AllVersions(Document, frozen=True, kw_only=True):
    pass


class SpecificVersions(Document, frozen=True, kw_only=True):
    versions: list[int]


class VersionPolicy(Document, frozen=True, kw_only=True):
    """One of the three, as Triton writes its oneof."""

    latest: LatestVersions | None = None
    all: AllVersions | None = None
    specific: SpecificVersions | None = None


class ModelConfiguration(Document, frozen=True, kw_only=True):
    name: str
    platform: str
    backend: str | None
    max_batch_size: int
    input: list[ConfigTensor]
    output: list[ConfigTensor]
    version_policy: VersionPolicy


# -- repository extension ---------------------------------------------------------------------------


class IndexEntry(Document, frozen=True, kw_only=True):
    """One model version of the repository index (one per model before any version is known).
    In process, a version's entry carries its model's residency counts; with workers, the
    workers it is resident on."""

    name: str
    version: str | None = None
    state: str  # READY, LOADING, UNLOADING, EVICTED, UNAVAILABLE
    reason: str
    workers: list[int] | None = None
    resident_bytes: int | None = None
    pinned: bool | None = None
    last_load_s: float | None = None
    last_used: float | None = None  # wall clock (s)
    loads: int | None = None
    load_failures: int | None = None
    cold_starts: int | None = None
    evictions: int | None = None


# -- statistics extension -----------------------------------------------------------------------------


class Duration(Document, frozen=True, kw_only=True):
    """Triton's StatisticDuration: how many, and their total time."""

    count: int
    ns: int


class InferenceStats(Document, frozen=True, kw_only=True):
    success: Duration
    queue: Duration
    compute_input: Duration
    compute_infer: Duration
    compute_output: Duration
    fail: Duration
    cache_hit: Duration
    cache_miss: Duration


class BatchStats(Document, frozen=True, kw_only=True):
    batch_size: int
    compute_input: Duration
    compute_infer: Duration
    compute_output: Duration


class ModelResidency(Document, frozen=True, kw_only=True):
    """modelfleet's addition to a statistics entry: the model's state, memory and load counts
    (with workers, `workers` lists where its copies are; in process, `load_s` is this copy's)."""

    resident_bytes: int
    pinned: bool
    last_load_s: float
    last_used: float  # wall clock (s); 0 for never
    loads: int
    load_failures: int
    cold_starts: int
    evictions: int
    state: str
    reason: str
    load_s_total: float
    accounted_bytes: int
    load_s: float | None = None
    workers: list[int] | None = None


class ModelStatistics(Document, frozen=True, kw_only=True):
    name: str
    version: str
    last_inference: int  # wall clock (ms)
    inference_count: int  # rows inferred
    execution_count: int  # model executions
    inference_stats: InferenceStats
    batch_stats: list[BatchStats]
    residency: ModelResidency | None = None


class Memory(Document, frozen=True, kw_only=True):
    """The memory budget, its use and the load counters, over every model."""

    budget_bytes: int
    used_bytes: int
    resident_models: int
    known_models: int
    blob_bytes: int
    loads: int
    load_failures: int
    cold_starts: int
    evictions: int


class Statistics(Document, frozen=True, kw_only=True):
    model_stats: list[ModelStatistics]
    memory: Memory | None = None  # not shown to a tenant: it counts every tenant's models


# -- workers (modelfleet's /v2/workers) ------------------------------------------------------------------


class WorkerModel(Document, frozen=True, kw_only=True):
    name: str
    version: str
    resident_bytes: int
    in_flight: int


class Worker(Document, frozen=True, kw_only=True):
    id: int
    pid: int | None  # None while the process is not running
    device: str
    state: str  # starting, ready, restarting, stopped
    restarts: int
    budget_bytes: int
    used_bytes: int
    rss_bytes: int
    cpu_seconds: float
    in_flight: int
    models: list[WorkerModel]


class Workers(Document, frozen=True, kw_only=True):
    workers: list[Worker]
    in_process: bool = False  # True: no worker processes, the server itself is worker 0


# -- encoding ---------------------------------------------------------------------------------------


def _numpy_scalar(value: Any) -> Any:
    """Numpy scalars that reach a document (sizes from a runtime) as their Python value."""
    if isinstance(value, np.generic):
        return value.item()
    raise NotImplementedError(f"cannot encode {type(value).__name__} in a document")


_ENCODER = msgspec.json.Encoder(enc_hook=_numpy_scalar)


def to_json(doc: Document | list[IndexEntry]) -> bytes:
    """A document (or the repository index) as JSON, fields in their declared order."""
    return _ENCODER.encode(doc)


def error_json(message: str) -> bytes:
    return _ENCODER.encode(ErrorDocument(error=message))
