"""The storage client: one s3fs session per repository, one retry, timeout and back-off policy,
downloads verified (size, and SHA-256 for blobs) before they are renamed into place."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import os
import random
import socket
import tempfile
from collections.abc import Awaitable, Callable, Coroutine, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import urlsplit

from modelfleet.config import ObjectStoreOptions, check_endpoint_url, is_forbidden_address, literal_address
from modelfleet.errors import ModelLoadError
from modelfleet.repository.objectstore.keys import RemoteFile

log = logging.getLogger(__name__)

T = TypeVar("T")
_BACKOFF_MAX_S = 30.0


class Incomplete(Exception):
    """A download that ended short or long: retried."""


@dataclass(frozen=True, slots=True)
class Download:
    key: str  # the object's key
    dest: Path  # where it goes in the cache (its folder exists)
    what: str  # how messages name it
    size: int | None = None  # None: looked up first (blobs: their size is in no listing we made)
    sha256: str | None = None  # blobs: what their bytes must hash to


class Storage:
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

    async def download_all(self, downloads: list[Download], done: list[Download]) -> None:
        """Download side by side (bounded); each one that lands is appended to `done`."""
        if self._slots is None:
            self._slots = asyncio.Semaphore(self.options.download_concurrency)
        slots = self._slots

        async def one(download: Download) -> None:
            async with slots:
                await self._download(download)
            done.append(download)

        await run_all(one(d) for d in downloads)

    async def _download(self, d: Download) -> None:
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

    async def _download_once(self, d: Download, size: int) -> None:
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
        raise Incomplete(f"received {got} bytes where the listing says {size}")
    if sha256 is not None:
        with tmp.open("rb") as f:
            if hashlib.file_digest(f, "sha256").hexdigest() != sha256:
                raise ModelLoadError(
                    f"weight blob {sha256[:12]}… does not match its SHA-256: "
                    "the copy in object storage is corrupt"
                )
    os.replace(tmp, dest)


async def run_all(coroutines: Iterable[Coroutine[Any, Any, object]]) -> None:
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


def endpoint_from_environment() -> str | None:
    for variable in ("AWS_ENDPOINT_URL_S3", "AWS_ENDPOINT_URL"):
        url = os.environ.get(variable)
        if url:
            try:
                return check_endpoint_url(url)
            except ValueError as exc:
                raise ValueError(f"{variable}: {exc}") from None
    return None
