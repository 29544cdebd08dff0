from pathlib import Path

import pytest

from modelfleet.repository.folder import FolderRepository
from modelfleet.repository.objectstore import ObjectStoreRepository
from modelfleet.repository.open import open_repository


def test_a_path_opens_a_folder(tmp_path: Path) -> None:
    repo = open_repository(str(tmp_path))
    assert isinstance(repo, FolderRepository)
    assert repo.describe() == str(tmp_path.resolve())
    with pytest.raises(FileNotFoundError):
        open_repository(str(tmp_path / "missing"))


def test_s3_opens_object_storage_without_connecting(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("AWS_ENDPOINT_URL_S3", raising=False)
    monkeypatch.delenv("AWS_ENDPOINT_URL", raising=False)
    repo = open_repository("s3://models/prod/", cache_dir=tmp_path, endpoint_url="http://127.0.0.1:9")
    assert isinstance(repo, ObjectStoreRepository)
    assert repo.describe() == "s3://models/prod (endpoint http://127.0.0.1:9)"
    assert repo.options.cache_dir == tmp_path


@pytest.mark.parametrize(
    "location",
    [
        "file:///srv/models",
        "http://example.com/models",
        "https://bucket.s3.amazonaws.com/x",
        "gs://b/x",
        "FILE:///x",
    ],
)
def test_other_schemes_are_refused(location: str) -> None:
    with pytest.raises(
        ValueError, match="unsupported repository location .*give a folder path or s3://bucket/prefix"
    ):
        open_repository(location)


def test_clear_errors(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="s3 repository options: cache_dir: Field required"):
        open_repository("s3://models")
    with pytest.raises(ValueError, match="s3 repository options: retry: Extra inputs are not permitted"):
        open_repository("s3://models", cache_dir=tmp_path, retry=3)
    with pytest.raises(ValueError, match="link-local or cloud metadata address"):
        open_repository("s3://models", cache_dir=tmp_path, endpoint_url="http://169.254.169.254")
    with pytest.raises(ValueError, match="options cache_dir apply to s3:// repositories only"):
        open_repository(str(tmp_path), cache_dir=tmp_path)
    with pytest.raises(ValueError, match="did you mean s3://"):
        open_repository("s3:/models/prod")  # what Path("s3://models/prod") turns into
