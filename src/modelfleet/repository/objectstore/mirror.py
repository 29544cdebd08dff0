"""A model repository in S3-compatible object storage, mirrored model by model into a local cache."""

from __future__ import annotations

import contextlib
import importlib.util
import logging
import shutil
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

from modelfleet.config import ObjectStoreOptions
from modelfleet.errors import model_not_found
from modelfleet.repository.config import ModelConfig
from modelfleet.repository.folder import FolderRepository, ModelSource
from modelfleet.repository.names import inside, is_model_name
from modelfleet.repository.objectstore.cache import (
    CacheIndex,
    IndexEntry,
    blob_sizes,
    cached_model,
    model_dirs,
    plan_eviction,
    prune,
    read_index,
    version_dirs,
    write_index,
)
from modelfleet.repository.objectstore.keys import CONFIG_FILES, RemoteFile, parse_location, plan_model_files
from modelfleet.repository.objectstore.storage import Download, Storage, endpoint_from_environment
from modelfleet.repository.weights import blob_relpath, read_manifest

log = logging.getLogger(__name__)


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
        self.endpoint_url = options.endpoint_url or endpoint_from_environment()
        if importlib.util.find_spec("s3fs") is None:
            raise ValueError("s3:// repositories need the s3 extra: pip install 'modelfleet[s3]'")
        self._clock = clock
        self._lock = threading.Lock()  # guards the four below and eviction
        self._storage: Storage | None = None
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
        """Blocking, cheap: one listing of the model's folder, and its config files (config.yaml,
        Triton's config.pbtxt) when they changed."""
        if not is_model_name(name):
            raise model_not_found(name)
        cache = self._cache_root()
        with self._model_lock(name), self._being_fetched(name):
            storage = self._session()
            entries = storage.run(storage.list_dir, self._key(name), f"model '{name}'")
            if not entries:
                raise model_not_found(name)
            wanted = {n: remote for n, kind, remote in entries if n in CONFIG_FILES and kind == "file"}
            model_dir = inside(cache, name)
            model_dir.mkdir(exist_ok=True)
            previous = read_index(model_dir)
            present = {k: v for k, v in previous.files.items() if k not in CONFIG_FILES}
            try:
                for gone in set(CONFIG_FILES) - set(wanted):
                    inside(cache, name, gone).unlink(missing_ok=True)
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
        prune(model_dir, plan)
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
        todo: dict[str, Download] = {}
        for relkey, remote in wanted.items():
            dest = inside(cache, name, *relkey.split("/"))
            entry = IndexEntry(size=remote.size, etag=remote.etag)
            if known.get(relkey) == entry and dest.is_file() and dest.stat().st_size == remote.size:
                present[relkey] = entry
                continue
            dest.parent.mkdir(parents=True, exist_ok=True)
            todo[relkey] = Download(self._key(name, relkey), dest, f"'{name}/{relkey}'", remote.size)
        if not todo:
            return
        storage = self._session()
        done: list[Download] = []
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
        manifests = [read_manifest(inside(cache, name, v.name)) for v in version_dirs(model_dir)]
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
                todo.append(Download(self._key(blob_relpath(digest)), dest, what, sha256=digest))
        if todo:
            storage = self._session()
            done: list[Download] = []
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
            models = [cached_model(entry) for entry in model_dirs(cache)]
            plan = plan_eviction(
                models,
                blob_sizes(cache),
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

    def _session(self) -> Storage:
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
                self._storage = Storage(fs, self.bucket, self.options, self.endpoint_url)
            return self._storage
