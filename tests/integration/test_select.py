"""One server of a fleet serves only its share: `--models` through the real app."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import ValidationError

from modelfleet.config import ServerSettings, StartupLoad
from tests.integration.conftest import client_for
from tests.models import identity

BODY = {"inputs": [{"name": "input", "shape": [1, 16], "datatype": "FP32", "data": [0.25] * 16}]}


async def test_only_the_selected_models_are_listed_and_served(tmp_path: Path) -> None:
    for name in ("shop-1", "shop-2", "ranker"):
        identity(tmp_path / name / "1" / "model.onnx")
    (tmp_path / "share.txt").write_text("shop-*\n")
    settings = ServerSettings(
        repository=tmp_path, models=f"@{tmp_path / 'share.txt'}", startup_load=StartupLoad.ALL
    )
    async with client_for(settings) as client:
        index = (await client.post("/v2/repository/index", json={})).json()
        assert sorted(entry["name"] for entry in index) == ["shop-1", "shop-2"]
        r = await client.post("/v2/models/shop-2/infer", json=BODY)
        assert r.status_code == 200, r.text
        r = await client.post("/v2/models/ranker/infer", json=BODY)
        assert r.status_code == 404
        assert r.json() == {"error": "model 'ranker' not found"}
        r = await client.post("/v2/repository/models/ranker/load")
        assert r.status_code == 404


def test_a_selection_file_that_is_missing_stops_the_server_at_start(tmp_path: Path) -> None:
    with pytest.raises(ValidationError, match="models file .* is not a file"):
        ServerSettings(repository=tmp_path, models=f"@{tmp_path / 'missing.txt'}")
