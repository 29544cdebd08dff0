"""SageMaker mode settings: the port it binds, as SageMaker's own containers choose it."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import ValidationError

from modelfleet.config import ServerSettings
from modelfleet.errors import BadRequest
from modelfleet.server.sagemaker import page_size, url_in_prefix


def test_port_is_8080_in_sagemaker_mode_unless_told(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("SAGEMAKER_BIND_TO_PORT", raising=False)
    monkeypatch.delenv("MODELFLEET_HTTP_PORT", raising=False)
    assert ServerSettings(repository=tmp_path).port == 8000
    assert ServerSettings(repository=tmp_path, sagemaker=True).port == 8080
    assert ServerSettings(repository=tmp_path, sagemaker=True, http_port=9000).port == 9000
    monkeypatch.setenv("SAGEMAKER_BIND_TO_PORT", "7070")
    assert ServerSettings(repository=tmp_path, sagemaker=True).port == 7070
    assert ServerSettings(repository=tmp_path).port == 8000  # only SageMaker mode follows it
    monkeypatch.setenv("MODELFLEET_SAGEMAKER", "true")
    settings = ServerSettings(repository=tmp_path)
    assert settings.port == 7070
    assert ServerSettings(**settings.model_dump()).port == 7070  # the CLI rebuilds settings this way


def test_default_model_must_be_a_model_name(tmp_path: Path) -> None:
    assert (
        ServerSettings(repository=tmp_path, sagemaker_default_model="tenant-7").sagemaker_default_model
        == "tenant-7"
    )
    with pytest.raises(ValidationError, match="is not a model name"):
        ServerSettings(repository=tmp_path, sagemaker_default_model="../x")


def testpage_size() -> None:
    assert page_size(None) == 1000
    assert page_size("25") == 25
    for bad in ("0", "1001", "-1", "x", ""):
        with pytest.raises(BadRequest, match="max_results"):
            page_size(bad)


def test_urls_under_an_object_store_prefix() -> None:
    prefix = "s3://bucket/models/"
    for good in ("s3://bucket/models", "s3://bucket/models/a", "s3://bucket/models/a/b.tar.gz"):
        assert url_in_prefix(good, prefix), good
    for bad in (
        "s3://bucket/models-other/a",
        "s3://bucket/models/../secret",
        "s3://bucket/models/./a",
        "s3://bucket/models/a/..",
        "s3://other/models/a",
        "/opt/ml/models/a",
        "s3://bucket/models/a\\..\\b",
        "s3://bucket/models/a\x00",
    ):
        assert not url_in_prefix(bad, prefix), bad
