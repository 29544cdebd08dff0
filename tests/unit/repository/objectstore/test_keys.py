"""Object-storage locations and keys: checked before any request; what a model's listing holds."""

import pytest

from modelfleet.errors import ModelLoadError
from modelfleet.repository.objectstore import (
    RemoteFile,
    key_parts,
    parse_location,
    plan_model_files,
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
            "config.pbtxt": remote(),  # Triton's, read where config.yaml is absent
            "labels.txt": remote(),  # other top-level files: a folder repository reads none
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
        ("config.pbtxt",),
        ("config.yaml",),
    ]
    assert plan.versions == {"1", "2", "3"}


def test_plan_refuses_unsafe_keys_anywhere_and_clashes() -> None:
    with pytest.raises(ModelLoadError, match="not a safe relative path: 'notes/../../x'"):
        plan_model_files({"1/model.onnx": remote(), "notes/../../x": remote()})
    with pytest.raises(ModelLoadError, match="'1/a' is both a file and a folder"):
        plan_model_files({"1/a": remote(), "1/a/b": remote()})
