"""Shared fixtures: a generated model repository and server settings over it."""

from __future__ import annotations

from pathlib import Path

import pytest

from modelfleet.config import ServerSettings, StartupLoad
from tests.models import standard_repo


@pytest.fixture(scope="session")
def repo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The standard test repository, generated once (tests must not modify it)."""
    return standard_repo(tmp_path_factory.mktemp("repo"))


@pytest.fixture
def settings(repo: Path) -> ServerSettings:
    return ServerSettings(
        repository=repo, intra_op_threads=1, load_concurrency=2, startup_load=StartupLoad.ALL
    )
