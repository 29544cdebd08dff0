"""The object-store repository's checks before any request: endpoints, options, model names."""

from pathlib import Path

import pytest

from modelfleet.errors import NotFound
from modelfleet.repository.objectstore import (
    ObjectStoreRepository,
    check_endpoint_url,
)
from tests.unit.repository.objectstore.support import options


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
