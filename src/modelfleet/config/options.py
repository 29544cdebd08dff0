"""Option types of the server's settings: which models a server serves (`--models`), and how an
s3:// repository is reached and cached."""

from __future__ import annotations

import fnmatch
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field, field_validator

from modelfleet.config.values import check_endpoint_url

DEFAULT_S3_CACHE = Path.home() / ".cache" / "modelfleet" / "s3"


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
