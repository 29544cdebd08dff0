"""Python models and ensembles over HTTP: steps chained without re-encoding, errors that name the step."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from modelfleet.config import ServerSettings, StartupLoad
from tests.integration.conftest import client_for
from tests.models import identity, write_config

DOUBLE = """
class Model:
    def infer(self, inputs):
        return {"y": inputs["x"] * 2}
"""
CHECK = """
class Model:
    def infer(self, inputs):
        y = inputs["y"]
        if (y > 100).any():
            raise ValueError("values above 100 are not accepted")
        return {"z": y + 1}
"""


def tensor(name: str, shape: list[int]) -> dict[str, Any]:
    return {"name": name, "datatype": "FP32", "shape": shape}


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    def python_model(name: str, code: str, inp: str, out: str) -> None:
        (tmp_path / name / "1").mkdir(parents=True)
        (tmp_path / name / "1" / "model.py").write_text(code)
        write_config(
            tmp_path / name,
            {
                "backend": "python",
                "max_batch_size": 8,
                "inputs": [tensor(inp, [-1, 4])],
                "outputs": [tensor(out, [-1, 4])],
            },
        )

    python_model("double", DOUBLE, "x", "y")
    python_model("check", CHECK, "y", "z")
    identity(tmp_path / "ident" / "1" / "model.onnx", "FP32", ("batch", 4))
    (tmp_path / "chain" / "1").mkdir(parents=True)
    write_config(
        tmp_path / "chain",
        {
            "backend": "ensemble",
            "inputs": [tensor("a", [-1, 4])],
            "outputs": [tensor("b", [-1, 4])],
            "steps": [
                {"model": "check", "inputs": {"y": "doubled_again"}, "outputs": {"z": "b"}},
                {"model": "double", "inputs": {"x": "a"}, "outputs": {"y": "doubled"}},
                {"model": "ident", "inputs": {"input": "doubled"}, "outputs": {"output": "doubled_again"}},
            ],
        },
    )
    return tmp_path


def body(values: list[float], name: str = "a") -> dict[str, Any]:
    return {"inputs": [{"name": name, "shape": [1, 4], "datatype": "FP32", "data": values}]}


async def test_an_ensemble_runs_its_steps_in_dependency_order(repo: Path) -> None:
    settings = ServerSettings(repository=repo, startup_load=StartupLoad.NONE, python_models=True)
    async with client_for(settings) as client:
        r = await client.post("/v2/models/chain/infer", json=body([1.0, 2.0, 3.0, 4.0]))
        assert r.status_code == 200, r.text
        assert r.json()["outputs"] == [
            {"name": "b", "datatype": "FP32", "shape": [1, 4], "data": [3.0, 5.0, 7.0, 9.0]}
        ]
        meta = (await client.get("/v2/models/chain")).json()
        assert meta["platform"] == "ensemble"
        r = await client.post("/v2/models/chain/infer", json=body([60.0, 0.0, 0.0, 0.0]))
        assert r.status_code == 400
        assert r.json()["error"] == (
            "ensemble 'chain', step 'check': model 'check' refused the input: values above 100 are not accepted"
        )
        stats = {m["name"]: m for m in (await client.get("/v2/models/stats")).json()["model_stats"]}
        assert (
            stats["double"]["inference_stats"]["success"]["count"] == 2
        )  # each step keeps its own statistics
        assert stats["chain"]["inference_stats"]["success"]["count"] == 1


async def test_python_models_are_off_unless_the_server_allows_them(repo: Path) -> None:
    settings = ServerSettings(repository=repo, startup_load=StartupLoad.NONE)
    async with client_for(settings) as client:
        r = await client.post("/v2/models/double/infer", json=body([1.0, 2.0, 3.0, 4.0], "x"))
        assert r.status_code == 503
        assert "python models are off: start the server with --python-models" in r.json()["error"]
        r = await client.post("/v2/models/chain/infer", json=body([1.0, 2.0, 3.0, 4.0]))
        assert r.status_code == 503
        assert "model 'double' failed to load: python models are off" in r.json()["error"]
