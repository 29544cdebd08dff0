"""ServerSettings: every server knob, typed and documented, read once from MODELFLEET_* env and CLI.

Parsed at the edge (the CLI) and passed down; nothing else reads the environment. A leaf: it
imports no other module of modelfleet, so the small option types and the units they are written
in (memory sizes, worker counts, model names, object-store options) live here too.
"""

from __future__ import annotations

import contextlib
import fnmatch
import hashlib
import ipaddress
import os
import re
import socket
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import Annotated
from urllib.parse import urlsplit

from pydantic import AliasChoices, BaseModel, ConfigDict, Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

DEFAULT_S3_CACHE = Path.home() / ".cache" / "modelfleet" / "s3"
MODEL_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")
"""A model's name: letters, digits and `._-`, at most 128 characters (repository/names.py checks with it)."""
_PAGE = os.sysconf("SC_PAGE_SIZE")
_UNITS = {"": 1, "b": 1, "k": 1 << 10, "kb": 1000, "kib": 1 << 10, "m": 1 << 20, "mb": 1000**2, "mib": 1 << 20,
          "g": 1 << 30, "gb": 1000**3, "gib": 1 << 30, "t": 1 << 40, "tb": 1000**4, "tib": 1 << 40}  # fmt: skip
_SIZE = re.compile(r"\s*([0-9]*\.?[0-9]+)\s*([a-zA-Z]*)\s*")


def is_model_name(name: str) -> bool:
    return bool(MODEL_NAME.fullmatch(name)) and ".." not in name


def machine_memory_bytes() -> int:
    """Physical memory, or the cgroup (container) limit when that is lower."""
    physical = _PAGE * os.sysconf("SC_PHYS_PAGES")
    limits = [physical]
    for path in ("/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory/memory.limit_in_bytes"):
        with contextlib.suppress(OSError, ValueError):
            text = Path(path).read_text().strip()
            if text != "max":
                limits.append(int(text))
    return min(limits)


def parse_budget(value: str | int | float, machine_bytes: int | None = None) -> int:
    """Bytes from '12GiB', '800MB', 1234567 or a fraction of the machine's memory ('0.6', 0.6)."""
    if isinstance(value, int):
        return value
    if isinstance(value, float) or (isinstance(value, str) and "." in value and value.strip()[-1].isdigit()):
        fraction = float(value)
        if not 0 < fraction <= 1:
            raise ValueError(f"a memory fraction must lie in (0, 1], got {value}")
        return int(fraction * (machine_bytes if machine_bytes is not None else machine_memory_bytes()))
    match = _SIZE.fullmatch(value)
    unit = match.group(2).lower() if match else None
    if match is None or unit not in _UNITS:
        raise ValueError(f"cannot read '{value}' as a memory size (e.g. 8GiB, 500MB, 0.6 of the machine)")
    return int(float(match.group(1)) * _UNITS[unit])


def parse_workers(value: str) -> int | None:
    """The setting: a count, or None for auto (ValueError otherwise)."""
    text = value.strip().lower()
    if text == "auto":
        return None
    if not text.isdigit() or int(text) > 256:
        raise ValueError(f"workers must be 'auto' or a number from 0 to 256, got {value!r}")
    return int(text)


_MAX_CORE_ID = 1023


def parse_core_groups(value: str) -> list[tuple[int, ...]]:
    """NeuronCore groups from the setting: '0-1,2-3' -> [(0, 1), (2, 3)], '4' -> [(4,)], '' -> [].
    Each group is one core or a contiguous range (what NEURON_RT_VISIBLE_CORES takes); a core may
    be in one group only (the Neuron runtime gives a core to one process). ValueError otherwise."""
    if not value.strip():
        return []
    groups: list[tuple[int, ...]] = []
    seen: set[int] = set()
    for part in (p.strip() for p in value.split(",")):
        low, dash, high = part.partition("-")
        if not low.isdigit() or (dash and not high.isdigit()):
            raise ValueError(f"neuron core group '{part[:32]}' is not a core (4) or a range of cores (0-1)")
        first, last = int(low), int(high) if dash else int(low)
        if first > last or last > _MAX_CORE_ID:
            raise ValueError(f"neuron core group '{part}' must run upwards, within cores 0-{_MAX_CORE_ID}")
        group = tuple(range(first, last + 1))
        twice = sorted(seen.intersection(group))
        if twice:
            raise ValueError(f"neuron core {twice[0]} is in two groups; a core belongs to one worker")
        seen.update(group)
        groups.append(group)
    return groups


_LINK_LOCAL = (ipaddress.ip_network("169.254.0.0/16"), ipaddress.ip_network("fe80::/10"))
_METADATA_ADDRESSES = (ipaddress.ip_address("fd00:ec2::254"), ipaddress.ip_address("100.100.100.200"))
_METADATA_HOSTS = frozenset({"metadata.google.internal"})


def check_endpoint_url(url: str) -> str:
    """The URL itself, or ValueError: http(s) only, no credentials, no link-local / metadata host.

    Only the URL's text is looked at here (no lookup, no connection); names are checked again
    after resolution when a session starts.
    """
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https"):
        raise ValueError(f"the endpoint URL must start with http:// or https://, got '{parts.scheme}:'")
    if parts.username is not None or parts.password is not None:
        raise ValueError("the endpoint URL may not hold credentials; use the standard AWS environment")
    if parts.query or parts.fragment or not parts.hostname:
        raise ValueError("the endpoint URL needs a host and may not hold a query or fragment")
    try:
        parts.port  # noqa: B018 - raises ValueError for a port that is not a number in range
    except ValueError:
        raise ValueError("the endpoint URL has an invalid port") from None
    if is_forbidden_host(parts.hostname):
        raise ValueError(
            f"the endpoint host '{parts.hostname}' is a link-local or cloud metadata address; refused"
        )
    return url


def literal_address(host: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    """The address a host name spells, also in the legacy forms inet_aton reads (2852039166, 0xa9.…)."""
    host = host.strip("[]").split("%", 1)[0]  # the zone of fe80::1%eth0 does not change the address
    try:
        return ipaddress.ip_address(host)
    except ValueError:
        pass
    try:
        return ipaddress.IPv4Address(socket.inet_aton(host))
    except (OSError, ValueError):
        return None


def is_forbidden_address(address: ipaddress.IPv4Address | ipaddress.IPv6Address) -> bool:
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    if address in _METADATA_ADDRESSES:
        return True
    return any(address.version == net.version and address in net for net in _LINK_LOCAL)


def is_forbidden_host(host: str) -> bool:
    if host.rstrip(".").lower() in _METADATA_HOSTS:
        return True
    address = literal_address(host)
    return address is not None and is_forbidden_address(address)


_MODELS_FILE_MAX_BYTES = 16 << 20


@dataclass(frozen=True)
class ModelSelection:
    """Model names (exact) and shell-style patterns (`*`, `?`, `[...]`), matched case-sensitively."""

    names: frozenset[str]
    patterns: tuple[re.Pattern[str], ...]

    @classmethod
    def parse(cls, value: str) -> ModelSelection | None:
        """From the setting: '' → None (every model); 'a,b*' → names and patterns; '@FILE' → the
        file's lines (blank lines and '#' comments skipped). ValueError names the problem."""
        value = value.strip()
        if not value:
            return None
        if value.startswith("@"):
            items = _read_lines(Path(value[1:]))
        else:
            items = [item.strip() for item in value.split(",")]
        items = [item for item in items if item]
        if not items:
            raise ValueError(f"models '{value[:80]}' selects nothing")
        bad = [item for item in items if not re.fullmatch(r"[A-Za-z0-9._\-*?\[\]!]+", item)]
        if bad:
            raise ValueError(f"models: '{bad[0][:64]}' is neither a model name nor a pattern")
        wildcard = [item for item in items if any(c in item for c in "*?[")]
        exact = frozenset(item for item in items if item not in wildcard)
        return cls(exact, tuple(re.compile(fnmatch.translate(p)) for p in dict.fromkeys(wildcard)))

    def matches(self, name: str) -> bool:
        return name in self.names or any(p.match(name) for p in self.patterns)

    def describe(self) -> str:
        return f"{len(self.names)} names and {len(self.patterns)} patterns selected"


def _read_lines(path: Path) -> list[str]:
    if not path.is_file():
        raise ValueError(f"models file {path} is not a file")
    if path.stat().st_size > _MODELS_FILE_MAX_BYTES:
        raise ValueError(f"models file {path} is larger than {_MODELS_FILE_MAX_BYTES} bytes")
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError:
        raise ValueError(f"models file {path} is not UTF-8 text") from None
    return [line.split("#", 1)[0].strip() for line in text.splitlines()]


class ObjectStoreOptions(BaseModel):
    """How an s3:// repository is reached and cached.

    Credentials come from the standard AWS environment (variables, profile files, roles), never
    from here, so no setting or error message holds a secret.
    """

    model_config = ConfigDict(extra="forbid", frozen=True, use_attribute_docstrings=True)

    cache_dir: Path
    """Local folder for downloaded models, laid out like a folder repository; one per repository."""
    cache_max_bytes: Annotated[int, Field(ge=0)] | None = None
    """Over this after a fetch, the least recently fetched models are deleted; None: no limit."""
    endpoint_url: str | None = None
    """An S3-compatible endpoint (MinIO, Ceph, moto); None: AWS S3 itself."""
    region: str | None = None
    """The bucket's region; None: from the AWS environment."""
    anonymous: bool = False
    """Send unsigned requests (public buckets); no credentials are looked up."""
    download_concurrency: Annotated[int, Field(ge=1, le=256)] = 8
    """Files downloaded at the same time within one fetch."""
    retries: Annotated[int, Field(ge=0, le=20)] = 3
    """Further attempts after a failed or slow request, with exponential back-off."""
    timeout_s: Annotated[float, Field(gt=0)] = 30.0
    """Limit on one request: connecting, listing, a read that stalls."""
    min_download_bytes_per_s: Annotated[int, Field(ge=1)] = 1 << 20
    """A download may take timeout_s + size / this before it counts as too slow and is retried."""
    backoff_s: Annotated[float, Field(ge=0)] = 0.5
    """First wait before a retry; doubled on each further attempt (with jitter), at most 30 s."""
    eviction_grace_s: Annotated[float, Field(ge=0)] = 300.0
    """A model fetched less than this long ago is not evicted: its load may still be opening files."""

    @field_validator("endpoint_url")
    @classmethod
    def _safe_endpoint(cls, url: str | None) -> str | None:
        return None if url is None else check_endpoint_url(url)


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
