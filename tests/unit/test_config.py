from pathlib import Path

import pytest
from pydantic import ValidationError

from modelfleet.config import ServerSettings, StartupLoad


def test_defaults_and_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MODELFLEET_HTTP_PORT", "9001")
    monkeypatch.setenv("MODELFLEET_STARTUP_LOAD", "none")
    settings = ServerSettings(repository=tmp_path)
    assert settings.host == "127.0.0.1"
    assert settings.http_port == 9001
    assert settings.startup_load == StartupLoad.NONE
    assert settings.max_body_bytes == 64 * 1024 * 1024
    assert ServerSettings(repository=tmp_path, http_port=1234).http_port == 1234


def test_bad_values_are_refused_with_the_field(tmp_path: Path) -> None:
    with pytest.raises(ValidationError, match="http_port"):
        ServerSettings(repository=tmp_path, http_port=70000)
    with pytest.raises(ValidationError, match="is not a folder"):
        ServerSettings(repository=tmp_path / "missing")
    with pytest.raises(ValidationError, match="Extra inputs are not permitted"):
        ServerSettings(repository=tmp_path, colour="blue")  # type: ignore[call-arg]
