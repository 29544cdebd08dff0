"""A model repository in S3-compatible object storage, mirrored model by model into a local cache.

`s3://bucket/prefix` holds the tree a folder repository holds. fetch() copies one model (config,
version folders, the weight blobs its manifests name) into CACHE/ with the same layout, then reads
that copy with FolderRepository, so both kinds of repository give the same ModelSource. Files whose
size and ETag are unchanged, and blobs already verified, are not downloaded again. s3fs (botocore,
aiohttp) is imported only when storage is first used.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import importlib.util
import logging
import os
import random
import re
import shutil
import socket
import tempfile
import threading
import time
from collections.abc import Awaitable, Callable, Collection, Coroutine, Iterable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, TypeVar
from urllib.parse import urlsplit

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from modelfleet.config import ObjectStoreOptions as ObjectStoreOptions  # re-exported
from modelfleet.config import check_endpoint_url as check_endpoint_url  # re-exported
from modelfleet.config import is_forbidden_address, literal_address
from modelfleet.errors import ModelLoadError, model_not_found
from modelfleet.repository.config import CONFIG_FILENAME, ModelConfig
from modelfleet.repository.folder import FolderRepository, ModelSource
from modelfleet.repository.names import inside, is_model_name
from modelfleet.repository.weights import BLOBS_DIR, blob_relpath, read_manifest

log = logging.getLogger(__name__)

T = TypeVar("T")
INDEX = ".modelfleet-index.json"  # per cached model: what was downloaded (size, ETag) and when
_BUCKET = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{1,61}[A-Za-z0-9]")
_VERSION_DIR = re.compile(r"[0-9]+")
_DIGEST = re.compile(r"[0-9a-f]{64}")
_BACKOFF_MAX_S = 30.0
# Cloud metadata services: an endpoint there would hand instance credentials to whoever reads errors.


# --- locations, endpoints and keys: checked before anything touches the network or a path ---


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
    """What the cache should hold of one model: config.yaml and the version folders' files."""

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
        if parts == (CONFIG_FILENAME,) and not marker:
            files[parts] = remote
        elif _VERSION_DIR.fullmatch(parts[0]) and (marker or len(parts) > 1):
            versions.add(parts[0])
            if not marker:
                files[parts] = remote
    folders = {parts[:i] for parts in files for i in range(1, len(parts))}
    clash = next((parts for parts in files if parts in folders), None)
    if clash is not None:
        raise ModelLoadError(f"object '{'/'.join(clash)}' is both a file and a folder in the model")
    return ModelPlan(files, frozenset(versions))


# --- the cache: a sidecar index per model, and which models and blobs to evict ---


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
    _write_atomically(model_dir / INDEX, index.model_dump_json().encode())


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


# --- storage: one session per repository, one retry and timeout policy ---


class _Incomplete(Exception):
    """A download that ended short or long: retried."""


@dataclass(frozen=True, slots=True)
class _Download:
    key: str  # the object's key
    dest: Path  # where it goes in the cache (its folder exists)
    what: str  # how messages name it
    size: int | None = None  # None: looked up first (blobs: their size is in no listing we made)
    sha256: str | None = None  # blobs: what their bytes must hash to


class _Storage:
    """The bucket through one s3fs session, on the event loop s3fs runs in its own thread.

    Only network waits happen on that loop (shared by every fetch); local files are prepared and
    read by the calling loader thread, hashing runs in a worker thread.
    """

    def __init__(self, fs: Any, bucket: str, options: ObjectStoreOptions, endpoint_url: str | None) -> None:
        self.fs = fs
        self.bucket = bucket
        self.options = options
        self.endpoint_url = endpoint_url
        self._slots: asyncio.Semaphore | None = None  # made on the loop, shared by all fetches

    def run(self, func: Callable[..., Coroutine[Any, Any, T]], *args: Any) -> T:
        """Blocking: func(*args) on the storage loop."""
        from fsspec.asyn import sync

        result: T = sync(self.fs.loop, func, *args)
        return result

    async def attempt(self, what: str, timeout_s: float, op: Callable[[], Awaitable[T]]) -> T:
        """op() with a timeout, retried with back-off; FileNotFoundError passes through."""
        attempts = self.options.retries + 1
        last: Exception | None = None
        for i in range(attempts):
            try:
                async with asyncio.timeout(timeout_s):
                    return await op()
            except (FileNotFoundError, ModelLoadError):
                raise
            except PermissionError:
                raise ModelLoadError(f"object storage: {what}: access denied") from None
            except Exception as exc:  # storage, network and timeouts alike: all worth another try
                last = exc
                log.debug("object storage: %s: attempt %d/%d failed: %r", what, i + 1, attempts, exc)
            if i + 1 < attempts:
                delay = min(self.options.backoff_s * 2**i, _BACKOFF_MAX_S)
                await asyncio.sleep(delay * random.uniform(0.5, 1.0))
        assert last is not None
        reason = self._describe(last, timeout_s)
        raise ModelLoadError(f"object storage: {what} failed after {attempts} attempt(s): {reason}")

    def _describe(self, exc: Exception, timeout_s: float) -> str:
        """The storage error, without local paths (credentials never appear in botocore messages)."""
        if isinstance(exc, TimeoutError):
            return f"no answer within {timeout_s:g} s"
        if isinstance(exc, OSError) and exc.errno is not None and exc.strerror:
            return exc.strerror  # str() would add the file name
        text = str(exc) or type(exc).__name__
        return text.replace(str(self.options.cache_dir), "<cache>")[:300]

    def path(self, key: str) -> str:
        return f"{self.bucket}/{key}" if key else self.bucket

    async def list_tree(self, key_prefix: str, what: str) -> dict[str, RemoteFile]:
        """Every object below key_prefix/, by key relative to it; {} when there is none."""
        await self._check_resolved_endpoint()
        start = self.path(key_prefix) + "/"
        try:
            found = await self.attempt(
                f"listing {what}", self.options.timeout_s, lambda: self.fs._find(start, detail=True)
            )
        except FileNotFoundError:  # s3fs lists a missing prefix as empty: this is the bucket
            raise self._no_bucket() from None
        return {
            name[len(start) :]: RemoteFile(int(info["size"]), str(info.get("ETag", "")))
            for name, info in found.items()
            if name.startswith(start)
        }

    async def list_dir(self, key_prefix: str, what: str) -> list[tuple[str, str, RemoteFile]]:
        """(name, "file" or "directory", size and ETag) directly below key_prefix/; [] when none."""
        await self._check_resolved_endpoint()
        start = self.path(key_prefix) + "/"
        timeout_s = self.options.timeout_s
        try:
            entries = await self.attempt(
                f"listing {what}", timeout_s, lambda: self.fs._ls(start, detail=True)
            )
        except FileNotFoundError:
            # s3fs says the same for an empty prefix and a missing bucket; only the first is fine
            if not await self.attempt(
                "looking up the bucket", timeout_s, lambda: self.fs._exists(self.bucket)
            ):
                raise self._no_bucket() from None
            return []
        return [
            (
                e["name"][len(start) :].rstrip("/"),
                e["type"],
                RemoteFile(int(e["size"]), str(e.get("ETag", ""))),
            )
            for e in entries
            if e["name"].startswith(start) and e["name"].rstrip("/") != start.rstrip("/")
        ]

    async def download_all(self, downloads: list[_Download], done: list[_Download]) -> None:
        """Download side by side (bounded); each one that lands is appended to `done`."""
        if self._slots is None:
            self._slots = asyncio.Semaphore(self.options.download_concurrency)
        slots = self._slots

        async def one(download: _Download) -> None:
            async with slots:
                await self._download(download)
            done.append(download)

        await _all(one(d) for d in downloads)

    async def _download(self, d: _Download) -> None:
        """Through a temporary file beside the destination, renamed once size (and hash) match."""
        try:
            size = d.size
            if size is None:
                info = await self.attempt(
                    f"looking up {d.what}", self.options.timeout_s, lambda: self.fs._info(self.path(d.key))
                )
                size = int(info["size"])
            timeout_s = self.options.timeout_s + size / self.options.min_download_bytes_per_s
            await self.attempt(f"downloading {d.what}", timeout_s, lambda: self._download_once(d, size))
        except FileNotFoundError:
            raise ModelLoadError(f"{d.what} is missing from the repository") from None

    async def _download_once(self, d: _Download, size: int) -> None:
        fd, tmp = tempfile.mkstemp(dir=d.dest.parent, prefix=".tmp-")
        os.close(fd)
        try:
            await self.fs._get_file(self.path(d.key), tmp)
            await asyncio.to_thread(_settle, Path(tmp), d.dest, size, d.sha256)
        finally:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)  # after a failure, a timeout or a cancellation alike

    async def _check_resolved_endpoint(self) -> None:
        """Refuse an endpoint *name* that resolves to a link-local or metadata address."""
        if self.endpoint_url is None:
            return
        parts = urlsplit(self.endpoint_url)
        host = parts.hostname or ""
        if literal_address(host) is not None:
            return  # checked at construction
        try:
            async with asyncio.timeout(self.options.timeout_s):
                infos = await asyncio.get_running_loop().getaddrinfo(
                    host, parts.port or 443, type=socket.SOCK_STREAM
                )
        except (OSError, TimeoutError):
            return  # the connection attempt fails the same way and reports it
        for *_, sockaddr in infos:
            address = literal_address(str(sockaddr[0]))
            if address is not None and is_forbidden_address(address):
                raise ModelLoadError(
                    f"object storage: endpoint host '{host}' resolves to a link-local or metadata address; refused"
                )

    def _no_bucket(self) -> ModelLoadError:
        return ModelLoadError(f"object storage: bucket '{self.bucket}' does not exist or is not visible")


def _settle(tmp: Path, dest: Path, size: int, sha256: str | None) -> None:
    """Rename a finished download into place once its size (and for a blob its hash) is right."""
    got = tmp.stat().st_size
    if got != size:
        raise _Incomplete(f"received {got} bytes where the listing says {size}")
    if sha256 is not None:
        with tmp.open("rb") as f:
            if hashlib.file_digest(f, "sha256").hexdigest() != sha256:
                raise ModelLoadError(
                    f"weight blob {sha256[:12]}… does not match its SHA-256: "
                    "the copy in object storage is corrupt"
                )
    os.replace(tmp, dest)


def _write_atomically(path: Path, data: bytes) -> None:
    fd, name = tempfile.mkstemp(dir=path.parent, prefix=".tmp-")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.replace(name, path)
    finally:
        Path(name).unlink(missing_ok=True)


async def _all(coroutines: Iterable[Coroutine[Any, Any, object]]) -> None:
    """Run side by side; the first failure cancels the rest and is raised as itself."""
    try:
        async with asyncio.TaskGroup() as group:
            for coroutine in coroutines:
                group.create_task(coroutine)
    except BaseExceptionGroup as group_error:
        first: BaseException = group_error
        while isinstance(first, BaseExceptionGroup):
            first = first.exceptions[0]
        raise first from None


# --- the repository ---


@dataclass(slots=True)
class _Fetched:
    files: int = 0
    blobs: int = 0
    nbytes: int = 0


class ObjectStoreRepository:
    """Models under s3://bucket/prefix, fetched into a local cache folder (see the module docstring).

    Nothing touches the network before list_models(), config() or fetch(); all three block (loader
    threads). Fetches of different models run side by side and share one storage session.
    """

    def __init__(
        self, location: str, options: ObjectStoreOptions, *, clock: Callable[[], float] = time.time
    ) -> None:
        self.bucket, self.prefix = parse_location(location)
        self.options = options
        # botocore also takes the endpoint from the environment; it gets the same check
        self.endpoint_url = options.endpoint_url or _endpoint_from_environment()
        if importlib.util.find_spec("s3fs") is None:
            raise ValueError("s3:// repositories need the s3 extra: pip install 'modelfleet[s3]'")
        self._clock = clock
        self._lock = threading.Lock()  # guards the four below and eviction
        self._storage: _Storage | None = None
        self._model_locks: dict[str, threading.Lock] = {}  # one fetch at a time per model
        self._fetching: dict[str, set[str]] = {}  # model being fetched -> blobs it needs

    def describe(self) -> str:
        where = f"s3://{self.bucket}/{self.prefix}".rstrip("/")
        return f"{where} (endpoint {self.endpoint_url})" if self.endpoint_url else where

    def list_models(self) -> list[str]:
        """The valid model names directly under the prefix ('.blobs' and invalid names skipped)."""
        storage = self._session()
        entries = storage.run(storage.list_dir, self.prefix, "the repository")
        names = []
        for folder in sorted(name for name, kind, _ in entries if kind == "directory"):
            if folder.startswith("."):
                continue
            if not is_model_name(folder):
                log.warning("skipping folder %r in the repository: not a valid model name", folder[:200])
                continue
            names.append(folder)
        return names

    def fetch(self, name: str) -> ModelSource:
        """Blocking. NotFound when absent, ModelLoadError when unusable or storage fails."""
        if not is_model_name(name):
            raise model_not_found(name)
        cache = self._cache_root()
        start = time.monotonic()
        with self._model_lock(name), self._being_fetched(name):
            fetched = _Fetched()
            self._mirror_files(cache, name, fetched)
            self._mirror_blobs(cache, name, fetched)
            # The cache now holds the model as a folder repository would: read it the same way.
            source = FolderRepository(cache).fetch(name)
            self._evict_over_limit(cache, just_fetched=name)
        log.info(
            "fetched model %s from %s in %.2f s: %d file(s) and %d blob(s) downloaded, %d bytes",
            *(name, self.describe(), time.monotonic() - start),
            *(fetched.files, fetched.blobs, fetched.nbytes),
        )
        return source

    def config(self, name: str) -> ModelConfig:
        """Blocking, cheap: one listing of the model's folder and config.yaml when it changed."""
        if not is_model_name(name):
            raise model_not_found(name)
        cache = self._cache_root()
        with self._model_lock(name), self._being_fetched(name):
            storage = self._session()
            entries = storage.run(storage.list_dir, self._key(name), f"model '{name}'")
            if not entries:
                raise model_not_found(name)
            wanted = {n: remote for n, kind, remote in entries if n == CONFIG_FILENAME and kind == "file"}
            model_dir = inside(cache, name)
            model_dir.mkdir(exist_ok=True)
            previous = read_index(model_dir)
            present = {k: v for k, v in previous.files.items() if k != CONFIG_FILENAME}
            try:
                if not wanted:
                    inside(cache, name, CONFIG_FILENAME).unlink(missing_ok=True)
                self._download_changed(cache, name, wanted, previous.files, present, _Fetched())
            finally:
                write_index(model_dir, previous.model_copy(update={"files": present}))
            return FolderRepository(cache).config(name)

    # --- one model into the cache ---

    def _mirror_files(self, cache: Path, name: str, fetched: _Fetched) -> None:
        """config.yaml and the version folders, as listed; unchanged files (size, ETag) stay."""
        storage = self._session()
        listing = storage.run(storage.list_tree, self._key(name), f"model '{name}'")
        model_dir = inside(cache, name)
        if not listing:
            shutil.rmtree(model_dir, ignore_errors=True)  # gone from the bucket: gone from the cache
            raise model_not_found(name)
        plan = plan_model_files(listing)
        model_dir.mkdir(exist_ok=True)
        previous = read_index(model_dir)
        _prune(model_dir, plan)
        for version in plan.versions:
            inside(cache, name, version).mkdir(exist_ok=True)
        wanted = {"/".join(parts): remote for parts, remote in plan.files.items()}
        present: dict[str, IndexEntry] = {}
        try:
            self._download_changed(cache, name, wanted, previous.files, present, fetched)
        finally:  # what did arrive is remembered, also when another file failed
            index = CacheIndex(fetched_at=self._clock(), files=present, blobs=previous.blobs)
            write_index(model_dir, index)

    def _download_changed(
        self,
        cache: Path,
        name: str,
        wanted: Mapping[str, RemoteFile],
        known: Mapping[str, IndexEntry],
        present: dict[str, IndexEntry],
        fetched: _Fetched,
    ) -> None:
        """Download the wanted files whose size or ETag differ from what the cache holds.

        `present` gains every wanted file now in place, also when another one failed.
        """
        todo: dict[str, _Download] = {}
        for relkey, remote in wanted.items():
            dest = inside(cache, name, *relkey.split("/"))
            entry = IndexEntry(size=remote.size, etag=remote.etag)
            if known.get(relkey) == entry and dest.is_file() and dest.stat().st_size == remote.size:
                present[relkey] = entry
                continue
            dest.parent.mkdir(parents=True, exist_ok=True)
            todo[relkey] = _Download(self._key(name, relkey), dest, f"'{name}/{relkey}'", remote.size)
        if not todo:
            return
        storage = self._session()
        done: list[_Download] = []
        try:
            storage.run(storage.download_all, list(todo.values()), done)
        finally:
            landed = {d.key for d in done}
            for relkey, download in todo.items():
                if download.key in landed:
                    present[relkey] = IndexEntry(size=wanted[relkey].size, etag=wanted[relkey].etag)
            fetched.files += len(done)
            fetched.nbytes += sum(d.size or 0 for d in done)

    def _mirror_blobs(self, cache: Path, name: str, fetched: _Fetched) -> None:
        """Every blob the version manifests reference; blobs in the cache were verified already."""
        model_dir = inside(cache, name)
        manifests = [read_manifest(inside(cache, name, v.name)) for v in _version_dirs(model_dir)]
        digests = sorted({d for m in manifests if m is not None for d in m.blobs})
        with self._lock:  # before looking at the blobs, so that no eviction removes them meanwhile
            self._fetching[name] = set(digests)
        write_index(model_dir, read_index(model_dir).model_copy(update={"blobs": digests}))
        todo = []
        for digest in digests:
            dest = inside(cache, blob_relpath(digest))
            if not dest.is_file():  # only blobs whose hash matched were ever renamed into place
                dest.parent.mkdir(parents=True, exist_ok=True)
                what = f"weight blob {digest[:12]}…"
                todo.append(_Download(self._key(blob_relpath(digest)), dest, what, sha256=digest))
        if todo:
            storage = self._session()
            done: list[_Download] = []
            storage.run(storage.download_all, todo, done)
            fetched.blobs += len(done)
            fetched.nbytes += sum(d.dest.stat().st_size for d in done)

    # --- cache size ---

    def _evict_over_limit(self, cache: Path, just_fetched: str) -> None:
        """Delete the least recently fetched models and unreferenced blobs while over the limit.

        Deleting the files of a model that is loaded is fine on Linux: open files and memory maps
        keep their data until closed (their disk space too, so the disk may briefly hold more than
        the limit). A later load of that model fetches it again.
        """
        limit = self.options.cache_max_bytes
        if limit is None:
            return
        with self._lock:
            models = [_cached_model(entry) for entry in _model_dirs(cache)]
            plan = plan_eviction(
                models,
                _blob_sizes(cache),
                limit,
                keep={just_fetched, *self._fetching},
                keep_blobs=set().union(*self._fetching.values()),
                now=self._clock(),
                grace_s=self.options.eviction_grace_s,
            )
            for model in plan.models:
                shutil.rmtree(cache / model, ignore_errors=True)
            for digest in plan.blobs:
                (cache / blob_relpath(digest)).unlink(missing_ok=True)
        if plan.models or plan.blobs:
            log.info(
                "model cache over its limit (%d > %d bytes): evicted models %s and %d blob(s), now %d bytes",
                *(plan.bytes_before, limit, plan.models, len(plan.blobs), plan.bytes_after),
            )
        if plan.bytes_after > limit:
            log.warning(
                "model cache holds %d bytes, over its limit of %d: the rest is in use or fetched recently",
                *(plan.bytes_after, limit),
            )

    # --- plumbing ---

    def _key(self, *parts: str) -> str:
        return "/".join(p for p in (self.prefix, *parts) if p)

    def _cache_root(self) -> Path:
        self.options.cache_dir.mkdir(parents=True, exist_ok=True)
        return self.options.cache_dir.resolve()

    def _model_lock(self, name: str) -> threading.Lock:
        with self._lock:
            return self._model_locks.setdefault(name, threading.Lock())

    @contextlib.contextmanager
    def _being_fetched(self, name: str) -> Iterator[None]:
        with self._lock:
            self._fetching[name] = set()
        try:
            yield
        finally:
            with self._lock:
                del self._fetching[name]

    def _session(self) -> _Storage:
        """The storage session, opened on first use (no connection is made before a request)."""
        with self._lock:
            if self._storage is None:
                import s3fs  # the heavy part (botocore, aiohttp) loads only now

                fs = s3fs.S3FileSystem(
                    anon=self.options.anonymous,
                    endpoint_url=self.endpoint_url,
                    client_kwargs={"region_name": self.options.region} if self.options.region else {},
                    config_kwargs={
                        "connect_timeout": self.options.timeout_s,
                        "read_timeout": self.options.timeout_s,
                        "retries": {"total_max_attempts": 1},  # one retry policy: ours
                        "max_pool_connections": max(10, self.options.download_concurrency),
                    },
                    skip_instance_cache=True,  # this repository's own session and options
                    use_listings_cache=False,  # every fetch sees the bucket as it is now
                )
                fs.retries = 1  # s3fs would otherwise retry up to 5 times inside each of our attempts
                self._storage = _Storage(fs, self.bucket, self.options, self.endpoint_url)
            return self._storage


def _endpoint_from_environment() -> str | None:
    for variable in ("AWS_ENDPOINT_URL_S3", "AWS_ENDPOINT_URL"):
        url = os.environ.get(variable)
        if url:
            try:
                return check_endpoint_url(url)
            except ValueError as exc:
                raise ValueError(f"{variable}: {exc}") from None
    return None


def _prune(model_dir: Path, plan: ModelPlan) -> None:
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


def _version_dirs(model_dir: Path) -> list[Path]:
    return [p for p in model_dir.iterdir() if _VERSION_DIR.fullmatch(p.name) and p.is_dir()]


def _model_dirs(cache: Path) -> list[Path]:
    return [p for p in cache.iterdir() if is_model_name(p.name) and p.is_dir() and not p.is_symlink()]


def _cached_model(model_dir: Path) -> CachedModel:
    index = read_index(model_dir)
    nbytes = sum(_file_bytes(Path(top) / f) for top, _, files in os.walk(model_dir) for f in files)
    return CachedModel(model_dir.name, index.fetched_at, nbytes, frozenset(index.blobs))


def _file_bytes(path: Path) -> int:
    """A file's size; 0 for one gone since it was listed (a fetch's temporary file, renamed)."""
    try:
        return path.lstat().st_size
    except FileNotFoundError:
        return 0


def _blob_sizes(cache: Path) -> dict[str, int]:
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
