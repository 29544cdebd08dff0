import asyncio
import errno
import hashlib
import os
from pathlib import Path

import pytest

from modelfleet.errors import ModelLoadError, NotFound
from modelfleet.repository.objectstore import (
    CachedModel,
    CacheIndex,
    Download,
    IndexEntry,
    ObjectStoreOptions,
    ObjectStoreRepository,
    RemoteFile,
    Storage,
    check_endpoint_url,
    key_parts,
    parse_location,
    plan_eviction,
    plan_model_files,
    read_index,
    write_index,
)


@pytest.mark.parametrize(
    ("location", "expected"),
    [
        ("s3://models/", ("models", "")),
        ("s3://models", ("models", "")),
        ("s3://models/team/a/", ("models", "team/a")),
        ("S3://My.Bucket_1/x", ("My.Bucket_1", "x")),
    ],
)
def test_locations(location: str, expected: tuple[str, str]) -> None:
    assert parse_location(location) == expected


@pytest.mark.parametrize(
    ("location", "message"),
    [
        ("file:///etc", "got file://…"),
        ("http://host/bucket", "got http://…"),
        ("/srv/models", "got a path"),
        ("s3://", "is not a bucket name"),
        ("s3://ab", "is not a bucket name"),
        ("s3://a/b", "is not a bucket name"),
        ("s3://bucket/a/../b", "empty, '.' or '..' parts"),
        ("s3://bucket/a//b", "empty, '.' or '..' parts"),
        ("s3://bucket/a?versionId=1", "may not hold '?'"),
        ("s3://bucket/a\\b", "may not hold"),
        ("s3://bucket/a\nb", "control characters"),
    ],
)
def test_bad_locations(location: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        parse_location(location)


@pytest.mark.parametrize(
    "url",
    [
        "http://127.0.0.1:9000",
        "https://minio.storage.svc:9000/",
        "http://[::1]:4566",
        "http://localhost:4566",
        "https://s3.eu-west-1.amazonaws.com",
        "http://10.0.0.5",
    ],
)
def test_endpoints_allowed(url: str) -> None:
    assert check_endpoint_url(url) == url


@pytest.mark.parametrize(
    "url",
    [
        "http://169.254.169.254",
        "http://169.254.169.254/latest/meta-data/",
        "https://169.254.0.1:443",
        "http://[fe80::1]",
        "http://[fe80::1%25eth0]:80",
        "http://[fd00:ec2::254]",
        "http://100.100.100.200",
        "http://metadata.google.internal",
        "http://Metadata.Google.Internal.",
        "http://[::ffff:169.254.169.254]",
        # the same address in the forms inet_aton reads
        "http://2852039166",
        "http://0xa9.0xfe.0xa9.0xfe",
        "http://0251.0376.0251.0376",
        "http://169.254.43518",
    ],
)
def test_metadata_and_link_local_endpoints_refused(url: str) -> None:
    with pytest.raises(ValueError, match="link-local or cloud metadata address; refused"):
        check_endpoint_url(url)


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("file:///var/run/s3.sock", "must start with http:// or https://"),
        ("ftp://host", "must start with http:// or https://"),
        ("host:9000", "must start with http:// or https://"),
        ("http://user:secret@host:9000", "may not hold credentials"),
        ("http://host:9000/?x=1", "may not hold a query"),
        ("http://:9000", "needs a host"),
        ("http://host:99999", "invalid port"),
    ],
)
def test_bad_endpoints(url: str, message: str) -> None:
    with pytest.raises(ValueError, match=message) as info:
        check_endpoint_url(url)
    assert "secret" not in str(info.value)


def options(tmp_path: Path, **values: object) -> ObjectStoreOptions:
    return ObjectStoreOptions.model_validate({"cache_dir": tmp_path, **values})


def test_options_are_checked(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="link-local or cloud metadata"):
        options(tmp_path, endpoint_url="http://169.254.169.254")
    with pytest.raises(ValueError, match="download_concurrency"):
        options(tmp_path, download_concurrency=0)
    with pytest.raises(ValueError, match="aws_secret_access_key"):
        options(tmp_path, aws_secret_access_key="x")  # credentials only from the AWS environment


def test_endpoint_from_the_environment_is_checked_too(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("AWS_ENDPOINT_URL_S3", "http://169.254.169.254")
    with pytest.raises(ValueError, match="AWS_ENDPOINT_URL_S3: the endpoint host '169.254.169.254'"):
        ObjectStoreRepository("s3://models/x", options(tmp_path))
    monkeypatch.setenv("AWS_ENDPOINT_URL_S3", "http://127.0.0.1:9000")
    repo = ObjectStoreRepository("s3://models/x", options(tmp_path))
    assert repo.describe() == "s3://models/x (endpoint http://127.0.0.1:9000)"


def test_bad_names_are_not_found_before_any_request(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("AWS_ENDPOINT_URL_S3", raising=False)
    monkeypatch.delenv("AWS_ENDPOINT_URL", raising=False)
    # port 9 (discard) on loopback: were a request made, it would fail as a ModelLoadError instead
    repo = ObjectStoreRepository(
        "s3://models", options(tmp_path / "cache", endpoint_url="http://127.0.0.1:9")
    )
    assert repo.describe() == "s3://models (endpoint http://127.0.0.1:9)"
    for name in ("../etc", "a/b", ".blobs", "%2e%2e", "nul\x00", ""):
        with pytest.raises(NotFound):
            repo.fetch(name)
        with pytest.raises(NotFound):
            repo.config(name)
    assert not (tmp_path / "cache").exists()


@pytest.mark.parametrize(
    "key", ["config.yaml", "1/model.onnx", "12/sub/dir/x.bin", "1/.hidden", "1/模型.onnx"]
)
def test_safe_keys(key: str) -> None:
    assert key_parts(key) == tuple(key.split("/"))


@pytest.mark.parametrize(
    "key", ["", "../x", "1/../../x", "/abs", "1//x", "./x", "1/.", "1/a\\b", "..\\x", "1/nul\x00", "1/a\nb"]
)
def test_unsafe_keys_are_refused(key: str) -> None:
    with pytest.raises(ModelLoadError, match="not a safe relative path"):
        key_parts(key)


def remote(size: int = 1, etag: str = '"e"') -> RemoteFile:
    return RemoteFile(size, etag)


def test_plan_takes_what_a_folder_repository_uses() -> None:
    plan = plan_model_files(
        {
            "": remote(0),  # the "NAME/" marker object
            "config.yaml": remote(),
            "1/model.onnx": remote(),
            "1/weights.json": remote(),
            "2/": remote(0),  # an empty version folder
            "3/extra/data.bin": remote(),
            "notes/readme.md": remote(),
            "4": remote(),  # a file, not a version folder
            "config.yaml/": remote(0),
        }
    )
    assert sorted(plan.files) == [
        ("1", "model.onnx"),
        ("1", "weights.json"),
        ("3", "extra", "data.bin"),
        ("config.yaml",),
    ]
    assert plan.versions == {"1", "2", "3"}


def test_plan_refuses_unsafe_keys_anywhere_and_clashes() -> None:
    with pytest.raises(ModelLoadError, match="not a safe relative path: 'notes/../../x'"):
        plan_model_files({"1/model.onnx": remote(), "notes/../../x": remote()})
    with pytest.raises(ModelLoadError, match="'1/a' is both a file and a folder"):
        plan_model_files({"1/a": remote(), "1/a/b": remote()})


def test_index_round_trip_and_damage(tmp_path: Path) -> None:
    assert read_index(tmp_path) == CacheIndex()
    index = CacheIndex(
        fetched_at=12.5, files={"1/model.onnx": IndexEntry(size=3, etag='"abc"')}, blobs=["a" * 64]
    )
    write_index(tmp_path, index)
    assert read_index(tmp_path) == index
    assert [p.name for p in tmp_path.iterdir()] == [".modelfleet-index.json"]
    (tmp_path / ".modelfleet-index.json").write_text('{"format": 2}')
    assert read_index(tmp_path) == CacheIndex()


def model(name: str, fetched_at: float, nbytes: int, *blobs: str) -> CachedModel:
    return CachedModel(name, fetched_at, nbytes, frozenset(blobs))


def test_nothing_is_evicted_under_the_limit() -> None:
    plan = plan_eviction(
        [model("a", 1, 10, "x")], {"x": 5, "orphan": 5}, 20, set(), set(), now=100, grace_s=0
    )
    assert (plan.models, plan.blobs, plan.bytes_after) == ([], [], 20)


def test_least_recently_fetched_first_with_their_own_blobs() -> None:
    models = [model("new", 30, 10, "shared"), model("old", 10, 10, "shared", "own"), model("mid", 20, 10)]
    plan = plan_eviction(models, {"shared": 100, "own": 50}, 160, {"new"}, set(), now=100, grace_s=0)
    assert plan.models == ["old"]  # 180 -> 120: under the limit, mid stays
    assert plan.blobs == ["own"]  # shared is still used by new
    assert (plan.bytes_before, plan.bytes_after) == (180, 120)


def test_unreferenced_blobs_go_before_any_model() -> None:
    plan = plan_eviction(
        [model("a", 1, 10, "x")], {"x": 5, "orphan": 50}, 20, set(), set(), now=100, grace_s=0
    )
    assert (plan.models, plan.blobs, plan.bytes_after) == ([], ["orphan"], 15)


def test_models_being_fetched_or_fetched_recently_stay() -> None:
    models = [model("a", 10, 100, "pinned"), model("b", 95, 100), model("c", 20, 100)]
    blobs = {"pinned": 10, "orphan-in-use": 10}
    plan = plan_eviction(models, blobs, 0, {"c"}, {"orphan-in-use"}, now=100, grace_s=10)
    assert plan.models == ["a"]  # b: fetched 5 s ago; c: being fetched
    assert plan.blobs == ["pinned"]  # dropped with a; orphan-in-use is kept by a fetch in progress
    assert plan.bytes_after == 210  # still over: the rest is in use


def test_ties_are_broken_by_name() -> None:
    models = [model("b", 1, 10), model("a", 1, 10)]
    assert plan_eviction(models, {}, 10, set(), set(), now=5, grace_s=0).models == ["a"]


# The retry policy and download checks, against a stand-in for s3fs (no network).


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
