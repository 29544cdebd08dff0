"""ServerSettings: every server knob, typed and documented, read once from MODELFLEET_* env and CLI.

Parsed at the edge (the CLI) and passed down; nothing else reads the environment.
"""

from __future__ import annotations

from enum import StrEnum
from pathlib import Path
from typing import Annotated

from pydantic import Field, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from modelfleet.engine.memory import parse_budget
from modelfleet.repository.objectstore import ObjectStoreOptions
from modelfleet.workers.plan import parse_workers

DEFAULT_S3_CACHE = Path.home() / ".cache" / "modelfleet" / "s3"


class StartupLoad(StrEnum):
    ALL = "all"  # load every model of the repository at start (as far as the budget allows)
    PINNED = "pinned"  # load the models whose config says pinned: true; the rest on demand
    NONE = "none"  # load nothing at start


class ServerSettings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix="MODELFLEET_", env_nested_delimiter="__", extra="forbid", frozen=True
    )

    repository: str
    """Where the models are: a folder (NAME/config.yaml, NAME/VERSION/...) or s3://bucket/prefix."""
    s3: ObjectStoreOptions = Field(default_factory=lambda: ObjectStoreOptions(cache_dir=DEFAULT_S3_CACHE))
    """For s3:// repositories: endpoint, region, local cache (MODELFLEET_S3__ENDPOINT_URL=...).
    Credentials come from the standard AWS environment only."""
    host: str = "127.0.0.1"
    """Address the HTTP server binds to."""
    http_port: Annotated[int, Field(ge=0, le=65535)] = 8000
    """HTTP port (0 picks a free one)."""
    startup_load: StartupLoad = StartupLoad.PINNED
    """Which models are loaded at start; every other model loads on its first request."""
    memory_budget: str = "0.6"
    """Memory for resident models: bytes ('12GiB', '800MB') or a fraction of the machine's (or
    container's) memory ('0.6'). Least recently used models are evicted to stay within it."""
    repository_poll_s: Annotated[float, Field(ge=0)] = 0.0
    """Look for models added to or removed from the repository every N seconds (0: only when
    POST /v2/repository/index asks)."""
    max_body_bytes: Annotated[int, Field(ge=1024)] = 64 * 1024 * 1024
    """Largest request body, also after gzip/deflate decompression; larger gets 413."""
    max_inputs: Annotated[int, Field(ge=1)] = 64
    """Most input (and requested output) tensors in one request."""
    max_tensor_rank: Annotated[int, Field(ge=1)] = 16
    """Most dimensions of one tensor."""
    max_tensor_elements: Annotated[int, Field(ge=1)] = 1 << 28
    """Most elements in one tensor, checked before anything is allocated."""
    default_max_batch_size: Annotated[int, Field(ge=1)] = 1024
    """max_batch_size given to batchable models whose config sets none."""
    intra_op_threads: Annotated[int, Field(ge=0)] = 0
    """Intra-op threads per model where its config sets none (0: the framework's choice)."""
    max_queue_size: Annotated[int, Field(ge=1)] = 1024
    """Requests waiting per model before new ones get 429."""
    load_concurrency: Annotated[int, Field(ge=1)] = 2
    """Model loads running at the same time (fetches and adapter heads; framework sessions are
    created one at a time so that each one's memory footprint can be measured)."""
    load_timeout_s: Annotated[float, Field(gt=0)] = 300.0
    """A load taking longer fails with this reason."""
    python_models: bool = False
    """Allow models with backend: python. Their code runs in the server process with its rights:
    turn this on only for repositories whose authors you trust."""
    request_timeout_s: Annotated[float, Field(ge=0)] = 60.0
    """Longest a request may take (queue and run); the V2 `timeout` parameter may ask for less.
    0: no limit. A request past it gets 504 and, if it was still queued, is never run."""
    response_cache_bytes: Annotated[int, Field(ge=0)] = 256 << 20
    """Size of the response cache shared by the models whose config sets response_cache: true."""
    room_wait_s: Annotated[float, Field(ge=0)] = 10.0
    """How long a load waits for busy models (requests in flight) to become evictable before 507."""
    workers: str = "0"
    """Worker processes serving the models: a number, or 'auto' (one per GPU, else one per two
    cores). 0: models run in the server process itself (small machines, lowest latency)."""
    shutdown_timeout_s: Annotated[float, Field(gt=0)] = 20.0
    """On SIGTERM, how long in-flight requests may take to finish."""
    log_level: str = "info"
    """Python logging level name."""
    log_format: Annotated[str, Field(pattern="^(text|json)$")] = "text"
    """'text': one readable line per event, for people; 'json': one JSON object per line (time,
    level, logger, message, and model and request_id inside a request), for log pipelines."""
    metrics_top_k: Annotated[int, Field(ge=0)] = 50
    """/metrics gives a model its own `model` label when it is among the N with the most recent
    traffic; every other model counts under model="_other", so series stay bounded."""
    metrics_models: tuple[str, ...] = ()
    """Models that always get their own label on /metrics, whatever their traffic (a JSON list in
    the environment: MODELFLEET_METRICS_MODELS='["bert", "resnet"]')."""

    @field_validator("repository", mode="before")
    @classmethod
    def _path_as_text(cls, value: object) -> object:
        return str(value) if isinstance(value, Path) else value

    @model_validator(mode="after")
    def _repository_exists(self) -> ServerSettings:
        if not self.is_object_store and not Path(self.repository).is_dir():
            raise ValueError(f"repository {self.repository} is not a folder (nor an s3://bucket/prefix)")
        self.memory_budget_bytes()  # refuse an unreadable budget at start
        parse_workers(self.workers)
        return self

    @property
    def is_object_store(self) -> bool:
        return self.repository.startswith("s3://")

    def memory_budget_bytes(self) -> int:
        return parse_budget(self.memory_budget)
