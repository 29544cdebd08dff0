"""The storage client's retry policy and download checks, against a stand-in for s3fs (no network)."""

import asyncio
import errno
import hashlib
import os
from pathlib import Path

import pytest

from modelfleet.errors import ModelLoadError
from modelfleet.repository.objectstore import (
    Download,
    Storage,
)
from tests.unit.repository.objectstore.support import options


class FakeFs:
    """Answers _get_file with the next payload (or raises it), _info with a size."""

    def __init__(self, *payloads: bytes | Exception, size: int = 4) -> None:
        self.payloads = list(payloads)
        self.size = size
        self.calls = 0

    async def _get_file(self, rpath: str, lpath: str) -> None:
        payload = self.payloads[min(self.calls, len(self.payloads) - 1)]
        self.calls += 1
        if isinstance(payload, Exception):
            raise payload
        await asyncio.to_thread(Path(lpath).write_bytes, payload)

    async def _info(self, path: str) -> dict[str, int]:
        if isinstance(self.payloads[0], FileNotFoundError):
            raise self.payloads[0]
        return {"size": self.size}


def storage(tmp_path: Path, fs: FakeFs) -> Storage:
    return Storage(fs, "bucket", options(tmp_path, retries=2, backoff_s=0), None)


async def download(tmp_path: Path, fs: FakeFs, size: int | None = 4, sha256: str | None = None) -> Path:
    dest = tmp_path / "m" / "1" / "model.onnx"
    dest.parent.mkdir(parents=True, exist_ok=True)
    await storage(tmp_path, fs).download_all(
        [Download("p/m/1/model.onnx", dest, "'m/1/model.onnx'", size, sha256)], []
    )
    return dest


async def test_a_short_download_is_retried_then_used(tmp_path: Path) -> None:
    fs = FakeFs(b"abc", b"abcd")
    dest = await download(tmp_path, fs)
    assert (fs.calls, dest.read_bytes(), os.listdir(dest.parent)) == (2, b"abcd", ["model.onnx"])


async def test_a_download_that_never_matches_its_size_fails_and_leaves_nothing(tmp_path: Path) -> None:
    fs = FakeFs(b"abc")
    with pytest.raises(
        ModelLoadError,
        match="downloading 'm/1/model.onnx' failed after 3 attempt\\(s\\): received 3 bytes where the listing says 4",
    ):
        await download(tmp_path, fs)
    assert fs.calls == 3 and os.listdir(tmp_path / "m" / "1") == []


async def test_a_blob_not_matching_its_hash_is_not_retried(tmp_path: Path) -> None:
    good = hashlib.sha256(b"abcd").hexdigest()
    fs = FakeFs(b"abce")
    with pytest.raises(ModelLoadError, match=f"weight blob {good[:12]}… does not match its SHA-256"):
        await download(tmp_path, fs, size=None, sha256=good)
    assert fs.calls == 1 and os.listdir(tmp_path / "m" / "1") == []
    dest = await download(tmp_path, FakeFs(b"abcd"), size=None, sha256=good)
    assert dest.read_bytes() == b"abcd"


async def test_missing_and_forbidden_objects_are_not_retried(tmp_path: Path) -> None:
    with pytest.raises(ModelLoadError, match="'m/1/model.onnx' is missing from the repository"):
        await download(tmp_path, FakeFs(FileNotFoundError("p/m/1/model.onnx"), size=4), size=None)
    fs = FakeFs(PermissionError("Access Denied"))
    with pytest.raises(ModelLoadError, match="downloading 'm/1/model.onnx': access denied"):
        await download(tmp_path, fs)
    assert fs.calls == 1


async def test_errors_name_no_local_paths(tmp_path: Path) -> None:
    inner = tmp_path / "m" / "1" / ".tmp-x"
    fs = FakeFs(OSError(errno.ENOSPC, "No space left on device", str(inner)))
    with pytest.raises(
        ModelLoadError, match="failed after 3 attempt\\(s\\): No space left on device$"
    ) as info:
        await download(tmp_path, fs)
    fs = FakeFs(RuntimeError(f"could not write {inner}"))
    with pytest.raises(ModelLoadError, match="could not write <cache>/m/1/.tmp-x") as info:
        await download(tmp_path, fs)
    assert str(tmp_path) not in str(info.value)
