"""ServerSettings: every server knob, typed and documented, read once from MODELFLEET_* env and CLI.

Parsed at the edge (the CLI) and passed down; nothing else reads the environment.
"""

from __future__ import annotations

from enum import StrEnum
from pathlib import Path
from typing import Annotated

from pydantic import Field, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict


class StartupLoad(StrEnum):
    ALL = "all"  # load every model of the repository at start
    NONE = "none"  # load nothing; models are loaded through the repository API


class ServerSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="MODELFLEET_", extra="forbid", frozen=True)

    repository: Path
    """Folder holding the models: NAME/config.yaml and NAME/VERSION/model files."""
    host: str = "127.0.0.1"
    """Address the HTTP server binds to."""
    http_port: Annotated[int, Field(ge=0, le=65535)] = 8000
    """HTTP port (0 picks a free one)."""
    startup_load: StartupLoad = StartupLoad.ALL
    """Which models are loaded at start."""
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
    """Model loads running at the same time."""
    load_timeout_s: Annotated[float, Field(gt=0)] = 300.0
    """A load taking longer fails with this reason."""
    shutdown_timeout_s: Annotated[float, Field(gt=0)] = 20.0
    """On SIGTERM, how long in-flight requests may take to finish."""
    log_level: str = "info"
    """Python logging level name."""

    @model_validator(mode="after")
    def _repository_exists(self) -> ServerSettings:
        if not self.repository.is_dir():
            raise ValueError(f"repository {self.repository} is not a folder")
        return self
