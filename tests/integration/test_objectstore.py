"""ObjectStoreRepository against moto's S3 server on loopback: the same results as the folder it came from."""

from __future__ import annotations

import itertools
import json
import logging
import os
import socket
import time
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from modelfleet.errors import ModelfleetError, ModelLoadError, NotFound
from modelfleet.repository.folder import FolderRepository, ModelSource
from modelfleet.repository.objectstore import ObjectStoreOptions, ObjectStoreRepository
from modelfleet.repository.weights import MANIFEST, blob_relpath, tensor_ref
from tests.models import identity, write_config

boto3 = pytest.importorskip("boto3")
moto_server = pytest.importorskip("moto.server")

PREFIX = "models/v1"
_AWS_ENV = {
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_DEFAULT_REGION": "us-east-1",
    "AWS_CONFIG_FILE": "/nonexistent/aws-config",
    "AWS_SHARED_CREDENTIALS_FILE": "/nonexistent/aws-credentials",
    "AWS_EC2_METADATA_DISABLED": "true",  # never ask a metadata service for credentials in tests
}


@pytest.fixture(scope="module")
def endpoint() -> Iterator[str]:
    """moto's S3 server on a free loopback port, with dummy credentials in the environment."""
    with pytest.MonkeyPatch.context() as env:
        for name, value in _AWS_ENV.items():
            env.setenv(name, value)
        for name in ("AWS_PROFILE", "AWS_SESSION_TOKEN", "AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_S3"):
            env.delenv(name, raising=False)
        logging.getLogger("werkzeug").setLevel(logging.WARNING)  # one line per request otherwise
        server = moto_server.ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
        server.start()
        host, port = server.get_host_and_port()
        try:
            yield f"http://{host}:{port}"
        finally:
            server.stop()


@pytest.fixture
def s3(endpoint: str) -> Any:
    return boto3.client("s3", endpoint_url=endpoint)


@pytest.fixture
def bucket(s3: Any) -> str:
    name = f"test-{uuid.uuid4().hex[:16]}"
    s3.create_bucket(Bucket=name)
    return name


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    """A repository with configs, versions, an invalid name, a bad config and shared weight blobs."""
    root = tmp_path / "folder"
    identity(root / "identity" / "1" / "model.onnx")
    write_config(root / "identity", {"backend": "onnxruntime", "max_batch_size": 4})
    identity(root / "versioned" / "1" / "model.onnx", "FP32", ("batch", 2))
    identity(root / "versioned" / "2" / "model.onnx", "FP32", ("batch", 2))
    (root / "versioned" / "2" / "notes" / "readme.txt").parent.mkdir()
    (root / "versioned" / "2" / "notes" / "readme.txt").write_text("nested files come along")
    write_config(root / "versioned", {"version_policy": {"all": True}})
    shared = np.arange(16, dtype=np.float32)
    for name, own in (("weighted", np.ones((4, 4), np.float32)), ("tuned", np.full(3, 7, np.int64))):
        identity(root / name / "1" / "model.onnx")
        tensors = {
            "shared": tensor_ref(root, shared, "FP32"),
            "own": tensor_ref(root, own, "FP32" if own.dtype == np.float32 else "INT64"),
        }
        manifest = {"format": 1, "tensors": {k: v.model_dump() for k, v in tensors.items()}}
        (root / name / "1" / MANIFEST).write_text(json.dumps(manifest))
    write_config(root / "badcfg", {"max_batch_size": "lots"})
    (root / "badcfg" / "1").mkdir()
    (root / "bad name" / "1").mkdir(parents=True)
    (root / "bad name" / "1" / "model.onnx").write_bytes(b"x")
    return root


def upload(s3: Any, bucket: str, root: Path, prefix: str = PREFIX) -> None:
    for path in sorted(root.rglob("*")):
        if path.is_file():
            s3.put_object(
                Bucket=bucket, Key=f"{prefix}/{path.relative_to(root).as_posix()}", Body=path.read_bytes()
            )


def repository(
    tmp_path: Path, endpoint: str, bucket: str, clock: Callable[[], float] = time.time, **options: Any
) -> ObjectStoreRepository:
    settings: dict[str, Any] = {
        "cache_dir": tmp_path / "cache",
        "endpoint_url": endpoint,
        "timeout_s": 5.0,
        "retries": 1,
        "backoff_s": 0.01,
        "eviction_grace_s": 0.0,
    }
    settings.update(options)
    return ObjectStoreRepository(f"s3://{bucket}/{PREFIX}/", ObjectStoreOptions(**settings), clock=clock)


def tree(folder: Path) -> dict[str, bytes]:
    return {
        p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()
    }


def assert_equivalent(ours: ModelSource, theirs: ModelSource) -> None:
    assert (ours.name, ours.config, ours.versions, ours.weights) == (
        theirs.name,
        theirs.config,
        theirs.versions,
        theirs.weights,
    )
    for version in ours.versions:
        assert ours.files[version].name == theirs.files[version].name
        assert tree(ours.files[version].parent) == tree(theirs.files[version].parent)
    assert ours.blobs.keys() == theirs.blobs.keys()
    for digest, path in ours.blobs.items():
        assert path.read_bytes() == theirs.blobs[digest].read_bytes()


def fetch_or_error(repo: Any, name: str) -> ModelSource | tuple[type, str]:
    try:
        source: ModelSource = repo.fetch(name)
    except ModelfleetError as exc:
        return type(exc), str(exc)
    return source


def config_or_error(repo: Any, name: str) -> object:
    try:
        return repo.config(name)
    except ModelfleetError as exc:
        return type(exc), str(exc)


def cache_files(cache: Path) -> dict[str, tuple[int, int]]:
    """Every cached file with its inode and mtime: a file downloaded again gets a new inode."""
    return {
        p.relative_to(cache).as_posix(): (p.stat().st_ino, p.stat().st_mtime_ns)
        for p in cache.rglob("*")
        if p.is_file() and p.name != ".modelfleet-index.json"
    }


def test_same_results_as_the_folder_repository(
    tmp_path: Path, endpoint: str, s3: Any, bucket: str, folder: Path
) -> None:
    upload(s3, bucket, folder)
    ours, theirs = repository(tmp_path, endpoint, bucket), FolderRepository(folder)
    names = ours.list_models()
    assert names == theirs.list_models() == ["badcfg", "identity", "tuned", "versioned", "weighted"]
    for name in names:
        assert config_or_error(ours, name) == config_or_error(theirs, name)
        mine, reference = fetch_or_error(ours, name), fetch_or_error(theirs, name)
        if isinstance(reference, ModelSource):
            assert isinstance(mine, ModelSource), mine
            assert_equivalent(mine, reference)
            assert all(
                path.is_relative_to(tmp_path / "cache")
                for path in (*mine.files.values(), *mine.blobs.values())
            )
        else:
            assert mine == reference
    with pytest.raises(NotFound, match="model 'absent' not found"):
        ours.fetch("absent")
    with pytest.raises(NotFound, match="model 'absent' not found"):
        ours.config("absent")
    assert ours.describe() == f"s3://{bucket}/{PREFIX} (endpoint {endpoint})"


def test_second_fetch_downloads_nothing(
    tmp_path: Path, endpoint: str, s3: Any, bucket: str, folder: Path
) -> None:
    upload(s3, bucket, folder)
    repo = repository(tmp_path, endpoint, bucket)
    for name in ("weighted", "tuned", "versioned"):
        repo.fetch(name)
    before = cache_files(tmp_path / "cache")
    for name in ("weighted", "tuned", "versioned"):
        repo.fetch(name)
    assert cache_files(tmp_path / "cache") == before


def test_changed_and_removed_files_are_followed(
    tmp_path: Path, endpoint: str, s3: Any, bucket: str, folder: Path
) -> None:
    upload(s3, bucket, folder)
    repo = repository(tmp_path, endpoint, bucket)
    assert repo.fetch("identity").config.max_batch_size == 4
    before = cache_files(tmp_path / "cache")
    # same size, other bytes: only the ETag tells them apart
    write_config(folder / "identity", {"backend": "onnxruntime", "max_batch_size": 8})
    upload(s3, bucket, folder / "identity", f"{PREFIX}/identity")
    source = repo.fetch("identity")
    assert source.config.max_batch_size == 8
    after = cache_files(tmp_path / "cache")
    assert after["identity/1/model.onnx"] == before["identity/1/model.onnx"]
    assert after["identity/config.yaml"] != before["identity/config.yaml"]

    assert repo.fetch("versioned").versions == [1, 2]
    s3.delete_object(Bucket=bucket, Key=f"{PREFIX}/versioned/2/model.onnx")
    s3.delete_object(Bucket=bucket, Key=f"{PREFIX}/versioned/2/notes/readme.txt")
    assert repo.fetch("versioned").versions == [1]
    assert not (tmp_path / "cache" / "versioned" / "2").exists()


def test_corrupt_blob_is_refused_and_nothing_is_left(
    tmp_path: Path, endpoint: str, s3: Any, bucket: str, folder: Path
) -> None:
    upload(s3, bucket, folder)
    digest = fetch_source(repository(tmp_path / "first", endpoint, bucket), "weighted")
    s3.put_object(Bucket=bucket, Key=f"{PREFIX}/{blob_relpath(digest)}", Body=b"\0" * 64)
    repo = repository(tmp_path, endpoint, bucket)
    with pytest.raises(ModelLoadError, match="does not match its SHA-256"):
        repo.fetch("weighted")
    blob_dir = (tmp_path / "cache" / blob_relpath(digest)).parent
    assert not blob_dir.exists() or list(blob_dir.iterdir()) == []


def fetch_source(repo: ObjectStoreRepository, name: str) -> str:
    """The digest of the 'own' tensor of a weighted model."""
    return repo.fetch(name).weights[1].tensors["own"].blob


def test_missing_blob_and_unsafe_keys(
    tmp_path: Path, endpoint: str, s3: Any, bucket: str, folder: Path
) -> None:
    upload(s3, bucket, folder)
    repo = repository(tmp_path, endpoint, bucket)
    digest = fetch_source(repo, "tuned")
    s3.delete_object(Bucket=bucket, Key=f"{PREFIX}/{blob_relpath(digest)}")
    with pytest.raises(ModelLoadError, match=f"weight blob {digest[:12]}… is missing from the repository"):
        repository(tmp_path / "fresh", endpoint, bucket).fetch("tuned")

    for key in ("1/../../../escaped.txt", "1/a\\..\\b.txt"):
        s3.put_object(Bucket=bucket, Key=f"{PREFIX}/identity/{key}", Body=b"x")
        with pytest.raises(ModelLoadError, match="not a safe relative path"):
            repo.fetch("identity")
        s3.delete_object(Bucket=bucket, Key=f"{PREFIX}/identity/{key}")
    assert not list(tmp_path.rglob("escaped.txt"))
    repo.fetch("identity")


def test_cache_limit_evicts_the_least_recently_fetched_model(
    tmp_path: Path, endpoint: str, s3: Any, bucket: str, folder: Path
) -> None:
    upload(s3, bucket, folder)
    ticks = itertools.count(1000)
    repo = repository(tmp_path, endpoint, bucket, clock=lambda: float(next(ticks)), cache_max_bytes=1)
    weighted = repo.fetch("weighted")
    tuned = repo.fetch("tuned")  # over the limit: weighted goes, tuned stays whatever its size
    cache = tmp_path / "cache"
    assert sorted(p.name for p in cache.iterdir() if not p.name.startswith(".")) == ["tuned"]
    assert all(path.is_file() for path in (*tuned.files.values(), *tuned.blobs.values()))
    only_weighted = weighted.blobs.keys() - tuned.blobs.keys()
    assert only_weighted and not any(weighted.blobs[d].exists() for d in only_weighted)

    clock = lambda: float(next(ticks))  # noqa: E731
    roomy = repository(tmp_path, endpoint, bucket, clock=clock, cache_max_bytes=1, eviction_grace_s=300.0)
    roomy.fetch("weighted")  # tuned was fetched moments ago: its load may be reading it, so it stays
    assert (cache / "tuned").is_dir() and (cache / "weighted").is_dir()


def test_missing_bucket(tmp_path: Path, endpoint: str) -> None:
    repo = repository(tmp_path, endpoint, "no-such-bucket")
    with pytest.raises(ModelLoadError, match="bucket 'no-such-bucket' does not exist"):
        repo.list_models()
    with pytest.raises(ModelLoadError, match="bucket 'no-such-bucket' does not exist"):
        repo.fetch("identity")


def test_empty_prefix_lists_no_models(tmp_path: Path, endpoint: str, bucket: str) -> None:
    assert repository(tmp_path, endpoint, bucket).list_models() == []


def test_storage_down_fails_after_bounded_retries(tmp_path: Path, endpoint: str) -> None:
    with socket.socket() as probe:  # a loopback port nothing listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    repo = repository(tmp_path, f"http://127.0.0.1:{port}", "some-bucket", retries=2, timeout_s=1.0)
    start = time.monotonic()
    with pytest.raises(
        ModelLoadError, match="object storage: listing model 'identity' failed after 3 attempt"
    ) as info:
        repo.fetch("identity")
    assert time.monotonic() - start < 5
    assert str(tmp_path) not in str(info.value) and "testing" not in str(info.value)


def test_silent_storage_times_out(tmp_path: Path, endpoint: str) -> None:
    with socket.socket() as silent:  # accepts connections (backlog) and never answers
        silent.bind(("127.0.0.1", 0))
        silent.listen(8)
        url = f"http://127.0.0.1:{silent.getsockname()[1]}"
        repo = repository(tmp_path, url, "some-bucket", retries=1, timeout_s=0.3)
        start = time.monotonic()
        with pytest.raises(ModelLoadError, match="failed after 2 attempt"):
            repo.fetch("identity")
        assert time.monotonic() - start < 10  # ~1 s quiet (2 x 0.3 s + back-off); no timeout: for ever
    assert not os.listdir(tmp_path / "cache")


def test_concurrent_fetches_never_lose_each_others_files(
    tmp_path: Path, endpoint: str, s3: Any, bucket: str, folder: Path
) -> None:
    upload(s3, bucket, folder)
    repo = repository(tmp_path, endpoint, bucket, cache_max_bytes=1)  # every fetch evicts the others
    with ThreadPoolExecutor(4) as pool:
        sources = list(pool.map(repo.fetch, ["weighted", "tuned", "versioned"] * 3))
    assert [s.name for s in sources] == ["weighted", "tuned", "versioned"] * 3


async def test_the_server_serves_a_bucket(
    tmp_path: Path, endpoint: str, s3: Any, bucket: str, folder: Path
) -> None:
    """`modelfleet serve s3://...` end to end: on-demand fetch from the bucket, then inference."""
    from modelfleet.config import ServerSettings, StartupLoad
    from tests.integration.conftest import client_for

    upload(s3, bucket, folder)
    settings = ServerSettings(
        repository=f"s3://{bucket}/{PREFIX}",
        s3=ObjectStoreOptions(cache_dir=tmp_path / "cache", endpoint_url=endpoint, timeout_s=5),
        startup_load=StartupLoad.NONE,
        intra_op_threads=1,
    )
    row = [float(i) for i in range(16)]
    body = {"inputs": [{"name": "input", "shape": [1, 16], "datatype": "FP32", "data": row}]}
    async with client_for(settings) as client:
        names = {e["name"] for e in (await client.post("/v2/repository/index")).json()}
        assert {"identity", "versioned"} <= names
        r = await client.post("/v2/models/identity/infer", json=body)
        assert r.status_code == 200, r.text
        assert r.json()["outputs"][0]["data"] == row
        assert (tmp_path / "cache").is_dir()


TRITON_PBTXT = """
name: "tri"
platform: "onnxruntime_onnx"
max_batch_size: 8
input [ { name: "input" data_type: TYPE_FP32 dims: [ 16 ] } ]
output [ { name: "output" data_type: TYPE_FP32 dims: [ 16 ] } ]
dynamic_batching { max_queue_delay_microseconds: 100 }
instance_group [ { count: 2 kind: KIND_CPU } ]
"""


def test_a_triton_model_in_a_bucket_reads_its_config_pbtxt(
    tmp_path: Path, endpoint: str, s3: Any, bucket: str
) -> None:
    root = tmp_path / "triton"
    identity(root / "tri" / "1" / "model.onnx")
    (root / "tri" / "config.pbtxt").write_text(TRITON_PBTXT)
    identity(root / "broken" / "1" / "model.onnx")
    (root / "broken" / "config.pbtxt").write_text('name: "broken"\nmax_batch_size: [')
    upload(s3, bucket, root)
    ours, theirs = repository(tmp_path, endpoint, bucket), FolderRepository(root)
    config = ours.config("tri")
    assert config == theirs.config("tri")
    assert (config.max_batch_size, config.instances, config.dynamic_batching.max_queue_delay_us) == (
        8,
        2,
        100,
    )
    source = ours.fetch("tri")
    assert_equivalent(source, theirs.fetch("tri"))
    assert (tmp_path / "cache" / "tri" / "config.pbtxt").read_text() == TRITON_PBTXT
    assert config_or_error(ours, "broken") == config_or_error(theirs, "broken")
    assert fetch_or_error(ours, "broken")[0] is ModelLoadError  # type: ignore[index]

    # config.yaml, once added, wins over config.pbtxt; config.pbtxt removed, it is gone from the cache
    write_config(root / "tri", {"max_batch_size": 4})
    upload(s3, bucket, root / "tri", f"{PREFIX}/tri")
    assert ours.config("tri").max_batch_size == 4
    s3.delete_object(Bucket=bucket, Key=f"{PREFIX}/tri/config.yaml")
    s3.delete_object(Bucket=bucket, Key=f"{PREFIX}/tri/config.pbtxt")
    assert ours.config("tri").max_batch_size is None  # the defaults: neither file is left
    assert not (tmp_path / "cache" / "tri" / "config.pbtxt").exists()
    assert ours.fetch("tri").config.max_batch_size is None


async def test_the_server_serves_a_triton_model_from_a_bucket(
    tmp_path: Path, endpoint: str, s3: Any, bucket: str
) -> None:
    from modelfleet.config import ServerSettings, StartupLoad
    from tests.integration.conftest import client_for

    root = tmp_path / "triton"
    identity(root / "tri" / "1" / "model.onnx")
    (root / "tri" / "config.pbtxt").write_text(TRITON_PBTXT)
    upload(s3, bucket, root)
    settings = ServerSettings(
        repository=f"s3://{bucket}/{PREFIX}",
        s3=ObjectStoreOptions(cache_dir=tmp_path / "cache", endpoint_url=endpoint, timeout_s=5),
        startup_load=StartupLoad.NONE,
        intra_op_threads=1,
    )
    body = {"inputs": [{"name": "input", "shape": [2, 16], "datatype": "FP32", "data": [0.5] * 32}]}
    async with client_for(settings) as client:
        r = await client.post("/v2/models/tri/infer", json=body)
        assert r.status_code == 200, r.text
        assert r.json()["outputs"][0]["data"] == [0.5] * 32
        config = (await client.get("/v2/models/tri/config")).json()
        assert (config["max_batch_size"], config["platform"]) == (8, "onnxruntime_onnx")
        nine = {"inputs": [{**body["inputs"][0], "shape": [9, 16], "data": [0.5] * 144}]}
        assert (await client.post("/v2/models/tri/infer", json=nine)).status_code == 400  # max_batch_size 8
