"""ServerSettings: every server knob, typed and documented, read once from MODELFLEET_* env and CLI.

Parsed at the edge (the CLI) and passed down; nothing else reads the environment. A leaf package:
it imports no other module of modelfleet, so the small option types (options.py) and the units
they are written in (values.py: memory sizes, worker counts, model names) live here too.
"""

from __future__ import annotations

import hashlib
from enum import StrEnum
from pathlib import Path
from typing import Annotated

from pydantic import AliasChoices, Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from modelfleet.config.options import DEFAULT_S3_CACHE as DEFAULT_S3_CACHE  # re-exported
from modelfleet.config.options import ModelSelection as ModelSelection  # re-exported
from modelfleet.config.options import ObjectStoreOptions as ObjectStoreOptions  # re-exported
from modelfleet.config.values import MODEL_NAME as MODEL_NAME  # re-exported
from modelfleet.config.values import check_endpoint_url as check_endpoint_url  # re-exported
from modelfleet.config.values import is_forbidden_address as is_forbidden_address  # re-exported
from modelfleet.config.values import is_forbidden_host as is_forbidden_host  # re-exported
from modelfleet.config.values import is_model_name as is_model_name  # re-exported
from modelfleet.config.values import literal_address as literal_address  # re-exported
from modelfleet.config.values import machine_memory_bytes as machine_memory_bytes  # re-exported
from modelfleet.config.values import parse_budget as parse_budget  # re-exported
from modelfleet.config.values import parse_core_groups as parse_core_groups  # re-exported
from modelfleet.config.values import parse_workers as parse_workers  # re-exported


class StartupLoad(StrEnum):
    ALL = "all"  # load every model of the repository at start (as far as the budget allows)
    PINNED = "pinned"  # load the models whose config says pinned: true; the rest on demand
    NONE = "none"  # load nothing at start


class ServerSettings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix="MODELFLEET_",
        env_nested_delimiter="__",
        extra="forbid",
        frozen=True,
        hide_input_in_errors=True,  # a mistyped secret must not end up in a log or a terminal
        use_attribute_docstrings=True,  # each field's docstring is its description: `serve --help`
    )

    repository: str
    """Where the models are: a folder (NAME/config.yaml, NAME/VERSION/...) or s3://bucket/prefix."""
    s3: ObjectStoreOptions = Field(default_factory=lambda: ObjectStoreOptions(cache_dir=DEFAULT_S3_CACHE))
    """For s3:// repositories: endpoint, region, local cache (MODELFLEET_S3__ENDPOINT_URL=...).
    Credentials come from the standard AWS environment only."""
    host: str = "127.0.0.1"
    """Address the HTTP server binds to."""
    http_port: Annotated[int | None, Field(ge=0, le=65535)] = None
    """HTTP port (0 picks a free one). Unset: 8000, or in SageMaker mode SAGEMAKER_BIND_TO_PORT or
    8080, as SageMaker's own containers do; `port` is the one to bind."""
    grpc_port: Annotated[int, Field(ge=0, le=65535)] = 8001
    """gRPC port (inference.GRPCInferenceService, needs the `grpc` extra); 0: no gRPC server."""
    models: str = ""
    """Serve only these models of the repository: names or shell patterns, comma-separated
    ('tenant-00*,ranker'), or '@FILE' with one per line; the bases and ensemble steps they use are
    served too. Empty: every model. One server of a planned fleet serves its share this way."""
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
    max_body_bytes_in_flight: Annotated[int, Field(ge=1024)] = 512 * 1024 * 1024
    """Request bytes being received, decoded or run at once, all HTTP requests together; a request
    that would pass it gets 429 with Retry-After (bounds the memory many large bodies can take)."""
    header_timeout_s: Annotated[float, Field(gt=0)] = 30.0
    """An HTTP connection must deliver a request's headers this long after it opens or starts the
    request; else it gets 408 and is closed (slow or stuck clients hold no socket for ever)."""
    body_timeout_s: Annotated[float, Field(gt=0)] = 60.0
    """A request body must arrive in full within this; else 408 and the connection is closed (on
    gRPC: a request message within this of its headers, else DEADLINE_EXCEEDED)."""
    max_header_bytes: Annotated[int, Field(ge=1024)] = 32 * 1024
    """Largest request line plus headers; larger gets 431 and the connection is closed."""
    max_connections: Annotated[int, Field(ge=1)] = 1024
    """Open HTTP connections; one more is answered 503 with Retry-After and closed at once. The gRPC
    port has the same bound of its own (GOAWAY ENHANCE_YOUR_CALM past it)."""
    keep_alive_timeout_s: Annotated[float, Field(gt=0)] = 5.0
    """An idle keep-alive HTTP connection is closed after this."""
    max_inputs: Annotated[int, Field(ge=1)] = 64
    """Most input (and requested output) tensors in one request."""
    max_tensor_rank: Annotated[int, Field(ge=1)] = 16
    """Most dimensions of one tensor."""
    max_tensor_elements: Annotated[int, Field(ge=1)] = 1 << 28
    """Most elements in one tensor, and the largest dimension, checked before anything is allocated."""
    max_json_depth: Annotated[int, Field(ge=2, le=512)] = 64
    """Deepest nesting of JSON objects and arrays in a request (parameters, BYTES data, control
    and SageMaker bodies); deeper gets 400."""
    default_max_batch_size: Annotated[int, Field(ge=1)] = 1024
    """max_batch_size given to batchable models whose config sets none."""
    intra_op_threads: Annotated[int, Field(ge=0)] = 0
    """Intra-op threads per model where its config sets none (0: the framework's choice)."""
    max_queue_size: Annotated[int, Field(ge=1)] = 1024
    """Requests waiting per model before new ones get 429."""
    max_queue_wait_s: Annotated[float, Field(ge=0)] = 1.0
    """Expected queueing time per model (rows waiting or running x measured time per row / instances)
    past which new requests get 429 at once, so that accepted requests keep a bounded latency under
    overload instead of queueing for seconds: set it from the latency target (the default lets a
    closed loop of 32 clients run MiniLM at sequence 128 on 2 cores, about 0.4 s of queue, with
    room for a busy machine). 0: by count only."""
    compute_slots: Annotated[int, Field(ge=0)] = 0
    """Model runs that may execute at once, all models together (0: no limit, each model's threads
    run as soon as they have work). With intra-op threads using every core, 1 stops two models
    from slowing each other down on the same cores; models waiting for a slot take turns by the
    run time each has used lately, so one tenant's flood on its model cannot take the cores from
    the others (inline runs are off then)."""
    gil_switch_interval_us: Annotated[int, Field(ge=0, le=100_000)] = 0
    """How long a thread may hold Python's GIL while another waits for it, in µs (0: Python's
    default, 5,000). On a server with one core, a shorter interval lets the event loop and the model
    thread hand over sooner; whether it lowers tail latency is not established yet (one run of two
    at 500 did: docs/benchmarks.md, "The plan simulation against the local cluster")."""
    inline_max_us: Annotated[float, Field(ge=0)] = 0.0
    """Opt-in: cheap models run on the event loop instead of their own thread when that thread is
    idle. An ONNX Runtime CPU session that reads no memory-mapped blobs (never a Python model)
    whose run takes at most this many microseconds on average runs the requests of one loop turn
    there, as long as the turn's rows and runs cost at most this too by its measured times. It
    saves the thread hop (tens of microseconds a request) for models cheaper than the hop, but a
    run that stalls stalls every request of the server: hence off by default (0), for models whose
    config sets no `inline_max_us` of their own. Measured gain: +5-7 % on a 1 µs model
    (docs/benchmarks.md, "Inline execution")."""
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
    neuron_core_groups: str = ""
    """AWS NeuronCores for Neuron workers: one group per worker, each one core or a contiguous range
    ('0-1,2-3': two workers seeing two cores each through NEURON_RT_VISIBLE_CORES). Models with
    device: neuron load only on these workers (one needing N cores on a group of at least N), the
    rest on the other workers. Needs workers ('auto': one per group, or a count of at least the
    groups; the workers past them serve the other models). Empty: one worker per core of the
    server's own NEURON_RT_VISIBLE_CORES when it has one."""
    shutdown_timeout_s: Annotated[float, Field(gt=0)] = 25.0
    """On SIGTERM, how long in-flight calls (HTTP and gRPC together) may take to finish; those
    still running then are answered 503 / UNAVAILABLE and the process exits 0 about a second later.
    Keep it under the orchestrator's grace (Kubernetes terminationGracePeriodSeconds, 30 by default;
    SageMaker's 30 s)."""
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

    auth_keys_file: Path | None = None
    """Inference keys and the models each tenant reaches (YAML or JSON, SHA-256 digests of the keys,
    never the keys; docs/auth.md). Unset: inference is open."""
    admin_key: SecretStr | None = None
    """The key for model control (load, unload, rescans) and, with inference keys, /metrics; from
    MODELFLEET_ADMIN_KEY only (never a command-line option). Unset: control from loopback only."""
    admin_key_sha256: Annotated[str | None, Field(pattern="^[0-9a-fA-F]{64}$")] = None
    """The admin key's SHA-256 hex digest, instead of admin_key, so the setting holds no secret."""
    loopback_control: bool = True
    """With no admin key, loopback clients without a key may control models. Turn off behind a proxy
    or service-mesh sidecar on the same host: their connections come from loopback."""

    sagemaker: bool = False
    """Also serve SageMaker's container contract: GET /ping, POST /invocations and the multi-model
    API under /models (the V2 routes stay)."""
    sagemaker_default_model: str | None = None
    """SageMaker mode: the model /invocations runs when X-Amzn-SageMaker-Target-Model is absent
    (unset: the repository's only model, if it has exactly one)."""
    sagemaker_model_root: Path = Path("/opt/ml/models")
    """SageMaker multi-model: the folder SageMaker mounts the endpoint's artefacts in. POST /models
    loads the `url` it is given only from inside it (links resolved), under the opaque model_name."""
    sagemaker_bind_to_port: Annotated[
        int | None,
        Field(
            ge=1, le=65535, validation_alias=AliasChoices("sagemaker_bind_to_port", "SAGEMAKER_BIND_TO_PORT")
        ),
    ] = None
    """The port SageMaker asks for (its own SAGEMAKER_BIND_TO_PORT variable, no MODELFLEET_ prefix);
    used in SageMaker mode when http_port is unset."""

    @field_validator("sagemaker_default_model")
    @classmethod
    def _default_model_name(cls, value: str | None) -> str | None:
        if value is not None and not is_model_name(value):
            raise ValueError(f"'{value[:64]}' is not a model name (letters, digits, '.', '_', '-')")
        return value

    @field_validator("repository", mode="before")
    @classmethod
    def _path_as_text(cls, value: object) -> object:
        return str(value) if isinstance(value, Path) else value

    @field_validator("admin_key")
    @classmethod
    def _long_enough(cls, value: SecretStr | None) -> SecretStr | None:
        if value is not None and len(value.get_secret_value()) < 16:
            raise ValueError(
                "admin_key is shorter than 16 characters; make one with "
                "python -c 'import secrets; print(secrets.token_urlsafe(32))'"
            )
        return value

    @model_validator(mode="after")
    def _repository_exists(self) -> ServerSettings:
        if not self.is_object_store and not Path(self.repository).is_dir():
            raise ValueError(f"repository {self.repository} is not a folder (nor an s3://bucket/prefix)")
        self.memory_budget_bytes()  # refuse an unreadable budget at start
        if self.admin_key is not None and self.admin_key_sha256 is not None:
            raise ValueError("set admin_key or admin_key_sha256, not both")
        if self.auth_keys_file is not None and not self.auth_keys_file.is_file():
            raise ValueError(f"auth_keys_file {self.auth_keys_file} is not a file")
        self._neuron_workers()
        self.model_selection()  # refuse an unreadable selection at start
        if self.max_body_bytes_in_flight < self.max_body_bytes:
            raise ValueError(
                f"max_body_bytes_in_flight ({self.max_body_bytes_in_flight}) must be at least "
                f"max_body_bytes ({self.max_body_bytes}): one largest request must fit"
            )
        return self

    @property
    def is_object_store(self) -> bool:
        return self.repository.startswith("s3://")

    @property
    def port(self) -> int:
        """The HTTP port to bind: http_port when set, else SageMaker's or the V2 default."""
        if self.http_port is not None:
            return self.http_port
        if self.sagemaker:
            return self.sagemaker_bind_to_port or 8080
        return 8000

    def _neuron_workers(self) -> None:
        count = parse_workers(self.workers)
        groups = self.neuron_groups()
        if groups and count is not None and count < len(groups):
            raise ValueError(
                f"neuron_core_groups gives {len(groups)} groups but workers is {count}: each group needs "
                "a worker of its own (set workers to 'auto' or a count of at least the groups)"
            )

    def neuron_groups(self) -> list[tuple[int, ...]]:
        """The parsed `neuron_core_groups`: one tuple of cores per Neuron worker."""
        return parse_core_groups(self.neuron_core_groups)

    def model_selection(self) -> ModelSelection | None:
        """The parsed `models` setting; None serves every model."""
        return ModelSelection.parse(self.models)

    def memory_budget_bytes(self) -> int:
        return parse_budget(self.memory_budget)

    def admin_key_digest(self) -> str | None:
        """The admin key's SHA-256 hex digest, from whichever of the two settings is set."""
        if self.admin_key is not None:
            return hashlib.sha256(self.admin_key.get_secret_value().encode()).hexdigest()
        return None if self.admin_key_sha256 is None else self.admin_key_sha256.lower()
