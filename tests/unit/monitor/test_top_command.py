"""`modelfleet top` option checks (the command's own module is src/modelfleet/cli/top.py)."""

from __future__ import annotations

import pytest
from typer.testing import CliRunner

from modelfleet.cli import build_app


@pytest.mark.parametrize("url", ["ftp://host:8000", "127.0.0.1:8000", "localhost"])
def test_top_refuses_a_url_that_is_not_http(url: str) -> None:
    result = CliRunner().invoke(build_app(), ["top", url])
    assert result.exit_code == 2
    assert "must start with http:// or https://" in result.output
    assert repr(url) in result.output


def test_top_refuses_an_interval_below_a_tenth_of_a_second() -> None:
    result = CliRunner().invoke(build_app(), ["top", "--interval", "0"])
    assert result.exit_code == 2
    assert "--interval" in result.output
