"""The metric the deploy's HorizontalPodAutoscaler scales on is one the server exports, per model, a
gauge the prometheus-adapter rule in docs/deploy.md can sum per pod."""

from __future__ import annotations

import re
from pathlib import Path

from prometheus_client.parser import text_string_to_metric_families

from modelfleet.config import ServerSettings
from modelfleet.deploy.groups import HPA_METRIC
from tests.integration.conftest import client_for

ROW = [i / 16 for i in range(16)]
DOCS = Path(__file__).resolve().parents[2] / "docs" / "deploy.md"


async def test_the_hpa_metric_is_exported_as_a_gauge_per_model(settings: ServerSettings) -> None:
    async with client_for(settings) as client:
        body = {"inputs": [{"name": "input", "shape": [1, 16], "datatype": "FP32", "data": ROW}]}
        assert (await client.post("/v2/models/identity/infer", json=body)).status_code == 200
        answer = await client.get("/metrics")
    families = {f.name: f for f in text_string_to_metric_families(answer.text)}
    family = families[HPA_METRIC]
    assert family.type == "gauge"
    assert {s.labels["model"] for s in family.samples} >= {"identity"}


def test_the_documented_adapter_rule_names_the_metric() -> None:
    text = DOCS.read_text()
    assert re.search(rf"seriesQuery: '{HPA_METRIC}\{{", text)
