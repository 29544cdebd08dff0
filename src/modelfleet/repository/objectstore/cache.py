"""The local mirror's bookkeeping: a sidecar index per cached model, its size on disk, and which
models and blobs to evict when the cache is over its limit (pure planning)."""

from __future__ import annotations

import os
import re
import tempfile
from collections.abc import Collection, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from modelfleet.repository.names import is_model_name
from modelfleet.repository.objectstore.keys import VERSION_DIR, ModelPlan
from modelfleet.repository.weights import BLOBS_DIR

INDEX = ".modelfleet-index.json"  # per cached model: what was downloaded (size, ETag) and when
_DIGEST = re.compile(r"[0-9a-f]{64}")


class IndexEntry(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    size: int
    etag: str


class CacheIndex(BaseModel):
    """CACHE/NAME/.modelfleet-index.json: the files downloaded (with their ETags), blobs, last fetch."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    format: Literal[1] = 1
    fetched_at: float = 0.0
    """Wall-clock time of the last fetch: what least-recently-fetched eviction orders by."""
    files: dict[str, IndexEntry] = Field(default_factory=dict)
    blobs: list[str] = Field(default_factory=list)


def read_index(model_dir: Path) -> CacheIndex:
    """The model's index; an empty one when missing or unreadable (everything is downloaded again)."""
    try:
        return CacheIndex.model_validate_json((model_dir / INDEX).read_bytes())
    except (OSError, ValidationError):
        return CacheIndex()


def write_index(model_dir: Path, index: CacheIndex) -> None:
    write_atomically(model_dir / INDEX, index.model_dump_json().encode())


@dataclass(frozen=True, slots=True)
class CachedModel:
    name: str
    fetched_at: float
    nbytes: int  # its files in the cache, blobs not included
    blobs: frozenset[str]


@dataclass(frozen=True, slots=True)
class EvictionPlan:
    models: list[str]
    blobs: list[str]
    bytes_before: int
    bytes_after: int


def plan_eviction(
    models: Iterable[CachedModel],
    blob_sizes: Mapping[str, int],
    limit_bytes: int,
    keep: Collection[str],
    keep_blobs: Collection[str],
    now: float,
    grace_s: float,
) -> EvictionPlan:
    """Least recently fetched models first, each with the blobs no remaining model references.

    Nothing happens under the limit. Models in `keep` (being fetched) and fetched within `grace_s`
    stay, as do `keep_blobs`; blobs nothing references go first.
    """
    remaining = {m.name: m for m in models}
    total = sum(m.nbytes for m in remaining.values()) + sum(blob_sizes.values())
    before = total
    evicted: list[str] = []
    dropped: list[str] = []
    if total <= limit_bytes:
        return EvictionPlan(evicted, dropped, before, total)

    def drop_unreferenced() -> int:
        used = set(keep_blobs).union(*(m.blobs for m in remaining.values()))
        gone = [d for d in blob_sizes if d not in used and d not in dropped]
        dropped.extend(gone)
        return sum(blob_sizes[d] for d in gone)

    total -= drop_unreferenced()
    candidates = sorted(
        (m for m in remaining.values() if m.name not in keep and now - m.fetched_at >= grace_s),
        key=lambda m: (m.fetched_at, m.name),
    )
    for model in candidates:
        if total <= limit_bytes:
            break
        del remaining[model.name]
        evicted.append(model.name)
        total -= model.nbytes + drop_unreferenced()
    return EvictionPlan(evicted, dropped, before, total)


def write_atomically(path: Path, data: bytes) -> None:
    fd, name = tempfile.mkstemp(dir=path.parent, prefix=".tmp-")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.replace(name, path)
    finally:
        Path(name).unlink(missing_ok=True)


def prune(model_dir: Path, plan: ModelPlan) -> None:
    """Remove cached files the listing no longer has (and leftover temporary files), empty folders too."""
    for dirpath, dirnames, filenames in os.walk(model_dir, topdown=False):
        here = Path(dirpath)
        rel = here.relative_to(model_dir).parts
        links = [d for d in dirnames if (here / d).is_symlink()]  # never made by us; not followed
        for filename in (*filenames, *links):
            if (*rel, filename) not in plan.files and not (not rel and filename == INDEX):
                (here / filename).unlink()
        if rel and not (len(rel) == 1 and rel[0] in plan.versions) and not any(here.iterdir()):
            here.rmdir()


def version_dirs(model_dir: Path) -> list[Path]:
    return [p for p in model_dir.iterdir() if VERSION_DIR.fullmatch(p.name) and p.is_dir()]


def model_dirs(cache: Path) -> list[Path]:
    return [p for p in cache.iterdir() if is_model_name(p.name) and p.is_dir() and not p.is_symlink()]


def cached_model(model_dir: Path) -> CachedModel:
    index = read_index(model_dir)
    nbytes = sum(_file_bytes(Path(top) / f) for top, _, files in os.walk(model_dir) for f in files)
    return CachedModel(model_dir.name, index.fetched_at, nbytes, frozenset(index.blobs))


def _file_bytes(path: Path) -> int:
    """A file's size; 0 for one gone since it was listed (a fetch's temporary file, renamed)."""
    try:
        return path.lstat().st_size
    except FileNotFoundError:
        return 0


def blob_sizes(cache: Path) -> dict[str, int]:
    """Blobs in the cache by digest (temporary files of downloads in progress are not counted)."""
    blobs_dir = cache / BLOBS_DIR
    if not blobs_dir.is_dir():
        return {}
    return {
        path.name: path.stat().st_size
        for folder in blobs_dir.iterdir()
        if folder.is_dir()
        for path in folder.iterdir()
        if _DIGEST.fullmatch(path.name) and path.is_file()
    }
