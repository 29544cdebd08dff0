"""Shared fixtures: a generated model repository and server settings over it."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from modelfleet.config import ServerSettings, StartupLoad
from tests.models import standard_repo

try:
    from hypothesis import HealthCheck
    from hypothesis import settings as hypothesis_settings
except ImportError:  # the `test` extra brings it; without it only the property tests fail to import
    pass
else:
    # "ci" (the default): the same examples on every run and machine (derandomize: a fixed seed per
    # test), no example database written into the tree, no per-example deadline (2 shared cores);
    # each property test sets its own modest max_examples. "explore": a random seed, so that each
    # run tries new examples, to search for failures by hand: HYPOTHESIS_PROFILE=explore pytest ...
    hypothesis_settings.register_profile(
        "ci",
        derandomize=True,
        database=None,
        deadline=None,
        max_examples=100,
        print_blob=True,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    )
    hypothesis_settings.register_profile(
        "explore", derandomize=False, database=None, deadline=None, print_blob=True
    )
    hypothesis_settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))


@pytest.fixture(scope="session")
def repo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The standard test repository, generated once (tests must not modify it)."""
    return standard_repo(tmp_path_factory.mktemp("repo"))


@pytest.fixture
def settings(repo: Path) -> ServerSettings:
    return ServerSettings(
        repository=repo, intra_op_threads=1, load_concurrency=2, startup_load=StartupLoad.ALL
    )
