"""A Triton model repository served as it is: config.pbtxt read where config.yaml is absent."""

from __future__ import annotations

from pathlib import Path

from modelfleet.config import ServerSettings, StartupLoad
from tests.integration.conftest import client_for
from tests.models import identity

PBTXT = """
name: "tri"
platform: "onnxruntime_onnx"
max_batch_size: 8
input [ { name: "input" data_type: TYPE_FP32 dims: [ 16 ] } ]
output [ { name: "output" data_type: TYPE_FP32 dims: [ 16 ] } ]
dynamic_batching { max_queue_delay_microseconds: 100 }
instance_group [ { count: 2 kind: KIND_CPU } ]
optimization { graph { level: 1 } }
"""
BODY = {"inputs": [{"name": "input", "shape": [2, 16], "datatype": "FP32", "data": [0.5] * 32}]}


async def test_a_triton_model_folder_is_served_with_its_config(tmp_path: Path) -> None:
    identity(tmp_path / "tri" / "1" / "model.onnx")
    (tmp_path / "tri" / "config.pbtxt").write_text(PBTXT)
    identity(tmp_path / "trt" / "1" / "model.onnx")
    (tmp_path / "trt" / "config.pbtxt").write_text(PBTXT.replace("onnxruntime_onnx", "tensorrt_plan"))
    settings = ServerSettings(repository=tmp_path, startup_load=StartupLoad.ALL, intra_op_threads=1)
    async with client_for(settings) as client:
        r = await client.post("/v2/models/tri/infer", json=BODY)
        assert r.status_code == 200, r.text
        assert r.json()["outputs"][0]["data"] == [0.5] * 32
        config = (await client.get("/v2/models/tri/config")).json()
        assert (config["max_batch_size"], config["platform"]) == (8, "onnxruntime_onnx")
        assert config["input"] == [{"name": "input", "data_type": "TYPE_FP32", "dims": [16]}]
        r = await client.post(
            "/v2/models/tri/infer",
            json={**BODY, "inputs": [{**BODY["inputs"][0], "shape": [9, 16], "data": [0.5] * 144}]},
        )
        assert r.status_code == 400  # max_batch_size 8, from config.pbtxt
        r = await client.post("/v2/models/trt/infer", json=BODY)
        assert r.status_code == 503
        assert "config.pbtxt: platform/backend 'tensorrt_plan' has no runtime here" in r.json()["error"]
