"""Object-storage locations and keys, checked before anything touches the network or a path, and
which of a model's objects a folder repository would use."""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass

from modelfleet.errors import ModelLoadError
from modelfleet.repository.config import CONFIG_FILENAME
from modelfleet.repository.triton import CONFIG_PBTXT

CONFIG_FILES = (CONFIG_FILENAME, CONFIG_PBTXT)
"""A model folder's own files: config.yaml, else Triton's config.pbtxt (folder.py reads them so)."""
_BUCKET = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{1,61}[A-Za-z0-9]")
VERSION_DIR = re.compile(r"[0-9]+")


def parse_location(location: str) -> tuple[str, str]:
    """`s3://bucket/some/prefix/` -> ("bucket", "some/prefix"); ValueError for anything else."""
    scheme, sep, rest = location.partition("://")
    if not sep or scheme.lower() != "s3":
        shown = f"{scheme}://…" if sep else "a path"
        raise ValueError(f"object storage locations look like s3://bucket/prefix, got {shown}")
    if not rest.isprintable() or any(c in rest for c in "?#\\"):
        raise ValueError("the s3:// location may not hold '?', '#', '\\' or control characters")
    bucket, _, prefix = rest.partition("/")
    if not _BUCKET.fullmatch(bucket):
        raise ValueError(f"'{bucket[:64]}' is not a bucket name (3-63 letters, digits, '.', '_', '-')")
    prefix = prefix.strip("/")
    if prefix and any(part in ("", ".", "..") for part in prefix.split("/")):
        raise ValueError("the s3:// prefix may not hold empty, '.' or '..' parts")
    return bucket, prefix


def key_parts(relkey: str) -> tuple[str, ...]:
    """The local path parts of an object key below a model's prefix.

    A key that could leave the model's cache folder ('..', '.', empty parts, a leading '/',
    backslashes, control characters) is refused: the model is unusable, not the request bad.
    """
    parts = tuple(relkey.split("/"))
    if "\\" in relkey or not relkey.isprintable() or any(p in ("", ".", "..") for p in parts):
        shown = relkey[:80] if relkey.isprintable() else repr(relkey[:80])
        raise ModelLoadError(f"the model holds an object key that is not a safe relative path: '{shown}'")
    return parts


@dataclass(frozen=True, slots=True)
class RemoteFile:
    size: int
    etag: str


@dataclass(frozen=True, slots=True)
class ModelPlan:
    """What the cache should hold of one model: its config files and the version folders' files."""

    files: dict[tuple[str, ...], RemoteFile]
    versions: frozenset[str]  # version folder names, including empty ones ("1/" marker objects)


def plan_model_files(listing: Mapping[str, RemoteFile]) -> ModelPlan:
    """Choose from a model's listing (keys relative to NAME/) what a folder repository would use."""
    files: dict[tuple[str, ...], RemoteFile] = {}
    versions: set[str] = set()
    for relkey, remote in listing.items():
        marker = relkey.endswith("/")  # a zero-byte "folder" object some tools create
        stripped = relkey.rstrip("/") if marker else relkey
        if not stripped:
            continue
        parts = key_parts(stripped)
        if len(parts) == 1 and parts[0] in CONFIG_FILES and not marker:
            files[parts] = remote
        elif VERSION_DIR.fullmatch(parts[0]) and (marker or len(parts) > 1):
            versions.add(parts[0])
            if not marker:
                files[parts] = remote
    folders = {parts[:i] for parts in files for i in range(1, len(parts))}
    clash = next((parts for parts in files if parts in folders), None)
    if clash is not None:
        raise ModelLoadError(f"object '{'/'.join(clash)}' is both a file and a folder in the model")
    return ModelPlan(files, frozenset(versions))
